//! The history database: one row per kernel start in `sessions`, one row per stored cell in
//! `history`, keyed by (session, line) as IPython's `history.sqlite` is, so the same questions
//! (tail, range, search) are answered the same way.
//!
//! WAL and a busy timeout let several kernels of one user share the file: readers never wait
//! for a writer, and a writer waits a bounded time for another.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use thiserror::Error;

/// How long a statement waits for another kernel's write before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Bumped when the tables change shape; a newer file than this code knows is left alone.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    session  INTEGER PRIMARY KEY AUTOINCREMENT,
    start    TEXT NOT NULL,
    end      TEXT,
    num_cmds INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS history (
    session INTEGER NOT NULL,
    line    INTEGER NOT NULL,
    source  TEXT NOT NULL,
    PRIMARY KEY (session, line)
);";

/// Now, in UTC, as SQLite writes it (`2026-12-02 08:30:48.123`).
const NOW: &str = "strftime('%Y-%m-%d %H:%M:%f', 'now')";

/// Why the database could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("it was written by a newer rustpx (schema {0}; this one knows {SCHEMA_VERSION})")]
    NewerSchema(i64),
}

/// One stored cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub session: i64,
    pub line: i64,
    pub source: String,
}

/// Which entries a `history_request` asks for; sessions here are absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The last `n` entries across sessions (all when negative).
    Tail { n: i64 },
    /// Lines `start..stop` of `session` (to the end when `stop` is `None`); a negative bound
    /// counts back from the session's end.
    Range {
        session: i64,
        start: i64,
        stop: Option<i64>,
    },
    /// Entries whose input matches a glob (`*`, `?`, `[...]`, case-sensitive), only the latest
    /// of equal inputs when `unique`, only the last `n` when given.
    Search {
        pattern: String,
        n: Option<i64>,
        unique: bool,
    },
}

/// An open database with this kernel's session row.
pub struct Store {
    connection: Connection,
    session: i64,
}

