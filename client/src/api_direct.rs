//! The direct view's `apply` and its typed data calls: `push`, `pull`, `scatter`, `gather`, as
//! ipyparallel's `DirectView` has them and as the data magics leave the engines.
//!
//! `apply` runs on every engine of the view through the kernel's task scheduler, one task
//! pinned to each engine, so it shares the load-balanced `apply`'s type check (the engines
//! report their function's types) and its cached serving cell. The data calls carry their values
//! as bincode in the request or the reply; the kernel binds them on the engines with the cells
//! `%push` and `%scatter` would run, and reads them back with those of `%pull` and `%gather`.
//! Types cross by name: [`crate::type_names`] spells the caller's type for the engines, and a
//! value read back must have, on every engine, the type the caller asks for.
//!
//! Each data call has a blocking `_sync` form and an asynchronous one that makes the call on a
//! thread over a connection of its own, so the plain cell can go on meanwhile.

use std::any::type_name;
use std::marker::PhantomData;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{ApiError, Connection, DirectView, TaskFailure};
use crate::api_payload::{decode_parts, encode_named, encode_parts, Named};
use crate::api_results::{result_methods, Pending};
use crate::api_wire::{Kind, Request, MAX_REQUEST};

/// Room in a request for its header and framing.
const REQUEST_SLACK: u64 = 1 << 20;

/// The pending values of [`DirectView::apply`]: one per engine of the view, in target order.
pub struct AsyncDirectResult<R> {
    pub(crate) pending: Pending,
    pub(crate) _result: PhantomData<fn() -> R>,
}

result_methods!(AsyncDirectResult, Vec<R>, "direct apply");

impl<R: DeserializeOwned> AsyncDirectResult<R> {
    /// Waits, then each engine's value in target order, or every failing engine's error
    /// ([`ApiError::Tasks`]; the others' values stay available from [`results`](Self::results)).
    pub fn get(&self) -> Result<Vec<R>, ApiError> {
        self.pending.results_labelled::<R>("direct apply")
    }

    /// Waits, then each engine's outcome in target order: its value, or its failure.
    pub fn results(&self) -> Result<Vec<Result<R, TaskFailure>>, ApiError> {
        self.pending.wait_until(None, Kind::Wait, "apply")?;
        let status = self.pending.status(Kind::Wait, "apply", Duration::ZERO)?;
        if let Some(why) = status.failed {
            return Err(ApiError::Kernel(why));
        }
        let mut request = Request::new(Kind::Results);
        request.job = self.pending.job()?;
        let reply = self.pending.connection.call(&request)?;
        let values = crate::decode_results::<R>(&reply.payload, "the kernel's reply")
            .map_err(|e| ApiError::Decode(e.to_string()))?;
        Ok(values
            .into_iter()
            .enumerate()
            .map(|(index, value)| {
                value.map_err(|message| TaskFailure {
                    item: index as u64,
                    engine: reply.ids.get(index).copied().unwrap_or(u32::MAX),
                    message,
                })
            })
            .collect())
    }
}

/// Values for [`DirectView::push_all`], each under its variable name.
#[derive(Default)]
pub struct Vars {
    entries: Vec<Named>,
    bytes: u64,
    error: Option<ApiError>,
}

/// An empty set of values to push: `rustpx::vars().add("a", &a).add("b", &b)`.
pub fn vars() -> Vars {
    Vars::default()
}

impl Vars {
    /// Adds `value` as the engines' variable `name`, of the type `T` spelled on the engines.
    pub fn add<T: Serialize + ?Sized + 'static>(mut self, name: &str, value: &T) -> Vars {
        if self.error.is_some() {
            return self;
        }
        match encode(value) {
            Ok(bytes) => {
                self.bytes += bytes.len() as u64 + name.len() as u64 + 64;
                if self.bytes > MAX_REQUEST - REQUEST_SLACK {
                    self.error = Some(ApiError::Kernel(format!(
                        "push: the values take more than the {} MiB one call carries; push fewer at once, or scatter a large Vec",
                        (MAX_REQUEST - REQUEST_SLACK) >> 20
                    )));
                }
                self.entries
                    .push((name.to_owned(), type_name::<T>().to_owned(), bytes));
            }
            Err(error) => self.error = Some(error),
        }
        self
    }
}

