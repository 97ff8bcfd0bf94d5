//! The pending results of the Rust API's calls ([`crate::api`]): typed `AsyncResult` and
//! `AsyncMapResult` of `apply` and `map`, and `AsyncExecute` of a cell run on engines. Each holds
//! its call's id in the kernel and asks the kernel for its state; nothing is decoded until
//! `get`, and then only as the type the call named (the kernel checked it against the engines').

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::api::{ApiError, Connection, TaskFailure};
use crate::api_wire::{Kind, Reply, Request};

/// What both kinds of result share: the submission and its last known state.
pub(crate) struct Pending {
    pub(crate) connection: Arc<Connection>,
    pub(crate) job: Result<u64, ApiError>,
    pub(crate) submitted: Instant,
    /// The reply once the submission was seen ready (it changes no more).
    pub(crate) last: Mutex<Option<Reply>>,
}

/// How long one `Wait` request may hold the kernel; longer waits repeat it.
const WAIT_SLICE: Duration = Duration::from_millis(500);

impl Pending {
    pub(crate) fn job(&self) -> Result<u64, ApiError> {
        match &self.job {
            Ok(job) => Ok(*job),
            Err(ApiError::Kernel(why)) => Err(ApiError::Kernel(why.clone())),
            Err(error) => Err(ApiError::Connection(error.to_string())),
        }
    }

    /// The call's state: at once (`Status`), or once ready or after `wait` (`Wait`, or
    /// `WaitInteractive`, which draws the progress of `what`, i.e. `apply`, `map` or `execute`).
    pub(crate) fn status(&self, kind: Kind, what: &str, wait: Duration) -> Result<Reply, ApiError> {
        if let Some(reply) = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            if kind != Kind::WaitInteractive {
                return Ok(reply);
            }
        }
        let mut request = Request::new(kind);
        request.job = self.job()?;
        request.wait_millis = wait.as_millis() as u64;
        request.function = what.to_owned();
        let reply = self.connection.call(&request)?;
        if reply.ready {
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(reply.clone());
        }
        Ok(reply)
    }

    pub(crate) fn ready(&self) -> bool {
        self.status(Kind::Status, "", Duration::ZERO)
            .map(|reply| reply.ready)
            .unwrap_or(true)
    }

    /// Waits until ready or `timeout`: whether it is ready; an interrupt of the cell is an
    /// error (any other failure shows at `get`, so it counts as ready here).
    pub(crate) fn wait_until(
        &self,
        timeout: Option<Duration>,
        kind: Kind,
        what: &str,
    ) -> Result<bool, ApiError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map_or(WAIT_SLICE, |d| d.saturating_duration_since(Instant::now()));
            match self.status(kind, what, left.min(WAIT_SLICE)) {
                Ok(reply) if reply.ready => return Ok(true),
                Ok(_) if left.is_zero() => return Ok(false),
                Ok(_) => {}
                Err(error @ ApiError::Interrupted(_)) => return Err(error),
                Err(_) => return Ok(true),
            }
        }
    }

    pub(crate) fn wait(&self, timeout: Option<Duration>) -> bool {
        self.wait_until(timeout, Kind::Wait, "").unwrap_or(false)
    }

    /// Waits, then the results' bytes, or why the call failed (`what`: `apply` or `execute`,
    /// for the failures' labels).
    fn result_bytes(&self, what: &'static str) -> Result<Vec<u8>, ApiError> {
        self.wait_until(None, Kind::Wait, what)?;
        let status = self.status(Kind::Wait, what, Duration::ZERO)?;
        if let Some(why) = status.failed {
            return Err(ApiError::Kernel(why));
        }
        if !status.failures.is_empty() {
            return Err(ApiError::Tasks {
                failures: status
                    .failures
                    .into_iter()
                    .map(|(item, engine, message)| TaskFailure {
                        item,
                        engine,
                        message,
                    })
                    .collect(),
                total: status.total_items,
                what,
            });
        }
        let mut request = Request::new(Kind::Results);
        request.job = self.job()?;
        Ok(self.connection.call(&request)?.payload)
    }

    fn results<R: DeserializeOwned>(&self) -> Result<Vec<R>, ApiError> {
        self.results_labelled("apply")
    }

    /// The values, or the failures labelled as `what` (see [`ApiError::Tasks`]).
    pub(crate) fn results_labelled<R: DeserializeOwned>(
        &self,
        what: &'static str,
    ) -> Result<Vec<R>, ApiError> {
        let payload = self.result_bytes(what)?;
        let expected = self.last_total_items();
        crate::values::decode_values::<R>(&payload, expected).map_err(|error| match error {
            crate::values::ValuesError::Failed(message) => ApiError::Kernel(message),
            other => ApiError::Decode(format!("the kernel's reply: {other}")),
        })
    }

    /// The call's item count, once it was seen ready (0 before).
    fn last_total_items(&self) -> usize {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |reply| reply.total_items as usize)
    }

    pub(crate) fn done_items(&self) -> u64 {
        self.status(Kind::Status, "", Duration::ZERO)
            .map(|reply| reply.done_items)
            .unwrap_or(0)
    }

    pub(crate) fn elapsed(&self) -> Duration {
        match self.last.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(reply) => Duration::from_secs_f64(reply.elapsed.max(0.0)),
            None => self.submitted.elapsed(),
        }
    }

    pub(crate) fn serial_time(&self) -> Duration {
        self.status(Kind::Status, "", Duration::ZERO)
            .map(|reply| Duration::from_secs_f64(reply.serial.max(0.0)))
            .unwrap_or_default()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Ok(job) = self.job {
            let mut request = Request::new(Kind::Forget);
            request.job = job;
            let _ = self.connection.call(&request);
        }
    }
}

