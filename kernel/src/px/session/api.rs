//! The Rust API's requests, answered by the px service while the plain cell that sent them runs
//! (see [`crate::px::api`]). Nothing here uses the kernel's evaluator: it is busy with that
//! cell. Items and results travel in the requests and replies; the engines serve each function
//! with a cell compiled once per function and engine state (`rustpx::serve_tasks`).

use std::time::{Duration, Instant};

use rustpx_client::api_wire::EXECUTION_IDS;
use rustpx_wire::WireMessage;

use super::super::api::scheduler::{Book, Scheduler, Submission};
use super::super::api::tasks::{results_of, TaskState};
use super::super::api::{Kind, Reply, Request};
use super::super::map_server::MapJob;
use super::super::rustc_codes;
use super::{lock, PxService};
use crate::evaluator::{ErrorReport, Evaluator};
use crate::px::cell_files::CellFiles;
use crate::px::client_crate;

/// How often a submission's serving cell is sent again when it ended with work left.
const RESUBMITS: u32 = 3;

impl PxService {
    /// Adds the client crate to the kernel's context before a plain cell that uses `rustpx::`
    /// runs (the API's calls cannot, once the cell runs).
    pub async fn prepare_api(
        &mut self,
        request: &WireMessage,
        evaluator: &Evaluator,
    ) -> Result<(), ErrorReport> {
        if self.client_local {
            return Ok(());
        }
        let dep = client_crate::dep_line().map_err(|error| {
            super::data_setup::transfer_error(
                format!("cannot write the rustpx client crate to the cache directory: {error}"),
                vec![],
            )
        })?;
        self.say(
            request,
            "rustpx: compiling the rustpx client crate with serde and bincode (first use only)…",
        );
        self.ensure_client_local(evaluator, &dep, "rustpx").await
    }

    /// Answers one API request from the plain cell `cell` (outputs such as engines starting
    /// are shown under it).
    pub async fn answer_api(&mut self, cell: &WireMessage, request: Request) -> Reply {
        // Calls whose dependencies were met since the last request get their serving cells.
        self.api_start_resolved();
        let answered = match request.kind {
            Kind::Ids => self
                .ensure_engines(cell)
                .await
                .map(|ids| Reply {
                    ids,
                    ..Reply::default()
                })
                .map_err(|report| report.evalue),
            Kind::Submit => self.api_submit(cell, request, false).await,
            Kind::Execute => self.api_execute(cell, request).await,
            Kind::DirectApply => self.api_submit(cell, request, true).await,
            Kind::Push => self.api_push(cell, request).await,
            Kind::Pull | Kind::Gather => self.api_fetch(cell, request).await,
            Kind::Scatter => self.api_scatter(cell, request).await,
            Kind::Status if request.job >= EXECUTION_IDS => self.api_execution_status(request.job),
            Kind::Results if request.job >= EXECUTION_IDS => {
                self.api_execution_results(request.job)
            }
            Kind::Abort | Kind::Metadata | Kind::Partial if request.job >= EXECUTION_IDS => {
                Err("abort, metadata, iter and results are for the results of apply and map".into())
            }
            Kind::Abort => self.api_abort(request.job),
            Kind::Metadata => self.api_metadata(request.job),
            Kind::Partial => return self.api_partial_interruptible(&request).await,
            Kind::Forget if request.job >= EXECUTION_IDS => {
                self.api_forget_execution(request.job);
                Ok(Reply::default())
            }
            Kind::Status => self.api_status(request.job, Duration::ZERO).await,
            Kind::Wait | Kind::WaitInteractive => return self.api_wait(cell, &request).await,
            Kind::Results => self.api_results(request.job),
            Kind::Forget => {
                if let Some(scheduler) = &self.api_scheduler {
                    lock(&scheduler.book).forget(request.job);
                }
                Ok(Reply::default())
            }
        };
        answered.unwrap_or_else(Reply::error)
    }