/// The bincode of `value`; vectors and slices of numbers are copied, not walked by serde.
fn encode<T: Serialize + ?Sized + 'static>(value: &T) -> Result<Vec<u8>, ApiError> {
    if let Some((count, memory)) = crate::numbers::as_bytes(value) {
        let mut bytes = Vec::with_capacity(8 + memory.len());
        bytes.extend_from_slice(&(count as u64).to_le_bytes());
        bytes.extend_from_slice(memory);
        return Ok(bytes);
    }
    bincode::serialize(value)
        .map_err(|error| ApiError::Decode(format!("cannot encode a {}: {error}", type_name::<T>())))
}

/// The result of a data call made on a thread of its own (`push`, `pull`, `scatter`, `gather`).
pub struct AsyncData<T> {
    outcome: Mutex<Option<Result<T, ApiError>>>,
    arrives: Mutex<mpsc::Receiver<Result<T, ApiError>>>,
    submitted: Instant,
    finished: Mutex<Option<Instant>>,
}

impl<T: Send + 'static> AsyncData<T> {
    fn spawn(call: impl FnOnce(&Connection) -> Result<T, ApiError> + Send + 'static) -> Self {
        let (send, arrives) = mpsc::channel();
        let started = std::thread::Builder::new()
            .name("rustpx-data".into())
            .spawn(move || {
                let _ = send.send(call(&Connection::new()));
            });
        let outcome = started.err().map(|error| {
            Err(ApiError::Connection(format!(
                "cannot start the call's thread: {error}"
            )))
        });
        AsyncData {
            outcome: Mutex::new(outcome),
            arrives: Mutex::new(arrives),
            submitted: Instant::now(),
            finished: Mutex::new(None),
        }
    }

    /// Whether the call is done; does not wait.
    pub fn ready(&self) -> bool {
        self.wait(Some(Duration::ZERO))
    }

    /// Waits until done or for `timeout` (`None`: no limit); returns [`ready`](Self::ready).
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        if outcome.is_some() {
            return true;
        }
        let arrives = self.arrives.lock().unwrap_or_else(|p| p.into_inner());
        let arrived = match timeout {
            None => arrives.recv().ok(),
            Some(timeout) => match arrives.recv_timeout(timeout) {
                Ok(value) => Some(value),
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            },
        };
        *self.finished.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        *outcome = Some(arrived.unwrap_or_else(|| {
            Err(ApiError::Connection(
                "the call's thread ended without an answer".into(),
            ))
        }));
        true
    }

    /// Time from the call to its answer (to now while it runs).
    pub fn elapsed(&self) -> Duration {
        let finished = *self.finished.lock().unwrap_or_else(|p| p.into_inner());
        finished.unwrap_or_else(Instant::now) - self.submitted
    }

    /// Waits, then the call's value or error.
    pub fn get(self) -> Result<T, ApiError> {
        self.wait(None);
        let outcome = self.outcome.into_inner().unwrap_or_else(|p| p.into_inner());
        outcome.unwrap_or_else(|| Err(ApiError::Connection("no answer".into())))
    }

    /// [`get`](Self::get), or [`ApiError::Timeout`] if not done within `timeout`.
    pub fn get_timeout(self, timeout: Duration) -> Result<T, ApiError> {
        if !self.wait(Some(timeout)) {
            return Err(ApiError::Timeout(timeout));
        }
        self.get()
    }
}

impl<T> std::fmt::Debug for AsyncData<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let done = self.outcome.lock().map(|o| o.is_some()).unwrap_or(true);
        write!(f, "<AsyncData: {}>", if done { "done" } else { "pending" })
    }
}

