//! The task interface of the load-balanced view, as ipyparallel's: retries of failed tasks,
//! time (`after`) and location (`follow`) dependencies on earlier results, a timeout for
//! dependencies that are not met, unordered maps; and on the results, `abort`, per-task
//! `metadata`, `wall_time` and iteration over results as they complete.
//!
//! A task is one chunk of a call (one item for `apply`). The kernel's scheduler holds the rules
//! (`kernel/src/px/api/tasks.rs`); this side builds the options, sends them with the call, and
//! reads what the kernel reports. The payloads of the task requests are encoded here, once, for
//! both ends.

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;

use crate::api::{ApiError, LoadBalancedView, TaskFailure};
use crate::api_results::{AsyncMapResult, AsyncResult, Pending};
use crate::api_wire::{Kind, Request};

/// Dependencies (`after` and `follow` together) one call may name.
pub const MAX_DEPENDENCIES: usize = 256;
/// Retries one task may ask for.
pub const MAX_RETRIES: u32 = 100;
/// The engine of a task that never ran on one (aborted, or its call failed before it started).
pub const NO_ENGINE: u32 = u32::MAX;

/// How a load-balanced call's tasks are run (the builder methods of [`LoadBalancedView`] set
/// them).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    /// Times a failed task is run again (preferably on another engine).
    pub retries: u32,
    /// Calls that must be done before this one starts.
    pub after: Vec<u64>,
    /// Calls that must be done, and whose engines run this one.
    pub follow: Vec<u64>,
    /// How long the call may wait for its dependencies; then it fails with `TaskTimeout`.
    pub timeout: Option<Duration>,
    /// Whether a dependency counts as met only when it succeeded (the default).
    pub success_only: bool,
    /// Results in input order (the default) or as they complete.
    pub ordered: bool,
}

impl Default for TaskOptions {
    fn default() -> TaskOptions {
        TaskOptions {
            retries: 0,
            after: Vec::new(),
            follow: Vec::new(),
            timeout: None,
            success_only: true,
            ordered: true,
        }
    }
}

/// [`TaskOptions`] on the wire: (retries, after, follow, timeout in ms, success_only, ordered).
pub type TaskOptionsWire = (u32, Vec<u64>, Vec<u64>, Option<u64>, bool, bool);

impl TaskOptions {
    pub fn to_wire(&self) -> TaskOptionsWire {
        (
            self.retries,
            self.after.clone(),
            self.follow.clone(),
            self.timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            self.success_only,
            self.ordered,
        )
    }

    pub fn from_wire(
        (retries, after, follow, timeout, success_only, ordered): TaskOptionsWire,
    ) -> TaskOptions {
        TaskOptions {
            retries,
            after,
            follow,
            timeout: timeout.map(Duration::from_millis),
            success_only,
            ordered,
        }
    }

    /// Whether the call waits for other calls.
    pub fn has_dependencies(&self) -> bool {
        !self.after.is_empty() || !self.follow.is_empty()
    }

    /// Checks the bounds; the error says which and how to fix it.
    pub fn check(&self) -> Result<(), String> {
        let count = self.after.len() + self.follow.len();
        if count > MAX_DEPENDENCIES {
            return Err(format!(
                "{count} dependencies: a call may depend on at most {MAX_DEPENDENCIES} others; chain them through fewer calls"
            ));
        }
        if self.retries > MAX_RETRIES {
            return Err(format!(
                "retries({}): at most {MAX_RETRIES} retries per task",
                self.retries
            ));
        }
        Ok(())
    }
}

/// The view's task options, and the first problem met while building them (reported by the
/// call, since builder methods return the view).
#[derive(Debug, Clone, Default)]
pub(crate) struct ViewTasks {
    pub(crate) options: TaskOptions,
    pub(crate) error: Option<String>,
}

/// A result a later call can depend on (`after`, `follow`): its call's id in the kernel.
pub trait Dependency {
    /// The call's id, or why it has none (it was never submitted).
    fn task_id(&self) -> Result<u64, String>;
}

impl<R> Dependency for AsyncResult<R> {
    fn task_id(&self) -> Result<u64, String> {
        self.pending.job().map_err(|e| e.to_string())
    }
}

impl<R> Dependency for AsyncMapResult<R> {
    fn task_id(&self) -> Result<u64, String> {
        self.pending.job().map_err(|e| e.to_string())
    }
}

impl LoadBalancedView {
    fn with_tasks(mut self, change: impl FnOnce(&mut ViewTasks)) -> LoadBalancedView {
        change(&mut self.tasks);
        self
    }

