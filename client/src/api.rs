//! The Rust API of a plain cell: `rustpx::client()`, its views, and typed asynchronous results,
//! over the same hub and engines as the magics.
//!
//! Every call is one request to the kernel's px service over the socket named in
//! [`API_ENV`](crate::api_wire::API_ENV) (see [`crate::api_wire`]). A view's `apply` and `map`
//! run a function defined on the engines (by a `%%px` cell): the engines compile their serving
//! cell once per function and engine state, then each task costs a frame each way. Items and
//! results cross as bincode; the engines report their function's argument and result types, and
//! the kernel refuses a call whose types differ, naming both, before any item is decoded.

use std::marker::PhantomData;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api_results::Pending;
pub use crate::api_results::{AsyncExecute, AsyncMapResult, AsyncResult, EngineOutput};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api_wire::{self, Kind, Reply, Request};

/// One item that failed on an engine (a panic, usually).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailure {
    /// The item's index in the call (0 for `apply`).
    pub item: u64,
    pub engine: u32,
    pub message: String,
}

/// Why an API call gave no value.
#[derive(Debug)]
pub enum ApiError {
    /// The kernel's socket could not be reached (not in a rustpx plain cell, or it closed).
    Connection(String),
    /// The kernel refused or could not run the call (unknown engine, type mismatch, a function
    /// the engines do not define, an engine that died).
    Kernel(String),
    /// Items failed on the engines: each engine's error (ipyparallel's `CompositeError`). The
    /// other items completed.
    Tasks {
        failures: Vec<TaskFailure>,
        total: u64,
        /// `apply` (for `apply` and `map`), `direct apply` (one task per engine, labelled by
        /// engine only) or `execute`: how each failure is labelled.
        what: &'static str,
    },
    /// The results did not decode as the type asked for.
    Decode(String),
    /// `wait` ran out of time (from `get_timeout`).
    Timeout(Duration),
    /// The cell was interrupted while it waited; the call goes on in the kernel, and the same
    /// result's `get` in a later cell returns its value.
    Interrupted(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Connection(why) => write!(f, "cannot reach the rustpx kernel: {why}"),
            ApiError::Kernel(why) => write!(f, "{why}"),
            ApiError::Tasks {
                failures,
                total,
                what,
            } => {
                write!(
                    f,
                    "CompositeError: {} of {total} tasks failed",
                    failures.len()
                )?;
                for failure in failures.iter().take(5) {
                    if failure.engine == crate::api_tasks::NO_ENGINE {
                        write!(
                            f,
                            "\n[no engine] item {}: {}",
                            failure.item, failure.message
                        )?;
                    } else if *what == "execute" {
                        write!(f, "\n[{}:execute] {}", failure.engine, failure.message)?;
                    } else if *what == "direct apply" {
                        write!(f, "\n[{}:apply] {}", failure.engine, failure.message)?;
                    } else {
                        write!(
                            f,
                            "\n[{}:apply] item {}: {}",
                            failure.engine, failure.item, failure.message
                        )?;
                    }
                }
                if failures.len() > 5 {
                    write!(f, "\n... {} more exceptions ...", failures.len() - 5)?;
                }
                Ok(())
            }
            ApiError::Decode(why) => write!(f, "{why}"),
            ApiError::Timeout(after) => write!(f, "TimeoutError: not ready after {after:?}"),
            ApiError::Interrupted(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for ApiError {}

/// The one connection of this process to the kernel, shared by a client's views and results.
pub(crate) struct Connection {
    stream: Mutex<Option<UnixStream>>,
}

impl Connection {
    /// A connection of its own, opened at its first call (for calls run on another thread).
    pub(crate) fn new() -> Connection {
        Connection {
            stream: Mutex::new(None),
        }
    }

    fn open() -> Result<UnixStream, ApiError> {
        use std::io::Write;
        let spec = std::env::var(api_wire::API_ENV).map_err(|_| {
            ApiError::Connection(format!(
                "{} is not set: rustpx::client() works in a plain cell of a rustpx kernel",
                api_wire::API_ENV
            ))
        })?;
        let (path, token) = spec.rsplit_once(' ').unwrap_or((&spec, ""));
        let mut stream =
            UnixStream::connect(path).map_err(|e| ApiError::Connection(format!("{path}: {e}")))?;
        writeln!(stream, "{token}").map_err(|e| ApiError::Connection(e.to_string()))?;
        Ok(stream)
    }

    /// Sends `request` and reads its reply; a connection that failed is opened again next time.
    pub(crate) fn call(&self, request: &Request) -> Result<Reply, ApiError> {
        let mut slot = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(Connection::open()?);
        }
        let Some(stream) = slot.as_mut() else {
            return Err(ApiError::Connection("no connection".into()));
        };
        let exchanged = request
            .write_to(stream)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                api_wire::read_frame(stream, u64::MAX, u32::MAX).map_err(|e| e.to_string())
            })
            .and_then(|(header, payload)| Reply::decode(&header, payload));
        match exchanged {
            Ok(reply) => match &reply.error {
                Some(error) if error.starts_with(api_wire::INTERRUPTED) => {
                    Err(ApiError::Interrupted(error.clone()))
                }
                Some(error) => Err(ApiError::Kernel(error.clone())),
                None => Ok(reply),
            },
            Err(why) => {
                *slot = None;
                Err(ApiError::Connection(why))
            }
        }
    }
}

