//! The kernel's input history, kept in SQLite so that it outlives the kernel: what the console's
//! up-arrow, JupyterLab's console history and `history_request` read.
//!
//! Every stored cell is written when it starts to run, so a cell that kills the kernel is still
//! in the history. All database work happens on one thread of its own: the shell only queues a
//! write, and waits a bounded time for a query's answer, so a slow or locked disk never holds a
//! cell. A history that cannot be used (no home, a planted link, a corrupt or locked file, a full
//! disk) is logged once and then answers an empty list; execution goes on as before.

mod location;
mod request;
mod store;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::{json, Value};
use thiserror::Error;
use tokio::sync::oneshot;

pub use location::{history_file, LocationError, HISTORY_FILE_ENV};
pub use request::{HistoryQuery, RequestError};
use store::{Entry, Store};

/// How long a `history_request` waits for the database before it answers an empty list.
const QUERY_WAIT: Duration = Duration::from_secs(3);
/// How long shutdown waits for the session's end time to be written.
const END_WAIT: Duration = Duration::from_secs(1);

/// Why the history is off for this kernel.
#[derive(Debug, Error)]
enum OpenFailure {
    #[error(transparent)]
    Location(#[from] LocationError),
    #[error(
        "cannot use the history database {path}: {source}; move the file aside (rustpx starts \
         a new one) or set {HISTORY_FILE_ENV} to another file",
        path = path.display()
    )]
    Database {
        path: PathBuf,
        source: store::OpenError,
    },
}

enum Job {
    Record {
        line: i64,
        source: String,
    },
    Select {
        query: HistoryQuery,
        answer: oneshot::Sender<Vec<Entry>>,
    },
    End {
        done: oneshot::Sender<()>,
    },
}

/// A cloneable handle on the history thread of this kernel.
#[derive(Clone)]
pub struct History {
    jobs: mpsc::Sender<Job>,
    complaints: Complaints,
}

impl History {
    /// Starts the history in [`history_file`]'s place, with a new session.
    pub fn start() -> History {
        History::spawn(history_file)
    }

    /// Starts the history in the file at `path` (tests use a temporary one).
    pub fn start_at(path: PathBuf) -> History {
        History::spawn(move || Ok(path))
    }

    fn spawn(locate: impl FnOnce() -> Result<PathBuf, LocationError> + Send + 'static) -> History {
        let (jobs, queue) = mpsc::channel();
        let complaints = Complaints::default();
        let worker = Worker {
            store: None,
            complaints: complaints.clone(),
        };
        let started = std::thread::Builder::new()
            .name("rustpx-history".into())
            .spawn(move || worker.run(locate, queue));
        if let Err(error) = started {
            complaints.complain(&format!("history is off: cannot start its thread: {error}"));
        }
        History { jobs, complaints }
    }

    /// Stores `source` as line `line` (its execution count) of this session.
    pub fn record(&self, line: u32, source: &str) {
        let _ = self.jobs.send(Job::Record {
            line: i64::from(line),
            source: source.to_owned(),
        });
    }

    /// The content of the `history_reply` to a request with `content`.
    pub async fn reply(&self, content: &Value) -> Value {
        let query = match HistoryQuery::parse(content) {
            Ok(query) => query,
            Err(error) => {
                tracing::warn!("{error}");
                return json!({
                    "status": "error",
                    "ename": "HistoryRequestError",
                    "evalue": error.to_string(),
                    "traceback": [error.to_string()],
                    "history": [],
                });
            }
        };
        let output = query.output;
        let (answer, answered) = oneshot::channel();
        let entries = if self.jobs.send(Job::Select { query, answer }).is_err() {
            Vec::new()
        } else {
            match tokio::time::timeout(QUERY_WAIT, answered).await {
                Ok(entries) => entries.unwrap_or_default(),
                Err(_) => {
                    self.complaints.complain(&format!(
                        "history: no answer from the database within {QUERY_WAIT:?}; \
                         replied with an empty history"
                    ));
                    Vec::new()
                }
            }
        };
        json!({"status": "ok", "history": request::history_list(&entries, output)})
    }

