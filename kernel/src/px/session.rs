//! The px half of a kernel session: options that persist (`%pxconfig`, `%autopx`), the results
//! kept by name, and the running of each magic from submission to its last output.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustpx_protocol::{EngineConnection, EngineId};
use rustpx_wire::WireMessage;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, Notify};

use super::compiler::Compiler;
use super::hub::HubHandle;
use super::hub_address::HubAddress;
use super::magics::{ExecOptions, Magic};
use super::pool::EnginePool;
use super::render::Output;
use super::targets::Targets;
use super::{link, lock, PxError};
use crate::evaluator::{ErrorReport, Evaluator, Outcome};
use crate::iopub::{self, Publisher};
use jupyter_protocol::Stdio;

mod api;
mod api_data;
mod api_direct;
mod api_execute;
mod api_tasks;
mod api_wait;
mod data;
mod data_setup;
mod definitions;
mod engines;
mod map;
mod progress;
mod px;
mod pxresult;
mod supervision;

use progress::{Progress, Waited};
use rustpx_core::ErrorKind;

/// How long a start of the local pool may take before we say why it did not come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings that persist between cells (`%pxconfig`).
#[derive(Debug, Clone)]
struct Config {
    targets: Targets,
    block: bool,
    stream: bool,
    verbose: bool,
    progress_after: f64,
    signal_on_interrupt: i32,
    /// Seconds a blocking cell's engines may run before they are interrupted; 0: no limit.
    timeout: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            targets: Targets::All,
            block: true,
            stream: true,
            verbose: false,
            progress_after: 2.0,
            signal_on_interrupt: libc::SIGINT,
            timeout: 0.0,
        }
    }
}

impl Config {
    /// This cell's settings: the persistent ones, overridden by the cell's own options.
    fn with(&self, options: &ExecOptions) -> Config {
        Config {
            targets: options
                .targets
                .clone()
                .unwrap_or_else(|| self.targets.clone()),
            block: options.block.unwrap_or(self.block),
            stream: options.stream.unwrap_or(self.stream),
            verbose: options.verbose.unwrap_or(self.verbose),
            progress_after: options.progress_after.unwrap_or(self.progress_after),
            signal_on_interrupt: options
                .signal_on_interrupt
                .unwrap_or(self.signal_on_interrupt),
            timeout: options.timeout.unwrap_or(self.timeout),
        }
    }

    fn update(&mut self, options: &ExecOptions) {
        *self = self.with(options);
    }
}

/// The blocking `%px` cell being waited on, for interrupts.
struct ActiveCell {
    request: WireMessage,
    cell_id: String,
    signal: i32,
    /// Engines signalled by an interrupt, with the variables they held.
    interrupted: Vec<(EngineId, Vec<String>)>,
    /// Set when an interrupt with no signal asks to stop waiting.
    stop_waiting: bool,
    /// Set when the cell's `--timeout` passed and its running engines were interrupted.
    timed_out: bool,
}

/// What control needs to interrupt a running `%px` cell.
#[derive(Clone)]
pub struct PxInterrupter {
    active: Arc<Mutex<Option<ActiveCell>>>,
    /// The `%pxmap` being waited for, with the request that waits.
    active_map: Arc<Mutex<Option<(WireMessage, super::map_server::MapServer)>>>,
    wake: Arc<Notify>,
    hub: Option<HubHandle>,
    pool: Option<EnginePool>,
    publisher: Publisher,
}

impl PxInterrupter {
    /// Kills every engine at once (kernel shutdown from the control channel).
    pub fn stop_engines(&self) {
        if let Some(pool) = &self.pool {
            pool.kill_all();
        }
    }

    /// Interrupts the blocking `%px` cell, if one is running: signals its unfinished engines.
    pub fn interrupt(&self) -> bool {
        let mut active = lock(&self.active);
        let Some(cell) = active.as_mut() else {
            return self.interrupt_map();
        };
        let (Some(hub), Some(pool)) = (&self.hub, &self.pool) else {
            return false;
        };
        if cell.signal == 0 {
            cell.stop_waiting = true;
            self.wake.notify_one();
            return true;
        }
        self.publisher.stream(
            &cell.request,
            Stdio::Stderr,
            format!(
                "Received Keyboard Interrupt. Sending signal {} to engines...\n",
                signal_name(cell.signal)
            ),
        );
        signal_running(hub, pool, cell, cell.signal);
        self.wake.notify_one();
        true
    }
}

/// Signals the engines still running `cell` and notes each with the variables it held (its
/// death is then expected, and the pool starts it again). Returns how many were signalled.
fn signal_running(hub: &HubHandle, pool: &EnginePool, cell: &mut ActiveCell, signal: i32) -> usize {
    let running = hub.interrupt_running(&cell.cell_id);
    let count = running.len();
    for (engine, variables) in running {
        // A local engine gets the signal from the kernel; a remote one over its link.
        pool.signal_engine(engine, signal);
        cell.interrupted.push((engine, variables));
    }
    count
}

