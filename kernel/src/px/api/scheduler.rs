//! The Rust API's load-balanced scheduler: many submissions (each `apply` or `map`) at once,
//! each a [`MapJob`] of chunks, served to engines running `rustpx::serve_tasks(FUNCTION, LABEL,
//! …)`. An engine's hello names its function by label and its argument and result types; it
//! gets only chunks of submissions of that label whose caller used the same types, and a
//! submission whose types differ fails with both named, before any of its items is decoded.
//! The frames are `%pxmap`'s ([`super::super::map_server`]); a chunk's index on the wire is
//! `submission << 32 | chunk`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustpx_protocol::EngineId;
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, Semaphore};

use super::super::lock;
use super::super::map_server::{
    read_hello, read_result, short_type_name, write_chunk, MapJob, HELLO_DEADLINE,
};
use super::tasks::TaskState;

/// Chunks each engine holds at once, as `%pxmap`.
const IN_FLIGHT: usize = 2;
/// How long an engine with nothing to do keeps serving its function: a loop of calls finds it
/// still connected and runs no cell, while a `%px` after the calls waits at most this long.
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);
/// Engine connections served at once.
const MAX_CONNECTIONS: usize = 4096;
/// Submissions kept; beyond it the oldest finished ones are dropped.
pub const MAX_SUBMISSIONS: usize = 4096;

/// One `apply` or `map` call.
pub struct Submission {
    pub function: String,
    pub label: String,
    pub argument_type: String,
    pub result_type: String,
    pub job: MapJob,
    /// Why the whole call failed (types, a function the engines lack, no engine left).
    pub failed: Option<String>,
    pub submitted: Instant,
    pub finished: Option<Instant>,
    /// The engines' serving cell for this submission, while the session still watches it.
    pub serve_cell: Option<String>,
    pub engines: Vec<EngineId>,
    /// How often the serving cell was submitted again after ending with work left.
    pub resubmits: u32,
    /// Retries, dependencies and the tasks' history ([`super::tasks`]).
    pub tasks: TaskState,
    /// The direct view's `apply`: chunk `i` runs only on the engine (and incarnation) at `i`.
    pub pinned: Option<Vec<(EngineId, u64)>>,
}

impl Submission {
    pub fn ready(&self) -> bool {
        self.failed.is_some() || self.job.is_done()
    }

    pub fn elapsed(&self) -> f64 {
        self.finished
            .unwrap_or_else(Instant::now)
            .duration_since(self.submitted)
            .as_secs_f64()
    }

    pub(super) fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            self.failed = Some(why);
            self.finished = Some(Instant::now());
        }
    }
}

/// Every submission, and which engines serve each label now (by connection count).
#[derive(Default)]
pub struct Book {
    pub submissions: BTreeMap<u64, Submission>,
    next: u64,
    serving: HashMap<(String, EngineId), usize>,
    /// Calls whose dependencies are not resolved yet.
    pub(super) waiting: BTreeSet<u64>,
    /// Calls whose results were dropped but that a waiting call depends on.
    pub(super) forgotten: BTreeSet<u64>,
    /// A call finished, was added or aborted since dependencies were last looked at.
    pub(super) dirty: bool,
    /// Calls resolved whose serving cells the session has not sent yet.
    pub(super) to_start: Vec<u64>,
}