/// The pending result of [`LoadBalancedView::apply`].
pub struct AsyncResult<R> {
    pub(crate) pending: Pending,
    pub(crate) _result: PhantomData<fn() -> R>,
}

/// The pending results of [`LoadBalancedView::map`], in input order.
pub struct AsyncMapResult<R> {
    pub(crate) pending: Pending,
    pub(crate) _result: PhantomData<fn() -> R>,
}

macro_rules! result_methods {
    ($name:ident, $value:ty, $unit:literal) => {
        impl<R: DeserializeOwned> $name<R> {
            /// Waits until ready, drawing a live progress bar under the cell (ipyparallel's
            /// `wait_interactive`); `false` if the cell was interrupted first.
            pub fn wait_interactive(&self) -> bool {
                self.pending
                    .wait_until(None, Kind::WaitInteractive, $unit)
                    .unwrap_or(false)
            }

            /// Whether the result is in (or the call failed); does not wait.
            pub fn ready(&self) -> bool {
                self.pending.ready()
            }

            /// Waits until ready or for `timeout` (`None`: no limit); returns [`ready`](Self::ready).
            pub fn wait(&self, timeout: Option<Duration>) -> bool {
                self.pending.wait(timeout)
            }

            /// How many items are done so far.
            pub fn progress(&self) -> u64 {
                self.pending.done_items()
            }

            /// Time from submission to completion (to now while it runs).
            pub fn elapsed(&self) -> Duration {
                self.pending.elapsed()
            }

            /// Time the engines spent on it, summed (ipyparallel's `serial_time`).
            pub fn serial_time(&self) -> Duration {
                self.pending.serial_time()
            }

            /// [`get`](Self::get), or [`ApiError::Timeout`] if not ready within `timeout`.
            pub fn get_timeout(&self, timeout: Duration) -> Result<$value, ApiError> {
                if !self.wait(Some(timeout)) {
                    return Err(ApiError::Timeout(timeout));
                }
                self.get()
            }
        }

        impl<R> std::fmt::Debug for $name<R> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match &self.pending.job {
                    Ok(job) => write!(f, "<{}({}): job {job}>", stringify!($name), $unit),
                    Err(error) => write!(f, "<{}: failed: {error}>", stringify!($name)),
                }
            }
        }
    };
}

pub(crate) use result_methods;

