//! The px half of a kernel session: options that persist (`%pxconfig`, `%autopx`), the results
//! kept by name, and the running of each magic from submission to its last output.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustpx_protocol::{EngineConnection, EngineId};
use rustpx_wire::WireMessage;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Notify};

use super::compiler::{CompileJob, Compiler};
use super::hub::{CellEvent, EngineState, Hub};
use super::hub_address::HubAddress;
use super::magics::{EnginesCommand, ExecOptions, Grouping, Magic, PxOptions, ResultOptions};
use super::pool::EnginePool;
use super::records::{CellRecord, EngineError, TaskState};
use super::render::{self, Output};
use super::targets::{self, Targets};
use super::{link, lock, PxError};
use crate::evaluator::{ErrorReport, Evaluator, Outcome};
use crate::frontend::Publisher;
use crate::launch::{self, LaunchOptions, Launcher, Reach};

mod data;
mod map;

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
}

/// What control needs to interrupt a running `%px` cell.
#[derive(Clone)]
pub struct PxInterrupter {
    active: Arc<Mutex<Option<ActiveCell>>>,
    /// The `%pxmap` being waited for, with the request that waits.
    active_map: Arc<Mutex<Option<(WireMessage, super::map_server::MapServer)>>>,
    wake: Arc<Notify>,
    hub: Option<Arc<Mutex<Hub>>>,
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
        self.publisher.publish(
            &cell.request,
            "stream",
            json!({"name": "stderr", "text": format!(
                "Received Keyboard Interrupt. Sending signal {} to engines...\n",
                signal_name(cell.signal)
            )}),
        );
        let running: Vec<EngineId> = {
            let mut hub = lock(hub);
            let running: Vec<EngineId> = hub
                .cell(&cell.cell_id)
                .map(|c| {
                    c.engines
                        .values()
                        .filter(|r| r.state != TaskState::Done)
                        .map(|r| r.engine)
                        .collect()
                })
                .unwrap_or_default();
            let mut signalled = Vec::new();
            for engine in running {
                if hub.engine(engine).is_some_and(|e| e.alive()) {
                    let variables = hub.variables(engine);
                    hub.mark_interrupted(engine);
                    cell.interrupted.push((engine, variables));
                    signalled.push(engine);
                }
            }
            signalled
        };
        for engine in running {
            // A local engine gets the signal from the kernel; a remote one over its link.
            pool.signal_engine(engine, cell.signal);
        }
        self.wake.notify_one();
        true
    }
}

impl PxInterrupter {
    /// Stops a `%pxmap` being waited for: no more chunks go out, each engine finishes the ones it
    /// holds, and the engines keep their processes and variables.
    fn interrupt_map(&self) -> bool {
        let active = lock(&self.active_map);
        let Some((request, server)) = active.as_ref() else {
            return false;
        };
        self.publisher.publish(
            request,
            "stream",
            json!({"name": "stderr", "text": "Received Keyboard Interrupt. Stopping %pxmap: the engines finish the chunks they hold and stay up.\n"}),
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
    hub: Arc<Mutex<Hub>>,
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
    machinery: Result<Machinery, String>,
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
    /// The load-balanced scheduler, started by the first `%pxmap`.
    map_server: Option<super::map_server::MapServer>,
    /// A `%pxmap -a` not collected yet, and whether it is newer than the last `%px`.
    pending_map: Option<map::PendingMap>,
    map_is_last: bool,
}

fn usage(message: impl Into<String>) -> ErrorReport {
    let message = message.into();
    ErrorReport {
        ename: "UsageError".into(),
        evalue: message.clone(),
        traceback: vec![format!("UsageError: {message}")],
        codes: Vec::new(),
    }
}

fn to_report(error: EngineError) -> ErrorReport {
    ErrorReport {
        ename: error.ename,
        evalue: error.evalue,
        traceback: error.traceback,
        codes: error.codes,
    }
}

impl PxService {
    /// Binds the hub (loopback, fresh key) and starts the compiler in the background. Engines
    /// start at the first `%px`.
    pub async fn start(publisher: Publisher) -> PxService {
        let machinery = Self::start_machinery().await.map_err(|e| e.to_string());
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
            map_server: None,
            pending_map: None,
            map_is_last: false,
        }
    }

    /// Starts the px compiler's context now (called once the plain context is up); the first
    /// `%px` starts it anyway.
    pub fn compiler_warm_up(&self) -> impl FnOnce() + Send + 'static {
        let compiler = self.machinery.as_ref().ok().map(|m| m.compiler.clone());
        move || {
            if let Some(compiler) = compiler {
                compiler.warm_up();
            }
        }
    }

