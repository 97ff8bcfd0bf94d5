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
    from_wire, to_wire, DisplayOutput, EngineExit, EngineId, Heartbeat, LinkMessage, ObjectData,
    ObjectRef, ObjectRequest, Platform, RegisterReply, RegisterRequest, RunReply, RunRequest,
    RunStatus, ShippedFile, ShutdownRequest, SignalRequest, StreamOutput,
};
use rustpx_wire::WireMessage;
use tokio::sync::mpsc::UnboundedSender;

use super::cell_files::{self, CellFiles, InputCache};
use super::records::{CellRecord, EngineError, TaskState};
use super::shipping::ObjectCatalog;

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

    /// Sends a run to the process `incarnation` of engine `engine` (code is compiled for the
    /// state of one process: a restarted engine with the same id must not get it). The receiver
    /// answers when the run finished or the engine died.
    pub fn start_run(
        &mut self,
        cell_id: &str,
        engine: EngineId,
        incarnation: u64,
        so_path: &str,
        fn_name: &str,
        files: &CellFiles,
    ) -> std_mpsc::Receiver<RunEnd> {
        let (done, receiver) = std_mpsc::channel();
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
                    ename: "EngineError".into(),
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
            let _ = done.send(RunEnd::Died(why));
            return receiver;
        };
        entry.queue += 1;
        entry.state = EngineState::Busy;
        let identity = entry.identity.clone();
        let shipment = if entry.shares_files {
            Ok(Shipment::default())
        } else {
            self.shipment(engine, so_path, files)
        };
        let run_id = uuid::Uuid::new_v4().to_string();
        let may_have_value = self
            .cells
            .get(cell_id)
            .is_none_or(|cell| crate::cell_text::ends_in_expression(&cell.code));
        if let Some(record) = self
            .cells
            .get_mut(cell_id)
            .and_then(|c| c.engines.get_mut(&engine))
        {
            record.state = TaskState::Running;
            record.started.get_or_insert_with(Utc::now);
        }
        self.runs.insert(
            run_id.clone(),
            PendingRun {
                cell_id: cell_id.to_owned(),
                engine,
                incarnation,
                done,
                files_out: shipment
                    .as_ref()
                    .map(|s| s.files_out.clone())
                    .unwrap_or_default(),
            },
        );
        match shipment {
            Ok(shipment) => {
                let request = RunRequest {
                    run_id,
                    cell_id: cell_id.to_owned(),
                    so_path: so_path.to_owned(),
                    fn_name: fn_name.to_owned(),
                    objects: shipment.objects,
                    files_in: shipment.files_in,
                    files_out: shipment.files_out,
                    may_have_value,
                };
                let mut message = to_wire(&self.session, &request);
                message.buffers = shipment.buffers;
                let _ = self.outbox.send((identity, message));
            }
            Err(error) => {
                // The engine cannot have the cell: fail its run here, as the engine would.
                tracing::error!("engine {engine} cannot be sent this cell: {error}");
                let now = Utc::now().to_rfc3339();
                self.run_reply(RunReply {
                    run_id,
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
        receiver
    }

    /// What a run on engine `engine`, which does not share the kernel's files, carries: the
    /// objects it needs and the data magic's input files with their bytes.
    fn shipment(
        &mut self,
        engine: EngineId,
        so_path: &str,
        files: &CellFiles,
    ) -> Result<Shipment, String> {
        let (inputs, files_out) = files.for_engine(engine);
        let objects = self.catalog.objects_for(std::path::Path::new(so_path))?;
        let (files_in, buffers) = self.inputs.read(&inputs)?;
        Ok(Shipment {
            objects,
            files_in,
            files_out,
            buffers,
        })
    }

    /// Writes the files a run on another host sent back, before its reply is processed (the
    /// kernel's side of the magic reads them once the run is done).
    fn take_files(&self, reply: &RunReply, buffers: &[Bytes]) {
        if reply.files.is_empty() {
            return;
        }
        let Some(run) = self.runs.get(&reply.run_id) else {
            return;
        };
        for (file, bytes) in reply.files.iter().zip(buffers) {
            if let Err(error) = cell_files::write_output(&run.files_out, file, bytes) {
                tracing::warn!("hub: engine {}: {error}", run.engine);
            }
        }
    }

    /// Answers an engine's request for objects its host lacks, one message per object with the
    /// bytes in its buffer.
    fn send_objects(&self, identity: &Bytes, request: ObjectRequest) {
        for sha256 in request.sha256 {
            let Some(path) = self.catalog.path(&sha256) else {
                tracing::warn!("hub: an engine asked for an unknown object {sha256}");
                continue;
            };
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (bytes, missing) = match std::fs::read(path) {
                Ok(bytes) => (Some(bytes), None),
                Err(error) => (None, Some(format!("{}: {error}", path.display()))),
            };
            let object = ObjectRef {
                name,
                size: bytes.as_ref().map_or(0, |b| b.len() as u64),
                sha256,
            };
            tracing::debug!("hub: sending {} ({} bytes)", object.name, object.size);
            let mut message = to_wire(&self.session, &ObjectData { object, missing });
            if let Some(bytes) = bytes {
                message.buffers.push(Bytes::from(bytes));
            }
            let _ = self.outbox.send((identity.clone(), message));
        }
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

    fn notify(&self, cell_id: &str, event: CellEvent) {
        if let Some(observer) = self.observers.get(cell_id) {
            let _ = observer.send(event);
        }
    }

    fn stream(&mut self, output: StreamOutput) {
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

    fn display(&mut self, output: DisplayOutput) {
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

    fn run_reply(&mut self, reply: RunReply) {
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
            let error = match &reply.status {
                RunStatus::Ok => None,
                RunStatus::Panic { message, location } => Some(EngineError {
                    ename: "Panic".into(),
                    evalue: message.clone(),
                    traceback: vec![
                        format!("panicked at {location}: {message}"),
                        "Variables this cell defined were not kept on this engine.".into(),
                    ],
                    shared_by: Vec::new(),
                    codes: Vec::new(),
                }),
                RunStatus::UserError => {
                    let last = record
                        .stderr
                        .lines()
                        .last()
                        .unwrap_or("the cell returned an error through `?`")
                        .to_owned();
                    Some(EngineError {
                        ename: "Error".into(),
                        evalue: last.clone(),
                        traceback: vec![format!("Error: {last}")],
                        shared_by: Vec::new(),
                        codes: Vec::new(),
                    })
                }
                RunStatus::LoadFailed { message } => Some(EngineError {
                    ename: "LoadError".into(),
                    evalue: message.clone(),
                    traceback: vec![],
                    shared_by: Vec::new(),
                    codes: Vec::new(),
                }),
            };
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
        let _ = run.done.send(RunEnd::Finished(reply));
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
                    ename: "EngineError".into(),
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

    pub fn add_cell(&mut self, cell: CellRecord) {
        // An earlier data magic's files are deleted when it ends: let their bytes go too.
        self.inputs.prune();
        self.cell_order.push_back(cell.cell_id.clone());
        self.cells.insert(cell.cell_id.clone(), cell);
        self.drop_oldest_results();
    }

    /// Past [`KEPT_RESULTS`] cells, drops the oldest finished ones (a cell still running stays,
    /// however old). `%pxresult` says when a name's result was dropped.
    fn drop_oldest_results(&mut self) {
        let mut index = 0;
        while self.cells.len() > KEPT_RESULTS && index < self.cell_order.len() {
            let id = &self.cell_order[index];
            if self.cells.get(id).is_none_or(CellRecord::is_done) {
                self.cells.remove(id);
                self.observers.remove(id);
                self.cell_order.remove(index);
            } else {
                index += 1;
            }
        }
    }

    pub fn cell(&self, cell_id: &str) -> Option<&CellRecord> {
        self.cells.get(cell_id)
    }

    pub fn observe(&mut self, cell_id: &str, observer: UnboundedSender<CellEvent>) {
        self.observers.insert(cell_id.to_owned(), observer);
    }

    pub fn unobserve(&mut self, cell_id: &str) {
        self.observers.remove(cell_id);
    }

    /// Finishes one engine's part of a cell (compile errors, or success after its runs).
    pub fn finish_engine(&mut self, cell_id: &str, engine: EngineId, error: Option<EngineError>) {
        let changed = match self
            .cells
            .get_mut(cell_id)
            .and_then(|c| c.engines.get_mut(&engine))
        {
            Some(record) if record.state != TaskState::Done => {
                record.finish(error);
                true
            }
            _ => false,
        };
        if changed {
            self.notify(cell_id, CellEvent::EngineDone { engine });
        }
    }

    /// Every engine of the cell finished.
    pub fn finish_cell(&mut self, cell_id: &str) {
        let engines: Vec<EngineId> = self
            .cells
            .get(cell_id)
            .map(|c| c.engines.keys().copied().collect())
            .unwrap_or_default();
        for engine in engines {
            self.finish_engine(cell_id, engine, None);
        }
        self.notify(cell_id, CellEvent::CellDone);
    }
}

fn parse_time(text: &str) -> Option<chrono::DateTime<Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;

    fn register(hub: &mut Hub, who: &'static str, requested: Option<EngineId>) -> EngineId {
        let message = to_wire(
            "s",
            &RegisterRequest {
                requested_id: requested,
                pid: 100,
                hostname: "h".into(),
                version: "0".into(),
                platform: Platform::current(),
                shares_files: true,
            },
        );
        hub.receive(Bytes::from_static(who.as_bytes()), &message);
        hub.engines()
            .find(|e| e.identity == who.as_bytes() && e.alive())
            .unwrap()
            .id
    }

    #[test]
    fn only_the_newest_finished_results_are_kept() {
        let (tx, _rx) = unbounded_channel();
        let mut hub = Hub::new(tx);
        let cell = |id: String, done: bool| {
            let mut record = CellRecord::new(id, "1".into(), vec![0], false);
            if done {
                record.engines.get_mut(&0).unwrap().finish(None);
            }
            record
        };
        hub.add_cell(cell("running".into(), false));
        for n in 0..KEPT_RESULTS + 10 {
            hub.add_cell(cell(format!("c{n}"), true));
        }
        assert_eq!(hub.cells.len(), KEPT_RESULTS);
        assert!(
            hub.cell("running").is_some(),
            "a running cell is never dropped"
        );
        assert!(hub.cell("c0").is_none() && hub.cell("c10").is_none());
        assert!(hub.cell("c11").is_some());
        assert!(hub.cell(&format!("c{}", KEPT_RESULTS + 9)).is_some());
    }

    #[test]
    fn registration_honours_free_requested_ids() {
        let (tx, mut rx) = unbounded_channel();
        let mut hub = Hub::new(tx);
        assert_eq!(register(&mut hub, "a", Some(3)), 3);
        assert_eq!(register(&mut hub, "b", Some(3)), 0);
        assert_eq!(register(&mut hub, "c", None), 1);
        assert_eq!(hub.live_ids(), vec![0, 1, 3]);
        let (identity, reply) = rx.try_recv().unwrap();
        assert_eq!(identity, Bytes::from_static(b"a"));
        assert_eq!(reply.msg_type(), "register_reply");
    }

    #[test]
    fn a_dead_engine_fails_its_runs_and_leaves_all() {
        let (tx, _rx) = unbounded_channel();
        let mut hub = Hub::new(tx);
        let id = register(&mut hub, "a", Some(0));
        hub.add_cell(CellRecord::new("c1".into(), "x".into(), vec![id], false));
        hub.set_variables(id, vec![("x".into(), "i32".into())]);
        let incarnation = hub.engine(id).unwrap().incarnation;
        let done = hub.start_run(
            "c1",
            id,
            incarnation,
            "/tmp/x.so",
            "f",
            &CellFiles::default(),
        );
        hub.engine_gone(id, None, "killed by signal 9 (SIGKILL)");
        assert!(matches!(done.try_recv(), Ok(RunEnd::Died(_))));
        let record = &hub.cell("c1").unwrap().engines[&id];
        let error = record.error.as_ref().unwrap();
        assert_eq!(error.ename, "EngineError");
        assert_eq!(error.evalue, "Engine 0 died while running task 'c1_0'");
        assert!(error.traceback[1].contains("Variables lost: x."));
        assert!(hub.live_ids().is_empty());
    }

    #[test]
    fn a_restarted_engine_never_gets_code_compiled_for_its_predecessor() {
        let (tx, mut rx) = unbounded_channel();
        let mut hub = Hub::new(tx);
        let id = register(&mut hub, "old", Some(0));
        let old = hub.engine(id).unwrap().incarnation;
        hub.engine_gone(id, None, "interrupted");
        register(&mut hub, "new", Some(0));
        hub.add_cell(CellRecord::new("c".into(), "x".into(), vec![0], false));
        while rx.try_recv().is_ok() {}
        let done = hub.start_run("c", 0, old, "so", "f", &CellFiles::default());
        assert!(matches!(done.try_recv(), Ok(RunEnd::Died(_))));
        assert!(
            rx.try_recv().is_err(),
            "a run request was sent to the new process"
        );
        assert_eq!(
            hub.cell("c").unwrap().engines[&0]
                .error
                .as_ref()
                .unwrap()
                .ename,
            "EngineError"
        );
    }

    #[test]
    fn silent_engines_are_declared_dead() {
        let (tx, _rx) = unbounded_channel();
        let mut hub = Hub::new(tx);
        register(&mut hub, "a", Some(0));
        let later = Instant::now() + HEARTBEAT_TIMEOUT + Duration::from_secs(1);
        assert_eq!(hub.check_heartbeats(later), vec![(0, 100)]);
        assert!(hub.live_ids().is_empty());
    }

    #[test]
    fn a_run_reply_fills_the_record() {
        let (tx, _rx) = unbounded_channel();
        let mut hub = Hub::new(tx);
        let id = register(&mut hub, "a", None);
        hub.add_cell(CellRecord::new("c".into(), "x".into(), vec![id], false));
        let incarnation = hub.engine(id).unwrap().incarnation;
        let done = hub.start_run("c", id, incarnation, "so", "f", &CellFiles::default());
        let run_id = hub.runs.keys().next().unwrap().clone();
        hub.stream(StreamOutput {
            run_id: run_id.clone(),
            name: "stdout".into(),
            text: "hi\n".into(),
        });
        hub.run_reply(RunReply {
            run_id,
            execution_count: 1,
            status: RunStatus::Ok,
            value: Some([("text/plain".to_string(), "3".to_string())].into()),
            changed_type: vec![],
            started: "2026-01-01T00:00:00Z".into(),
            completed: "2026-01-01T00:00:01Z".into(),
            files: vec![],
        });
        assert!(matches!(done.try_recv(), Ok(RunEnd::Finished(_))));
        let record = &hub.cell("c").unwrap().engines[&id];
        assert_eq!(record.stdout, "hi\n");
        assert_eq!(record.execution_count, Some(1));
        assert_eq!(hub.engine(id).unwrap().state, EngineState::Idle);
    }
}