/// Which engines a view covers.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Every live engine, at each call.
    All,
    Ids(Vec<u32>),
}

impl From<u32> for Targets {
    fn from(id: u32) -> Targets {
        Targets::Ids(vec![id])
    }
}
impl From<Vec<u32>> for Targets {
    fn from(ids: Vec<u32>) -> Targets {
        Targets::Ids(ids)
    }
}
impl From<&[u32]> for Targets {
    fn from(ids: &[u32]) -> Targets {
        Targets::Ids(ids.to_vec())
    }
}
impl From<std::ops::Range<u32>> for Targets {
    fn from(ids: std::ops::Range<u32>) -> Targets {
        Targets::Ids(ids.collect())
    }
}
impl From<std::ops::RangeFull> for Targets {
    fn from(_: std::ops::RangeFull) -> Targets {
        Targets::All
    }
}

impl Targets {
    pub(crate) fn ids(&self) -> Option<Vec<u32>> {
        match self {
            Targets::All => None,
            Targets::Ids(ids) => Some(ids.clone()),
        }
    }
}

/// The kernel's engines, as ipyparallel's `Client`.
#[derive(Clone)]
pub struct Client {
    connection: Arc<Connection>,
}

/// A client of the kernel this plain cell runs in. Connects at the first call; a call outside
/// a rustpx kernel fails with [`ApiError::Connection`].
pub fn client() -> Client {
    Client {
        connection: Arc::new(Connection::new()),
    }
}

impl Client {
    /// The live engines' ids (a local pool starts first if none runs, as at the first `%px`).
    pub fn ids(&self) -> Result<Vec<u32>, ApiError> {
        Ok(self.connection.call(&Request::new(Kind::Ids))?.ids)
    }

    /// A view on `targets`: `..` for all engines (also those that join later), an id, a `Vec`
    /// or slice of ids, or a range.
    pub fn direct_view(&self, targets: impl Into<Targets>) -> DirectView {
        DirectView {
            connection: self.connection.clone(),
            targets: targets.into(),
        }
    }

    /// A view that runs each task on whichever engine is free, over all engines.
    pub fn load_balanced_view(&self) -> LoadBalancedView {
        self.direct_view(..).load_balanced_view()
    }
}

/// Engines chosen by id, as ipyparallel's `DirectView`.
#[derive(Clone)]
pub struct DirectView {
    pub(crate) connection: Arc<Connection>,
    pub(crate) targets: Targets,
}

impl DirectView {
    /// The ids this view covers now; an id that is not a live engine is an error naming it.
    pub fn ids(&self) -> Result<Vec<u32>, ApiError> {
        let live = self.connection.call(&Request::new(Kind::Ids))?.ids;
        match &self.targets {
            Targets::All => Ok(live),
            Targets::Ids(ids) => match ids.iter().find(|id| !live.contains(id)) {
                Some(missing) => Err(ApiError::Kernel(format!(
                    "IndexError: No such engine: {missing} (live engines: {live:?})"
                ))),
                None => Ok(ids.clone()),
            },
        }
    }

