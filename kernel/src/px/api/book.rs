//! The Rust API's calls and which engines serve them: every `apply` and `map` as a
//! [`Submission`] of chunks, filed in the [`Book`] that the scheduler
//! ([`super::scheduler`]) hands chunks out of. An engine gets only chunks of submissions of the
//! function it serves (by label) whose caller used the engine's argument and result types; a
//! submission whose types differ fails with both named, before any of its items is decoded. A
//! chunk's index on the wire is `submission << 32 | chunk`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use rustpx_protocol::EngineId;

use super::super::map_server::{short_type_name, MapJob};
use super::tasks::TaskState;

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
    pub(super) serving: HashMap<(String, EngineId), usize>,
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

    pub(super) fn stop_serving(&mut self, label: &str, engine: EngineId) {
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
