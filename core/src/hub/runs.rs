//! Runs on the hub: a compiled cell sent to its engines (with what another host needs, read by
//! the kernel beforehand), and what comes back (streams, displays, the reply) filed in the
//! cell's records.

use chrono::{DateTime, Utc};

use super::{CellEvent, Effect, EngineState, Hub, PendingRun, RunEnd, Shipment, ToEngine};
use crate::link_messages::{DisplayOutput, RunReply, RunRequest, RunStatus, StreamOutput};
use crate::records::{EngineError, TaskState};
use crate::{EngineId, ErrorKind};

/// One engine's run of a compiled cell, as the kernel asks for it.
#[derive(Debug, Clone)]
pub struct RunOrder<'a> {
    pub cell_id: &'a str,
    pub engine: EngineId,
    /// The process the code was compiled for: a restarted engine with the same id must not
    /// get it.
    pub incarnation: u64,
    pub so_path: &'a str,
    pub fn_name: &'a str,
    /// Whether the cell ends in an expression (see [`RunRequest::may_have_value`]).
    pub may_have_value: bool,
    /// What an engine on another host needs (empty for one that shares the kernel's files),
    /// or why the kernel could not read it.
    pub shipment: Result<Shipment, String>,
}

impl Hub {
    /// Whether a run on engine `engine` (process `incarnation`) needs a [`Shipment`] read: it is
    /// alive as that process and does not share the kernel's files.
    pub fn needs_shipment(&self, engine: EngineId, incarnation: u64) -> bool {
        self.engines
            .get(&engine)
            .is_some_and(|e| e.alive() && e.incarnation == incarnation && !e.shares_files)
    }

    /// Sends a run to its engine and returns its id; [`Effect::RunEnded`] with that id says
    /// when it finished or the engine died (at once, when the engine is gone already).
    pub fn start_run(&mut self, order: RunOrder<'_>, now: DateTime<Utc>) -> String {
        let run_id = format!("run-{}", self.next_run);
        self.next_run += 1;
        let RunOrder {
            cell_id,
            engine,
            incarnation,
            ..
        } = order;
        let Some(entry) = self
            .engines
            .get_mut(&engine)
            .filter(|e| e.alive() && e.incarnation == incarnation)
        else {
            let why = format!("engine {engine} restarted or stopped before this cell reached it");
            if let Some(record) = self
                .cells
                .get_mut(cell_id)
                .and_then(|c| c.engines.get_mut(&engine))
            {
                record.finish(Some(EngineError {
                    kind: ErrorKind::Engine,
                    evalue: format!(
                        "Engine {engine} was restarted before task '{}' ran",
                        record.task_id
                    ),
                    traceback: vec![format!("EngineError: {why}; the cell did not run there")],
                    shared_by: Vec::new(),
                    codes: Vec::new(),
                }));
            }
            self.notify(cell_id, CellEvent::EngineDone { engine });
            self.effects.push(Effect::RunEnded {
                run_id: run_id.clone(),
                end: RunEnd::Died(why),
            });
            return run_id;
        };
        entry.queue += 1;
        entry.state = EngineState::Busy;
        let identity = entry.identity.clone();
        if let Some(record) = self
            .cells
            .get_mut(cell_id)
            .and_then(|c| c.engines.get_mut(&engine))
        {
            record.state = TaskState::Running;
            record.started.get_or_insert(now);
        }
        let shipment = order.shipment;
        self.runs.insert(
            run_id.clone(),
            PendingRun {
                cell_id: cell_id.to_owned(),
                engine,
                incarnation,
                files_out: shipment
                    .as_ref()
                    .map(|s| s.files_out.clone())
                    .unwrap_or_default(),
            },
        );
        match shipment {
            Ok(shipment) => {
                let request = RunRequest {
                    run_id: run_id.clone(),
                    cell_id: cell_id.to_owned(),
                    so_path: order.so_path.to_owned(),
                    fn_name: order.fn_name.to_owned(),
                    objects: shipment.objects,
                    files_in: shipment.files_in,
                    files_out: shipment.files_out,
                    may_have_value: order.may_have_value,
                };
                self.send(&identity, ToEngine::Run(request, shipment.buffers));
            }
            Err(error) => {
                // The engine cannot have the cell: fail its run here, as the engine would.
                tracing::error!("engine {engine} cannot be sent this cell: {error}");
                let now = now.to_rfc3339();
                self.run_reply(RunReply {
                    run_id: run_id.clone(),
                    execution_count: 0,
                    status: RunStatus::LoadFailed {
                        message: format!(
                            "the kernel cannot ship this cell to engine {engine}: {error}"
                        ),
                    },
                    value: None,
                    changed_type: Vec::new(),
                    started: now.clone(),
                    completed: now,
                    files: Vec::new(),
                });
            }
        }
        run_id
    }

