//! The one way the rest of the kernel reaches the hub: a cloneable handle whose methods each
//! take the hub's lock for one step and let go before returning.
//!
//! Callers never hold the lock themselves, so none can keep it across an `.await`, a blocking
//! receive or a compile, and every step that must see the hub in one state (end a group of
//! engines' runs, count who is ready, start runs on several engines) is one method here.

use std::collections::BTreeMap;
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use rustpx_protocol::EngineId;
use rustpx_wire::WireMessage;
use tokio::sync::mpsc::UnboundedSender;

use super::{CellEvent, Departure, EngineEntry, Hub, Outgoing, RunEnd};
use crate::px::cell_files::CellFiles;
use crate::px::records::{CellRecord, EngineError, TaskState};

/// Shared access to the hub, one locked step per call.
#[derive(Clone)]
pub struct HubHandle {
    hub: Arc<Mutex<Hub>>,
}

/// What became of an engine the pool started, once the process that held it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartedEngineEnd {
    /// It had registered (as this incarnation), and is now marked gone.
    WasRunning(u64),
    /// It registered and is already marked gone: nothing to do.
    AlreadyGone,
    /// It never registered.
    NeverRegistered,
}

impl HubHandle {
    pub fn new(outbox: UnboundedSender<Outgoing>) -> HubHandle {
        HubHandle {
            hub: Arc::new(Mutex::new(Hub::new(outbox))),
        }
    }