result_methods!(AsyncResult, R, "apply");
result_methods!(AsyncMapResult, Vec<R>, "map");

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Waits, then the value, or the engine's error.
    pub fn get(&self) -> Result<R, ApiError> {
        let mut values = self.pending.results::<R>()?;
        values
            .pop()
            .ok_or_else(|| ApiError::Kernel("the task returned no value".into()))
    }
}

impl<R: DeserializeOwned> AsyncMapResult<R> {
    /// Waits, then every value in input order, or each failed item's error.
    pub fn get(&self) -> Result<Vec<R>, ApiError> {
        self.pending.results::<R>()
    }
}

/// What one engine did with a cell run by [`DirectView::execute`](crate::DirectView::execute).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOutput {
    pub engine: u32,
    pub stdout: String,
    pub stderr: String,
    /// The cell's value as text, when it ends with an expression.
    pub value: Option<String>,
    /// The engine's error, when it failed (`get` then returns them all instead).
    pub error: Option<String>,
}

/// The pending outcome of [`DirectView::execute`](crate::DirectView::execute): per engine, its
/// output, value or error (ipyparallel's `AsyncResult` of `execute`).
pub struct AsyncExecute {
    pub(crate) pending: Pending,
}

impl AsyncExecute {
    /// Whether every engine is done; does not wait.
    pub fn ready(&self) -> bool {
        self.pending.ready()
    }

    /// Waits until ready or for `timeout` (`None`: no limit); returns [`ready`](Self::ready).
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        self.pending.wait(timeout)
    }

    /// Waits until every engine is done, drawing a live progress bar under the cell;
    /// `false` if the cell was interrupted first.
    pub fn wait_interactive(&self) -> bool {
        self.pending
            .wait_until(None, Kind::WaitInteractive, "execute")
            .unwrap_or(false)
    }

    /// How many engines are done so far.
    pub fn progress(&self) -> u64 {
        self.pending.done_items()
    }

    /// Time from submission to completion (to now while it runs).
    pub fn elapsed(&self) -> Duration {
        self.pending.elapsed()
    }

    /// The engines' run times, summed.
    pub fn serial_time(&self) -> Duration {
        self.pending.serial_time()
    }

    /// Waits, then each engine's output in target order; if any engine failed, every failing
    /// engine's error (the others' output is in [`outputs`](Self::outputs)).
    pub fn get(&self) -> Result<Vec<EngineOutput>, ApiError> {
        self.pending.result_bytes("execute")?;
        self.outputs()
    }

    /// Waits, then each engine's output, value and error, failed or not.
    pub fn outputs(&self) -> Result<Vec<EngineOutput>, ApiError> {
        self.pending.wait_until(None, Kind::Wait, "execute")?;
        let mut request = Request::new(Kind::Results);
        request.job = self.pending.job()?;
        let payload = self.pending.connection.call(&request)?.payload;
        let outputs = crate::api_wire::decode_outputs(&payload).map_err(ApiError::Decode)?;
        Ok(outputs
            .into_iter()
            .map(|(engine, stdout, stderr, value, error)| EngineOutput {
                engine,
                stdout,
                stderr,
                value,
                error,
            })
            .collect())
    }

    /// Prints each engine's output as `%px` shows it: `[stdout:N]`, `[stderr:N]`, `Out[N]`,
    /// `[N:execute]` for an error.
    pub fn display_outputs(&self) -> Result<(), ApiError> {
        for output in self.outputs()? {
            let n = output.engine;
            if !output.stdout.is_empty() {
                print!("[stdout:{n}] {}", output.stdout);
                if !output.stdout.ends_with('\n') {
                    println!();
                }
            }
            if !output.stderr.is_empty() {
                eprint!("[stderr:{n}] {}", output.stderr);
                if !output.stderr.ends_with('\n') {
                    eprintln!();
                }
            }
            if let Some(value) = &output.value {
                println!("Out[{n}]: {value}");
            }
            if let Some(error) = &output.error {
                eprintln!("[{n}:execute] {error}");
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for AsyncExecute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pending.job {
            Ok(job) => write!(f, "<AsyncExecute: job {job}>"),
            Err(error) => write!(f, "<AsyncExecute: failed: {error}>"),
        }
    }
}