    async fn start_machinery() -> Result<Machinery, PxError> {
        let (outbox, outgoing) = mpsc::unbounded_channel();
        let hub = Arc::new(Mutex::new(Hub::new(outbox)));
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
            &data::transfer_base(),
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
        let result = match magic {
            Magic::Px { options, code } => self.px(request, &options, &code, count).await,
            Magic::PxResult(options) => self.pxresult(request, &options, evaluator).await,
            Magic::PxConfig(options) => {
                self.config.update(&options);
                Ok(())
            }
            Magic::AutoPx => {
                self.autopx = !self.autopx;
                let text = if self.autopx {
                    "%autopx enabled\n"
                } else {
                    "%autopx disabled\n"
                };
                self.publisher
                    .publish(request, "stream", json!({"name": "stdout", "text": text}));
                Ok(())
            }
            Magic::Engines(command) => self.engines(request, command).await,
            Magic::Transfer(transfer) => self.transfer(request, &transfer, evaluator).await,
            Magic::Map(options) => self.map(request, &options, count, evaluator).await,
        };
        match result {
            Ok(()) => Outcome::Ok,
            Err(report) => {
                self.publisher.publish(
                    request,
                    "error",
                    json!({"ename": report.ename, "evalue": report.evalue, "traceback": report.traceback}),
                );
                Outcome::Error(report)
            }
        }
    }

    fn machinery(&self) -> Result<&Machinery, ErrorReport> {
        self.machinery.as_ref().map_err(|error| ErrorReport {
            ename: "KernelError".into(),
            evalue: format!("the parallel magics are unavailable: {error}"),
            traceback: vec![],
            codes: Vec::new(),
        })
    }

    fn display(
        &self,
        request: &WireMessage,
        data: Map<String, Value>,
        display_id: Option<&str>,
        update: bool,
    ) {
        let mut content = json!({"data": data, "metadata": {}});
        if let Some(id) = display_id {
            content["transient"] = json!({ "display_id": id });
        }
        let msg_type = if update {
            "update_display_data"
        } else {
            "display_data"
        };
        self.publisher.publish(request, msg_type, content);
    }

