//! The engine pool: the processes launchers started, watched and stopped by the kernel.
//!
//! A [launcher](crate::launch) says what to run; the pool runs it. A local engine gets the hub's
//! connection in its environment, its id on the command line and the kernel's pid, so that it
//! exits when the kernel is gone (no orphans even after `kill -9`); an ssh engine gets the
//! connection on stdin and exits when that closes. Launched processes run in their own process
//! group: a Ctrl-C in the terminal of `jupyter console` is the kernel's to handle, not theirs. A
//! watcher task per process reports its exit to the hub at once, so a crash is an `EngineError`
//! within milliseconds rather than after a heartbeat timeout; their stderr goes to the kernel's
//! log, and its last line into the error when an engine never registered.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use rustpx_protocol::{EngineConnection, EngineId};

use super::hub::{Departure, HubHandle, StartedEngineEnd};
use super::jobs::BatchJobs;
use super::restart_policy::{RestartNotice, RestartPolicy};
use super::{lock, PxError};
use crate::launch::{
    EngineInvocation, LaunchCommand, LaunchOptions, Launcher, LocalLauncher, Reach,
};

/// Why an engine process ended, in words.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(signal) = status.signal() {
        let name = match signal {
            2 => " (SIGINT)",
            6 => " (SIGABRT: the process aborted)",
            9 => " (SIGKILL)",
            11 => " (SIGSEGV: segmentation fault)",
            15 => " (SIGTERM)",
            7 => " (SIGBUS)",
            4 => " (SIGILL)",
            _ => "",
        };
        format!("killed by signal {signal}{name}")
    } else {
        match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "exited".to_owned(),
        }
    }
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: i32) {
    if pid == 0 || signal == 0 {
        return;
    }
    // SAFETY: kill has no memory-safety preconditions.
    let result = unsafe { libc::kill(pid as libc::pid_t, signal) };
    if result != 0 {
        tracing::debug!(
            "kill({pid}, {signal}) failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// One process a launcher started, and what it was started as.
#[derive(Clone)]
struct Launched {
    pid: u32,
    launcher: Arc<dyn Launcher>,
    command: LaunchCommand,
    engine: EngineInvocation,
    /// Hub incarnations at or after this one registered after the process started.
    first_incarnation: u64,
}

#[derive(Default)]
struct PoolState {
    /// Files to delete at shutdown (the engine connection file holds the key).
    remove_at_shutdown: Vec<PathBuf>,
    /// Engine id to the process started for it (several ids share an mpiexec or srun).
    processes: HashMap<EngineId, Launched>,
    /// Engine id to how it was last started, kept after it ends: a restart starts it the same
    /// way (on the same ssh host, as a rank of a new mpiexec).
    origins: HashMap<EngineId, Launched>,
    /// The stdin of each process that reads its connection there (ssh): kept open, because
    /// the remote engine exits when it closes.
    /// Dropping the sender closes that stdin.
    stdins: HashMap<u32, tokio::sync::oneshot::Sender<()>>,
    /// Engines that exited before they registered, with why: shown when a start times out.
    start_failures: Vec<String>,
    /// `%pxconfig --restart-dead`: which engines that die are started again.
    restarts: RestartPolicy,
}

/// The kernel's engine processes, whatever launched them; cheap to clone.
#[derive(Clone)]
pub struct EnginePool {
    engine_binary: PathBuf,
    connection: Arc<EngineConnection>,
    /// What engines of this host get: the same, dialling the hub's Unix socket when it has one.
    local_connection: Arc<EngineConnection>,
    hub: HubHandle,
    state: Arc<Mutex<PoolState>>,
    local: Arc<dyn Launcher>,
    /// Engines that come from submitted batch jobs rather than processes of ours.
    jobs: BatchJobs,
}

impl EnginePool {
    pub fn new(connection: EngineConnection, hub: HubHandle) -> Result<EnginePool, PxError> {
        let mut local_connection = connection.clone();
        if let Some(url) = &connection.local_url {
            local_connection.url.clone_from(url);
        }
        let connection = Arc::new(connection);
        Ok(EnginePool {
            engine_binary: engine_binary()?,
            jobs: BatchJobs::new(hub.clone(), connection.clone()),
            connection,
            local_connection: Arc::new(local_connection),
            hub,
            state: Arc::default(),
            local: Arc::new(LocalLauncher::new(std::process::id())),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        lock(&self.state)
    }

    /// The local launcher (`%engines start` without `--launcher`, the first `%px`).
    pub fn local_launcher(&self) -> Arc<dyn Launcher> {
        self.local.clone()
    }

    /// What a launcher runs: this host's engine binary for the local launcher, `--engine` or
    /// `rustpx-engine` on the engine hosts' `$PATH` for the others.
    pub fn invocation(&self, launcher: &dyn Launcher, options: &LaunchOptions) -> EngineInvocation {
        let mut invocation = crate::launch::invocation(options, launcher, &self.engine_binary);
        invocation.hub_url.clone_from(&self.connection.url);
        invocation
    }

    /// Starts the processes `launcher` wants for engines `ids`; they register with the hub by
    /// themselves. Returns the commands started.
    pub fn start(
        &self,
        launcher: &Arc<dyn Launcher>,
        ids: &[EngineId],
        engine: &EngineInvocation,
    ) -> Result<Vec<LaunchCommand>, PxError> {
        launcher.check_ready().map_err(PxError::Launch)?;
        if let Some(batch) = launcher.batch() {
            let label = self.jobs.submit(batch, ids, engine)?;
            // Remembered for a restart, which submits a job of one engine.
            let command = LaunchCommand {
                program: String::new(),
                args: Vec::new(),
                delivery: crate::launch::ConnectionDelivery::Environment,
                ids: ids.to_vec(),
                place: label,
            };
            let launched = Launched {
                pid: 0,
                launcher: launcher.clone(),
                command: command.clone(),
                engine: engine.clone(),
                first_incarnation: self.hub.next_incarnation(),
            };
            let mut state = self.state();
            for id in ids {
                state.origins.insert(*id, launched.clone());
            }
            return Ok(vec![command]);
        }
        self.hub.set_job(ids, None);
        let commands = launcher.commands(ids, engine).map_err(PxError::Launch)?;
        for command in &commands {
            self.spawn(launcher, command, engine)?;
        }
        Ok(commands)
    }

    /// Whether this pool ever started engine `id` (and so can start it again).
    pub fn started_here(&self, id: EngineId) -> bool {
        self.state().origins.contains_key(&id)
    }

    /// Starts engine `id` again the way it was started last time (a restart, an interrupt);
    /// an engine the pool did not start comes back as a local one.
    pub fn restart(&self, id: EngineId) -> Result<(), PxError> {
        let previous = self.state().origins.get(&id).cloned();
        let (launcher, engine) = match previous {
            Some(launched) => (
                launched.launcher.for_restart(&launched.command),
                launched.engine,
            ),
            None => (
                self.local.clone(),
                self.invocation(&*self.local, &LaunchOptions::default()),
            ),
        };
        self.start(&launcher, &[id], &engine).map(|_| ())
    }

    fn spawn(
        &self,
        launcher: &Arc<dyn Launcher>,
        launch: &LaunchCommand,
        engine: &EngineInvocation,
    ) -> Result<(), PxError> {
        // Engines of this host dial the Unix socket; any other may run where it does not exist.
        // An `--engine` of the user's own may run as another user (or in another namespace),
        // for whom the kernel's 0700 directory is closed: it dials tcp, as remote ones do.
        let connection = match launcher.reach() {
            Reach::ThisHost if engine.binary == self.engine_binary => &self.local_connection,
            Reach::ThisHost | Reach::MaybeOtherHosts | Reach::OtherHosts => &self.connection,
        };
        let json = launch.connection_json(connection);
        let mut command = tokio::process::Command::from(launch.process(&json));
        command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = command
            .spawn()
            .map_err(|e| PxError::Spawn(launch.program.clone(), e.to_string()))?;
        let pid = child.id().unwrap_or(0);
        let first_incarnation = self.hub.next_incarnation();
        {
            let mut state = self.state();
            if let Some(stdin) = child.stdin.take() {
                state
                    .stdins
                    .insert(pid, hand_over_connection(stdin, json, &launch.place));
            }
            let launched = Launched {
                pid,
                launcher: launcher.clone(),
                command: launch.clone(),
                engine: engine.clone(),
                first_incarnation,
            };
            for id in &launch.ids {
                state.processes.insert(*id, launched.clone());
                state.origins.insert(*id, launched.clone());
            }
        }
        let last_words = child
            .stderr
            .take()
            .map(|stderr| relay_log(stderr, &launch.place));
        let pool = self.clone();
        let launch = launch.clone();
        tokio::spawn(async move {
            let reason = match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(error) => format!("could not be waited for: {error}"),
            };
            let last_words = match last_words {
                Some(task) => task.await.unwrap_or_default(),
                None => String::new(),
            };
            pool.exited(&launch, pid, &reason, &last_words);
        });
        Ok(())
    }

    fn exited(&self, launch: &LaunchCommand, pid: u32, exit: &str, last_words: &str) {
        let mut started = Vec::new();
        let mut local = true;
        {
            let mut state = self.state();
            state.stdins.remove(&pid);
            for id in &launch.ids {
                if let Some(launched) = state.processes.get(id).filter(|l| l.pid == pid) {
                    local = launched.launcher.reach() == Reach::ThisHost;
                    started.push((*id, launched.first_incarnation));
                    state.processes.remove(id);
                }
            }
        }
        let reason = if local {
            exit.to_owned()
        } else {
            format!("its {} process ({}) {exit}", launch.program, launch.place)
        };
        for (id, first_incarnation) in started {
            match self.hub.end_started_engine(id, first_incarnation, &reason) {
                StartedEngineEnd::WasRunning {
                    incarnation,
                    on_purpose,
                    lost,
                } => {
                    let restarted = self.restart_if_interrupted(id, incarnation);
                    if !restarted && !on_purpose {
                        self.restart_if_dead(id, &reason, &lost);
                    }
                }
                StartedEngineEnd::AlreadyGone => {}
                StartedEngineEnd::NeverRegistered => {
                    let mut text = if local {
                        format!("engine {id} (pid {pid}) {exit} before registering")
                    } else {
                        format!(
                            "engine {id}: {} for {} (pid {pid}) {exit} before the engine registered",
                            launch.program, launch.place
                        )
                    };
                    if !last_words.is_empty() {
                        text.push_str(&format!(": {last_words}"));
                    }
                    tracing::error!("{text}");
                    self.state().start_failures.push(text);
                }
            }
        }
    }

    /// Why engines failed to start since the last call.
    pub fn take_start_failures(&self) -> Vec<String> {
        let mut failures = std::mem::take(&mut self.state().start_failures);
        failures.extend(self.jobs.take_start_failures());
        failures
    }

    /// The kernel's submitted batch jobs.
    pub fn jobs(&self) -> &BatchJobs {
        &self.jobs
    }

    /// Whether engine id `id` is taken by a process or a queued job of this pool.
    pub fn holds(&self, id: EngineId) -> bool {
        self.pid(id).is_some() || self.jobs.holds(id)
    }

    /// The pid of the process started for engine `id` (an ssh or mpiexec for remote engines).
    pub fn pid(&self, id: EngineId) -> Option<u32> {
        self.state().processes.get(&id).map(|l| l.pid)
    }

    /// Whether engine `id` runs as a process of this host that the kernel started itself.
    pub fn is_local_process(&self, id: EngineId) -> Option<u32> {
        self.state()
            .processes
            .get(&id)
            .filter(|l| l.launcher.signals_directly())
            .map(|l| l.pid)
    }

    /// Sends `signal` to engine `id`: to its process when it is ours on this host, otherwise
    /// over the engine link. Returns whether it could be sent.
    pub fn signal_engine(&self, id: EngineId, signal_number: i32) -> bool {
        match self.is_local_process(id) {
            Some(pid) => {
                signal(pid, signal_number);
                true
            }
            None => self.hub.signal_engine(id, signal_number),
        }
    }

    /// Kills engine `id` now. A remote engine is asked over the link, and the process that
    /// started it is ended when it started only that engine (ssh), which also closes the
    /// engine's stdin.
    pub fn kill_engine(&self, id: EngineId) {
        self.hub.expect_exit(id);
        if let Some(pid) = self.is_local_process(id) {
            signal(pid, libc::SIGKILL);
            return;
        }
        self.hub.signal_engine(id, libc::SIGKILL);
        let alone = {
            let state = self.state();
            state
                .processes
                .get(&id)
                .filter(|l| l.command.ids.len() == 1)
                .map(|l| l.pid)
        };
        if let Some(pid) = alone {
            signal(pid, libc::SIGTERM);
        }
    }

    /// An engine left without its process ending here (no heartbeat, or it said it exits):
    /// kill its process if it is ours and local, so a hung engine does not linger (a remote
    /// one exits on its own when the hub is silent for too long); start it again if it left
    /// because of an interrupt, or on its own under `--restart-dead`. (The process's exit,
    /// seen later, finds the engine already gone and starts nothing more.)
    pub fn departed(&self, departure: Departure) {
        if self.is_local_process(departure.id) == Some(departure.pid) {
            signal(departure.pid, libc::SIGKILL);
        }
        let restarted = self.restart_if_interrupted(departure.id, departure.incarnation);
        if !restarted && !departure.on_purpose {
            self.restart_if_dead(departure.id, &departure.reason, &departure.lost);
        }
    }

    /// Starts engine `id` again, the way it was started, when process `incarnation` ended
    /// because of an interrupt (however its end was seen: process exit, goodbye, silence).
    /// Returns whether it was an interrupt's end.
    fn restart_if_interrupted(&self, id: EngineId, incarnation: u64) -> bool {
        let interrupted = self.hub.take_interrupted(id, incarnation);
        if interrupted && self.started_here(id) {
            tracing::info!("engine {id} was interrupted; starting it again");
            if let Err(error) = self.restart(id) {
                tracing::error!("could not restart engine {id}: {error}");
            }
        }
        interrupted
    }

    /// Engine `id` died on its own: start it again if `--restart-dead` allows.
    fn restart_if_dead(&self, id: EngineId, why: &str, lost: &[String]) {
        if !self.started_here(id) || !self.state().restarts.on_death(id, why, lost) {
            return;
        }
        tracing::info!("engine {id} died ({why}); restarting it (--restart-dead)");
        if let Err(error) = self.restart(id) {
            tracing::error!("could not restart engine {id}: {error}");
            self.state().restarts.restart_failed(id, &error.to_string());
        }
    }

    /// Sets `--restart-dead`'s limit of restarts per engine (0: off).
    pub fn set_restart_limit(&self, limit: u32) {
        self.state().restarts.set_limit(limit);
    }

    /// What the restart policy did since the last call.
    pub fn take_restart_notices(&self) -> Vec<RestartNotice> {
        self.state().restarts.take_notices()
    }

    /// Kills every engine at once, cancels every job and removes private files (kernel
    /// shutdown).
    pub fn kill_all(&self) {
        let ids: Vec<EngineId> = self.hub.live_ids();
        for id in ids {
            self.hub.shutdown_engine(id);
        }
        self.jobs.cancel_all();
        let mut state = self.state();
        state.stdins.clear();
        for launched in state.processes.values() {
            let sig = if launched.launcher.signals_directly() {
                libc::SIGKILL
            } else {
                // mpiexec and srun pass SIGTERM on to their ranks and tasks.
                libc::SIGTERM
            };
            signal(launched.pid, sig);
        }
        for path in state.remove_at_shutdown.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Deletes `path` when the kernel shuts down.
    pub fn remove_on_shutdown(&self, path: PathBuf) {
        self.state().remove_at_shutdown.push(path);
    }
}

/// Writes the connection line on `stdin`, then holds it open until the returned sender is
/// dropped (the engine exits when its stdin closes).
fn hand_over_connection(
    mut stdin: tokio::process::ChildStdin,
    json: String,
    place: &str,
) -> tokio::sync::oneshot::Sender<()> {
    use tokio::io::AsyncWriteExt;
    let (keep, closed) = tokio::sync::oneshot::channel::<()>();
    let place = place.to_owned();
    tokio::spawn(async move {
        let line = format!("{json}\n");
        if let Err(error) = stdin.write_all(line.as_bytes()).await {
            tracing::warn!("could not give the engine on {place} its connection: {error}");
        }
        let _ = stdin.flush().await;
        let _ = closed.await;
    });
    keep
}

/// Copies a launched process's stderr into the kernel's log, each line marked with where it
/// runs, and returns its last line (why an ssh or mpiexec failed, for the start error).
fn relay_log(stderr: tokio::process::ChildStderr, place: &str) -> tokio::task::JoinHandle<String> {
    use std::io::Write;
    use tokio::io::AsyncBufReadExt;
    let place = place.to_owned();
    tokio::spawn(async move {
        let mut log = engine_log();
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut last = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = match &mut log {
                Some(file) => writeln!(file, "[{place}] {line}"),
                None => writeln!(std::io::stderr(), "[{place}] {line}"),
            };
            if !line.trim().is_empty() {
                last = line;
            }
        }
        last
    })
}

/// Engines log to the kernel's log file when there is one, else to the kernel's stderr.
fn engine_log() -> Option<std::fs::File> {
    std::env::var_os(crate::paths::LOG_FILE_ENV).and_then(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    })
}

/// `rustpx-engine` beside the kernel binary, or `$RUSTPX_ENGINE_BIN`.
fn engine_binary() -> Result<PathBuf, PxError> {
    if let Some(path) = std::env::var_os("RUSTPX_ENGINE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("rustpx-engine")));
    match beside {
        Some(path) if path.exists() => Ok(path),
        Some(path) => Err(PxError::NoEngineBinary(path.display().to_string())),
        None => Err(PxError::NoEngineBinary("rustpx-engine".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn exits_are_described_in_words() {
        let status = Command::new("sh").args(["-c", "exit 3"]).status().unwrap();
        assert_eq!(describe_exit(status), "exited with status 3");
        let status = Command::new("sh")
            .args(["-c", "kill -SEGV $$"])
            .status()
            .unwrap();
        assert_eq!(
            describe_exit(status),
            "killed by signal 11 (SIGSEGV: segmentation fault)"
        );
    }
}