impl PxInterrupter {
    /// Stops a `%pxmap` being waited for: no more chunks go out, each engine finishes the ones it
    /// holds, and the engines keep their processes and variables.
    fn interrupt_map(&self) -> bool {
        let active = lock(&self.active_map);
        let Some((request, server)) = active.as_ref() else {
            return false;
        };
        self.publisher.stream(
            request,
            Stdio::Stderr,
            "Received Keyboard Interrupt. Stopping %pxmap: the engines finish the chunks they hold and stay up.\n",
        );
        server.stop();
        true
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        9 => "SIGKILL".into(),
        3 => "SIGQUIT".into(),
        1 => "SIGHUP".into(),
        10 => "SIGUSR1".into(),
        12 => "SIGUSR2".into(),
        n => format!("signal {n}"),
    }
}

/// The parts that exist once the hub is up.
struct Machinery {
    hub: HubHandle,
    pool: EnginePool,
    compiler: Compiler,
    address: HubAddress,
    connection: EngineConnection,
    /// Where `rustpx-engine --connect FILE` finds the hub (None if it could not be written).
    connection_file: Option<std::path::PathBuf>,
}

/// The kernel session's parallel side.
pub struct PxService {
    publisher: Publisher,
    machinery: Result<Machinery, PxError>,
    config: Config,
    autopx: bool,
    last: Option<String>,
    named: HashMap<String, String>,
    active: Arc<Mutex<Option<ActiveCell>>>,
    active_map: Arc<Mutex<Option<(WireMessage, super::map_server::MapServer)>>>,
    wake: Arc<Notify>,
    /// Where the data magics' values cross (created on first use, removed at shutdown).
    transfer_dir: Option<std::path::PathBuf>,
    /// Where the client crate is already a dependency: the kernel's context, and the engine
    /// incarnations whose states have it (a restarted engine starts without it).
    client_local: bool,
    client_engines: std::collections::HashSet<(EngineId, u64)>,
    /// The structs and enums the kernel's context and each engine incarnation defined
    /// (`definitions.rs`).
    plain_definitions: crate::type_definitions::Definitions,
    engine_definitions: HashMap<(EngineId, u64), crate::type_definitions::Definitions>,
    /// The load-balanced scheduler, started by the first `%pxmap`.
    map_server: Option<super::map_server::MapServer>,
    /// A `%pxmap -a` not collected yet, and whether it is newer than the last `%px`.
    pending_map: Option<map::PendingMap>,
    map_is_last: bool,
    /// The Rust API's scheduler, started by its first `apply` or `map`.
    api_scheduler: Option<super::api::scheduler::Scheduler>,
    /// The scheduler's label of each engine function the API has called.
    api_labels: HashMap<String, String>,
    /// Cells run by the API's `DirectView::execute`.
    api_executions: api_execute::Executions,
    /// Live progress bars of `wait_interactive`.
    api_progress: api_wait::ProgressBars,
    /// The plain cells' last `apply` or `map`, when newer than any `%px` (for `%pxresult`).
    api_is_last: Option<u64>,
    /// Ends the running plain cell's API waits on an interrupt (shared with the control side).
    api_interrupt: super::api::interrupt::ApiInterrupt,
}

fn usage(message: impl Into<String>) -> ErrorReport {
    ErrorReport::usage(message)
}

impl PxService {
    /// Binds the hub (loopback, fresh key) and makes the compiler's thread. Engines start at the
    /// first `%px` (or `%engines start`), and the compiler's evcxr context with them: a kernel
    /// that never runs `%px` never holds a second context and its rust-analyzer.
    pub async fn start(publisher: Publisher) -> PxService {
        let machinery = Self::start_machinery().await;
        if let Err(error) = &machinery {
            tracing::error!("the parallel magics are unavailable: {error}");
        }
        PxService {
            publisher,
            machinery,
            config: Config::default(),
            autopx: false,
            last: None,
            named: HashMap::new(),
            active: Arc::default(),
            active_map: Arc::default(),
            wake: Arc::default(),
            transfer_dir: None,
            client_local: false,
            client_engines: Default::default(),
            plain_definitions: Default::default(),
            engine_definitions: Default::default(),
            map_server: None,
            pending_map: None,
            map_is_last: false,
            api_scheduler: None,
            api_labels: HashMap::new(),
            api_executions: Default::default(),
            api_progress: Default::default(),
            api_is_last: None,
            api_interrupt: Default::default(),
        }
    }

