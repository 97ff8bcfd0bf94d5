//! The task rules of the Rust API's load-balanced view (ipyparallel's task interface), on top
//! of the scheduler's [`Book`]: retries of failed tasks, preferably on another engine; time
//! (`after`) and location (`follow`) dependencies on earlier calls; a timeout for dependencies
//! not met; abort; each task's metadata; results in completion order.
//!
//! A task is one chunk of a call. A call that names dependencies waits (its chunks hand out to
//! no engine, and its engines do not stay for it) until every dependency is done; then it is
//! resolved, or it fails with `ImpossibleDependency` (a dependency failed, is gone, or no engine
//! ran all it follows) or `TaskTimeout`. Dependencies can only name earlier calls, so they form
//! no cycle; a call waits only for calls that end (done, failed, or failed when their engines
//! died), and the timeout bounds even that. Pure bookkeeping: no I/O, tested alone.

use std::collections::BTreeSet;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rustpx_client::api_tasks::{
    encode_errors, encode_partial, MetadataWire, PartialWire, TaskOptions, NO_ENGINE,
};
use rustpx_client::api_wire::EXECUTION_IDS;
use rustpx_protocol::EngineId;

use super::book::{Book, Submission};

/// Calls waiting for their dependencies at once; beyond it a call with dependencies is refused.
pub const MAX_WAITING: usize = 1024;
/// How long a retried task waits for an engine that has not tried it, when none serves its
/// function now, before the engine that failed it may run it again.
const OTHER_ENGINE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// The most bytes of results one Partial reply carries (at least one task's, whatever its size).
const MAX_PARTIAL_BYTES: usize = 64 << 20;
/// The most task output (stdout and stderr) one call keeps for its metadata; the engines bound
/// each task's, this bounds a call of thousands of tasks.
const MAX_CALL_OUTPUT: usize = 16 << 20;

fn epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// One task's history.
#[derive(Debug, Default, Clone)]
struct ChunkState {
    /// Failed runs put back in the queue.
    retried: u32,
    /// Runs that ended on an engine (failed or not).
    runs: u32,
    /// Engines whose run failed.
    tried: Vec<EngineId>,
    requeued: Option<Instant>,
    engine: Option<EngineId>,
    started: Option<f64>,
    completed: Option<f64>,
    error: Option<String>,
    /// What its last run printed.
    stdout: String,
    stderr: String,
}

/// The task side of one call.
#[derive(Debug)]
pub struct TaskState {
    pub options: TaskOptions,
    /// Its dependencies are met (always, for a call without any): its chunks may go out.
    pub resolved: bool,
    /// Its serving cell waits for the dependencies (the session sends it once resolved).
    pub deferred: bool,
    /// Aborted: chunks that come back from a dead engine are aborted too, not run.
    pub aborted: bool,
    chunks: Vec<ChunkState>,
    /// Chunk indices in the order they completed.
    pub completion_order: Vec<usize>,
    submitted: f64,
    /// The dependency it was last seen waiting for: looked at again once that one is ready.
    blocked_on: Option<u64>,
    /// Bytes of task output kept so far (bounded by [`MAX_CALL_OUTPUT`]).
    output_bytes: usize,
}

impl Default for TaskState {
    fn default() -> TaskState {
        TaskState::new(TaskOptions::default())
    }
}

impl TaskState {
    pub fn new(options: TaskOptions) -> TaskState {
        TaskState {
            resolved: !options.has_dependencies(),
            deferred: false,
            aborted: false,
            options,
            chunks: Vec::new(),
            completion_order: Vec::new(),
            submitted: epoch_seconds(),
            blocked_on: None,
            output_bytes: 0,
        }
    }

    fn chunk_mut(&mut self, chunk: usize) -> &mut ChunkState {
        if self.chunks.len() <= chunk {
            self.chunks.resize(chunk + 1, ChunkState::default());
        }
        &mut self.chunks[chunk]
    }

