//! The one way the rest of the kernel reaches the hub: a cloneable handle whose methods each
//! take the hub's lock for one step, perform the effects the step decided, and let go before
//! returning.
//!
//! Callers never hold the lock themselves, so none can keep it across an `.await`, a blocking
//! receive or a compile, and every step that must see the hub in one state (end a group of
//! engines' runs, count who is ready, start runs on several engines) is one method here.
//! Messages are queued for the link while the lock is held, so each engine gets them in the
//! order the hub decided them; files are read and written only after it is released.

use std::collections::{BTreeMap, HashMap};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use rustpx_core::hub::{Effect, FromEngine, Hub, RunOrder, Shipment};
use rustpx_protocol::{from_engine_wire, to_engine_wire, EngineId};
use rustpx_wire::WireMessage;
use tokio::sync::mpsc::UnboundedSender;

use super::shipping_files::{write_returned_files, ShippingFiles};
use super::{CellEvent, Departure, EngineEntry, Outgoing, RunEnd};
use crate::px::cell_files::CellFiles;
use crate::px::map_relay::MapRelay;
use crate::px::records::{CellRecord, EngineError, TaskState};

/// Shared access to the hub, one locked step per call.
#[derive(Clone)]
pub struct HubHandle {
    state: Arc<Mutex<State>>,
    shipping: ShippingFiles,
    outbox: UnboundedSender<Outgoing>,
    /// The link session every message to engines carries.
    session: Arc<str>,
    /// `%pxmap` connections of engines on other hosts, which ride the link.
    relay: MapRelay,
}

/// The hub and who is told of what it decides: cells' watchers and runs' waiters.
struct State {
    hub: Hub,
    observers: HashMap<String, UnboundedSender<CellEvent>>,
    waiters: HashMap<String, std_mpsc::Sender<RunEnd>>,
}

/// What became of an engine the pool started, once the process that held it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartedEngineEnd {
    /// It had registered (as this incarnation), and is now marked gone.
    WasRunning {
        incarnation: u64,
        /// The kernel stopped, restarted or interrupted it: its end was no surprise.
        on_purpose: bool,
        /// The variables it held.
        lost: Vec<String>,
    },
    /// It registered and is already marked gone: nothing to do.
    AlreadyGone,
    /// It never registered.
    NeverRegistered,
}

/// Objects an engine asked for, to read and send once the lock is released.
type ObjectAsks = Vec<(Bytes, Vec<String>)>;

impl State {
    /// Performs the hub's effects that need no file: queue messages, tell watchers and
    /// waiters. Returns the object requests, which read files.
    fn deliver(&mut self, session: &str, outbox: &UnboundedSender<Outgoing>) -> ObjectAsks {
        let mut asks = Vec::new();
        for effect in self.hub.drain_effects() {
            match effect {
                Effect::Send { to, message } => {
                    let _ = outbox.send((to, to_engine_wire(session, message)));
                }
                Effect::SendObjects { to, sha256 } => asks.push((to, sha256)),
                Effect::RunEnded { run_id, end } => {
                    if let Some(waiter) = self.waiters.remove(&run_id) {
                        let _ = waiter.send(end);
                    }
                }
                Effect::Notify { cell_id, event } => {
                    if let Some(observer) = self.observers.get(&cell_id) {
                        let _ = observer.send(event);
                    }
                }
                Effect::Forget { cell_id } => {
                    self.observers.remove(&cell_id);
                }
            }
        }
        asks
    }
}

impl HubHandle {
    pub fn new(outbox: UnboundedSender<Outgoing>) -> HubHandle {
        let session: Arc<str> = uuid::Uuid::new_v4().to_string().into();
        HubHandle {
            relay: MapRelay::new(outbox.clone(), session.clone()),
            state: Arc::new(Mutex::new(State {
                hub: Hub::new(rustpx_protocol::this_platform()),
                observers: HashMap::new(),
                waiters: HashMap::new(),
            })),
            shipping: ShippingFiles::default(),
            outbox,
            session,
        }
    }

