//! The hub's rules, with no I/O: which engines exist, what each is running, and every cell's
//! results.
//!
//! The hub takes events (what an engine sent, a process that ended, the heartbeat clock, a
//! cell to run) together with the time, and answers with [`Effect`]s: a message to send, a
//! run that ended, a watcher to tell, objects to read and ship. The kernel's handle performs
//! them, reading and writing files outside the hub's lock; the link encodes and seals the
//! messages. So every rule here (registration, death, bookkeeping of runs and results) is
//! tested by feeding events and reading effects, without sockets, processes or files.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::link_messages::{
    DisplayOutput, EngineExit, ObjectRef, ObjectRequest, Platform, RegisterReply, RegisterRequest,
    RunReply, RunRequest, ShippedFile, SignalRequest, StreamOutput, LINK_VERSION,
};
use crate::records::{CellRecord, EngineError};
use crate::{EngineId, ErrorKind};

mod heartbeats;
mod results;
mod runs;

pub use runs::RunOrder;
#[cfg(test)]
mod tests;

pub use heartbeats::{heartbeat_period, HEARTBEAT_TIMEOUT};

/// How many cells' results the hub keeps; past it, the oldest finished ones are dropped, as
/// ipyparallel's hub culls its in-memory database past its record limit (1024).
pub const KEPT_RESULTS: usize = 1024;

/// What happened to one run, for whoever waits on it.
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
    /// The engine's ZeroMQ identity on the link: where its messages go.
    pub identity: Bytes,
    pub pid: u32,
    pub hostname: String,
    pub state: EngineState,
    pub last_seen: Instant,
    /// When the hub last answered a sign of life (see [`FromEngine::Piece`]).
    pub last_answered: Instant,
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

/// What an engine sent, decoded (the link has checked who sent it and that it is fresh).
#[derive(Debug, Clone)]
pub enum FromEngine {
    Register(RegisterRequest),
    Heartbeat,
    Stream(StreamOutput),
    Display(DisplayOutput),
    /// A run ended; an engine on another host carries the files it sends back in the message's
    /// buffers, which the kernel writes before handing the reply in.
    RunReply(RunReply),
    Exit(EngineExit),
    ObjectRequest(ObjectRequest),
    /// A piece of a large message (the link puts them together): a sign of life, nothing more.
    Piece,
}

/// A message for one engine.
#[derive(Debug, Clone, PartialEq)]
pub enum ToEngine {
    Registered(RegisterReply),
    /// The answer to an engine's heartbeat, with the period it should send them at.
    Heartbeat {
        period: Duration,
    },
    /// A run, with the bytes of its `files_in` as the message's buffers.
    Run(RunRequest, Vec<Bytes>),
    Signal(SignalRequest),
    Shutdown,
}

/// What the hub asks the kernel to do.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Send this message to the engine with this link identity.
    Send { to: Bytes, message: ToEngine },
    /// Read these objects (by hash) and send each to the engine with this identity.
    SendObjects { to: Bytes, sha256: Vec<String> },
    /// The run is over: tell whoever waits on it.
    RunEnded { run_id: String, end: RunEnd },
    /// Tell the cell's watcher, if it has one.
    Notify { cell_id: String, event: CellEvent },
    /// The cell's results were dropped (past [`KEPT_RESULTS`]): nobody watches it any more.
    Forget { cell_id: String },
}

/// What a run request carries to an engine on another host; empty for one that shares the
/// kernel's files. The kernel reads it from disk before asking the hub to start the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shipment {
    pub objects: Vec<ObjectRef>,
    pub files_in: Vec<ShippedFile>,
    pub files_out: Vec<String>,
    /// The bytes of `files_in`, in order, as the message's buffers.
    pub buffers: Vec<Bytes>,
}

/// An engine that left: which process of which id, why, and what went with it (what
/// `--restart-dead` tells the notebook).
#[derive(Debug, Clone, PartialEq)]
pub struct Departure {
    pub id: EngineId,
    pub incarnation: u64,
    pub pid: u32,
    pub reason: String,
    /// The kernel stopped or interrupted it: not a death to restart it for.
    pub on_purpose: bool,
    /// The variables it held.
    pub lost: Vec<String>,
}

struct PendingRun {
    cell_id: String,
    engine: EngineId,
    incarnation: u64,
    /// Files the engine should send back (an engine on another host).
    files_out: Vec<String>,
}