    /// Whether `engine` may take queued chunk `chunk` now: not if its run there failed while
    /// an engine of the call that has not tried it serves the function, or may still come.
    pub fn may_take(
        &self,
        chunk: usize,
        engine: EngineId,
        engines: &[EngineId],
        serving: &[EngineId],
    ) -> bool {
        let Some(state) = self.chunks.get(chunk) else {
            return true;
        };
        if !state.tried.contains(&engine) {
            return true;
        }
        let untried: Vec<EngineId> = engines
            .iter()
            .filter(|e| !state.tried.contains(e))
            .copied()
            .collect();
        if untried.is_empty() {
            return true;
        }
        if untried.iter().any(|e| serving.contains(e)) {
            return false;
        }
        state
            .requeued
            .is_none_or(|at| at.elapsed() >= OTHER_ENGINE_GRACE)
    }

    /// A run of `chunk` on `engine` failed with `message`: true if it goes back to the queue.
    pub fn retry(&mut self, chunk: usize, engine: EngineId, message: &str) -> bool {
        let retries = self.options.retries;
        if self.aborted {
            return false;
        }
        let state = self.chunk_mut(chunk);
        if state.retried >= retries {
            return false;
        }
        state.retried += 1;
        state.runs += 1;
        state.tried.push(engine);
        state.requeued = Some(Instant::now());
        state.engine = Some(engine);
        state.error = Some(message.to_owned());
        true
    }

    /// `chunk` came back from `engine` after `seconds` of work.
    pub fn completed(&mut self, chunk: usize, engine: EngineId, seconds: f64, error: Option<&str>) {
        let now = epoch_seconds();
        let state = self.chunk_mut(chunk);
        state.runs += 1;
        state.engine = Some(engine);
        state.completed = Some(now);
        state.started = Some(now - seconds.max(0.0));
        state.error = error.map(str::to_owned);
        self.completion_order.push(chunk);
    }

    /// Keeps what a run of `chunk` printed (a retry's replaces the failed run's). Past
    /// [`MAX_CALL_OUTPUT`] for the whole call, a note says what was dropped.
    pub fn keep_output(&mut self, chunk: usize, stdout: &[u8], stderr: &[u8]) {
        let size = stdout.len() + stderr.len();
        let over = self.output_bytes + size > MAX_CALL_OUTPUT;
        if !over {
            self.output_bytes += size;
        }
        let text = |bytes: &[u8]| {
            if over && !bytes.is_empty() {
                format!(
                    "[rustpx: {} bytes of output dropped: this call already keeps {} MiB of its \
                     tasks' output]\n",
                    bytes.len(),
                    MAX_CALL_OUTPUT >> 20
                )
            } else {
                String::from_utf8_lossy(bytes).into_owned()
            }
        };
        let (stdout, stderr) = (text(stdout), text(stderr));
        let state = self.chunk_mut(chunk);
        state.stdout = stdout;
        state.stderr = stderr;
    }

    fn ended_unrun(&mut self, chunk: usize, message: &str) {
        let now = epoch_seconds();
        let state = self.chunk_mut(chunk);
        state.completed = Some(now);
        state.error = Some(message.to_owned());
        self.completion_order.push(chunk);
    }

    fn dependencies(&self) -> impl Iterator<Item = (u64, bool)> + '_ {
        let after = self.options.after.iter().map(|id| (*id, false));
        after.chain(self.options.follow.iter().map(|id| (*id, true)))
    }
}

/// What a waiting call's dependencies say now.
enum Dependencies {
    Waiting(Vec<u64>),
    Impossible(String),
    /// Met; the engines it may run on.
    Met(Vec<EngineId>),
}