    /// A hub that panicked mid-step still holds consistent bookkeeping for everything else:
    /// the other engines and cells go on (see [`crate::px::lock`]).
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::px::lock(&self.state)
    }

    /// Runs one step on the hub under its lock, performs what it decided, and answers object
    /// requests after letting go.
    fn step<R>(&self, step: impl FnOnce(&mut Hub) -> R) -> R {
        self.step_state(|state| step(&mut state.hub))
    }

    /// [`Self::step`] for a step that also registers who is told (a watcher, a waiter) before
    /// the effects are delivered.
    fn step_state<R>(&self, step: impl FnOnce(&mut State) -> R) -> R {
        let (result, asks) = {
            let mut state = self.lock();
            let result = step(&mut state);
            (result, state.deliver(&self.session, &self.outbox))
        };
        for (to, hashes) in asks {
            self.shipping
                .send_objects(&self.session, &self.outbox, &to, hashes);
        }
        result
    }

    /// A read of the hub's state (no effects).
    fn read<R>(&self, read: impl FnOnce(&Hub) -> R) -> R {
        read(&self.lock().hub)
    }

    // --- The link: what engines send, and the heartbeat clock.

    /// The relay of `%pxmap` connections over the link, for the map scheduler.
    pub fn map_relay(&self) -> &MapRelay {
        &self.relay
    }

    /// Whether `identity` is the link identity of a live engine (the link keeps pieces of large
    /// messages only for those).
    pub fn is_engine(&self, identity: &Bytes) -> bool {
        self.read(|hub| hub.engine_by_identity(identity).is_some())
    }

    /// Declares the engine at `identity` gone for `reason`, as if it had said goodbye: its runs
    /// fail with the reason and the pool stops it.
    pub fn engine_failed(&self, identity: Bytes, reason: String) {
        let exit = FromEngine::Exit(rustpx_protocol::EngineExit { reason });
        self.step(|hub| hub.receive(identity, exit, Instant::now()));
    }

    /// Handles one message from the engine with link identity `identity`.
    pub fn receive(&self, identity: Bytes, message: &WireMessage) {
        if MapRelay::carries(message.msg_type()) {
            let engine = self.read(|hub| hub.engine_by_identity(&identity));
            self.relay.receive(identity, engine, message);
            return;
        }
        let decoded = match from_engine_wire(message) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => {
                tracing::warn!(
                    "hub: dropped an unknown message type {:?}",
                    message.msg_type()
                );
                return;
            }
            Err(error) => {
                tracing::warn!("hub: dropped a message: {error}");
                return;
            }
        };
        if let FromEngine::RunReply(reply) = &decoded {
            if !reply.files.is_empty() {
                if let Some((engine, files_out)) = self.read(|hub| hub.files_out(&reply.run_id)) {
                    write_returned_files(engine, &files_out, reply, &message.buffers);
                }
            }
        }
        self.step(|hub| hub.receive(identity, decoded, Instant::now()));
    }

    /// Declares silent engines dead and returns every engine that left since the last look.
    /// Also ends the `%pxmap` streams of engines that are gone, whichever way they left.
    pub fn check_heartbeats(&self, now: Instant) -> Vec<Departure> {
        let departures = self.step(|hub| {
            hub.check_heartbeats(now);
            hub.take_departures()
        });
        self.relay
            .drop_peers(|peer| self.read(|hub| hub.engine_by_identity(peer).is_some()));
        departures
    }

    // --- The registry.

    pub fn live_ids(&self) -> Vec<EngineId> {
        self.read(Hub::live_ids)
    }

    pub fn live_incarnations(&self) -> BTreeMap<EngineId, u64> {
        self.read(Hub::live_incarnations)
    }

    pub fn next_incarnation(&self) -> u64 {
        self.read(Hub::next_incarnation)
    }

    pub fn take_refusals(&self) -> Vec<String> {
        self.step(Hub::take_refusals)
    }

    /// Copies of every known engine's entry, by id.
    pub fn engines(&self) -> Vec<EngineEntry> {
        self.read(|hub| hub.engines().cloned().collect())
    }

    pub fn is_alive(&self, id: EngineId) -> bool {
        self.read(|hub| hub.engine(id).is_some_and(EngineEntry::alive))
    }

    /// How many of `ids` are registered and alive.
    pub fn count_alive(&self, ids: &[EngineId]) -> usize {
        self.read(|hub| {
            ids.iter()
                .filter(|id| hub.engine(**id).is_some_and(EngineEntry::alive))
                .count()
        })
    }

    /// The first of `ids` the hub has never seen.
    pub fn first_unknown(&self, ids: &[EngineId]) -> Option<EngineId> {
        self.read(|hub| ids.iter().copied().find(|id| hub.engine(*id).is_none()))
    }

    pub fn signal_engine(&self, id: EngineId, signal: i32) -> bool {
        self.step(|hub| hub.signal_engine(id, signal))
    }

    pub fn engine_gone(&self, id: EngineId, incarnation: Option<u64>, reason: &str) {
        self.step(|hub| hub.engine_gone(id, incarnation, reason));
    }

    /// Engines `ids` run in batch job `job` (`None`: in none), which their departures name.
    pub fn set_job(&self, ids: &[EngineId], job: Option<&str>) {
        self.step(|hub| hub.set_job(ids, job));
    }

    pub fn shutdown_engine(&self, id: EngineId) {
        self.step(|hub| hub.shutdown_engine(id));
    }

    pub fn expect_exit(&self, id: EngineId) {
        self.step(|hub| hub.expect_exit(id));
    }

    pub fn take_interrupted(&self, id: EngineId, incarnation: u64) -> bool {
        self.step(|hub| hub.take_interrupted(id, incarnation))
    }

    /// Settles an engine the pool started from `first_incarnation` on, whose process ended:
    /// if it had registered it is marked gone with `reason`, in the same step as the look.
    pub fn end_started_engine(
        &self,
        id: EngineId,
        first_incarnation: u64,
        reason: &str,
    ) -> StartedEngineEnd {
        self.step(|hub| {
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
            // Read before `engine_gone`, which forgets both.
            let on_purpose = hub.end_expected(id, incarnation);
            let lost = hub.variables(id);
            hub.engine_gone(id, Some(incarnation), reason);
            StartedEngineEnd::WasRunning {
                incarnation,
                on_purpose,
                lost,
            }
        })
    }

    // --- Variables as the compiler last knew them.

    /// Records the same variables for every engine of a group.
    pub fn set_variables(&self, ids: &[EngineId], variables: &[(String, String)]) {
        self.step(|hub| {
            for &id in ids {
                hub.set_variables(id, variables.to_vec());
            }
        });
    }

    pub fn variables(&self, id: EngineId) -> Vec<String> {
        self.read(|hub| hub.variables(id))
    }

    pub fn variable_type(&self, id: EngineId, name: &str) -> Option<String> {
        self.read(|hub| hub.variable_type(id, name))
    }

    // --- Cells, their runs and their results.

    /// Records a new cell, and subscribes `observer` to its events when one is given.
    pub fn add_cell(&self, cell: CellRecord, observer: Option<UnboundedSender<CellEvent>>) {
        self.shipping.prune_inputs();
        self.step_state(|state| {
            if let Some(observer) = observer {
                state.observers.insert(cell.cell_id.clone(), observer);
            }
            state.hub.add_cell(cell);
        });
    }

    pub fn unobserve(&self, cell_id: &str) {
        self.lock().observers.remove(cell_id);
    }

    /// A copy of a cell's record, if the hub still keeps it.
    pub fn cell(&self, cell_id: &str) -> Option<CellRecord> {
        self.read(|hub| hub.cell(cell_id).cloned())
    }

    /// What `look` reads from a cell's record, without copying the record: a wait that runs on
    /// every engine's event must not copy all engines' records each time (at 1024 engines that
    /// made a re-run quadratic).
    pub fn with_cell<R>(&self, cell_id: &str, look: impl FnOnce(&CellRecord) -> R) -> Option<R> {
        self.read(|hub| hub.cell(cell_id).map(look))
    }

    pub fn has_cell(&self, cell_id: &str) -> bool {
        self.read(|hub| hub.cell(cell_id).is_some())
    }

    /// Whether a cell is finished, or no longer kept (which waiting treats the same).
    pub fn cell_done_or_dropped(&self, cell_id: &str) -> bool {
        self.read(|hub| hub.cell(cell_id).is_none_or(CellRecord::is_done))
    }

    /// The live engines of a cell still running, with the variables each holds, each marked
    /// as interrupted in the same step (so that its death is expected).
    pub fn interrupt_running(&self, cell_id: &str) -> Vec<(EngineId, Vec<String>)> {
        self.step(|hub| {
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
            hub.interrupt(&running)
        })
    }

    /// The live engines that have been running a cell for `limit` or longer (its `--timeout`),
    /// not yet interrupted, with the variables each holds, each marked as interrupted in the
    /// same step. The time counts from when the engine was sent the cell, so the compile does
    /// not count against it.
    pub fn interrupt_overdue(
        &self,
        cell_id: &str,
        limit: std::time::Duration,
    ) -> Vec<(EngineId, Vec<String>)> {
        let Ok(limit) = chrono::TimeDelta::from_std(limit) else {
            return Vec::new();
        };
        self.step(|hub| {
            let overdue = hub.overdue(cell_id, limit, Utc::now());
            hub.interrupt(&overdue)
        })
    }

    /// Sends one compiled object to each of `engines` (pinned to a process); each receiver
    /// answers when that run ended. What engines on other hosts need is read first, with the
    /// lock released; the runs then start in one step.
    pub fn start_runs(
        &self,
        cell_id: &str,
        engines: &[(EngineId, u64)],
        so_path: &str,
        fn_name: &str,
        files: &CellFiles,
    ) -> Vec<std_mpsc::Receiver<RunEnd>> {
        let (remote, code) = self.read(|hub| {
            let remote: Vec<EngineId> = engines
                .iter()
                .filter(|&&(engine, incarnation)| hub.needs_shipment(engine, incarnation))
                .map(|&(engine, _)| engine)
                .collect();
            (remote, hub.cell(cell_id).map(|cell| cell.code.clone()))
        });
        let may_have_value = code
            .as_deref()
            .is_none_or(crate::cell_text::ends_in_expression);
        let mut shipments: HashMap<EngineId, Result<Shipment, String>> = remote
            .into_iter()
            .map(|engine| (engine, self.shipping.shipment(engine, so_path, files)))
            .collect();
        self.step_state(|state| {
            let now = Utc::now();
            let mut receivers = Vec::with_capacity(engines.len());
            for &(engine, incarnation) in engines {
                let order = RunOrder {
                    cell_id,
                    engine,
                    incarnation,
                    so_path,
                    fn_name,
                    may_have_value,
                    shipment: shipments
                        .remove(&engine)
                        .unwrap_or_else(|| Ok(Shipment::default())),
                };
                let run_id = state.hub.start_run(order, now);
                let (done, receiver) = std_mpsc::channel();
                state.waiters.insert(run_id, done);
                receivers.push(receiver);
            }
            receivers
        })
    }

    /// Ends each of `engines`' part of a cell with the same outcome.
    pub fn finish_engines(&self, cell_id: &str, engines: &[EngineId], error: Option<EngineError>) {
        self.step(|hub| {
            for &engine in engines {
                hub.finish_engine(cell_id, engine, error.clone());
            }
        });
    }

    /// Adds a note of the compiler's to a cell (shown after the engines' outputs).
    pub fn add_note(&self, cell_id: &str, text: String) {
        self.step(|hub| hub.add_note(cell_id, text));
    }

    pub fn finish_cell(&self, cell_id: &str) {
        self.step(|hub| hub.finish_cell(cell_id));
    }

    /// Stops watching a cell and returns each engine's error in it.
    pub fn unobserve_and_take_failures(&self, cell_id: &str) -> Vec<(EngineId, EngineError)> {
        let mut state = self.lock();
        state.observers.remove(cell_id);
        state
            .hub
            .cell(cell_id)
            .map(|cell| {
                cell.failures()
                    .into_iter()
                    .filter_map(|record| record.error.clone().map(|e| (record.engine, e)))
                    .collect()
            })
            .unwrap_or_default()
    }
}