    /// Writes this session's end time; waits for it a short time at most (called at shutdown).
    pub async fn end_session(&self) {
        let (done, ended) = oneshot::channel();
        if self.jobs.send(Job::End { done }).is_ok() {
            let _ = tokio::time::timeout(END_WAIT, ended).await;
        }
    }
}

/// Logs the first history problem as a warning and later ones at debug level, so that a broken
/// disk does not flood the log with one line per cell.
#[derive(Clone, Default)]
struct Complaints(Arc<AtomicBool>);

impl Complaints {
    fn complain(&self, message: &str) {
        if self.0.swap(true, Ordering::Relaxed) {
            tracing::debug!("{message}");
        } else {
            tracing::warn!("{message} (further history problems are logged at debug level)");
        }
    }
}

struct Worker {
    store: Option<Store>,
    complaints: Complaints,
}

impl Worker {
    fn run(
        mut self,
        locate: impl FnOnce() -> Result<PathBuf, LocationError>,
        queue: mpsc::Receiver<Job>,
    ) {
        match open(locate) {
            Ok((store, path)) => {
                tracing::info!(
                    "input history: session {} in {}",
                    store.session(),
                    path.display()
                );
                self.store = Some(store);
            }
            Err(error) => self
                .complaints
                .complain(&format!("history is off for this kernel: {error}")),
        }
        for job in queue {
            self.serve(job);
        }
    }

    fn serve(&mut self, job: Job) {
        let Some(store) = self.store.as_mut() else {
            // Off: queries get nothing (their sender is dropped), ends are acknowledged.
            if let Job::End { done } = job {
                let _ = done.send(());
            }
            return;
        };
        let failed = match job {
            Job::Record { line, source } => store
                .record(line, &source)
                .err()
                .map(|e| format!("history: cannot store line {line}: {e}")),
            Job::Select { query, answer } => match store.select(&query.resolve(store.session())) {
                Ok(entries) => {
                    let _ = answer.send(entries);
                    None
                }
                Err(e) => Some(format!("history: cannot read it: {e}")),
            },
            Job::End { done } => {
                let result = store.end();
                let _ = done.send(());
                result
                    .err()
                    .map(|e| format!("history: cannot end the session: {e}"))
            }
        };
        if let Some(message) = failed {
            self.complaints.complain(&message);
        }
    }
}

fn open(
    locate: impl FnOnce() -> Result<PathBuf, LocationError>,
) -> Result<(Store, PathBuf), OpenFailure> {
    let path = location::prepare(&locate()?)?;
    let store = Store::open(&path).map_err(|source| OpenFailure::Database {
        path: path.clone(),
        source,
    })?;
    Ok((store, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_recorded_cell_is_in_the_next_tail() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::start_at(dir.path().join("history.sqlite"));
        history.record(1, "let x = 1;");
        history.record(2, "%%px\nx + 1");
        let reply = history
            .reply(&json!({"hist_access_type": "tail", "n": 5}))
            .await;
        assert_eq!(
            reply,
            json!({"status": "ok", "history": [[1, 1, "let x = 1;"], [1, 2, "%%px\nx + 1"]]})
        );
        history.end_session().await;
    }

    #[tokio::test]
    async fn a_history_that_cannot_open_answers_empty_and_keeps_going() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let history = History::start_at(path.clone());
        history.record(1, "1 + 1");
        let reply = history
            .reply(&json!({"hist_access_type": "tail", "n": 5}))
            .await;
        assert_eq!(reply, json!({"status": "ok", "history": []}));
        history.end_session().await;
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'x'; 4096]);
    }

    #[tokio::test]
    async fn a_malformed_request_gets_an_error_reply() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::start_at(dir.path().join("history.sqlite"));
        let reply = history
            .reply(&json!({"hist_access_type": "everything"}))
            .await;
        assert_eq!(reply["status"], "error");
        assert!(reply["evalue"].as_str().unwrap().contains("\"everything\""));
    }
}