/// Why a finished call counts as failed for its dependents.
fn failure_of(submission: &Submission) -> Option<String> {
    if let Some(why) = &submission.failed {
        return Some(why.clone());
    }
    let failure = submission.job.failures.first()?;
    Some(format!(
        "[{}] item {}: {}",
        engine_name(failure.engine),
        failure.item,
        failure.message
    ))
}

fn engine_name(engine: EngineId) -> String {
    if engine == NO_ENGINE {
        "no engine".into()
    } else {
        format!("engine {engine}")
    }
}

impl Book {
    /// Checks a new call's options against the book: bounds, and dependencies that name calls
    /// of `apply`/`map` still kept. The error says what to fix.
    pub fn check_tasks(&self, options: &TaskOptions) -> Result<(), String> {
        options.check()?;
        if options.has_dependencies() && self.waiting.len() >= MAX_WAITING {
            return Err(format!(
                "{MAX_WAITING} calls already wait for their dependencies; wait for some first"
            ));
        }
        for id in options.after.iter().chain(&options.follow) {
            if *id >= EXECUTION_IDS {
                return Err(
                    "ImpossibleDependency: after/follow take results of apply and map, not of execute"
                        .into(),
                );
            }
            if !self.submissions.contains_key(id) {
                return Err(format!(
                    "ImpossibleDependency: call {id} is not kept by the kernel (its result was dropped, or it belongs to another kernel)"
                ));
            }
        }
        Ok(())
    }

    /// Resolves or fails the calls waiting for dependencies: those the dependency they waited
    /// for ended (or anything ended, when the book says so) and those whose timeout passed.
    /// Then drops the forgotten calls no waiting call needs any more.
    pub fn settle(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        let waiting: Vec<u64> = self.waiting.iter().copied().collect();
        for id in waiting {
            let Some(submission) = self.submissions.get(&id) else {
                self.waiting.remove(&id);
                continue;
            };
            if submission.ready() {
                self.waiting.remove(&id);
                continue;
            }
            let timeout = submission.tasks.options.timeout;
            let timed_out = timeout.is_some_and(|t| submission.submitted.elapsed() >= t);
            let unblocked = submission.tasks.blocked_on.is_none_or(|dependency| {
                self.submissions
                    .get(&dependency)
                    .is_none_or(Submission::ready)
            });
            if !dirty && !timed_out && !unblocked {
                continue;
            }
            let verdict = self.dependencies_of(id, submission);
            let Some(submission) = self.submissions.get_mut(&id) else {
                continue;
            };
            match verdict {
                Dependencies::Waiting(pending) => {
                    if let (true, Some(timeout)) = (timed_out, timeout) {
                        submission.fail(format!(
                            "TaskTimeout: `{}` (call {id}) waited {timeout:?} for call(s) {pending:?} to finish and never started; give it a longer .timeout(..) or wait for those first",
                            submission.function
                        ));
                    } else {
                        submission.tasks.blocked_on = pending.first().copied();
                        continue;
                    }
                }
                Dependencies::Impossible(why) => submission.fail(why),
                Dependencies::Met(engines) => {
                    submission.engines = engines;
                    submission.tasks.resolved = true;
                    if submission.tasks.deferred {
                        self.to_start.push(id);
                    }
                }
            }
            self.waiting.remove(&id);
            self.dirty = true;
        }
        let forgotten = std::mem::take(&mut self.forgotten);
        for id in forgotten {
            if self.needed(id) {
                self.forgotten.insert(id);
            } else {
                self.submissions.remove(&id);
            }
        }
    }