    fn publish_outputs(&self, request: &WireMessage, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Stream { name, text } => {
                    self.publisher
                        .publish(request, "stream", json!({"name": name, "text": text}));
                }
                Output::Display { data, metadata } => {
                    self.publisher.publish(
                        request,
                        "display_data",
                        json!({"data": data, "metadata": metadata}),
                    );
                }
            }
        }
    }

    /// Live engine ids, starting the local pool first if none are running.
    async fn ensure_engines(&self, request: &WireMessage) -> Result<Vec<EngineId>, ErrorReport> {
        let m = self.machinery()?;
        let live = lock(&m.hub).live_ids();
        if !live.is_empty() {
            return Ok(live);
        }
        let n = default_engine_count();
        let local = m.pool.local_launcher();
        self.start_engines(request, &local, &LaunchOptions::default(), n)
            .await?;
        Ok(lock(&m.hub).live_ids())
    }

    /// Starts `n` engines with `launcher` on the first block of free ids and waits for them,
    /// showing progress.
    async fn start_engines(
        &self,
        request: &WireMessage,
        launcher: &Arc<dyn Launcher>,
        options: &LaunchOptions,
        n: u32,
    ) -> Result<Vec<EngineId>, ErrorReport> {
        let m = self.machinery()?;
        let start_error = |evalue: String| ErrorReport {
            ename: "EngineStartError".into(),
            traceback: vec![format!("EngineStartError: {evalue}")],
            evalue,
            codes: Vec::new(),
        };
        let reachable = m.address.reachable_from_other_hosts();
        if launcher.reach() == Reach::OtherHosts && !reachable && !launcher.tunnels() {
            return Err(start_error(format!(
                "the {} launcher starts engines that may run on other hosts, but the hub listens on {} and engines would dial {}: start the kernel with RUSTPX_HUB_IP=0.0.0.0 (and RUSTPX_HUB_LOCATION=<this host's address as the engines see it>), or add --tunnel to carry the link through ssh",
                launcher.name(),
                m.address.bind,
                m.address.location
            )));
        }
        let ids = self.free_ids(n)?;
        let engine = m.pool.invocation(&**launcher, options);
        // Failures and refusals from earlier starts (or engines started by hand) are not this
        // start's.
        m.pool.take_start_failures();
        lock(&m.hub).take_refusals();
        m.pool
            .start(launcher, &ids, &engine)
            .map_err(|e| start_error(e.to_string()))?;
        if launcher.reach() == Reach::MaybeOtherHosts && !reachable {
            self.say(request, &format!(
                "note: the hub listens on {} only, so {} ranks on other nodes cannot reach it (start the kernel with RUSTPX_HUB_IP=0.0.0.0 for them)",
                m.address.bind,
                launcher.name()
            ));
        }
        let place = if launcher.reach() == Reach::ThisHost {
            String::new()
        } else {
            format!(" with the {} launcher", launcher.name())
        };
        self.wait_registered(request, &ids, &format!("starting {n} engines{place}"))
            .await?;
        Ok(ids)
    }

    /// The first `n` consecutive ids that no live engine and no starting process holds
    /// (mpiexec and srun number their engines from a base).
    fn free_ids(&self, n: u32) -> Result<Vec<EngineId>, ErrorReport> {
        let m = self.machinery()?;
        let hub = lock(&m.hub);
        let free =
            |id: EngineId| !hub.engine(id).is_some_and(|e| e.alive()) && m.pool.pid(id).is_none();
        let mut base = 0;
        loop {
            match (base..base + n).find(|id| !free(*id)) {
                None => return Ok((base..base + n).collect()),
                Some(taken) => base = taken + 1,
            }
        }
    }

    /// What `%engines start --print` shows: the exact commands the launcher would run.
    fn print_commands(
        &self,
        request: &WireMessage,
        launcher: &Arc<dyn Launcher>,
        options: &LaunchOptions,
        n: u32,
    ) -> Result<(), ErrorReport> {
        let m = self.machinery()?;
        let ids = self.free_ids(n)?;
        let engine = m.pool.invocation(&**launcher, options);
        let commands = launcher
            .commands(&ids, &engine)
            .map_err(|e| usage(e.to_string()))?;
        let file = m
            .connection_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(not written)".into());
        let mut text = format!(
            "The {} launcher would run, for engines {} (CONNECTION_FILE is {file}):\n",
            launcher.name(),
            join(&ids)
        );
        for command in &commands {
            text.push_str(&format!("  {}\n", command.shell_line()));
        }
        if let Err(why) = launcher.check_ready() {
            text.push_str(&format!("(It cannot run here now: {why}.)\n"));
        }
        self.say(request, text.trim_end());
        Ok(())
    }

    /// Waits until `ids` are registered (alive), with a progress display that updates in place.
    async fn wait_registered(
        &self,
        request: &WireMessage,
        ids: &[EngineId],
        label: &str,
    ) -> Result<(), ErrorReport> {
        let m = self.machinery()?;
        let display_id = format!("{}-engines", request.header.msg_id);
        let started = Instant::now();
        let mut shown = None;
        loop {
            let ready = {
                let hub = lock(&m.hub);
                ids.iter()
                    .filter(|id| hub.engine(**id).is_some_and(|e| e.alive()))
                    .count()
            };
            let text = format!("{label}: {ready}/{} ready", ids.len());
            if shown.as_ref() != Some(&text) {
                let mut data = Map::new();
                data.insert("text/plain".into(), Value::String(text.clone()));
                self.display(request, data, Some(&display_id), shown.is_some());
                shown = Some(text);
            }
            if ready == ids.len() {
                return Ok(());
            }
            let mut failures = m.pool.take_start_failures();
            failures.extend(lock(&m.hub).take_refusals());
            if !failures.is_empty() || started.elapsed() > START_TIMEOUT {
                let why = if failures.is_empty() {
                    format!(
                        "engines did not register within {} s with the hub at {}",
                        START_TIMEOUT.as_secs(),
                        m.connection.url
                    )
                } else {
                    failures.join("; ")
                };
                return Err(ErrorReport {
                    ename: "EngineStartError".into(),
                    evalue: format!("{label} failed: {why}"),
                    traceback: vec![format!(
                        "EngineStartError: {label} failed: {why}. The kernel log {} says why (RUSTPX_LOG=debug for more).",
                        crate::paths::log_file().display()
                    )],
                    codes: Vec::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn px(
        &mut self,
        request: &WireMessage,
        options: &PxOptions,
        code: &str,
        count: u32,
    ) -> Result<(), ErrorReport> {
        let config = self.config.with(&options.exec);
        let live = self.ensure_engines(request).await?;
        let engines = targets::resolve(&config.targets, &live).map_err(|missing| ErrorReport {
            ename: "IndexError".into(),
            evalue: format!("No such engine: {}", missing.0),
            traceback: vec![format!("IndexError: No such engine: {}", missing.0)],
            codes: Vec::new(),
        })?;
        if engines.is_empty() {
            return Err(usage(format!(
                "the targets {} select no engine (live engines: {live:?})",
                config.targets
            )));
        }
        let (hub, compiler) = {
            let m = self.machinery()?;
            (m.hub.clone(), m.compiler.clone())
        };
        let single = matches!(config.targets, Targets::Single(_));
        let cell_id = uuid::Uuid::new_v4().simple().to_string();
        let record = CellRecord::new(cell_id.clone(), code.to_owned(), engines.clone(), single);
        let (observer, mut events) = mpsc::unbounded_channel();
        {
            let mut hub = lock(&hub);
            hub.add_cell(record);
            if config.block {
                hub.observe(&cell_id, observer);
            }
        }
        if !compiler.submit(CompileJob {
            cell_id: cell_id.clone(),
            code: code.to_owned(),
            engines,
            files: Default::default(),
        }) {
            return Err(ErrorReport {
                ename: "KernelError".into(),
                evalue: "the px compiler has stopped; restart the kernel".into(),
                traceback: vec![],
                codes: Vec::new(),
            });
        }
        self.last = Some(cell_id.clone());
        self.map_is_last = false;
        if let Some(name) = &options.out {
            self.named.insert(name.clone(), cell_id.clone());
        }
        if !config.block {
            self.publisher.publish(
                request,
                "execute_result",
                json!({"execution_count": count, "data": {"text/plain": "<AsyncResult(%px): pending>"}, "metadata": {}}),
            );
            return Ok(());
        }
        *lock(&self.active) = Some(ActiveCell {
            request: request.clone(),
            cell_id: cell_id.clone(),
            signal: config.signal_on_interrupt,
            interrupted: Vec::new(),
            stop_waiting: false,
        });
        let waited = self
            .wait_streaming(request, &cell_id, &config, &mut events)
            .await;
        lock(&hub).unobserve(&cell_id);
        let active = lock(&self.active).take();
        if waited == Waited::StoppedWaiting {
            return Err(ErrorReport {
                ename: "KeyboardInterrupt".into(),
                evalue: "stopped waiting; the engines were not signalled and keep running".into(),
                traceback: vec!["KeyboardInterrupt: stopped waiting for %px (--signal-on-interrupt 0); the engines keep running: %pxresult shows the result when it is ready".into()],
                codes: Vec::new(),
            });
        }
        let cell = lock(&hub).cell(&cell_id).cloned();
        let Some(cell) = cell else {
            return Ok(());
        };
        let grouping = options.group_outputs.unwrap_or_default();
        let interrupted = active.map(|a| a.interrupted).unwrap_or_default();
        if !interrupted.is_empty() {
            return self
                .after_interrupt(request, &cell, &config, grouping, &interrupted)
                .await;
        }
        let error = if config.stream {
            self.publish_outputs(request, render::streamed_values(&cell));
            render::already_displayed(&cell)
        } else {
            self.publish_outputs(request, render::non_streamed(&cell, grouping));
            render::final_error(&cell)
        };
        if options.local {
            // --local: the kernel's own context runs the cell too; its outputs follow.
            return Ok(());
        }
        match error {
            Some(error) => Err(to_report(error)),
            None => Ok(()),
        }
    }

    /// After an interrupt: the outputs so far, which engines lost what, and the engines back up.
    async fn after_interrupt(
        &self,
        request: &WireMessage,
        cell: &CellRecord,
        config: &Config,
        grouping: Grouping,
        interrupted: &[(EngineId, Vec<String>)],
    ) -> Result<(), ErrorReport> {
        if config.stream {
            self.publish_outputs(request, render::streamed_values(cell));
        } else {
            self.publish_outputs(request, render::non_streamed(cell, grouping));
        }
        let m = self.machinery()?;
        let mut text = String::new();
        let mut restarting = Vec::new();
        for (engine, variables) in interrupted {
            let lost = if variables.is_empty() {
                "it held no variables".to_owned()
            } else {
                format!("variables lost: {}", variables.join(", "))
            };
            if m.pool.started_here(*engine) {
                restarting.push(*engine);
                text.push_str(&format!(
                    "[{engine}:execute] interrupted; engine {engine} was restarted ({lost})\n"
                ));
            } else {
                text.push_str(&format!(
                    "[{engine}:execute] interrupted; engine {engine} exited ({lost}). It was started outside this kernel: start it again where it ran (rustpx-engine --connect FILE)\n"
                ));
            }
        }
        self.publisher
            .publish(request, "stream", json!({"name": "stderr", "text": text}));
        self.wait_registered(
            request,
            &restarting,
            &format!("restarting {} engines", restarting.len()),
        )
        .await
    }

    async fn wait_streaming(
        &self,
        request: &WireMessage,
        cell_id: &str,
        config: &Config,
        events: &mut mpsc::UnboundedReceiver<CellEvent>,
    ) -> Waited {
        let Ok(m) = self.machinery() else {
            return Waited::Done;
        };
        let started = Instant::now();
        let mut shown: HashMap<String, bool> = HashMap::new();
        let mut progress = Progress::new(request, config.progress_after, "%px");
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = tokio::time::sleep(Duration::from_millis(250)) => Some(CellEvent::Stream { engine: u32::MAX, name: String::new() }),
                _ = self.wake.notified() => {
                    if lock(&self.active).as_ref().is_some_and(|a| a.stop_waiting) {
                        return Waited::StoppedWaiting;
                    }
                    continue;
                }
            };
            let Some(event) = event else { break };
            let cell = match lock(&m.hub).cell(cell_id) {
                Some(cell) => cell.clone(),
                None => break,
            };
            match &event {
                CellEvent::Stream { engine, name } if config.stream && *engine != u32::MAX => {
                    if let Some(record) = cell.engines.get(engine) {
                        let text = if name == "stderr" {
                            &record.stderr
                        } else {
                            &record.stdout
                        };
                        let display_id = format!("{}-{name}", record.task_id);
                        let mut data = Map::new();
                        data.insert(
                            "text/plain".into(),
                            Value::String(render::stream_display_text(*engine, name, text)),
                        );
                        let update = shown.insert(display_id.clone(), true).is_some();
                        self.display(request, data, Some(&display_id), update);
                    }
                }
                CellEvent::Display { engine, index } if config.stream => {
                    if let Some(bundle) = cell
                        .engines
                        .get(engine)
                        .and_then(|r| r.displays.get(*index))
                    {
                        self.publish_outputs(
                            request,
                            vec![
                                render::output_header(*engine),
                                render::rich_output(*engine, bundle),
                            ],
                        );
                    }
                }
                CellEvent::EngineDone { engine } if config.stream => {
                    // Engines an interrupt signalled are reported once, with their restart.
                    let signalled = lock(&self.active)
                        .as_ref()
                        .is_some_and(|a| a.interrupted.iter().any(|(id, _)| id == engine));
                    if let Some(record) = cell
                        .engines
                        .get(engine)
                        .filter(|r| r.error.is_some() && !signalled)
                    {
                        let text = render::streamed_failure(record);
                        self.publisher.publish(
                            request,
                            "stream",
                            json!({"name": "stderr", "text": text}),
                        );
                    }
                }
                CellEvent::CellDone => {
                    progress.finish(self, cell.done_count(), cell.engines.len(), started);
                    return Waited::Done;
                }
                _ => {}
            }
            progress.tick(self, cell.done_count(), cell.engines.len(), started);
        }
        Waited::Done
    }

    async fn wait_done(&self, request: &WireMessage, cell_id: &str) -> Option<CellRecord> {
        let m = self.machinery().ok()?;
        let started = Instant::now();
        let mut progress = Progress::new(request, self.config.progress_after, "%pxresult");
        loop {
            let cell = lock(&m.hub).cell(cell_id).cloned()?;
            if cell.is_done() {
                progress.finish(self, cell.done_count(), cell.engines.len(), started);
                return Some(cell);
            }
            progress.tick(self, cell.done_count(), cell.engines.len(), started);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn pxresult(
        &mut self,
        request: &WireMessage,
        options: &ResultOptions,
        evaluator: &Evaluator,
    ) -> Result<(), ErrorReport> {
        if options.name.is_none() && self.map_is_last {
            if let Some(pending) = self.pending_map.take() {
                if options.status {
                    let text = self.map_status(&pending);
                    self.pending_map = Some(pending);
                    self.say(request, &text);
                    return Ok(());
                }
                self.map_is_last = false;
                return self.finish_map(request, pending, evaluator).await;
            }
        }
        let cell_id = match &options.name {
            Some(name) => self.named.get(name).cloned().ok_or_else(|| {
                usage(format!(
                    "no %px result is named {name}; name one with `%%px -o {name}`"
                ))
            })?,
            None => self.last.clone().ok_or_else(|| {
                usage("%pxresult recalls last %px result, which has not yet been used.")
            })?,
        };
        if lock(&self.machinery()?.hub).cell(&cell_id).is_none() {
            let which = match &options.name {
                Some(name) => format!("named {name}"),
                None => "of the last %px".to_owned(),
            };
            return Err(usage(format!(
                "the result {which} was dropped: the hub keeps the last {} %px results, as ipyparallel's hub culls its records; keep a value you need with `%pull` or in a variable",
                super::hub::KEPT_RESULTS
            )));
        }
        if options.status {
            let cell = lock(&self.machinery()?.hub).cell(&cell_id).cloned();
            if let Some(cell) = cell {
                self.display(request, status_view(&cell), None, false);
            }
            return Ok(());
        }
        let Some(cell) = self.wait_done(request, &cell_id).await else {
            return Ok(());
        };
        if let Some(name) = &options.out {
            self.named.insert(name.clone(), cell_id);
            return Ok(());
        }
        self.publish_outputs(
            request,
            render::non_streamed(&cell, options.group_outputs.unwrap_or_default()),
        );
        match render::final_error(&cell) {
            Some(error) => Err(to_report(error)),
            None => Ok(()),
        }
    }

    async fn engines(
        &mut self,
        request: &WireMessage,
        command: EnginesCommand,
    ) -> Result<(), ErrorReport> {
        match command {
            EnginesCommand::List => {
                self.display(request, self.engine_table()?, None, false);
                Ok(())
            }
            EnginesCommand::Start { n, launch, print } => {
                let launcher = launch::launcher_for(&launch).map_err(|e| usage(e.to_string()))?;
                let n = n
                    .or(launcher.default_count())
                    .unwrap_or_else(default_engine_count);
                if print {
                    return self.print_commands(request, &launcher, &launch, n);
                }
                let ids = self.start_engines(request, &launcher, &launch, n).await?;
                self.say(request, &format!("started engines {}", join(&ids)));
                Ok(())
            }
            EnginesCommand::Stop { ids } => {
                let m = self.machinery()?;
                let ids = ids.unwrap_or_else(|| lock(&m.hub).live_ids());
                self.check_known(&ids)?;
                for &id in &ids {
                    lock(&m.hub).shutdown_engine(id);
                }
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline && ids.iter().any(|id| m.pool.pid(*id).is_some()) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                for id in &ids {
                    if m.pool.pid(*id).is_some() {
                        m.pool.kill_engine(*id);
                    }
                    lock(&m.hub).engine_gone(*id, None, "stopped by %engines stop");
                }
                self.say(request, &format!("stopped engines {}", join(&ids)));
                Ok(())
            }
            EnginesCommand::Restart { ids } => {
                let m = self.machinery()?;
                self.check_known(&ids)?;
                let mut report = String::new();
                for &id in &ids {
                    let variables = lock(&m.hub).variables(id);
                    if let Some(pid) = m.pool.pid(id) {
                        m.pool.kill_engine(id);
                        // A process of ours ends within milliseconds; wait for it so the new
                        // one cannot race its exit. A remote engine is asked to exit and goes.
                        let deadline = Instant::now() + Duration::from_secs(5);
                        while m.pool.is_local_process(id) == Some(pid) && Instant::now() < deadline
                        {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    lock(&m.hub).engine_gone(id, None, "restarted by %engines restart");
                    m.pool.restart(id).map_err(|e| ErrorReport {
                        ename: "EngineStartError".into(),
                        evalue: e.to_string(),
                        traceback: vec![],
                        codes: Vec::new(),
                    })?;
                    let lost = if variables.is_empty() {
                        "no variables were lost".to_owned()
                    } else {
                        format!("variables lost: {}", variables.join(", "))
                    };
                    report.push_str(&format!("engine {id} restarted ({lost})\n"));
                }
                self.wait_registered(request, &ids, &format!("restarting {} engines", ids.len()))
                    .await?;
                self.publisher.publish(
                    request,
                    "stream",
                    json!({"name": "stdout", "text": report}),
                );
                Ok(())
            }
        }
    }

    fn check_known(&self, ids: &[EngineId]) -> Result<(), ErrorReport> {
        let m = self.machinery()?;
        let hub = lock(&m.hub);
        match ids.iter().find(|id| hub.engine(**id).is_none()) {
            Some(missing) => Err(ErrorReport {
                ename: "IndexError".into(),
                evalue: format!("No such engine: {missing}"),
                traceback: vec![format!("IndexError: No such engine: {missing}")],
                codes: Vec::new(),
            }),
            None => Ok(()),
        }
    }

    fn say(&self, request: &WireMessage, text: &str) {
        self.publisher.publish(
            request,
            "stream",
            json!({"name": "stdout", "text": format!("{text}\n")}),
        );
    }

    fn engine_table(&self) -> Result<Map<String, Value>, ErrorReport> {
        let m = self.machinery()?;
        let hub = lock(&m.hub);
        let mut text = String::new();
        let mut html = String::from(
            "<table><tr><th>id</th><th>host</th><th>pid</th><th>state</th><th>queue</th><th>cells</th></tr>",
        );
        let mut any = false;
        for engine in hub.engines() {
            any = true;
            let state = match &engine.state {
                EngineState::Idle => "idle".to_owned(),
                EngineState::Busy => "busy".to_owned(),
                EngineState::Dead(why) => format!("dead ({why})"),
            };
            // Whether the engine reads cells from the kernel's files or has them sent.
            let cells = if engine.shares_files { "local" } else { "sent" };
            text.push_str(&format!(
                "{:>3}  {:<16} {:>8}  {:<5}  {:<5}  {}\n",
                engine.id, engine.hostname, engine.pid, engine.queue, cells, state
            ));
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                engine.id, engine.hostname, engine.pid, state, engine.queue, cells
            ));
        }
        html.push_str("</table>");
        let file = m
            .connection_file
            .as_ref()
            .map(|p| format!("; more engines: rustpx-engine --connect {}", p.display()))
            .unwrap_or_default();
        let footer = format!(
            "hub: {}{file}\nhub bound to: {}\nlog: {}\n",
            m.connection.url,
            m.address.bind,
            crate::paths::log_file().display()
        );
        let text = if any {
            format!(
                "{:>3}  {:<16} {:>8}  {:<5}  {:<5}  {}\n{text}{footer}",
                "id", "host", "pid", "queue", "cells", "state"
            )
        } else {
            format!(
                "No engines are running. The first %px starts {} local engines (RUSTPX_ENGINES), or use %engines start -n N.\n{footer}",
                default_engine_count()
            )
        };
        let mut data = Map::new();
        data.insert("text/plain".into(), Value::String(text));
        if any {
            html.push_str(&format!("<p><code>{}</code></p>", footer.trim_end()));
            data.insert("text/html".into(), Value::String(html));
        }
        Ok(data)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Waited {
    Done,
    StoppedWaiting,
}

/// The `%px: k/n tasks` display, shown once the wait passes `--progress-after`.
struct Progress {
    request: WireMessage,
    after: f64,
    label: &'static str,
    /// What is counted: `tasks` (engines) or `items` (a map).
    unit: &'static str,
    shown: bool,
    last: Option<(usize, u64)>,
}

impl Progress {
    fn new(request: &WireMessage, after: f64, label: &'static str) -> Self {
        Progress {
            request: request.clone(),
            after,
            label,
            unit: "tasks",
            shown: false,
            last: None,
        }
    }

    fn counting(mut self, unit: &'static str) -> Self {
        self.unit = unit;
        self
    }

    fn display_id(&self) -> String {
        format!("{}-progress", self.request.header.msg_id)
    }

    fn tick(&mut self, px: &PxService, done: usize, total: usize, started: Instant) {
        let elapsed = started.elapsed().as_secs_f64();
        if self.after < 0.0 || elapsed < self.after {
            return;
        }
        // Redraw when the count changes, or every second for the clock.
        let key = (done, elapsed as u64);
        if self.last == Some(key) {
            return;
        }
        self.last = Some(key);
        let data = render::progress(self.label, self.unit, done, total, elapsed);
        px.display(&self.request, data, Some(&self.display_id()), self.shown);
        self.shown = true;
    }

    fn finish(&mut self, px: &PxService, done: usize, total: usize, started: Instant) {
        // Draw the final state once: a tick may already have shown it.
        let already_final = self.last.is_some_and(|(shown_done, _)| shown_done == done);
        if self.shown && !already_final {
            let data = render::progress(
                self.label,
                self.unit,
                done,
                total,
                started.elapsed().as_secs_f64(),
            );
            px.display(&self.request, data, Some(&self.display_id()), true);
        }
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

/// The status view of a result: ready, elapsed, progress, serial and wall time, per engine.
fn status_view(cell: &CellRecord) -> Map<String, Value> {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%H:%M:%S%.3f").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let first_line = cell.code.lines().next().unwrap_or("");
    let mut text = format!(
        "code: {first_line}\nready: {}\nelapsed: {:.3} s\nprogress: {}/{}\nserial_time: {:.3} s\nwall_time: {:.3} s\n",
        cell.is_done(),
        cell.wall_time(),
        cell.done_count(),
        cell.engines.len(),
        cell.serial_time(),
        cell.wall_time(),
    );
    text.push_str("engine  status   count  submitted     started       completed     received\n");
    for record in cell.in_order() {
        text.push_str(&format!(
            "{:>6}  {:<7}  {:>5}  {}  {}  {}  {}\n",
            record.engine,
            record.status(),
            record
                .execution_count
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            time(Some(record.submitted)),
            time(record.started),
            time(record.completed),
            time(record.received),
        ));
    }
    let mut data = Map::new();
    data.insert("text/plain".into(), Value::String(text));
    data
}
