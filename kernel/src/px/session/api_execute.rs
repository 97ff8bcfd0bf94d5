//! `DirectView::execute` of the Rust API: a cell run on the view's engines as `%px` runs it
//! (compiled once per engine state, the engines' variables kept), its outputs read back from
//! the hub's record of the cell instead of shown on iopub.

use std::collections::BTreeMap;
use std::time::Instant;

use rustpx_client::api_wire::{encode_outputs, EngineOutput, EXECUTION_IDS};
use rustpx_protocol::EngineId;
use rustpx_wire::WireMessage;

use super::super::api::{Reply, Request};
use super::super::records::{CellRecord, TaskState};
use super::PxService;
use crate::px::cell_files::CellFiles;

/// Executions kept for their results; beyond it the oldest are dropped.
const MAX_EXECUTIONS: usize = 1024;

/// One executed cell.
pub(super) struct Execution {
    cell_id: String,
    submitted: Instant,
    finished: Option<Instant>,
}

/// The executions by id (ids from [`EXECUTION_IDS`] up, so they never meet a submission's).
#[derive(Default)]
pub(super) struct Executions {
    cells: BTreeMap<u64, Execution>,
    next: u64,
}

impl PxService {
    pub(super) async fn api_execute(
        &mut self,
        cell: &WireMessage,
        request: Request,
    ) -> Result<Reply, String> {
        if request.function.trim().is_empty() {
            return Err("execute: the code is empty".into());
        }
        let engines = self.api_targets(cell, request.targets.as_deref()).await?;
        let (cell_id, _events) = self
            .submit_quietly(&request.function, &engines, CellFiles::default())
            .map_err(|report| report.evalue)?;
        // `%pxresult` shows it as it shows a `%px` cell's outputs.
        self.last = Some(cell_id.clone());
        self.map_is_last = false;
        self.api_is_last = None;
        let executions = &mut self.api_executions;
        while executions.cells.len() >= MAX_EXECUTIONS {
            executions.cells.pop_first();
        }
        executions.next += 1;
        let id = EXECUTION_IDS + executions.next;
        executions.cells.insert(
            id,
            Execution {
                cell_id,
                submitted: Instant::now(),
                finished: None,
            },
        );
        Ok(Reply {
            job: id,
            ..Reply::default()
        })
    }

    /// The hub's record of execution `id`, and its state as a reply.
    fn execution(&mut self, id: u64) -> Result<(CellRecord, Reply), String> {
        let hub = self.machinery().map_err(|r| r.evalue)?.hub.clone();
        let execution = self
            .api_executions
            .cells
            .get_mut(&id)
            .ok_or_else(|| format!("execution {id} is no longer kept"))?;
        let record = hub
            .cell(&execution.cell_id)
            .ok_or_else(|| format!("execution {id} is no longer kept by the hub"))?;
        let ready = record.is_done();
        if ready {
            execution.finished.get_or_insert_with(Instant::now);
        }
        let runs = record.engines.values();
        let serial: f64 = runs
            .clone()
            .filter_map(|run| Some((run.completed? - run.started?).as_seconds_f64()))
            .sum();
        let reply = Reply {
            job: id,
            done_items: runs
                .clone()
                .filter(|run| run.state == TaskState::Done)
                .count() as u64,
            total_items: record.engines.len() as u64,
            ready,
            elapsed: execution
                .finished
                .unwrap_or_else(Instant::now)
                .duration_since(execution.submitted)
                .as_secs_f64(),
            serial,
            failures: runs
                .filter_map(|run| {
                    let error = run.error.as_ref()?;
                    Some((u64::from(run.engine), run.engine, error.summary()))
                })
                .collect(),
            ..Reply::default()
        };
        Ok((record, reply))
    }

    pub(super) fn api_execution_status(&mut self, id: u64) -> Result<Reply, String> {
        self.execution(id).map(|(_, reply)| reply)
    }

    pub(super) fn api_execution_results(&mut self, id: u64) -> Result<Reply, String> {
        let (record, reply) = self.execution(id)?;
        if !reply.ready {
            return Err(format!("execution {id} is not finished"));
        }
        let outputs: Vec<EngineOutput> = record
            .targets
            .iter()
            .filter_map(|engine| record.engines.get(engine))
            .map(|run| {
                (
                    run.engine,
                    run.stdout.clone(),
                    run.stderr.clone(),
                    run.value
                        .as_ref()
                        .and_then(|bundle| bundle.get("text/plain").cloned()),
                    run.error.as_ref().map(|error| error.summary()),
                )
            })
            .collect();
        let payload = encode_outputs(&outputs).map_err(|e| e.to_string())?;
        Ok(Reply { payload, ..reply })
    }

    pub(super) fn api_forget_execution(&mut self, id: u64) {
        self.api_executions.cells.remove(&id);
    }

    /// The engines a call's targets name (every live one for `None`), starting a local pool
    /// if none runs; an id that is not live is an error naming it.
    pub(super) async fn api_targets(
        &mut self,
        cell: &WireMessage,
        targets: Option<&[EngineId]>,
    ) -> Result<Vec<EngineId>, String> {
        let live = self.ensure_engines(cell).await.map_err(|r| r.evalue)?;
        let engines = match targets {
            None => live,
            Some(ids) => {
                if let Some(missing) = ids.iter().find(|id| !live.contains(id)) {
                    return Err(format!(
                        "IndexError: No such engine: {missing} (live engines: {live:?})"
                    ));
                }
                ids.to_vec()
            }
        };
        if engines.is_empty() {
            return Err("the view selects no engine".into());
        }
        Ok(engines)
    }
}