    fn dependencies_of(&self, id: u64, submission: &Submission) -> Dependencies {
        let function = &submission.function;
        let mut pending = Vec::new();
        for (dependency, _) in submission.tasks.dependencies() {
            match self.submissions.get(&dependency) {
                None => {
                    return Dependencies::Impossible(format!(
                        "ImpossibleDependency: `{function}` (call {id}) depends on call {dependency}, which the kernel no longer keeps"
                    ))
                }
                Some(other) if !other.ready() => pending.push(dependency),
                Some(other) => {
                    if let (true, Some(why)) =
                        (submission.tasks.options.success_only, failure_of(other))
                    {
                        return Dependencies::Impossible(format!(
                            "ImpossibleDependency: `{function}` (call {id}) depends on call {dependency} (`{}`), which failed: {why}",
                            other.function
                        ));
                    }
                }
            }
        }
        if !pending.is_empty() {
            return Dependencies::Waiting(pending);
        }
        let mut engines = submission.engines.clone();
        for (dependency, follow) in submission.tasks.dependencies() {
            if !follow {
                continue;
            }
            let ran: BTreeSet<EngineId> = self
                .submissions
                .get(&dependency)
                .map(|other| other.job.item_engines().into_iter().flatten().collect())
                .unwrap_or_default();
            engines.retain(|engine| ran.contains(engine));
        }
        if engines.is_empty() {
            return Dependencies::Impossible(format!(
                "ImpossibleDependency: `{function}` (call {id}) follows call(s) {:?}, but no engine of its view ran all of them",
                submission.tasks.options.follow
            ));
        }
        Dependencies::Met(engines)
    }

    /// Calls resolved since the last time whose serving cells wait to be sent (at most one
    /// entry per call: a call is resolved once).
    pub fn take_to_start(&mut self) -> Vec<u64> {
        self.settle();
        std::mem::take(&mut self.to_start)
    }

    /// Whether calls wait for their dependencies, or were resolved and not started yet.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty() || !self.to_start.is_empty()
    }

    /// Whether a call still waiting depends on call `id`.
    pub(super) fn needed(&self, id: u64) -> bool {
        self.waiting.iter().any(|waiting| {
            self.submissions
                .get(waiting)
                .is_some_and(|s| s.tasks.dependencies().any(|(d, _)| d == id))
        })
    }

    /// The caller dropped call `id`'s result: it goes, unless a waiting call depends on it
    /// (then once none does).
    pub fn forget(&mut self, id: u64) {
        self.settle();
        if self.needed(id) {
            self.forgotten.insert(id);
        } else {
            self.submissions.remove(&id);
        }
    }

    /// Tasks of call `id` not yet started never start: each ends as `TaskAborted`.
    pub fn abort(&mut self, id: u64) -> Result<(), String> {
        let submission = self
            .submissions
            .get_mut(&id)
            .ok_or_else(|| format!("call {id} is no longer kept"))?;
        if submission.ready() {
            return Ok(());
        }
        submission.tasks.aborted = true;
        let queued = submission.job.take_queued();
        abort_chunks(submission, queued);
        self.waiting.remove(&id);
        self.dirty = true;
        Ok(())
    }

    /// Chunks a dropped engine held: back in the queue, or aborted if their call was.
    pub(super) fn requeue_chunk(&mut self, id: u64, chunk: usize) {
        if let Some(submission) = self.submissions.get_mut(&id) {
            if submission.tasks.aborted {
                abort_chunks(submission, [chunk]);
                self.dirty = true;
            } else {
                submission.job.requeue([chunk]);
            }
        }
    }

    /// The Partial reply's payload of call `id`: the tasks completed after the first `cursor`.
    pub fn partial(&self, id: u64, cursor: u64) -> Result<Vec<u8>, String> {
        let submission = self
            .submissions
            .get(&id)
            .ok_or_else(|| format!("call {id} is no longer kept"))?;
        let order = &submission.tasks.completion_order;
        let start = usize::try_from(cursor)
            .unwrap_or(usize::MAX)
            .min(order.len());
        let mut tasks = Vec::new();
        let mut bytes = 0;
        for chunk in &order[start..] {
            let Some(result) = submission.job.chunk_result(*chunk) else {
                break;
            };
            if !tasks.is_empty() && bytes + result.len() > MAX_PARTIAL_BYTES {
                break;
            }
            bytes += result.len();
            tasks.push((
                submission.job.first_item(*chunk).unwrap_or_default(),
                submission.job.chunk_engine(*chunk).unwrap_or(NO_ENGINE),
                result.to_vec(),
            ));
        }
        let partial: PartialWire = (
            submission.tasks.options.ordered,
            (start + tasks.len()) as u64,
            submission.job.total_chunks() as u64,
            tasks,
        );
        Ok(encode_partial(&partial))
    }

    /// Keeps what the run of chunk `index` (call and chunk, as the scheduler numbers them)
    /// printed.
    pub fn keep_output(&mut self, index: u64, stdout: &[u8], stderr: &[u8]) {
        if let Some(submission) = self.submissions.get_mut(&(index >> 32)) {
            let chunk = (index & 0xffff_ffff) as usize;
            submission.tasks.keep_output(chunk, stdout, stderr);
        }
    }

    /// Each task's metadata of call `id`.
    pub fn metadata(&self, id: u64) -> Result<Vec<MetadataWire>, String> {
        let submission = self
            .submissions
            .get(&id)
            .ok_or_else(|| format!("call {id} is no longer kept"))?;
        let job = &submission.job;
        Ok((0..job.total_chunks())
            .map(|chunk| {
                let state = submission
                    .tasks
                    .chunks
                    .get(chunk)
                    .cloned()
                    .unwrap_or_default();
                (
                    job.first_item(chunk).unwrap_or_default(),
                    job.chunk_items(chunk).unwrap_or_default(),
                    state.engine.filter(|e| *e != NO_ENGINE),
                    submission.tasks.submitted,
                    state.started,
                    state.completed,
                    state.runs,
                    state.error,
                    state.stdout,
                    state.stderr,
                )
            })
            .collect())
    }
}