impl Book {
    /// Files a submission under a new id; drops the oldest finished ones beyond the bound.
    pub fn add(&mut self, submission: Submission) -> Result<u64, String> {
        while self.submissions.len() >= MAX_SUBMISSIONS {
            let oldest = self
                .submissions
                .iter()
                .find(|(id, s)| s.ready() && !self.needed(**id))
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => {
                    self.submissions.remove(&id);
                }
                None => {
                    return Err(format!(
                        "{MAX_SUBMISSIONS} calls are still running; wait for some first"
                    ))
                }
            }
        }
        self.next += 1;
        if !submission.tasks.resolved {
            self.waiting.insert(self.next);
        }
        self.submissions.insert(self.next, submission);
        self.dirty = true;
        Ok(self.next)
    }

    /// Whether every engine of `engines` has a connection serving `label` now.
    pub fn all_serving(&self, label: &str, engines: &[EngineId]) -> bool {
        engines.iter().all(|engine| {
            self.serving
                .get(&(label.to_owned(), *engine))
                .is_some_and(|n| *n > 0)
        })
    }

    /// Whether any engine of `engines` has a connection serving `label` now.
    pub fn any_serving(&self, label: &str, engines: &[EngineId]) -> bool {
        engines.iter().any(|engine| {
            self.serving
                .get(&(label.to_owned(), *engine))
                .is_some_and(|n| *n > 0)
        })
    }

    fn stop_serving(&mut self, label: &str, engine: EngineId) {
        let key = (label.to_owned(), engine);
        if let Some(count) = self.serving.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.serving.remove(&key);
            }
        }
    }

    /// The next chunk for an engine serving `label` with these types; a submission whose
    /// caller used other types fails here, naming both.
    pub(super) fn next_chunk(
        &mut self,
        label: &str,
        engine: EngineId,
        argument_type: &str,
        result_type: &str,
    ) -> Option<(u64, u64, Vec<u8>)> {
        self.settle();
        let serving: Vec<EngineId> = self
            .serving
            .keys()
            .filter(|(l, _)| l == label)
            .map(|(_, e)| *e)
            .collect();
        for (id, submission) in self.submissions.iter_mut() {
            if submission.label != label
                || submission.ready()
                || !submission.tasks.resolved
                || !submission.engines.contains(&engine)
            {
                continue;
            }
            if !types_match(&submission.argument_type, argument_type)
                || !types_match(&submission.result_type, result_type)
            {
                submission.fail(mismatch(submission, engine, argument_type, result_type));
                continue;
            }
            let (tasks, engines) = (&submission.tasks, &submission.engines);
            let next = match &submission.pinned {
                Some(pins) => pins
                    .iter()
                    .position(|(pinned, _)| *pinned == engine)
                    .and_then(|chunk| submission.job.take_chunk(chunk)),
                None => submission
                    .job
                    .next_chunk_matching(|chunk| tasks.may_take(chunk, engine, engines, &serving)),
            };
            if let Some((chunk, first_item, bytes)) = next {
                return Some(((id << 32) | chunk as u64, first_item, bytes));
            }
        }
        None
    }

    /// Whether a submission of `label` that `engine` may run still waits for results (one
    /// waiting for its dependencies does not keep engines, nor does a task pinned to another
    /// engine).
    pub(super) fn has_work(&mut self, label: &str, engine: EngineId) -> bool {
        self.settle();
        self.submissions.values().any(|s| {
            s.label == label
                && !s.ready()
                && s.tasks.resolved
                && s.engines.contains(&engine)
                && match &s.pinned {
                    None => true,
                    Some(pins) => pins
                        .iter()
                        .position(|(pinned, _)| *pinned == engine)
                        .is_some_and(|chunk| s.job.is_queued(chunk)),
                }
        })
    }

    /// Fails the pinned tasks of submission `id` whose engine is no longer the incarnation it
    /// was sent to (`live`: engine to incarnation): they can run nowhere else.
    pub fn fail_lost_pinned(
        &mut self,
        id: u64,
        live: &std::collections::BTreeMap<EngineId, u64>,
    ) -> bool {
        let Some(submission) = self.submissions.get_mut(&id) else {
            return false;
        };
        let Some(pins) = submission.pinned.clone() else {
            return false;
        };
        let mut failed = false;
        for (chunk, (engine, incarnation)) in pins.into_iter().enumerate() {
            if submission.job.is_chunk_done(chunk) || live.get(&engine) == Some(&incarnation) {
                continue;
            }
            let message = format!("EngineError: engine {engine} died before it returned a value");
            let bytes = rustpx_client::api_payload::failed_task(&message);
            let item = chunk as u64;
            submission
                .job
                .complete(chunk, engine, vec![(item, message)], bytes, 0.0);
            failed = true;
        }
        if submission.job.is_done() {
            submission.finished.get_or_insert_with(Instant::now);
        }
        failed
    }

    pub(super) fn complete(
        &mut self,
        index: u64,
        engine: EngineId,
        failures: Vec<(u64, String)>,
        bytes: Vec<u8>,
        seconds: f64,
    ) {
        if let Some(submission) = self.submissions.get_mut(&(index >> 32)) {
            let chunk = (index & 0xffff_ffff) as usize;
            if submission.job.chunk_result(chunk).is_some() {
                return;
            }
            let error = failures.first().map(|(_, message)| message.as_str());
            if let Some(message) = error {
                if submission.tasks.retry(chunk, engine, message) {
                    submission.job.requeue([chunk]);
                    return;
                }
            }
            submission.tasks.completed(chunk, engine, seconds, error);
            submission
                .job
                .complete(chunk, engine, failures, bytes, seconds);
            if submission.job.is_done() {
                submission.finished.get_or_insert_with(Instant::now);
                self.dirty = true;
            }
        }
    }

    pub(super) fn requeue(&mut self, indices: impl IntoIterator<Item = u64>) {
        for index in indices {
            self.requeue_chunk(index >> 32, (index & 0xffff_ffff) as usize);
        }
    }
}