impl DirectView {
    /// Runs `function(argument)` on every engine of the view (ipyparallel's
    /// `DirectView.apply`); `function` is defined on the engines (a `%%px` cell) and takes an
    /// `A`, returning an `R`. One value per engine, in target order.
    pub fn apply<A, R>(&self, function: &str, argument: A) -> AsyncDirectResult<R>
    where
        A: Serialize + 'static,
        R: DeserializeOwned + 'static,
    {
        let submitted = Instant::now();
        let job = (|| {
            let mut request = Request::new(Kind::DirectApply);
            request.function = function.to_owned();
            request.argument_type = type_name::<A>().to_owned();
            request.result_type = type_name::<R>().to_owned();
            request.targets = self.targets.ids();
            request.payload = crate::encode_chunks(std::slice::from_ref(&argument), 1)
                .map_err(|e| ApiError::Decode(e.to_string()))?;
            Ok(self.connection.call(&request)?.job)
        })();
        AsyncDirectResult {
            pending: Pending {
                connection: self.connection.clone(),
                job,
                submitted,
                last: Mutex::new(None),
            },
            _result: PhantomData,
        }
    }

    /// [`apply`](Self::apply), waiting for every engine's value.
    pub fn apply_sync<A, R>(&self, function: &str, argument: A) -> Result<Vec<R>, ApiError>
    where
        A: Serialize + 'static,
        R: DeserializeOwned + 'static,
    {
        self.apply(function, argument).get()
    }