/// Ends `chunks` of `submission` unrun, each item failing with `TaskAborted`.
fn abort_chunks(submission: &mut Submission, chunks: impl IntoIterator<Item = usize>) {
    let message = format!(
        "TaskAborted: `{}` was aborted before this task started",
        submission.function
    );
    for chunk in chunks {
        let (Some(first), Some(items)) = (
            submission.job.first_item(chunk),
            submission.job.chunk_items(chunk),
        ) else {
            continue;
        };
        if submission.job.chunk_result(chunk).is_some() {
            continue;
        }
        submission.tasks.ended_unrun(chunk, &message);
        let failures = (first..first + items)
            .map(|i| (i, message.clone()))
            .collect();
        submission.job.complete(
            chunk,
            NO_ENGINE,
            failures,
            encode_errors(items, &message),
            0.0,
        );
    }
    if submission.job.is_done() {
        submission.finished.get_or_insert_with(Instant::now);
    }
}

/// A finished call's results file (in input order, or in the order its tasks completed when
/// the call is unordered) and, for a direct view's apply, the engine of each value.
pub fn results_of(submission: &Submission) -> Option<(Vec<u8>, Vec<u32>)> {
    let job = &submission.job;
    if submission.tasks.options.ordered {
        // Only a direct view's apply says which engine gave each value (one item per engine);
        // a map's caller has them in `metadata()`, and a million ids would double a u64 map's
        // reply.
        let ids = match submission.pinned {
            Some(_) => job
                .item_engines()
                .into_iter()
                .map(|e| e.unwrap_or(NO_ENGINE))
                .collect(),
            None => Vec::new(),
        };
        return Some((job.results_file()?, ids));
    }
    let mut bytes = Vec::new();
    for chunk in &submission.tasks.completion_order {
        let result = job.chunk_result(*chunk)?;
        bytes.extend_from_slice(&(result.len() as u64).to_le_bytes());
        bytes.extend_from_slice(result);
    }
    job.is_done().then_some((bytes, Vec::new()))
}

#[cfg(test)]
#[path = "tasks_tests.rs"]
mod tests;