    /// A hub that panicked mid-step still holds consistent bookkeeping for everything else:
    /// the other engines and cells go on (see [`crate::px::lock`]).
    fn lock(&self) -> MutexGuard<'_, Hub> {
        crate::px::lock(&self.hub)
    }

    // --- The link: what engines send, and the heartbeat clock.

    pub fn receive(&self, identity: Bytes, message: &WireMessage) {
        self.lock().receive(identity, message);
    }

    /// Declares silent engines dead and returns every engine that left since the last look.
    pub fn check_heartbeats(&self, now: Instant) -> Vec<Departure> {
        let mut hub = self.lock();
        hub.check_heartbeats(now);
        hub.take_departures()
    }

    // --- The registry.

    pub fn live_ids(&self) -> Vec<EngineId> {
        self.lock().live_ids()
    }

    pub fn live_incarnations(&self) -> BTreeMap<EngineId, u64> {
        self.lock().live_incarnations()
    }

    pub fn next_incarnation(&self) -> u64 {
        self.lock().next_incarnation()
    }

    pub fn take_refusals(&self) -> Vec<String> {
        self.lock().take_refusals()
    }

    /// A copy of engine `id`'s entry, alive or dead.
    pub fn engine(&self, id: EngineId) -> Option<EngineEntry> {
        self.lock().engine(id).cloned()
    }

    /// Copies of every known engine's entry, by id.
    pub fn engines(&self) -> Vec<EngineEntry> {
        self.lock().engines().cloned().collect()
    }

    pub fn is_alive(&self, id: EngineId) -> bool {
        self.lock().engine(id).is_some_and(EngineEntry::alive)
    }

    /// How many of `ids` are registered and alive.
    pub fn count_alive(&self, ids: &[EngineId]) -> usize {
        let hub = self.lock();
        ids.iter()
            .filter(|id| hub.engine(**id).is_some_and(EngineEntry::alive))
            .count()
    }

    /// The first of `ids` the hub has never seen.
    pub fn first_unknown(&self, ids: &[EngineId]) -> Option<EngineId> {
        let hub = self.lock();
        ids.iter().copied().find(|id| hub.engine(*id).is_none())
    }

    pub fn signal_engine(&self, id: EngineId, signal: i32) -> bool {
        self.lock().signal_engine(id, signal)
    }

    pub fn engine_gone(&self, id: EngineId, incarnation: Option<u64>, reason: &str) {
        self.lock().engine_gone(id, incarnation, reason);
    }

    /// Engines `ids` run in batch job `job` (`None`: in none), which their departures name.
    pub fn set_job(&self, ids: &[EngineId], job: Option<&str>) {
        self.lock().set_job(ids, job);
    }

    pub fn shutdown_engine(&self, id: EngineId) {
        self.lock().shutdown_engine(id);
    }

    pub fn expect_exit(&self, id: EngineId) {
        self.lock().expect_exit(id);
    }

    pub fn take_interrupted(&self, id: EngineId, incarnation: u64) -> bool {
        self.lock().take_interrupted(id, incarnation)
    }

    /// Settles an engine the pool started from `first_incarnation` on, whose process ended:
    /// if it had registered it is marked gone with `reason`, in the same step as the look.
    pub fn end_started_engine(
        &self,
        id: EngineId,
        first_incarnation: u64,
        reason: &str,
    ) -> StartedEngineEnd {
        let mut hub = self.lock();
        let Some(entry) = hub
            .engine(id)
            .filter(|e| e.incarnation >= first_incarnation)
        else {
            return StartedEngineEnd::NeverRegistered;
        };
        if !entry.alive() {
            return StartedEngineEnd::AlreadyGone;
        }
        let incarnation = entry.incarnation;
        hub.engine_gone(id, Some(incarnation), reason);
        StartedEngineEnd::WasRunning(incarnation)
    }

    // --- Variables as the compiler last knew them.

    /// Records the same variables for every engine of a group.
    pub fn set_variables(&self, ids: &[EngineId], variables: &[(String, String)]) {
        let mut hub = self.lock();
        for &id in ids {
            hub.set_variables(id, variables.to_vec());
        }
    }

    pub fn variables(&self, id: EngineId) -> Vec<String> {
        self.lock().variables(id)
    }

    pub fn variable_type(&self, id: EngineId, name: &str) -> Option<String> {
        self.lock().variable_type(id, name)
    }

    // --- Cells, their runs and their results.

    /// Records a new cell, and subscribes `observer` to its events when one is given.
    pub fn add_cell(&self, cell: CellRecord, observer: Option<UnboundedSender<CellEvent>>) {
        let mut hub = self.lock();
        let cell_id = cell.cell_id.clone();
        hub.add_cell(cell);
        if let Some(observer) = observer {
            hub.observe(&cell_id, observer);
        }
    }

    pub fn unobserve(&self, cell_id: &str) {
        self.lock().unobserve(cell_id);
    }

    /// A copy of a cell's record, if the hub still keeps it.
    pub fn cell(&self, cell_id: &str) -> Option<CellRecord> {
        self.lock().cell(cell_id).cloned()
    }

    pub fn has_cell(&self, cell_id: &str) -> bool {
        self.lock().cell(cell_id).is_some()
    }

    /// Whether a cell is finished, or no longer kept (which waiting treats the same).
    pub fn cell_done_or_dropped(&self, cell_id: &str) -> bool {
        self.lock().cell(cell_id).is_none_or(CellRecord::is_done)
    }

    /// The live engines of a cell still running, with the variables each holds, each marked
    /// as interrupted in the same step (so that its death is expected).
    pub fn interrupt_running(&self, cell_id: &str) -> Vec<(EngineId, Vec<String>)> {
        let mut hub = self.lock();
        let running: Vec<EngineId> = hub
            .cell(cell_id)
            .map(|cell| {
                cell.engines
                    .values()
                    .filter(|record| record.state != TaskState::Done)
                    .map(|record| record.engine)
                    .collect()
            })
            .unwrap_or_default();
        let mut signalled = Vec::new();
        for id in running {
            if hub.engine(id).is_some_and(EngineEntry::alive) {
                let variables = hub.variables(id);
                hub.mark_interrupted(id);
                signalled.push((id, variables));
            }
        }
        signalled
    }

    /// Sends one compiled object to each of `engines` (pinned to a process) in one step; each
    /// receiver answers when that run ended.
    pub fn start_runs(
        &self,
        cell_id: &str,
        engines: &[(EngineId, u64)],
        so_path: &str,
        fn_name: &str,
        files: &CellFiles,
    ) -> Vec<std_mpsc::Receiver<RunEnd>> {
        let mut hub = self.lock();
        engines
            .iter()
            .map(|&(engine, incarnation)| {
                hub.start_run(cell_id, engine, incarnation, so_path, fn_name, files)
            })
            .collect()
    }

    /// Ends each of `engines`' part of a cell with the same outcome.
    pub fn finish_engines(&self, cell_id: &str, engines: &[EngineId], error: Option<EngineError>) {
        let mut hub = self.lock();
        for &engine in engines {
            hub.finish_engine(cell_id, engine, error.clone());
        }
    }

    pub fn finish_cell(&self, cell_id: &str) {
        self.lock().finish_cell(cell_id);
    }

    /// Stops watching a cell and returns each engine's error in it.
    pub fn unobserve_and_take_failures(&self, cell_id: &str) -> Vec<(EngineId, EngineError)> {
        let mut hub = self.lock();
        hub.unobserve(cell_id);
        hub.cell(cell_id)
            .map(|cell| {
                cell.failures()
                    .into_iter()
                    .filter_map(|record| record.error.clone().map(|e| (record.engine, e)))
                    .collect()
            })
            .unwrap_or_default()
    }
}
