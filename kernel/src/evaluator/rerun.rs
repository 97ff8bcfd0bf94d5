//! Runs the kernel's generated cells again without compiling them again.
//!
//! A data magic's local cell (`rustpx::save(&data, "…")`) is the same text every time it moves
//! the same variable, yet evcxr compiles every cell it is given: about half a second here, where
//! the bytes move in milliseconds. evcxr's generated function takes every stored variable by
//! name and type, checks each one's `TypeId` (a type redefined since is reported, not misread),
//! runs the cell and stores them back. So when the cell's text and the context's variables
//! (names and types) are what they were when evcxr compiled it, and no item or setting changed
//! since, running the already compiled function again is what evcxr would do after compiling
//! the same source. The plain context's child ([`super::runtime`]) runs it on request over a
//! Unix socket in the kernel's private directory ([`crate::private_dir`]).
//!
//! Items are not in the key: a type redefined with other fields can keep its `TypeId` (every
//! cell is the same crate to rustc), so the evaluator calls [`Rerunner::forget_all`] after any
//! cell that may define an item or run an evcxr command, and the cache empties itself when the
//! child restarts. Only kernel-generated cells are cached, never the user's.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use rustpx_runtime::markers as evcxr_markers;

use super::fence::Fence;

/// How long a query to the runtime may take: it answers between cells at once, so a silent
/// runtime must not hold the evaluator (and every later cell) up.
const QUERY_PATIENCE: Duration = Duration::from_secs(2);

/// What evcxr's generated code prints when the cell panicked.
const PANIC_MARKER: &str = evcxr_markers::PANIC_NOTIFICATION;

/// What it prints when a variable's type changed, or user code returned early with `?`.
const OTHER_FAILURE_MARKERS: [&str; 2] = [evcxr_markers::CHANGED_TYPE, evcxr_markers::USER_ERROR];

/// A cell's text and the variables (name, type) it was compiled against.
pub type Key = (String, Vec<(String, String)>);

/// How a re-run ended when it did not simply succeed.
#[derive(Debug, thiserror::Error)]
pub enum RerunError {
    /// No child is connected (it is starting, or it died): compile instead.
    #[error("the plain context's runtime is not connected")]
    NotConnected,
    /// The cell panicked; its message is on the child's stderr.
    #[error("the cell panicked")]
    Panicked(Option<Fence>),
    /// The cell met a changed variable or returned early; the markers it printed are attached.
    #[error("the cell did not succeed: {0}")]
    CellFailed(String),
    #[error("the runtime could not run the cell: {0}")]
    Refused(String),
    #[error("talking to the runtime: {0}")]
    Io(#[from] std::io::Error),
}

/// The kernel's end of the runtime's side door, and the compiled cells it can run again.
pub struct Rerunner {
    listener: UnixListener,
    token: String,
    connection: Option<BufReader<UnixStream>>,
    compiled: HashMap<Key, (String, String)>,
    /// Whether the connected runtime writes fences on stdout.
    fences_enabled: bool,
}

impl Rerunner {
    /// Listens in the private directory; the returned spec (`PATH TOKEN`) goes into the child's
    /// environment.
    pub fn bind() -> std::io::Result<(Rerunner, String)> {
        let path = crate::private_dir::socket_path("rerun.sock")?;
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let spec = format!("{} {token}", path.display());
        Ok((
            Rerunner {
                listener,
                token,
                connection: None,
                compiled: HashMap::new(),
                fences_enabled: false,
            },
            spec,
        ))
    }

    /// The compiled cell for `key`, if there is one.
    pub fn lookup(&self, key: &Key) -> Option<(String, String)> {
        self.compiled.get(key).cloned()
    }

    /// Forgets every compiled cell: a cell may have changed an item or a setting they were
    /// compiled with.
    pub fn forget_all(&mut self) {
        self.compiled.clear();
    }

    /// Forgets a compiled cell that did not run cleanly; the next run compiles it again.
    pub fn forget(&mut self, key: &Key) {
        self.compiled.remove(key);
    }

