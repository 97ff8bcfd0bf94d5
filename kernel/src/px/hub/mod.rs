//! The hub: which engines exist, what each is running, and every cell's results.
//!
//! No sockets here: the link task feeds it decoded messages and takes what it wants sent from
//! its outbox, the pool tells it when a process exits, and a timer asks it to check heartbeats.
//! That keeps the rules (registration, death, bookkeeping of runs) testable on their own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use rustpx_protocol::{
    from_wire, to_wire, DisplayOutput, EngineExit, EngineId, Heartbeat, LinkMessage, ObjectRef,
    ObjectRequest, Platform, RegisterReply, RegisterRequest, RunReply, ShippedFile,
    ShutdownRequest, SignalRequest, StreamOutput,
};
use rustpx_wire::WireMessage;
use tokio::sync::mpsc::UnboundedSender;

use super::cell_files::InputCache;
use super::records::{CellRecord, EngineError};
use super::shipping::ObjectCatalog;
use rustpx_core::ErrorKind;

/// An engine that has not been heard from for this long is declared dead.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many cells' results the hub keeps; past it, the oldest finished ones are dropped, as
/// ipyparallel's hub culls its in-memory database past its record limit (1024).
pub const KEPT_RESULTS: usize = 1024;

/// A message for one engine, by its ZeroMQ identity.
pub type Outgoing = (Bytes, WireMessage);

/// What happened to one run, for the compiler thread waiting on it.
#[derive(Debug, Clone)]
pub enum RunEnd {
    Finished(RunReply),
    /// The engine is gone; the text says why.
    Died(String),
}

/// Something a watcher of a cell wants to know as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum CellEvent {
    /// New text on an engine's stream (the record holds the full text).
    Stream {
        engine: EngineId,
        name: String,
    },
    Display {
        engine: EngineId,
        index: usize,
    },
    /// An engine's part finished (its record says how).
    EngineDone {
        engine: EngineId,
    },
    /// Every engine finished.
    CellDone,
}

/// Whether an engine can take work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineState {
    Idle,
    Busy,
    Dead(String),
}

/// One registered engine.
#[derive(Debug, Clone)]
pub struct EngineEntry {
    pub id: EngineId,
    /// Distinguishes the processes that have held this id over time (restarts).
    pub incarnation: u64,
    pub identity: Bytes,
    pub pid: u32,
    pub hostname: String,
    pub state: EngineState,
    pub last_seen: Instant,
    /// Runs sent and not finished.
    pub queue: usize,
    /// Whether the engine reads compiled cells from the kernel's paths; otherwise they are
    /// described in each run request and it fetches what its host lacks.
    pub shares_files: bool,
}

impl EngineEntry {
    pub fn alive(&self) -> bool {
        !matches!(self.state, EngineState::Dead(_))
    }
}

struct PendingRun {
    cell_id: String,
    engine: EngineId,
    incarnation: u64,
    done: std_mpsc::Sender<RunEnd>,
    /// Files the engine should send back (an engine on another host).
    files_out: Vec<String>,
}

/// The hub's whole state.
pub struct Hub {
    session: String,
    engines: BTreeMap<EngineId, EngineEntry>,
    next_incarnation: u64,
    runs: HashMap<String, PendingRun>,
    cells: HashMap<String, CellRecord>,
    /// Cell ids, oldest first, for dropping the oldest results past [`KEPT_RESULTS`].
    cell_order: VecDeque<String>,
    observers: HashMap<String, UnboundedSender<CellEvent>>,
    /// The variables each engine holds with their types, as the compiler last knew them (for
    /// "variables lost", and for the type of a value `%pull` brings back).
    variables: HashMap<EngineId, Vec<(String, String)>>,
    /// Engines we signalled on purpose (interrupt): their death is expected.
    interrupted: HashMap<EngineId, u64>,
    /// Engines we stop on purpose (kernel shutdown, `%engines stop`, a restart), by
    /// incarnation: their end is news, not a warning.
    stopping: HashMap<EngineId, u64>,
    outbox: UnboundedSender<Outgoing>,
    /// The objects shipped to engines that do not share the kernel's files.
    catalog: ObjectCatalog,
    /// Data magic files sent to such engines, read once per version.
    inputs: InputCache,
    /// What cells are compiled for: engines on other platforms are refused.
    platform: Platform,
    /// Engines refused at registration since the last look, with why.
    refusals: Vec<String>,
    /// Engines gone without a process exit the pool saw, since the last look.
    departures: Vec<Departure>,
    /// The batch job each engine id was last submitted in (`slurm job 12`): every reason it
    /// leaves for names the job, which is what the user can look up with the scheduler.
    jobs: HashMap<EngineId, String>,
}