/// Exact names, or the same names without their paths: a type defined in a cell is
/// `ctx::Point` in the kernel's context and `code_7::Point` on an engine.
fn types_match(caller: &str, engine: &str) -> bool {
    caller == engine || short_type_name(caller) == short_type_name(engine)
}

fn with_path(name: &str) -> String {
    let short = short_type_name(name);
    if short == name {
        format!("`{name}`")
    } else {
        format!("`{short}` (`{name}`)")
    }
}

fn mismatch(submission: &Submission, engine: EngineId, argument: &str, result: &str) -> String {
    format!(
        "TypeError: `{}` on engine {engine} takes {} and returns {}, but this call sends {} and expects {}; call it with the engine's types (e.g. ::<{}, {}>)",
        submission.function,
        with_path(argument),
        with_path(result),
        with_path(&submission.argument_type),
        with_path(&submission.result_type),
        short_type_name(argument),
        short_type_name(result),
    )
}

/// The scheduler's socket and book.
#[derive(Clone)]
pub struct Scheduler {
    pub book: Arc<Mutex<Book>>,
    pub changed: Arc<Notify>,
    pub server_file: PathBuf,
}

impl Scheduler {
    /// Listens on a Unix socket in the private directory and writes `path\ntoken` to
    /// `server_file` (in the private transfer directory), which the serving cells read.
    pub async fn start(server_file: &Path) -> std::io::Result<Scheduler> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let path = crate::private_dir::socket_path(&format!("api-tasks-{}.sock", &token[..8]))?;
        let listener = UnixListener::bind(&path)?;
        write_private(server_file, &format!("{}\n{token}\n", path.display()))?;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let scheduler = Scheduler {
            book: Arc::default(),
            changed: Arc::default(),
            server_file: server_file.to_owned(),
        };
        let accepting = scheduler.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!("api tasks: {MAX_CONNECTIONS} connections open; refused one");
                    continue;
                };
                let scheduler = accepting.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    if let Err(error) = scheduler.serve(stream, &token).await {
                        tracing::debug!("api task connection ended: {error}");
                    }
                    drop(slot);
                });
            }
        });
        Ok(scheduler)
    }

    async fn serve(&self, stream: UnixStream, token: &str) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::with_capacity(1 << 16, read);
        let Ok(hello) = tokio::time::timeout(HELLO_DEADLINE, read_hello(&mut read)).await else {
            tracing::warn!("api tasks: no hello within {HELLO_DEADLINE:?}");
            return Ok(());
        };
        let hello = hello?;
        if hello.first().map(String::as_str) != Some(token) || hello.len() < 5 {
            tracing::warn!("api tasks: a connection with a wrong token or hello refused");
            return Ok(());
        }
        let engine: EngineId = hello[1].parse().unwrap_or(u32::MAX);
        let (result_type, argument_type, label) = (&hello[2], &hello[3], &hello[4]);
        *lock(&self.book)
            .serving
            .entry((label.clone(), engine))
            .or_default() += 1;
        let mut in_flight: BTreeMap<u64, Instant> = BTreeMap::new();
        let mut registered = true;
        let outcome = self
            .exchange(
                &mut read,
                &mut write,
                (engine, label, argument_type, result_type),
                &mut in_flight,
                &mut registered,
            )
            .await;
        {
            let mut book = lock(&self.book);
            book.requeue(in_flight.keys().copied());
            if registered {
                book.stop_serving(label, engine);
            }
        }
        self.changed.notify_waiters();
        outcome
    }

    async fn exchange(
        &self,
        read: &mut BufReader<OwnedReadHalf>,
        write: &mut OwnedWriteHalf,
        (engine, label, argument_type, result_type): (EngineId, &str, &str, &str),
        in_flight: &mut BTreeMap<u64, Instant>,
        registered: &mut bool,
    ) -> std::io::Result<()> {
        let mut last_result = Instant::now();
        let mut last_work = Instant::now();
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            while in_flight.len() < IN_FLIGHT {
                let next = lock(&self.book).next_chunk(label, engine, argument_type, result_type);
                let Some((index, first_item, bytes)) = next else {
                    break;
                };
                write_chunk(write, index, first_item, &bytes).await?;
                in_flight.insert(index, Instant::now());
            }
            if in_flight.is_empty() {
                let idle = last_work.elapsed();
                // Leaving is decided under the lock a submission is filed under, so a new
                // submission either finds this engine gone (and sends the cell) or is seen.
                let leave = {
                    let mut book = lock(&self.book);
                    if book.has_work(label, engine) {
                        last_work = Instant::now();
                        false
                    } else if idle >= LINGER {
                        book.stop_serving(label, engine);
                        true
                    } else {
                        false
                    }
                };
                if leave {
                    *registered = false;
                    write_chunk_end(write).await?;
                    return Ok(());
                }
                // Others hold the rest (stay, in case one dies and its chunks come back), or
                // lingering for the next call.
                let _ = tokio::time::timeout(
                    std::time::Duration::from_millis(100).min(LINGER),
                    changed,
                )
                .await;
                continue;
            }
            last_work = Instant::now();
            // The failure count is bounded by the chunk's items in `%pxmap`; here the length of
            // the result and the chunk being held are checked.
            let result = read_result(read, in_flight, |_| Some(u64::MAX)).await?;
            let index = result.index;
            let seconds = in_flight
                .remove(&index)
                .map(|sent| sent.max(last_result).elapsed().as_secs_f64())
                .unwrap_or_default();
            last_result = Instant::now();
            let mut book = lock(&self.book);
            book.keep_output(index, &result.stdout, &result.stderr);
            book.complete(index, engine, result.failures, result.bytes, seconds);
            drop(book);
            self.changed.notify_waiters();
        }
    }
}