    /// Files an `apply` or `map` (`pinned`: the direct view's `apply`, one task per engine).
    async fn api_submit(
        &mut self,
        cell: &WireMessage,
        request: Request,
        pinned: bool,
    ) -> Result<Reply, String> {
        let function = request.function.trim().to_owned();
        if function.is_empty() {
            return Err("the function's name is empty".into());
        }
        let engines = self.api_targets(cell, request.targets.as_deref()).await?;
        let types = [request.argument_type.as_str(), request.result_type.as_str()];
        self.check_definitions(&format!("`{function}`"), &types, &engines)?;
        let dep = client_crate::dep_line().map_err(|e| e.to_string())?;
        self.ensure_client_engines(&dep, &engines, "the Rust API")
            .await
            .map_err(|r| r.evalue)?;
        let scheduler = self.api_scheduler().await?;
        lock(&scheduler.book).check_tasks(&request.tasks)?;
        let (job, pinned) = if pinned {
            let (job, pins) = self.direct_tasks(&request.payload, &engines)?;
            (job, Some(pins))
        } else {
            let job = MapJob::from_chunk_file(&request.payload)
                .map_err(|error| format!("the call's items: {error}"))?;
            (job, None)
        };
        let next_label = format!("f{}", self.api_labels.len());
        let label = self
            .api_labels
            .entry(function.clone())
            .or_insert(next_label)
            .clone();
        let mut book = lock(&scheduler.book);
        let id = book.add(Submission {
            function: function.clone(),
            label: label.clone(),
            argument_type: request.argument_type,
            result_type: request.result_type,
            job,
            failed: None,
            submitted: Instant::now(),
            finished: None,
            serve_cell: None,
            engines: engines.clone(),
            resubmits: 0,
            tasks: TaskState::new(request.tasks),
            pinned,
        })?;
        // Dependencies already done resolve now; a call still waiting gets its serving cell
        // once they are (`api_start_resolved`).
        book.settle();
        let resolved = book.submissions.get_mut(&id).is_some_and(|submission| {
            submission.tasks.deferred = !submission.tasks.resolved;
            submission.tasks.resolved
        });
        // Engines still serving this function from the last call take it at once.
        let served = book.all_serving(&label, &engines);
        drop(book);
        scheduler.changed.notify_waiters();
        if resolved && !served {
            self.api_serve(&scheduler, id, &dep);
        }
        self.api_is_last = Some(id);
        Ok(Reply {
            job: id,
            ..Reply::default()
        })
    }

    /// Sends the serving cell of submission `id`'s function to its engines.
    pub(super) fn api_serve(&self, scheduler: &Scheduler, id: u64, dep: &str) {
        let Some((function, label, engines)) = lock(&scheduler.book)
            .submissions
            .get(&id)
            .map(|s| (s.function.clone(), s.label.clone(), s.engines.clone()))
        else {
            return;
        };
        let code = format!(
            "{dep}\nrustpx::serve_tasks({function}, {label:?}, {:?}).unwrap_or_else(|e| panic!(\"rustpx API: {{e}}\"));",
            scheduler.server_file.to_string_lossy()
        );
        // Engines on other hosts get the server file (address and token) with the cell; their
        // connection goes to their own engine process, which relays it over the link.
        let files = CellFiles {
            inputs: vec![scheduler.server_file.to_string_lossy().into_owned()],
            outputs: Vec::new(),
        };
        let submitted = self.submit_quietly(&code, &engines, files);
        let mut book = lock(&scheduler.book);
        if let Some(submission) = book.submissions.get_mut(&id) {
            match submitted {
                Ok((cell_id, _events)) => submission.serve_cell = Some(cell_id),
                Err(report) => {
                    submission.failed = Some(report.evalue);
                    submission.finished = Some(Instant::now());
                }
            }
        }
    }

    async fn api_scheduler(&mut self) -> Result<Scheduler, String> {
        if let Some(scheduler) = &self.api_scheduler {
            return Ok(scheduler.clone());
        }
        let dir = self.transfer_dir().map_err(|r| r.evalue)?;
        let relay = self
            .machinery()
            .map_err(|r| r.evalue)?
            .hub
            .map_relay()
            .clone();
        let scheduler = Scheduler::start(&dir.join("api.server"), &relay)
            .await
            .map_err(|error| format!("cannot start the API's scheduler: {error}"))?;
        self.api_scheduler = Some(scheduler.clone());
        Ok(scheduler)
    }

    /// A submission's state, once it is ready or `wait` has passed.
    pub(super) async fn api_status(&mut self, id: u64, wait: Duration) -> Result<Reply, String> {
        self.api_poll(id, wait, |_, submission, left| {
            let reply = Reply {
                failures: submission
                    .job
                    .failures
                    .iter()
                    .map(|f| (f.item, f.engine, f.message.clone()))
                    .collect(),
                ..status_reply(id, submission)
            };
            Ok((reply.ready || left.is_zero()).then_some(reply))
        })
        .await
    }

    /// Polls call `id` until `answer` gives a reply. Each turn first notices pinned tasks
    /// whose engine died and serving cells that ended; `answer` sees the book, the call and the
    /// time left of `wait`.
    pub(super) async fn api_poll(
        &mut self,
        id: u64,
        wait: Duration,
        mut answer: impl FnMut(&Book, &Submission, Duration) -> Result<Option<Reply>, String>,
    ) -> Result<Reply, String> {
        let scheduler = self.api_scheduler_of(id)?;
        let deadline = Instant::now() + wait;
        loop {
            let changed = scheduler.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            self.api_fail_lost_pinned(&scheduler, id)?;
            self.api_watch(&scheduler, id)?;
            let left = deadline.saturating_duration_since(Instant::now());
            {
                let book = lock(&scheduler.book);
                let submission = book
                    .submissions
                    .get(&id)
                    .ok_or_else(|| format!("call {id} is no longer kept"))?;
                if let Some(reply) = answer(&book, submission, left)? {
                    return Ok(reply);
                }
            }
            // The serving cell's end (a compile error) is seen by polling the hub.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), changed).await;
        }
    }