/// The hub's whole state.
pub struct Hub {
    engines: BTreeMap<EngineId, EngineEntry>,
    next_incarnation: u64,
    /// Runs are numbered within the hub's session (the link's signatures vouch for who
    /// answers, so the number needs no randomness).
    next_run: u64,
    runs: HashMap<String, PendingRun>,
    cells: HashMap<String, CellRecord>,
    /// Cell ids, oldest first, for dropping the oldest results past [`KEPT_RESULTS`].
    cell_order: VecDeque<String>,
    /// The variables each engine holds with their types, as the compiler last knew them (for
    /// "variables lost", and for the type of a value `%pull` brings back).
    variables: HashMap<EngineId, Vec<(String, String)>>,
    /// Engines we signalled on purpose (interrupt): their death is expected.
    interrupted: HashMap<EngineId, u64>,
    /// Engines we stop on purpose (kernel shutdown, `%engines stop`, a restart), by
    /// incarnation: their end is news, not a warning.
    stopping: HashMap<EngineId, u64>,
    /// What cells are compiled for: engines on other platforms are refused.
    platform: Platform,
    /// Engines refused at registration since the last look, with why.
    refusals: Vec<String>,
    /// Engines gone without a process exit the pool saw, since the last look.
    departures: Vec<Departure>,
    /// The batch job each engine id was last submitted in (`slurm job 12`): every reason it
    /// leaves for names the job, which is what the user can look up with the scheduler.
    jobs: HashMap<EngineId, String>,
    /// What the kernel must do, in order, since it last took them.
    effects: Vec<Effect>,
    /// Which engine each link identity registered as, so that a message finds its sender
    /// without a walk over a pool of a thousand engines (checked against `engines` on use).
    by_identity: HashMap<Bytes, EngineId>,
    /// How often engines are asked to send heartbeats, for the pool's current size.
    heartbeat_period: Duration,
}