    /// A task that fails (panics) is run again, up to `n` more times, on another engine when
    /// the view has one; only its last failure is reported.
    pub fn retries(self, n: u32) -> LoadBalancedView {
        self.with_tasks(|t| t.options.retries = n)
    }

    /// Calls made through this view start only once every one of `dependencies` is done (and,
    /// by default, succeeded: see [`success_only`](Self::success_only)).
    pub fn after(self, dependencies: &[&dyn Dependency]) -> LoadBalancedView {
        self.with_tasks(|t| add_dependencies(t, dependencies, false))
    }

    /// Calls made through this view run on the engine(s) that ran `dependencies`, once those are
    /// done.
    pub fn follow(self, dependencies: &[&dyn Dependency]) -> LoadBalancedView {
        self.with_tasks(|t| add_dependencies(t, dependencies, true))
    }

    /// How long a call may wait for its dependencies; then it fails with `TaskTimeout`.
    pub fn timeout(self, timeout: Duration) -> LoadBalancedView {
        self.with_tasks(|t| t.options.timeout = Some(timeout))
    }

    /// `false`: a dependency is met when it is done, failed or not (default `true`: a failed
    /// dependency fails the call with `ImpossibleDependency`).
    pub fn success_only(self, success_only: bool) -> LoadBalancedView {
        self.with_tasks(|t| t.options.success_only = success_only)
    }

    /// `false`: `map`'s results come in the order the tasks complete, in `get` and `iter`.
    pub fn ordered(self, ordered: bool) -> LoadBalancedView {
        self.with_tasks(|t| t.options.ordered = ordered)
    }

    /// [`map`](Self::map) with its results in the order the tasks complete.
    pub fn map_unordered<A, R>(&self, function: &str, items: &[A]) -> AsyncMapResult<R>
    where
        A: serde::Serialize + 'static,
        R: DeserializeOwned + 'static,
    {
        self.clone().ordered(false).map(function, items)
    }
}

fn add_dependencies(tasks: &mut ViewTasks, dependencies: &[&dyn Dependency], follow: bool) {
    for dependency in dependencies {
        match dependency.task_id() {
            Ok(id) if follow => tasks.options.follow.push(id),
            Ok(id) => tasks.options.after.push(id),
            Err(why) => {
                tasks.error.get_or_insert_with(|| {
                    format!("ImpossibleDependency: a dependency was never submitted ({why})")
                });
            }
        }
    }
}

/// What the kernel knows of one task (one chunk of a call).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMetadata {
    /// The index of the task's first item in the call, and how many items it holds.
    pub first_item: u64,
    pub items: u64,
    /// The engine that ran it last (`None`: it never ran).
    pub engine: Option<u32>,
    pub submitted: SystemTime,
    /// When its engine began it (`None` until it completes).
    pub started: Option<SystemTime>,
    pub completed: Option<SystemTime>,
    /// Runs so far (more than 1 after retries).
    pub attempts: u32,
    /// Its (last) error, if it failed.
    pub error: Option<String>,
    /// What its last run printed to stdout and stderr, each cut at
    /// [`MAX_TASK_OUTPUT`](crate::MAX_TASK_OUTPUT) bytes with a note. Text a function printed
    /// with `print!` and no newline may appear with a later task of the same engine.
    pub stdout: String,
    pub stderr: String,
}

/// One task's metadata on the wire: (first item, items, engine, submitted, started, completed,
/// attempts, error, stdout, stderr), times as seconds since the Unix epoch.
pub type MetadataWire = (
    u64,
    u64,
    Option<u32>,
    f64,
    Option<f64>,
    Option<f64>,
    u32,
    Option<String>,
    String,
    String,
);

/// The payload of a Metadata reply.
pub fn encode_metadata(tasks: &[MetadataWire]) -> Vec<u8> {
    bincode::serialize(tasks).unwrap_or_default()
}

fn decode_metadata(payload: &[u8]) -> Result<Vec<TaskMetadata>, ApiError> {
    let time = |seconds: f64| UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0));
    let wire: Vec<MetadataWire> = bincode::deserialize(payload)
        .map_err(|e| ApiError::Decode(format!("malformed task metadata: {e}")))?;
    Ok(wire
        .into_iter()
        .map(
            |(
                first_item,
                items,
                engine,
                submitted,
                started,
                completed,
                attempts,
                error,
                stdout,
                stderr,
            )| {
                TaskMetadata {
                    first_item,
                    items,
                    engine,
                    submitted: time(submitted),
                    started: started.map(time),
                    completed: completed.map(time),
                    attempts,
                    error,
                    stdout,
                    stderr,
                }
            },
        )
        .collect())
}