/// What a run request carries to an engine on another host; empty for one that shares the
/// kernel's files.
#[derive(Default)]
struct Shipment {
    objects: Vec<ObjectRef>,
    files_in: Vec<ShippedFile>,
    files_out: Vec<String>,
    /// The bytes of `files_in`, in order, as the message's buffers.
    buffers: Vec<Bytes>,
}

/// Why a run could not be sent to an engine on another host; its run fails in the kernel.
#[derive(Debug, thiserror::Error)]
enum ShipmentError {
    #[error(transparent)]
    Objects(#[from] super::shipping::ShippingError),
    #[error(transparent)]
    Inputs(#[from] super::cell_files::InputError),
}

/// An engine that left: which process of which id.
#[derive(Debug, Clone, PartialEq)]
pub struct Departure {
    pub id: EngineId,
    pub incarnation: u64,
    pub pid: u32,
}

impl Hub {
    pub fn new(outbox: UnboundedSender<Outgoing>) -> Hub {
        Hub {
            session: uuid::Uuid::new_v4().to_string(),
            engines: BTreeMap::new(),
            next_incarnation: 1,
            runs: HashMap::new(),
            cells: HashMap::new(),
            cell_order: VecDeque::new(),
            observers: HashMap::new(),
            variables: HashMap::new(),
            interrupted: HashMap::new(),
            stopping: HashMap::new(),
            outbox,
            catalog: ObjectCatalog::default(),
            inputs: InputCache::default(),
            platform: Platform::current(),
            refusals: Vec::new(),
            departures: Vec::new(),
            jobs: HashMap::new(),
        }
    }

    /// Engines `ids` run in batch job `job` from now on (`None`: in none).
    pub fn set_job(&mut self, ids: &[EngineId], job: Option<&str>) {
        for id in ids {
            match job {
                Some(job) => self.jobs.insert(*id, job.to_owned()),
                None => self.jobs.remove(id),
            };
        }
    }

    /// The incarnation the next engine to register gets.
    pub fn next_incarnation(&self) -> u64 {
        self.next_incarnation
    }

    /// Engines refused at registration since the last call, each with its one-line reason.
    pub fn take_refusals(&mut self) -> Vec<String> {
        std::mem::take(&mut self.refusals)
    }

    fn send<M: LinkMessage>(&self, identity: &Bytes, message: &M) {
        let _ = self
            .outbox
            .send((identity.clone(), to_wire(&self.session, message)));
    }

    /// Sorted ids of the engines that are alive.
    pub fn live_ids(&self) -> Vec<EngineId> {
        self.engines
            .values()
            .filter(|e| e.alive())
            .map(|e| e.id)
            .collect()
    }

    /// Live engines with their incarnations, for the compiler's group bookkeeping.
    pub fn live_incarnations(&self) -> BTreeMap<EngineId, u64> {
        self.engines
            .values()
            .filter(|e| e.alive())
            .map(|e| (e.id, e.incarnation))
            .collect()
    }

    pub fn engines(&self) -> impl Iterator<Item = &EngineEntry> {
        self.engines.values()
    }

    pub fn engine(&self, id: EngineId) -> Option<&EngineEntry> {
        self.engines.get(&id)
    }

    /// Dispatches one message from an engine.
    pub fn receive(&mut self, identity: Bytes, message: &WireMessage) {
        let sender = self.engine_by_identity(&identity);
        if let Some(id) = sender {
            if let Some(engine) = self.engines.get_mut(&id) {
                engine.last_seen = Instant::now();
            }
        }
        let result = match message.msg_type() {
            RegisterRequest::MSG_TYPE => from_wire(message).map(|r| self.register(identity, r)),
            Heartbeat::MSG_TYPE => {
                if sender.is_some() {
                    self.send(&identity, &Heartbeat {});
                }
                Ok(())
            }
            StreamOutput::MSG_TYPE => from_wire(message).map(|s| self.stream(s)),
            DisplayOutput::MSG_TYPE => from_wire(message).map(|d| self.display(d)),
            RunReply::MSG_TYPE => from_wire(message).map(|r| {
                self.take_files(&r, &message.buffers);
                self.run_reply(r)
            }),
            EngineExit::MSG_TYPE => from_wire::<EngineExit>(message).map(|exit| {
                if let Some(id) = sender {
                    self.departed(id, &exit.reason);
                }
            }),
            ObjectRequest::MSG_TYPE if sender.is_some() => {
                from_wire(message).map(|r| self.send_objects(&identity, r))
            }
            other => {
                tracing::warn!("hub: dropped an unknown message type {other:?}");
                Ok(())
            }
        };
        if let Err(error) = result {
            tracing::warn!("hub: dropped a message: {error}");
        }
    }

    fn engine_by_identity(&self, identity: &Bytes) -> Option<EngineId> {
        self.engines
            .values()
            .find(|e| e.alive() && e.identity == identity)
            .map(|e| e.id)
    }

    fn register(&mut self, identity: Bytes, request: RegisterRequest) {
        if let Some(why) = request.platform.incompatibility(&self.platform) {
            let text = format!(
                "refused an engine from {} (pid {}): {why}",
                request.hostname, request.pid
            );
            tracing::warn!("{text}");
            self.refusals.push(text);
            self.send(
                &identity,
                &RegisterReply {
                    engine_id: None,
                    refused: Some(why),
                },
            );
            return;
        }
        let taken = |id: &EngineId| self.engines.get(id).is_some_and(|e| e.alive());
        let id = match request.requested_id {
            Some(id) if !taken(&id) => id,
            _ => (0..).find(|id| !taken(id)).unwrap_or(0),
        };
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        tracing::info!(
            "engine {id} registered (pid {} on {}, incarnation {incarnation})",
            request.pid,
            request.hostname
        );
        self.engines.insert(
            id,
            EngineEntry {
                id,
                incarnation,
                identity: identity.clone(),
                pid: request.pid,
                hostname: request.hostname,
                state: EngineState::Idle,
                last_seen: Instant::now(),
                queue: 0,
                shares_files: request.shares_files,
            },
        );
        self.variables.remove(&id);
        self.send(
            &identity,
            &RegisterReply {
                engine_id: Some(id),
                refused: None,
            },
        );
    }

    /// Asks engine `id` to raise `signal` in itself (the kernel cannot signal a process on
    /// another host). Returns whether the engine is alive to be asked.
    pub fn signal_engine(&mut self, id: EngineId, signal: i32) -> bool {
        let Some(identity) = self
            .engines
            .get(&id)
            .filter(|e| e.alive())
            .map(|e| e.identity.clone())
        else {
            return false;
        };
        self.send(&identity, &SignalRequest { signal });
        true
    }

    /// The engine process `id` (that incarnation, or any if `None`) is gone.
    pub fn engine_gone(&mut self, id: EngineId, incarnation: Option<u64>, reason: &str) {
        let Some(entry) = self.engines.get_mut(&id) else {
            return;
        };
        if incarnation.is_some_and(|i| i != entry.incarnation) || !entry.alive() {
            return;
        }
        let incarnation = entry.incarnation;
        let reason = &match self.jobs.get(&id) {
            Some(job) => format!("{job}: {reason}"),
            None => reason.to_owned(),
        };
        let on_purpose = self.stopping.remove(&id) == Some(incarnation)
            || self.interrupted.get(&id) == Some(&incarnation);
        if on_purpose {
            tracing::info!("engine {id} stopped: {reason}");
        } else {
            tracing::warn!("engine {id} is gone: {reason}");
        }
        entry.state = EngineState::Dead(reason.to_owned());
        entry.queue = 0;
        let lost: Vec<String> = self
            .variables
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let runs: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, r)| r.engine == id && r.incarnation == incarnation)
            .map(|(k, _)| k.clone())
            .collect();
        for run_id in runs {
            let Some(run) = self.runs.remove(&run_id) else {
                continue;
            };
            if let Some(record) = self
                .cells
                .get_mut(&run.cell_id)
                .and_then(|c| c.engines.get_mut(&id))
            {
                let lost_text = if lost.is_empty() {
                    "It held no variables.".to_owned()
                } else {
                    format!("Variables lost: {}.", lost.join(", "))
                };
                record.finish(Some(EngineError {
                    kind: ErrorKind::Engine,
                    evalue: format!("Engine {id} died while running task '{}'", record.task_id),
                    traceback: vec![
                        format!(
                            "EngineError: Engine {id} died while running task '{}' ({reason})",
                            record.task_id
                        ),
                        format!("{lost_text} Restart it with `%engines restart {id}`."),
                    ],
                    shared_by: Vec::new(),
                    codes: Vec::new(),
                }));
            }
            self.notify(&run.cell_id, CellEvent::EngineDone { engine: id });
            let _ = run.done.send(RunEnd::Died(reason.to_owned()));
        }
    }