    /// The engine of a pending run and the files it was asked to send back: where the kernel
    /// writes a reply's returned files before handing the reply in.
    pub fn files_out(&self, run_id: &str) -> Option<(EngineId, Vec<String>)> {
        self.runs
            .get(run_id)
            .map(|run| (run.engine, run.files_out.clone()))
    }

    pub(super) fn notify(&mut self, cell_id: &str, event: CellEvent) {
        self.effects.push(Effect::Notify {
            cell_id: cell_id.to_owned(),
            event,
        });
    }

    pub(super) fn stream(&mut self, output: StreamOutput) {
        let Some(run) = self.runs.get(&output.run_id) else {
            tracing::debug!("hub: output for an unknown run dropped");
            return;
        };
        let (cell_id, engine) = (run.cell_id.clone(), run.engine);
        if let Some(record) = self
            .cells
            .get_mut(&cell_id)
            .and_then(|c| c.engines.get_mut(&engine))
        {
            match output.name.as_str() {
                "stderr" => record.stderr.push_str(&output.text),
                _ => record.stdout.push_str(&output.text),
            }
        }
        self.notify(
            &cell_id,
            CellEvent::Stream {
                engine,
                name: output.name,
            },
        );
    }

    pub(super) fn display(&mut self, output: DisplayOutput) {
        let Some(run) = self.runs.get(&output.run_id) else {
            return;
        };
        let (cell_id, engine) = (run.cell_id.clone(), run.engine);
        let mut index = 0;
        if let Some(record) = self
            .cells
            .get_mut(&cell_id)
            .and_then(|c| c.engines.get_mut(&engine))
        {
            record.displays.push(output.data);
            index = record.displays.len() - 1;
        }
        self.notify(&cell_id, CellEvent::Display { engine, index });
    }

    pub(super) fn run_reply(&mut self, reply: RunReply) {
        let Some(run) = self.runs.remove(&reply.run_id) else {
            tracing::debug!("hub: reply for an unknown run dropped");
            return;
        };
        if let Some(entry) = self.engines.get_mut(&run.engine) {
            entry.queue = entry.queue.saturating_sub(1);
            if entry.queue == 0 && entry.alive() {
                entry.state = EngineState::Idle;
            }
        }
        let failed = if let Some(record) = self
            .cells
            .get_mut(&run.cell_id)
            .and_then(|c| c.engines.get_mut(&run.engine))
        {
            record.execution_count = Some(reply.execution_count);
            if reply.value.is_some() {
                record.value = reply.value.clone();
            }
            record.started = parse_time(&reply.started).or(record.started);
            record.completed = parse_time(&reply.completed);
            let error = run_error(&reply.status, &record.stderr);
            let failed = error.is_some();
            if failed {
                record.finish(error);
            }
            failed
        } else {
            false
        };
        if failed {
            self.notify(&run.cell_id, CellEvent::EngineDone { engine: run.engine });
        }
        self.effects.push(Effect::RunEnded {
            run_id: reply.run_id.clone(),
            end: RunEnd::Finished(reply),
        });
    }
}

/// The error a run's status means for the user, if any; `stderr` is what the run wrote (a
/// `?` error's text is its last line).
fn run_error(status: &RunStatus, stderr: &str) -> Option<EngineError> {
    let error = |kind, evalue: String, traceback| EngineError {
        kind,
        evalue,
        traceback,
        shared_by: Vec::new(),
        codes: Vec::new(),
    };
    match status {
        RunStatus::Ok => None,
        RunStatus::Panic { message, location } => Some(error(
            ErrorKind::Panic,
            message.clone(),
            vec![
                format!("panicked at {location}: {message}"),
                "Variables this cell defined were not kept on this engine.".into(),
            ],
        )),
        RunStatus::UserError => {
            let last = stderr
                .lines()
                .last()
                .unwrap_or("the cell returned an error through `?`")
                .to_owned();
            Some(error(
                ErrorKind::Other,
                last.clone(),
                vec![format!("Error: {last}")],
            ))
        }
        RunStatus::LoadFailed { message } => {
            Some(error(ErrorKind::Load, message.clone(), Vec::new()))
        }
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The most objects one request of an engine is answered with: a cell's object and the
/// libraries it links (libstd and its dependencies) are far fewer.
pub const MAX_OBJECTS_ASKED: usize = 1024;

/// What an engine's object request is answered with: each object once, at most
/// [`MAX_OBJECTS_ASKED`], so that a request naming one large object thousands of times does not
/// make the kernel queue it as often.
pub(super) fn objects_to_send(mut asked: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    asked.retain(|hash| seen.insert(hash.clone()));
    asked.truncate(MAX_OBJECTS_ASKED);
    asked
}