    /// Makes `value` the variable `name` of type `T` on every engine of the view, as `%push`
    /// does (`%px name` then shows it). `T` must have the same name on the engines: a type a
    /// plain cell defined needs the same definition in a `%%px` cell.
    pub fn push_sync<T: Serialize + ?Sized + 'static>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), ApiError> {
        self.push_all_sync(vars().add(name, value))
    }

    /// [`push_sync`](Self::push_sync) on a thread of its own (the value is encoded at once).
    pub fn push<T: Serialize + ?Sized + 'static>(&self, name: &str, value: &T) -> AsyncData<()> {
        self.push_all(vars().add(name, value))
    }

    /// Pushes several values at once: `view.push_all_sync(rustpx::vars().add("a", &a).add("b", &b))`.
    pub fn push_all_sync(&self, vars: Vars) -> Result<(), ApiError> {
        push_request(&self.connection, self.push_request(vars)?)
    }

    /// [`push_all_sync`](Self::push_all_sync) on a thread of its own.
    pub fn push_all(&self, vars: Vars) -> AsyncData<()> {
        let request = self.push_request(vars);
        AsyncData::spawn(move |connection| push_request(connection, request?))
    }

    fn push_request(&self, vars: Vars) -> Result<Request, ApiError> {
        if let Some(error) = vars.error {
            return Err(error);
        }
        let mut request = Request::new(Kind::Push);
        request.targets = self.targets.ids();
        request.payload = encode_named(&vars.entries);
        Ok(request)
    }

    /// The variable `name` of every engine of the view, in target order, as a `T`; a missing
    /// variable or another type on any engine is an error naming the engine and both types.
    pub fn pull_sync<T: DeserializeOwned + 'static>(&self, name: &str) -> Result<Vec<T>, ApiError> {
        fetch(
            &self.connection,
            self.fetch_request::<T>(Kind::Pull, name),
            name,
        )
    }

    /// [`pull_sync`](Self::pull_sync) on a thread of its own.
    pub fn pull<T: DeserializeOwned + Send + 'static>(&self, name: &str) -> AsyncData<Vec<T>> {
        let (request, name) = (self.fetch_request::<T>(Kind::Pull, name), name.to_owned());
        AsyncData::spawn(move |connection| fetch(connection, request, &name))
    }

    /// The `Vec<T>` named `name` on every engine of the view, concatenated in target order
    /// (the inverse of [`scatter_sync`](Self::scatter_sync)).
    pub fn gather_sync<T: DeserializeOwned + 'static>(
        &self,
        name: &str,
    ) -> Result<Vec<T>, ApiError> {
        let parts: Vec<Vec<T>> = fetch(
            &self.connection,
            self.fetch_request::<T>(Kind::Gather, name),
            name,
        )?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// [`gather_sync`](Self::gather_sync) on a thread of its own.
    pub fn gather<T: DeserializeOwned + Send + 'static>(&self, name: &str) -> AsyncData<Vec<T>> {
        let (request, name) = (self.fetch_request::<T>(Kind::Gather, name), name.to_owned());
        AsyncData::spawn(move |connection| {
            let parts: Vec<Vec<T>> = fetch(connection, request, &name)?;
            Ok(parts.into_iter().flatten().collect())
        })
    }

    fn fetch_request<T: 'static>(&self, kind: Kind, name: &str) -> Request {
        let mut request = Request::new(kind);
        request.function = name.to_owned();
        request.result_type = type_name::<T>().to_owned();
        request.targets = self.targets.ids();
        request
    }

    /// Splits `items` into one contiguous part per engine of the view (sizes within one, the
    /// first engines taking the remainder, as `%scatter`), each engine's part becoming its
    /// `Vec<T>` named `name`.
    pub fn scatter_sync<T: Serialize + 'static>(
        &self,
        name: &str,
        items: &[T],
    ) -> Result<(), ApiError> {
        push_request(&self.connection, self.scatter_request(name, items)?)
    }

    /// [`scatter_sync`](Self::scatter_sync) on a thread of its own (the parts are encoded at once).
    pub fn scatter<T: Serialize + 'static>(&self, name: &str, items: &[T]) -> AsyncData<()> {
        let request = self.scatter_request(name, items);
        AsyncData::spawn(move |connection| push_request(connection, request?))
    }

    fn scatter_request<T: Serialize + 'static>(
        &self,
        name: &str,
        items: &[T],
    ) -> Result<Request, ApiError> {
        let engines = self.ids()?;
        let mut parts = Vec::with_capacity(engines.len());
        let mut total = 0u64;
        for range in crate::chunk_ranges(items.len(), engines.len()) {
            let part = encode(&items[range])?;
            total += part.len() as u64 + 8;
            if total > MAX_REQUEST - REQUEST_SLACK {
                return Err(ApiError::Kernel(format!(
                    "scatter {name}: the items take more than the {} MiB one call carries; scatter them in several calls",
                    (MAX_REQUEST - REQUEST_SLACK) >> 20
                )));
            }
            parts.push(part);
        }
        let mut request = Request::new(Kind::Scatter);
        request.function = name.to_owned();
        request.argument_type = type_name::<T>().to_owned();
        request.targets = Some(engines);
        request.payload = encode_parts(&parts);
        Ok(request)
    }
}

fn push_request(connection: &Connection, request: Request) -> Result<(), ApiError> {
    connection.call(&request).map(drop)
}

/// Sends a Pull or Gather and decodes each engine's value as a `V`.
fn fetch<V: DeserializeOwned + 'static>(
    connection: &Connection,
    request: Request,
    name: &str,
) -> Result<Vec<V>, ApiError> {
    let reply = connection.call(&request)?;
    let parts = decode_parts(&reply.payload).map_err(ApiError::Decode)?;
    parts
        .into_iter()
        .enumerate()
        .map(|(index, bytes)| {
            let decoded = match crate::numbers::from_bytes::<V>(bytes) {
                Some(numbers) => numbers,
                None => bincode::deserialize(bytes).map_err(|error| error.to_string()),
            };
            decoded.map_err(|error| {
                let engine = reply.ids.get(index).copied().unwrap_or(u32::MAX);
                ApiError::Decode(format!(
                    "{name} from engine {engine} is not a {} ({error})",
                    type_name::<V>()
                ))
            })
        })
        .collect()
}