    /// Declares engines dead whose heartbeats stopped; returns them (with pids) to be killed.
    pub fn check_heartbeats(&mut self, now: Instant) -> Vec<(EngineId, u32)> {
        let silent: Vec<(EngineId, u32, f64)> = self
            .engines
            .values()
            .filter(|e| e.alive() && now.duration_since(e.last_seen) > HEARTBEAT_TIMEOUT)
            .map(|e| (e.id, e.pid, now.duration_since(e.last_seen).as_secs_f64()))
            .collect();
        for (id, _, seconds) in &silent {
            self.departed(
                *id,
                &format!(
                    "no heartbeat for {seconds:.1} s; the process is hung or stopped, or its host is unreachable"
                ),
            );
        }
        silent.into_iter().map(|(id, pid, _)| (id, pid)).collect()
    }

    /// Engine `id` said it is exiting: it is gone now, and whoever watches departures (the
    /// pool, to restart an interrupted engine) hears of it from [`Hub::take_departures`].
    fn departed(&mut self, id: EngineId, reason: &str) {
        let Some(entry) = self.engines.get(&id).filter(|e| e.alive()) else {
            return;
        };
        let (incarnation, pid) = (entry.incarnation, entry.pid);
        self.engine_gone(id, Some(incarnation), reason);
        self.departures.push(Departure {
            id,
            incarnation,
            pid,
        });
    }