/// A Partial reply's payload: (ordered, the cursor after these tasks, the call's task count,
/// the tasks completed since the cursor asked for: first item, engine, the bincode of their
/// `Vec<Result<R, String>>`).
pub type PartialWire = (bool, u64, u64, Vec<(u64, u32, Vec<u8>)>);

pub fn encode_partial(partial: &PartialWire) -> Vec<u8> {
    bincode::serialize(partial).unwrap_or_default()
}

/// The results of `items` tasks that never ran, each failing with `message`, as an engine
/// writes a chunk's results (the kernel does not know the result type; an error has none).
pub fn encode_errors(items: u64, message: &str) -> Vec<u8> {
    let errors: Vec<Result<(), &str>> = (0..items).map(|_| Err(message)).collect();
    bincode::serialize(&errors).unwrap_or_default()
}

/// Results as they complete, from [`iter`](AsyncMapResult::iter).
pub struct TaskIter<'a, R> {
    pending: &'a Pending,
    cursor: u64,
    /// Ordered: completed tasks waiting for the ones before them, by first item.
    held: BTreeMap<u64, (u32, Vec<u8>)>,
    next_item: u64,
    ready: VecDeque<Result<R, TaskFailure>>,
    finished: bool,
    _result: PhantomData<fn() -> R>,
}

/// How long one Partial request may wait for a task to complete (the kernel caps it).
const PARTIAL_WAIT: Duration = Duration::from_millis(500);

impl<R: DeserializeOwned> TaskIter<'_, R> {
    fn push_task(&mut self, first_item: u64, engine: u32, bytes: &[u8]) {
        match crate::decode_results::<R>(&with_length(bytes), "the kernel's reply") {
            Ok(values) => {
                for (offset, value) in values.into_iter().enumerate() {
                    let item = first_item + offset as u64;
                    self.ready.push_back(value.map_err(|message| TaskFailure {
                        item,
                        engine,
                        message,
                    }));
                }
            }
            Err(error) => self.ready.push_back(Err(TaskFailure {
                item: first_item,
                engine,
                message: error.to_string(),
            })),
        }
    }

    /// Asks the kernel for tasks completed since the cursor (waiting a little for one).
    fn fetch(&mut self) {
        let batch = match fetch_partial(self.pending, self.cursor, PARTIAL_WAIT) {
            Ok(batch) => batch,
            Err(error) => {
                self.finished = true;
                self.ready.push_back(Err(TaskFailure {
                    item: self.next_item,
                    engine: NO_ENGINE,
                    message: error.to_string(),
                }));
                return;
            }
        };
        if let Some(why) = batch.failed {
            self.finished = true;
            for item in self.next_item..batch.total_items.max(self.next_item + 1) {
                self.ready.push_back(Err(TaskFailure {
                    item,
                    engine: NO_ENGINE,
                    message: why.clone(),
                }));
            }
            return;
        }
        self.cursor = batch.cursor;
        for (first_item, engine, bytes) in batch.tasks {
            if batch.ordered {
                self.held.insert(first_item, (engine, bytes));
            } else {
                self.push_task(first_item, engine, &bytes);
            }
        }
        while let Some((engine, bytes)) = self.held.remove(&self.next_item) {
            let before = self.ready.len();
            let first = self.next_item;
            self.push_task(first, engine, &bytes);
            self.next_item += (self.ready.len() - before).max(1) as u64;
        }
        if batch.ready && batch.cursor >= batch.total_tasks {
            self.finished = true;
            // Ordered: anything still held (a gap cannot happen) goes out in order.
            let rest = std::mem::take(&mut self.held);
            for (first_item, (engine, bytes)) in rest {
                self.push_task(first_item, engine, &bytes);
            }
        }
    }
}

impl<R: DeserializeOwned> Iterator for TaskIter<'_, R> {
    type Item = Result<R, TaskFailure>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.finished {
                return None;
            }
            self.fetch();
        }
    }
}

/// A chunk's results with the length prefix `decode_results` reads.
fn with_length(bytes: &[u8]) -> Vec<u8> {
    let mut framed = (bytes.len() as u64).to_le_bytes().to_vec();
    framed.extend_from_slice(bytes);
    framed
}

struct PartialBatch {
    ordered: bool,
    cursor: u64,
    tasks: Vec<(u64, u32, Vec<u8>)>,
    ready: bool,
    total_tasks: u64,
    total_items: u64,
    failed: Option<String>,
}