impl Hub {
    /// A hub whose cells are compiled for `platform`.
    pub fn new(platform: Platform) -> Hub {
        Hub {
            engines: BTreeMap::new(),
            next_incarnation: 1,
            next_run: 1,
            runs: HashMap::new(),
            cells: HashMap::new(),
            cell_order: VecDeque::new(),
            variables: HashMap::new(),
            interrupted: HashMap::new(),
            stopping: HashMap::new(),
            platform,
            refusals: Vec::new(),
            departures: Vec::new(),
            jobs: HashMap::new(),
            effects: Vec::new(),
            by_identity: HashMap::new(),
            heartbeat_period: heartbeat_period(0),
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

    /// Everything the hub asked for since the last call, in the order it decided it.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// [`Self::take_effects`] for a caller that performs them at once: the queue keeps its
    /// capacity, so a step over a thousand engines does not grow it from empty (and through
    /// the allocator's large-block path) every time.
    pub fn drain_effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.effects.drain(..)
    }

    fn send(&mut self, to: &Bytes, message: ToEngine) {
        self.effects.push(Effect::Send {
            to: to.clone(),
            message,
        });
    }

    /// The incarnation the next engine to register gets.
    pub fn next_incarnation(&self) -> u64 {
        self.next_incarnation
    }

    /// Engines refused at registration since the last call, each with its one-line reason.
    pub fn take_refusals(&mut self) -> Vec<String> {
        std::mem::take(&mut self.refusals)
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

    /// Handles one message from the engine with link identity `identity`, at `now`.
    pub fn receive(&mut self, identity: Bytes, message: FromEngine, now: Instant) {
        let sender = self.engine_by_identity(&identity);
        if let Some(engine) = sender.and_then(|id| self.engines.get_mut(&id)) {
            engine.last_seen = now;
        }
        match message {
            FromEngine::Register(request) => self.register(identity, request, now),
            FromEngine::Heartbeat => {
                if sender.is_some() {
                    self.answer_heartbeat(&identity, now);
                }
            }
            FromEngine::Stream(output) => self.stream(output),
            FromEngine::Display(output) => self.display(output),
            FromEngine::RunReply(reply) => self.run_reply(reply),
            FromEngine::Exit(exit) => {
                if let Some(id) = sender {
                    self.departed(id, &exit.reason);
                }
            }
            FromEngine::ObjectRequest(request) => {
                if sender.is_some() {
                    self.effects.push(Effect::SendObjects {
                        to: identity,
                        sha256: runs::objects_to_send(request.sha256),
                    });
                }
            }
            // Its sender was marked as seen above; the link puts the pieces together.
            FromEngine::Piece => {
                if let Some(id) = sender {
                    self.piece_arrived(id, &identity, now);
                }
            }
        }
    }

    /// The live engine whose link identity is `identity`.
    pub fn engine_by_identity(&self, identity: &Bytes) -> Option<EngineId> {
        let id = *self.by_identity.get(identity)?;
        self.engines
            .get(&id)
            .filter(|e| e.alive() && e.identity == identity)
            .map(|e| e.id)
    }

    fn register(&mut self, identity: Bytes, request: RegisterRequest, now: Instant) {
        let why = link_version_mismatch(request.link_version)
            .or_else(|| request.platform.incompatibility(&self.platform));
        if let Some(why) = why {
            let text = format!(
                "refused an engine from {} (pid {}): {why}",
                request.hostname, request.pid
            );
            tracing::warn!("{text}");
            self.refusals.push(text);
            self.send(
                &identity,
                ToEngine::Registered(RegisterReply {
                    engine_id: None,
                    refused: Some(why),
                }),
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
                last_seen: now,
                last_answered: now,
                queue: 0,
                shares_files: request.shares_files,
            },
        );
        self.variables.remove(&id);
        self.by_identity.insert(identity.clone(), id);
        self.send(
            &identity,
            ToEngine::Registered(RegisterReply {
                engine_id: Some(id),
                refused: None,
            }),
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
        self.send(&identity, ToEngine::Signal(SignalRequest { signal }));
        true
    }

    /// The engine process `id` (that incarnation, or any if `None`) is gone: its runs fail,
    /// naming the variables it held.
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
        self.by_identity.remove(&entry.identity);
        let lost: Vec<String> = self
            .variables
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let mut runs: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, r)| r.engine == id && r.incarnation == incarnation)
            .map(|(k, _)| k.clone())
            .collect();
        runs.sort();
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
            self.effects.push(Effect::RunEnded {
                run_id,
                end: RunEnd::Died(reason.to_owned()),
            });
        }
    }

    /// Engine `id` left without the pool seeing its process end (it said goodbye, or went
    /// silent): it is gone now, and whoever watches departures (the pool, to restart an
    /// interrupted engine) hears of it from [`Hub::take_departures`].
    pub(super) fn departed(&mut self, id: EngineId, reason: &str) {
        let Some(entry) = self.engines.get(&id).filter(|e| e.alive()) else {
            return;
        };
        let (incarnation, pid) = (entry.incarnation, entry.pid);
        // Read before `engine_gone`, which forgets both.
        let on_purpose = self.end_expected(id, incarnation);
        let lost = self.variables(id);
        self.engine_gone(id, Some(incarnation), reason);
        self.departures.push(Departure {
            id,
            incarnation,
            pid,
            reason: reason.to_owned(),
            on_purpose,
            lost,
        });
    }

    /// Engines that left without the pool seeing a process end (silent or said goodbye).
    pub fn take_departures(&mut self) -> Vec<Departure> {
        std::mem::take(&mut self.departures)
    }

    /// Asks an engine to exit (its end is then expected).
    pub fn shutdown_engine(&mut self, id: EngineId) {
        self.expect_exit(id);
        if let Some(identity) = self
            .engines
            .get(&id)
            .filter(|e| e.alive())
            .map(|e| e.identity.clone())
        {
            self.send(&identity, ToEngine::Shutdown);
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

    /// Marks the live ones of `ids` as interrupted on purpose (their death is then expected)
    /// and returns each with the variables it holds, which an interrupt may cost.
    pub fn interrupt(&mut self, ids: &[EngineId]) -> Vec<(EngineId, Vec<String>)> {
        let live: Vec<EngineId> = ids
            .iter()
            .copied()
            .filter(|id| self.engines.get(id).is_some_and(EngineEntry::alive))
            .collect();
        live.into_iter()
            .map(|id| {
                self.mark_interrupted(id);
                (id, self.variables(id))
            })
            .collect()
    }

    /// Whether the end of engine `id`'s process `incarnation` is one the kernel caused (a stop,
    /// a restart, an interrupt) rather than news.
    pub fn end_expected(&self, id: EngineId, incarnation: u64) -> bool {
        self.stopping.get(&id) == Some(&incarnation)
            || self.interrupted.get(&id) == Some(&incarnation)
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
}

/// Why an engine speaking link version `version` cannot join this hub, or `None`.
fn link_version_mismatch(version: u32) -> Option<String> {
    (version != LINK_VERSION).then(|| {
        format!(
            "the engine speaks link version {version}, this kernel {LINK_VERSION}: start engines from the rustpx-engine built with this kernel (the one beside its rustpx binary)"
        )
    })
}