    async fn start_machinery() -> Result<Machinery, PxError> {
        let (outbox, outgoing) = mpsc::unbounded_channel();
        let hub = HubHandle::new(outbox);
        let address = HubAddress::from_environment().map_err(PxError::HubAddress)?;
        // A hung engine (SIGSTOP, deadlock outside user code) is killed once declared dead.
        let pool_slot: Arc<std::sync::OnceLock<EnginePool>> = Arc::default();
        let departed_slot = pool_slot.clone();
        let mut connection = link::start(&address, hub.clone(), outgoing, move |departure| {
            if let Some(pool) = departed_slot.get() {
                pool.departed(departure);
            }
        })
        .await?;
        let compiler = Compiler::start(hub.clone());
        super::stale_files::sweep(
            &crate::paths::runtime_dir(),
            &data_setup::transfer_base(),
            &std::env::temp_dir(),
        );
        let connection_file = match super::connection_file::write(&connection) {
            Ok(path) => {
                connection.kernel_file = Some(path.display().to_string());
                Some(path)
            }
            Err(error) => {
                tracing::warn!("cannot write the engine connection file: {error}");
                None
            }
        };
        let pool = EnginePool::new(connection.clone(), hub.clone())?;
        if let Some(path) = &connection_file {
            pool.remove_on_shutdown(path.clone());
        }
        let _ = pool_slot.set(pool.clone());
        Ok(Machinery {
            hub,
            pool,
            compiler,
            address,
            connection,
            connection_file,
        })
    }

    /// The px compiler's handle, to start its context ahead of a queued cell that needs it.
    pub fn compiler(&self) -> Option<super::compiler::Compiler> {
        self.machinery.as_ref().ok().map(|m| m.compiler.clone())
    }

    /// What ends a plain cell's API waits on an interrupt (see [`super::api::interrupt`]).
    pub fn api_interrupt(&self) -> super::api::interrupt::ApiInterrupt {
        self.api_interrupt.clone()
    }

    pub fn interrupter(&self) -> PxInterrupter {
        let (hub, pool) = match &self.machinery {
            Ok(m) => (Some(m.hub.clone()), Some(m.pool.clone())),
            Err(_) => (None, None),
        };
        PxInterrupter {
            active: self.active.clone(),
            active_map: self.active_map.clone(),
            wake: self.wake.clone(),
            hub,
            pool,
            publisher: self.publisher.clone(),
        }
    }

    /// Whether `%autopx` is on: plain cells then run as `%%px`.
    pub fn autopx(&self) -> bool {
        self.autopx
    }

    /// Stops every engine (kernel shutdown).
    pub fn shutdown(&self) {
        if let Ok(m) = &self.machinery {
            m.pool.kill_all();
        }
        if let Some(dir) = &self.transfer_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Runs a magic. `count` is the kernel's execution count of the cell; `evaluator` is the
    /// kernel's own context, which the data magics read and fill.
    pub async fn run(
        &mut self,
        request: &WireMessage,
        magic: Magic,
        count: u32,
        evaluator: &Evaluator,
    ) -> Outcome {
        self.report_restarts(request).await;
        let result = match magic {
            Magic::Px { options, code } => self.px(request, &options, &code, count).await,
            Magic::PxResult(options) => self.pxresult(request, &options, evaluator).await,
            Magic::PxConfig(options) => self.pxconfig(request, &options),
            Magic::AutoPx => {
                self.autopx = !self.autopx;
                let text = if self.autopx {
                    "%autopx enabled\n"
                } else {
                    "%autopx disabled\n"
                };
                self.publisher.stream(request, Stdio::Stdout, text);
                Ok(())
            }
            Magic::Engines(command) => self.engines(request, command).await,
            Magic::Transfer(transfer) => self.transfer(request, &transfer, evaluator).await,
            Magic::Map(options) => self.map(request, &options, count, evaluator).await,
        };
        match result {
            Ok(()) => Outcome::Ok,
            Err(report) => {
                self.publisher.error(request, &report);
                Outcome::Error(report)
            }
        }
    }

    fn machinery(&self) -> Result<&Machinery, ErrorReport> {
        self.machinery.as_ref().map_err(|error| {
            ErrorReport::new(
                ErrorKind::Kernel,
                format!("the parallel magics are unavailable: {error}"),
            )
        })
    }

    fn display(
        &self,
        request: &WireMessage,
        data: Map<String, Value>,
        display_id: Option<&str>,
        update: bool,
    ) {
        self.publisher
            .display(request, data, Map::new(), display_id, update);
    }

    fn publish_outputs(&self, request: &WireMessage, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Stream { name, text } => {
                    self.publisher.stream(request, iopub::stdio(name), text);
                }
                Output::Display { data, metadata } => {
                    self.publisher.display(request, data, metadata, None, false);
                }
            }
        }
    }

    fn say(&self, request: &WireMessage, text: &str) {
        self.publisher
            .stream(request, Stdio::Stdout, format!("{text}\n"));
    }
}

fn join(ids: &[EngineId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `RUSTPX_ENGINES`, else the number of CPUs.
pub fn default_engine_count() -> u32 {
    std::env::var("RUSTPX_ENGINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        })
}