fn fetch_partial(pending: &Pending, cursor: u64, wait: Duration) -> Result<PartialBatch, ApiError> {
    let mut request = Request::new(Kind::Partial);
    request.job = pending.job()?;
    request.wait_millis = wait.as_millis() as u64;
    request.payload = cursor.to_le_bytes().to_vec();
    let reply = pending.connection.call(&request)?;
    if let Some(why) = reply.failed {
        return Ok(PartialBatch {
            ordered: true,
            cursor,
            tasks: Vec::new(),
            ready: true,
            total_tasks: 0,
            total_items: reply.total_items,
            failed: Some(why),
        });
    }
    let (ordered, next, total_tasks, tasks): PartialWire = bincode::deserialize(&reply.payload)
        .map_err(|e| ApiError::Decode(format!("malformed partial results: {e}")))?;
    Ok(PartialBatch {
        ordered,
        cursor: next,
        tasks,
        ready: reply.ready,
        total_tasks,
        total_items: reply.total_items,
        failed: None,
    })
}

fn simple(pending: &Pending, kind: Kind) -> Result<crate::api_wire::Reply, ApiError> {
    let mut request = Request::new(kind);
    request.job = pending.job()?;
    pending.connection.call(&request)
}

macro_rules! task_methods {
    ($name:ident) => {
        impl<R: DeserializeOwned> $name<R> {
            /// Tasks not yet started never start (`get` reports them as `TaskAborted`); tasks
            /// running or done keep their values ([`results`](Self::results)).
            pub fn abort(&self) -> Result<(), ApiError> {
                simple(&self.pending, Kind::Abort).map(|_| ())
            }

            /// Each task's engine, times, attempts and error, as the kernel knows them now.
            pub fn metadata(&self) -> Result<Vec<TaskMetadata>, ApiError> {
                decode_metadata(&simple(&self.pending, Kind::Metadata)?.payload)
            }

            /// From submission to the last task's completion (to now while tasks run).
            pub fn wall_time(&self) -> Duration {
                let Ok(tasks) = self.metadata() else {
                    return Duration::ZERO;
                };
                let Some(submitted) = tasks.iter().map(|t| t.submitted).min() else {
                    return Duration::ZERO;
                };
                let end = if tasks.iter().all(|t| t.completed.is_some()) {
                    tasks.iter().filter_map(|t| t.completed).max()
                } else {
                    None
                };
                end.unwrap_or_else(SystemTime::now)
                    .duration_since(submitted)
                    .unwrap_or_default()
            }

            /// Each item's value or failure as its task completes: in input order for an
            /// ordered call (an item waits for the ones before it), else as they come.
            pub fn iter(&self) -> TaskIter<'_, R> {
                TaskIter {
                    pending: &self.pending,
                    cursor: 0,
                    held: BTreeMap::new(),
                    next_item: 0,
                    ready: VecDeque::new(),
                    finished: false,
                    _result: PhantomData,
                }
            }

            /// Waits, then every item's value or failure (aborted and failed items are errors,
            /// the others keep their values), in the order of [`iter`](Self::iter).
            pub fn results(&self) -> Result<Vec<Result<R, TaskFailure>>, ApiError> {
                let first = fetch_partial(&self.pending, 0, Duration::ZERO)?;
                if let Some(why) = first.failed {
                    return Err(ApiError::Kernel(why));
                }
                Ok(self.iter().collect())
            }
        }
    };
}

task_methods!(AsyncResult);
task_methods!(AsyncMapResult);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_bounds_name_the_fix() {
        let options = TaskOptions {
            retries: 3,
            after: vec![1, 2],
            follow: vec![4],
            timeout: Some(Duration::from_millis(1500)),
            success_only: false,
            ordered: false,
        };
        assert_eq!(TaskOptions::from_wire(options.to_wire()), options);
        assert!(options.check().is_ok());
        let many = TaskOptions {
            after: (0..300).collect(),
            ..TaskOptions::default()
        };
        assert!(many.check().unwrap_err().contains("at most 256"));
        let retries = TaskOptions {
            retries: 1000,
            ..TaskOptions::default()
        };
        assert!(retries.check().unwrap_err().contains("at most 100 retries"));
    }

    #[test]
    fn errors_written_by_the_kernel_decode_as_any_result_type() {
        let bytes = encode_errors(3, "TaskAborted: no");
        let decoded = crate::decode_results::<Vec<String>>(&with_length(&bytes), "test").unwrap();
        assert_eq!(decoded, vec![Err("TaskAborted: no".to_string()); 3]);
    }
}