    /// Runs `code` on this view's engines, as `%px` does (compiled once per engine state);
    /// each engine's output, value or error comes back in the result.
    pub fn execute(&self, code: &str) -> AsyncExecute {
        let submitted = Instant::now();
        let mut request = Request::new(Kind::Execute);
        request.function = code.to_owned();
        request.targets = self.targets.ids();
        AsyncExecute {
            pending: Pending {
                connection: self.connection.clone(),
                job: self.connection.call(&request).map(|reply| reply.job),
                submitted,
                last: Mutex::new(None),
            },
        }
    }

    /// [`execute`](Self::execute), waiting for every engine's output.
    pub fn execute_sync(&self, code: &str) -> Result<Vec<EngineOutput>, ApiError> {
        self.execute(code).get()
    }

    /// A load-balanced view over this view's engines.
    pub fn load_balanced_view(&self) -> LoadBalancedView {
        LoadBalancedView {
            connection: self.connection.clone(),
            targets: self.targets.clone(),
            chunk_size: None,
            tasks: Default::default(),
        }
    }
}

/// Tasks go to whichever engine of the view is free, as ipyparallel's `LoadBalancedView`.
#[derive(Clone)]
pub struct LoadBalancedView {
    connection: Arc<Connection>,
    targets: Targets,
    chunk_size: Option<usize>,
    /// Retries, dependencies, timeout and order (`api_tasks`).
    pub(crate) tasks: crate::api_tasks::ViewTasks,
}

impl LoadBalancedView {
    /// Items per task for [`map`](Self::map); by default about 16 tasks per engine.
    pub fn chunk_size(mut self, items: usize) -> LoadBalancedView {
        self.chunk_size = Some(items.max(1));
        self
    }

    /// Runs `function(argument)` on one free engine. `function` is defined on the engines (a
    /// `%%px` cell) and takes an `A`, returning an `R`.
    pub fn apply<A, R>(&self, function: &str, argument: A) -> AsyncResult<R>
    where
        A: Serialize + 'static,
        R: DeserializeOwned + 'static,
    {
        AsyncResult {
            pending: self.submit::<A, R>(function, std::slice::from_ref(&argument), Some(1)),
            _result: PhantomData,
        }
    }

    /// [`apply`](Self::apply), waiting for the value.
    pub fn apply_sync<A, R>(&self, function: &str, argument: A) -> Result<R, ApiError>
    where
        A: Serialize + 'static,
        R: DeserializeOwned + 'static,
    {
        self.apply(function, argument).get()
    }

    /// Applies `function` to every item, in chunks handed to whichever engine is free; the
    /// results come back in input order.
    pub fn map<A, R>(&self, function: &str, items: &[A]) -> AsyncMapResult<R>
    where
        A: Serialize + 'static,
        R: DeserializeOwned + 'static,
    {
        AsyncMapResult {
            pending: self.submit::<A, R>(function, items, self.chunk_size),
            _result: PhantomData,
        }
    }

    /// [`map`](Self::map), waiting for the values.
    pub fn map_sync<A, R>(&self, function: &str, items: &[A]) -> Result<Vec<R>, ApiError>
    where
        A: Serialize + 'static,
        R: DeserializeOwned + 'static,
    {
        self.map(function, items).get()
    }

    fn submit<A: Serialize + 'static, R: 'static>(
        &self,
        function: &str,
        items: &[A],
        chunk_size: Option<usize>,
    ) -> Pending {
        let submitted = Instant::now();
        let job = (|| {
            if let Some(why) = &self.tasks.error {
                return Err(ApiError::Kernel(why.clone()));
            }
            self.tasks.options.check().map_err(ApiError::Kernel)?;
            let chunk_size = match chunk_size {
                Some(n) => n,
                None => {
                    let engines = match &self.targets {
                        Targets::Ids(ids) => ids.len(),
                        Targets::All => self.connection.call(&Request::new(Kind::Ids))?.ids.len(),
                    };
                    crate::default_chunk_size(items.len(), engines)
                }
            };
            let mut request = Request::new(Kind::Submit);
            request.function = function.to_owned();
            request.argument_type = std::any::type_name::<A>().to_owned();
            request.result_type = std::any::type_name::<R>().to_owned();
            request.targets = self.targets.ids();
            request.tasks = self.tasks.options.clone();
            request.payload = crate::encode_chunks(items, chunk_size)
                .map_err(|e| ApiError::Decode(e.to_string()))?;
            Ok(self.connection.call(&request)?.job)
        })();
        Pending {
            connection: self.connection.clone(),
            job,
            submitted,
            last: Mutex::new(None),
        }
    }
}