impl Store {
    /// Opens (creating) the file, creates the tables, and starts a new session.
    pub fn open(path: &Path) -> Result<Store, OpenError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        Store::start(Connection::open_with_flags(path, flags)?)
    }

    fn start(connection: Connection) -> Result<Store, OpenError> {
        connection.busy_timeout(BUSY_TIMEOUT)?;
        // The first statement that reads the file: a corrupt file fails here.
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(OpenError::NewerSchema(version));
        }
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.execute_batch(SCHEMA)?;
        connection.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        connection.execute(&format!("INSERT INTO sessions (start) VALUES ({NOW})"), [])?;
        let session = connection.last_insert_rowid();
        Ok(Store {
            connection,
            session,
        })
    }

    /// This kernel's session number.
    pub fn session(&self) -> i64 {
        self.session
    }

    /// Stores `source` as `line` of this session (a re-used line number replaces its input).
    pub fn record(&mut self, line: i64, source: &str) -> rusqlite::Result<()> {
        let transaction = self.connection.transaction()?;
        transaction.execute(
            "INSERT OR REPLACE INTO history (session, line, source) VALUES (?1, ?2, ?3)",
            params![self.session, line, source],
        )?;
        transaction.execute(
            "UPDATE sessions SET num_cmds = \
             (SELECT COUNT(*) FROM history WHERE session = ?1) WHERE session = ?1",
            params![self.session],
        )?;
        transaction.commit()
    }

    /// Writes the session's end time (at shutdown).
    pub fn end(&self) -> rusqlite::Result<()> {
        self.connection.execute(
            &format!("UPDATE sessions SET end = {NOW} WHERE session = ?1"),
            params![self.session],
        )?;
        Ok(())
    }

    /// The entries `selection` names, oldest first.
    pub fn select(&self, selection: &Selection) -> rusqlite::Result<Vec<Entry>> {
        match selection {
            Selection::Tail { n } => {
                let mut newest = self.query(
                    "SELECT session, line, source FROM history \
                     ORDER BY session DESC, line DESC LIMIT ?1",
                    params![n],
                )?;
                newest.reverse();
                Ok(newest)
            }
            Selection::Range {
                session,
                start,
                stop,
            } => self.range(*session, *start, *stop),
            Selection::Search { pattern, n, unique } => self.search(pattern, *n, *unique),
        }
    }

    fn range(&self, session: i64, start: i64, stop: Option<i64>) -> rusqlite::Result<Vec<Entry>> {
        // Negative bounds count back from one past the session's last line, as Python slices.
        let end = || -> rusqlite::Result<i64> {
            let last: Option<i64> = self
                .connection
                .query_row(
                    "SELECT MAX(line) FROM history WHERE session = ?1",
                    params![session],
                    |row| row.get(0),
                )
                .optional()?
                .flatten();
            Ok(last.map_or(0, |line| line + 1))
        };
        let start = if start < 0 { start + end()? } else { start };
        let stop = match stop {
            None | Some(0) => i64::MAX,
            Some(stop) if stop < 0 => stop + end()?,
            Some(stop) => stop,
        };
        self.query(
            "SELECT session, line, source FROM history \
             WHERE session = ?1 AND line >= ?2 AND line < ?3 ORDER BY line",
            params![session, start, stop],
        )
    }

    fn search(&self, pattern: &str, n: Option<i64>, unique: bool) -> rusqlite::Result<Vec<Entry>> {
        let matches = if unique {
            "SELECT session, line, source FROM (\
                SELECT session, line, source, ROW_NUMBER() OVER (\
                    PARTITION BY source ORDER BY session DESC, line DESC) AS newer \
                FROM history WHERE source GLOB ?1) \
             WHERE newer = 1"
        } else {
            "SELECT session, line, source FROM history WHERE source GLOB ?1"
        };
        let mut found = self.query(
            &format!("{matches} ORDER BY session DESC, line DESC LIMIT ?2"),
            params![pattern, n.unwrap_or(-1)],
        )?;
        found.reverse();
        Ok(found)
    }

    fn query(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<Vec<Entry>> {
        let mut statement = self.connection.prepare_cached(sql)?;
        let rows = statement.query_map(params, |row| {
            Ok(Entry {
                session: row.get(0)?,
                line: row.get(1)?,
                source: row.get(2)?,
            })
        })?;
        rows.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(found: &[Entry]) -> Vec<(i64, i64, &str)> {
        found
            .iter()
            .map(|e| (e.session, e.line, e.source.as_str()))
            .collect()
    }

    /// Two sessions in one file: the first ran `a`, `b`, `a`; the second `c`, `a`.
    fn two_sessions(dir: &Path) -> Store {
        let path = dir.join("history.sqlite");
        let mut first = Store::open(&path).unwrap();
        for (line, source) in [(1, "a"), (2, "b"), (3, "a")] {
            first.record(line, source).unwrap();
        }
        first.end().unwrap();
        let mut second = Store::open(&path).unwrap();
        second.record(1, "c").unwrap();
        second.record(2, "a").unwrap();
        second
    }

    #[test]
    fn each_open_is_a_new_session() {
        let dir = tempfile::tempdir().unwrap();
        let store = two_sessions(dir.path());
        assert_eq!(store.session(), 2);
        let (end, cells): (Option<String>, i64) = store
            .connection
            .query_row(
                "SELECT end, num_cmds FROM sessions WHERE session = 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert!(end.is_some());
        assert_eq!(cells, 3);
    }

    #[test]
    fn tail_is_the_last_entries_across_sessions_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = two_sessions(dir.path());
        let found = store.select(&Selection::Tail { n: 3 }).unwrap();
        assert_eq!(entries(&found), [(1, 3, "a"), (2, 1, "c"), (2, 2, "a")]);
    }

    #[test]
    fn range_stops_before_stop_and_runs_to_the_end_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = two_sessions(dir.path());
        let range = |start, stop| Selection::Range {
            session: 1,
            start,
            stop,
        };
        let found = store.select(&range(2, Some(3))).unwrap();
        assert_eq!(entries(&found), [(1, 2, "b")]);
        let found = store.select(&range(0, None)).unwrap();
        assert_eq!(entries(&found), [(1, 1, "a"), (1, 2, "b"), (1, 3, "a")]);
        let found = store.select(&range(-2, None)).unwrap();
        assert_eq!(entries(&found), [(1, 2, "b"), (1, 3, "a")]);
        let found = store.select(&range(1, Some(-1))).unwrap();
        assert_eq!(entries(&found), [(1, 1, "a"), (1, 2, "b")]);
    }

    #[test]
    fn search_matches_a_whole_input_with_a_glob() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = two_sessions(dir.path());
        store.record(3, "let x = [1];").unwrap();
        let search = |pattern: &str, n, unique| Selection::Search {
            pattern: pattern.into(),
            n,
            unique,
        };
        let found = store.select(&search("a", None, false)).unwrap();
        assert_eq!(entries(&found), [(1, 1, "a"), (1, 3, "a"), (2, 2, "a")]);
        let found = store.select(&search("a", Some(2), false)).unwrap();
        assert_eq!(entries(&found), [(1, 3, "a"), (2, 2, "a")]);
        let found = store.select(&search("?", None, true)).unwrap();
        assert_eq!(entries(&found), [(1, 2, "b"), (2, 1, "c"), (2, 2, "a")]);
        // JupyterLab escapes a literal `[` as `[[]`.
        let found = store.select(&search("let x = [[]*", None, false)).unwrap();
        assert_eq!(entries(&found), [(2, 3, "let x = [1];")]);
        assert!(store.select(&search("A", None, false)).unwrap().is_empty());
    }

    #[test]
    fn a_file_that_is_not_a_database_fails_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        assert!(Store::open(&path).is_err());
    }

    #[test]
    fn a_newer_schema_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite");
        let connection = Connection::open(&path).unwrap();
        connection.pragma_update(None, "user_version", 99).unwrap();
        drop(connection);
        let error = Store::open(&path).err().unwrap();
        assert!(error.to_string().contains("newer rustpx"), "{error}");
    }
}