    /// Engines that left without the pool seeing a process end (silent or said goodbye).
    pub fn take_departures(&mut self) -> Vec<Departure> {
        std::mem::take(&mut self.departures)
    }

    /// Asks an engine to exit (its end is then expected).
    pub fn shutdown_engine(&mut self, id: EngineId) {
        self.expect_exit(id);
        if let Some(entry) = self.engines.get(&id).filter(|e| e.alive()) {
            let identity = entry.identity.clone();
            self.send(&identity, &ShutdownRequest {});
        }
    }

    /// Notes that the live engine `id` is being stopped on purpose, so that its end (a signal,
    /// a goodbye, silence) is logged as news rather than as an engine that died.
    pub fn expect_exit(&mut self, id: EngineId) {
        if let Some(entry) = self.engines.get(&id).filter(|e| e.alive()) {
            self.stopping.insert(id, entry.incarnation);
        }
    }

    /// Notes that `id` was signalled on purpose (an interrupt), so its death is expected.
    pub fn mark_interrupted(&mut self, id: EngineId) {
        if let Some(entry) = self.engines.get(&id) {
            self.interrupted.insert(id, entry.incarnation);
        }
    }

    /// Whether the dead engine `id` died because we interrupted it (and forgets that).
    pub fn take_interrupted(&mut self, id: EngineId, incarnation: u64) -> bool {
        self.interrupted.remove(&id) == Some(incarnation)
    }

    pub fn set_variables(&mut self, id: EngineId, variables: Vec<(String, String)>) {
        self.variables.insert(id, variables);
    }

    /// The names of engine `id`'s variables.
    pub fn variables(&self, id: EngineId) -> Vec<String> {
        self.variables
            .get(&id)
            .map(|vars| vars.iter().map(|(name, _)| name.clone()).collect())
            .unwrap_or_default()
    }

    /// The type of variable `name` on engine `id`, as evcxr spells it.
    pub fn variable_type(&self, id: EngineId, name: &str) -> Option<String> {
        self.variables
            .get(&id)?
            .iter()
            .find(|(var, _)| var == name)
            .map(|(_, ty)| ty.clone())
    }

    // --- the results store ---
}

fn parse_time(text: &str) -> Option<chrono::DateTime<Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

mod handle;
mod results;
mod runs;

pub use handle::{HubHandle, StartedEngineEnd};
#[cfg(test)]
mod tests;