    /// The scheduler that filed call `id` (none exists before the first call).
    pub(super) fn api_scheduler_of(&self, id: u64) -> Result<Scheduler, String> {
        self.api_scheduler
            .clone()
            .ok_or_else(|| format!("no call {id} was made"))
    }

    /// Notices a serving cell that ended with the submission unfinished: a compile error or
    /// a dead engine fails it; an engine that left with work undone gets the cell again.
    pub(super) fn api_watch(&self, scheduler: &Scheduler, id: u64) -> Result<(), String> {
        let hub = self.machinery().map_err(|r| r.evalue)?.hub.clone();
        let (cell_id, label, function, resubmits, engines) = {
            let mut book = lock(&scheduler.book);
            book.settle();
            let Some(s) = book.submissions.get_mut(&id) else {
                return Ok(());
            };
            if s.ready() || !s.tasks.resolved {
                return Ok(());
            }
            if s.tasks.deferred {
                s.tasks.deferred = false;
                let (label, engines) = (s.label.clone(), s.engines.clone());
                let served = book.all_serving(&label, &engines);
                drop(book);
                if !served {
                    let dep = client_crate::dep_line().map_err(|e| e.to_string())?;
                    self.api_serve(scheduler, id, &dep);
                }
                return Ok(());
            }
            (
                s.serve_cell.clone(),
                s.label.clone(),
                s.function.clone(),
                s.resubmits,
                s.engines.clone(),
            )
        };
        let failures = match &cell_id {
            Some(cell) if !hub.cell_done_or_dropped(cell) => return Ok(()),
            Some(cell) => self.failures_of(cell),
            None => Vec::new(),
        };
        let mut book = lock(&scheduler.book);
        let serving = book.any_serving(&label, &engines);
        let Some(submission) = book.submissions.get_mut(&id) else {
            return Ok(());
        };
        submission.serve_cell = None;
        if serving || submission.ready() {
            return Ok(());
        }
        if let Some((engine, error)) = failures.first() {
            let why = if rustc_codes::unresolved_name(&error.codes, &error.evalue)
                == Some(function.as_str())
            {
                format!("NameError: `{function}` is not defined on engine {engine}; define it with a %%px cell first")
            } else {
                format!("[{engine}:apply] {}", error.summary())
            };
            submission.failed = Some(why);
            submission.finished = Some(Instant::now());
            return Ok(());
        }
        if resubmits >= RESUBMITS {
            submission.failed = Some(format!(
                "EngineError: the engines stopped serving `{function}` with {} of {} items done",
                submission.job.done_items(),
                submission.job.total_items()
            ));
            submission.finished = Some(Instant::now());
            return Ok(());
        }
        submission.resubmits += 1;
        drop(book);
        let dep = client_crate::dep_line().map_err(|e| e.to_string())?;
        self.api_serve(scheduler, id, &dep);
        Ok(())
    }

    /// An execution's state once it is done or `wait` has passed (the hub's record is polled).
    pub(super) async fn api_execution_wait(
        &mut self,
        id: u64,
        wait: Duration,
    ) -> Result<Reply, String> {
        let deadline = Instant::now() + wait;
        loop {
            let reply = self.api_execution_status(id)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if reply.ready || left.is_zero() {
                return Ok(reply);
            }
            tokio::time::sleep(left.min(Duration::from_millis(2))).await;
        }
    }

    fn api_results(&self, id: u64) -> Result<Reply, String> {
        let scheduler = self.api_scheduler_of(id)?;
        let book = lock(&scheduler.book);
        let submission = book
            .submissions
            .get(&id)
            .ok_or_else(|| format!("call {id} is no longer kept"))?;
        let (payload, ids) =
            results_of(submission).ok_or_else(|| format!("call {id} is not finished"))?;
        Ok(Reply {
            job: id,
            ids,
            payload,
            ..Reply::default()
        })
    }
}

/// What every state reply of call `id` says: progress, times, and why it failed.
pub(super) fn status_reply(id: u64, submission: &Submission) -> Reply {
    Reply {
        job: id,
        done_items: submission.job.done_items(),
        total_items: submission.job.total_items(),
        ready: submission.ready(),
        elapsed: submission.elapsed(),
        serial: submission.job.serial_seconds,
        failed: submission.failed.clone(),
        ..Reply::default()
    }
}