    /// How many cells evcxr has run in the child so far, and the last (`None` when the child
    /// cannot say: it is not connected).
    pub fn last_run(&mut self) -> Option<(u64, String, String)> {
        let reply = self.request("LAST", Some(QUERY_PATIENCE)).ok()?;
        let mut words = reply.split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("LAST"), Some(runs), Some(so), Some(function)) => {
                Some((runs.parse().ok()?, so.to_owned(), function.to_owned()))
            }
            _ => None,
        }
    }

    /// Remembers that `key` compiled to `so`'s `function`.
    pub fn remember(&mut self, key: Key, so: String, function: String) {
        self.compiled.insert(key, (so, function));
    }

    /// Asks the runtime to write its fences on stdout too, once per runtime process (evcxr
    /// restarts it after a crash or an interrupt). Called before each cell, once the output
    /// pump runs; see [`super::fence`].
    pub fn enable_fences(&mut self) {
        self.accept_newest();
        if self.connection.is_none() || self.fences_enabled {
            return;
        }
        match self.request("FENCES", Some(QUERY_PATIENCE)) {
            Ok(answer) if answer == "FENCES ON" => self.fences_enabled = true,
            Ok(answer) => tracing::debug!("the runtime does not write fences: {answer:?}"),
            Err(error) => tracing::warn!("could not turn on output fences: {error}"),
        }
    }

    /// Runs a compiled cell again in the child; returns the fence it wrote on stderr after the
    /// run, for the output pump to wait for.
    pub fn run(&mut self, so: &str, function: &str) -> Result<Option<Fence>, RerunError> {
        let reply = self.request(&format!("RUN {so} {function}"), None)?;
        if let Some(reason) = reply.strip_prefix("FAILED ") {
            return Err(RerunError::Refused(reason.to_owned()));
        }
        let mut words = reply.strip_prefix("DONE ").unwrap_or_default().split(' ');
        let length: usize = words
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| RerunError::Refused(format!("unexpected answer {reply:?}")))?;
        let fence = match (words.next(), words.next()) {
            (Some(pid), Some(n)) => Fence::parse(&format!("{}{pid} {n}", super::fence::PREFIX)),
            _ => None,
        };
        let connection = self.connection.as_mut().ok_or(RerunError::NotConnected)?;
        let mut stdout = vec![0; length];
        connection.read_exact(&mut stdout)?;
        let stdout = String::from_utf8_lossy(&stdout);
        if stdout.contains(PANIC_MARKER) {
            return Err(RerunError::Panicked(fence));
        }
        let markers: Vec<&str> = stdout
            .lines()
            .filter(|line| OTHER_FAILURE_MARKERS.iter().any(|m| line.contains(m)))
            .collect();
        if markers.is_empty() {
            Ok(fence)
        } else {
            Err(RerunError::CellFailed(markers.join(", ")))
        }
    }

    /// Sends one request line and reads the answer line, on the newest connection.
    /// A query (`LAST`, `FENCES`) gets `patience`; a run (`RUN`) may take as long as the cell.
    fn request(&mut self, line: &str, patience: Option<Duration>) -> Result<String, RerunError> {
        self.accept_newest();
        let connection = self.connection.as_mut().ok_or(RerunError::NotConnected)?;
        let outcome = (|| {
            writeln!(connection.get_mut(), "{line}")?;
            connection.get_ref().set_read_timeout(patience)?;
            let mut answer = String::new();
            let read = connection.read_line(&mut answer);
            connection.get_ref().set_read_timeout(None)?;
            if read? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            Ok(answer.trim_end().to_owned())
        })();
        outcome.map_err(|error| {
            // The child died or was restarted; its successor connects anew.
            self.connection = None;
            self.compiled.clear();
            self.fences_enabled = false;
            RerunError::Io(error)
        })
    }

    /// Takes every pending connection that presents the token, keeping the newest: evcxr
    /// restarts its child after a crash or an interrupt, and the new child dials in.
    fn accept_newest(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if let Some(connection) = self.verified(stream) {
                if self.connection.replace(connection).is_some() {
                    // A new child: it has loaded nothing, and evcxr rebuilt its state.
                    self.compiled.clear();
                }
                self.fences_enabled = false;
            }
        }
    }

    fn verified(&self, stream: UnixStream) -> Option<BufReader<UnixStream>> {
        stream.set_nonblocking(false).ok()?;
        // Bounded in length and time: the evaluator waits here, and every cell with it.
        if let Err(error) = crate::side_channel::check_token(&stream, &self.token) {
            tracing::warn!("refused a runtime connection: {error}");
            return None;
        }
        // A cell may run for as long as it likes.
        Some(BufReader::new(stream))
    }
}