async fn write_chunk_end(write: &mut OwnedWriteHalf) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    write.write_all(&[1u8]).await
}

/// Writes a file only this user can read (mode 0600 from its creation).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// A submission of `function` (also its label) over the chunks of `chunk_file`, for the
/// scheduler's unit tests and the task rules'.
#[cfg(test)]
pub(super) fn test_submission(
    function: &str,
    argument_type: &str,
    chunk_file: &[u8],
    engines: &[EngineId],
    tasks: TaskState,
) -> Submission {
    Submission {
        function: function.into(),
        label: function.into(),
        argument_type: argument_type.into(),
        result_type: "u64".into(),
        job: MapJob::from_chunk_file(chunk_file).expect("a well-formed chunk file"),
        failed: None,
        submitted: Instant::now(),
        finished: None,
        serve_cell: None,
        engines: engines.to_vec(),
        resubmits: 0,
        tasks,
        pinned: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(label: &str, argument: &str, items: &[u64]) -> Submission {
        let mut encoded = (items.len() as u64).to_le_bytes().to_vec();
        for item in items {
            encoded.extend_from_slice(&item.to_le_bytes());
        }
        let mut file = (encoded.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&encoded);
        let mut submission = test_submission("square", argument, &file, &[0], TaskState::default());
        submission.label = label.into();
        submission
    }

    #[test]
    fn chunks_go_only_to_engines_of_their_function_and_types() {
        let mut book = Book::default();
        let a = book.add(submission("f1", "u64", &[1, 2])).unwrap();
        let b = book.add(submission("f2", "u64", &[3])).unwrap();
        assert!(book.next_chunk("f3", 0, "u64", "u64").is_none());
        let (index, first, _) = book.next_chunk("f2", 0, "u64", "u64").unwrap();
        assert_eq!((index >> 32, first), (b, 0));
        assert!(
            book.next_chunk("f1", 4, "u64", "u64").is_none(),
            "engine 4 is no target"
        );
        book.submissions.get_mut(&a).unwrap().engines.push(4);
        let wrong = book.next_chunk("f1", 4, "i32", "u64");
        assert!(wrong.is_none());
        let failed = book.submissions[&a].failed.clone().unwrap();
        assert!(
            failed.contains("engine 4 takes `i32` and returns `u64`, but this call sends `u64`"),
            "{failed}"
        );
        assert!(book.submissions[&a].ready());
        assert!(book.has_work("f2", 0));
        book.complete(index, 0, vec![], vec![1], 0.5);
        assert!(!book.has_work("f2", 0));
        assert!(book.submissions[&b].finished.is_some());
    }

    #[test]
    fn pinned_tasks_go_only_to_their_engine_and_fail_when_it_is_lost() {
        let mut book = Book::default();
        let mut pinned = submission("f1", "u64", &[]);
        let one_item: Vec<u8> =
            [16u64.to_le_bytes(), 1u64.to_le_bytes(), 5u64.to_le_bytes()].concat();
        pinned.job = MapJob::from_chunk_file(&[one_item.clone(), one_item].concat()).unwrap();
        pinned.engines = vec![3, 1];
        pinned.pinned = Some(vec![(3, 10), (1, 11)]);
        let id = book.add(pinned).unwrap();
        let (index, first, _) = book.next_chunk("f1", 1, "u64", "u64").unwrap();
        assert_eq!(
            (index & 0xffff_ffff, first),
            (1, 1),
            "engine 1 takes the second task"
        );
        assert!(
            book.next_chunk("f1", 1, "u64", "u64").is_none(),
            "and no other"
        );
        assert!(
            !book.has_work("f1", 1),
            "engine 1 need not wait for engine 3's task"
        );
        assert!(book.has_work("f1", 3));
        book.complete(index, 1, vec![], vec![1], 0.1);
        let live = std::collections::BTreeMap::from([(1, 11), (3, 12)]);
        assert!(
            book.fail_lost_pinned(id, &live),
            "engine 3 restarted: its task is lost"
        );
        let submission = &book.submissions[&id];
        assert!(submission.ready() && submission.failed.is_none());
        assert_eq!(submission.job.failures.len(), 1);
        assert_eq!(submission.job.failures[0].engine, 3);
        assert!(submission.job.failures[0].message.contains("engine 3 died"));
        assert!(
            !book.fail_lost_pinned(id, &live),
            "a done task is never failed again"
        );
    }

    #[test]
    fn user_types_match_across_cells_by_name() {
        assert!(types_match("ctx::Point", "code_7::Point"));
        assert!(!types_match("i32", "u64"));
        assert!(!types_match("alloc::vec::Vec<u32>", "alloc::vec::Vec<u64>"));
    }
}
