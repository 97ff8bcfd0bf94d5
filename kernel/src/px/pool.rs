//! The local engine pool: `rustpx-engine` processes started, watched and stopped by the kernel.
//!
//! Each engine gets the hub's connection in its environment, its id on the command line and the
//! kernel's pid, so that it exits when the kernel is gone (no orphans even after `kill -9`).
//! Engines run in their own process group: a Ctrl-C in the terminal of `jupyter console` is the
//! kernel's to handle, not theirs. A watcher task per process reports its exit to the hub at
//! once, so a crash is an `EngineError` within milliseconds rather than after a heartbeat timeout.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use rustpx_protocol::{EngineConnection, EngineId, CONNECTION_ENV};

use super::hub::Hub;
use super::{lock, PxError};

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

#[derive(Default)]
struct PoolState {
    /// Files to delete at shutdown (the engine connection file holds the key).
    remove_at_shutdown: Vec<PathBuf>,
    /// Engine id to the pid of the process started for it.
    processes: HashMap<EngineId, u32>,
    /// Engines that exited before they registered, with why: shown when a start times out.
    start_failures: Vec<String>,
}

/// The local pool; cheap to clone.
#[derive(Clone)]
pub struct LocalPool {
    engine_binary: PathBuf,
    connection: Arc<EngineConnection>,
    hub: Arc<Mutex<Hub>>,
    state: Arc<Mutex<PoolState>>,
}

impl LocalPool {
    pub fn new(connection: EngineConnection, hub: Arc<Mutex<Hub>>) -> Result<LocalPool, PxError> {
        Ok(LocalPool {
            engine_binary: engine_binary()?,
            connection: Arc::new(connection),
            hub,
            state: Arc::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        lock(&self.state)
    }

    /// Starts the engine process for `id`; it registers with the hub by itself.
    pub fn spawn(&self, id: EngineId) -> Result<u32, PxError> {
        let json = serde_json::to_string(&*self.connection).unwrap_or_default();
        let mut command = tokio::process::Command::new(&self.engine_binary);
        command
            .arg("--id")
            .arg(id.to_string())
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .env(CONNECTION_ENV, json)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(engine_log())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = command
            .spawn()
            .map_err(|e| PxError::Spawn(self.engine_binary.display().to_string(), e.to_string()))?;
        let pid = child.id().unwrap_or(0);
        self.state().processes.insert(id, pid);
        let pool = self.clone();
        tokio::spawn(async move {
            let reason = match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(error) => format!("could not be waited for: {error}"),
            };
            pool.exited(id, pid, &reason);
        });
        Ok(pid)
    }

    fn exited(&self, id: EngineId, pid: u32, reason: &str) {
        {
            let mut state = self.state();
            if state.processes.get(&id) == Some(&pid) {
                state.processes.remove(&id);
            }
        }
        let mut hub = lock(&self.hub);
        let registered = hub
            .engines()
            .find(|e| e.pid == pid && e.alive())
            .map(|e| (e.id, e.incarnation));
        match registered {
            Some((engine, incarnation)) => {
                hub.engine_gone(engine, Some(incarnation), reason);
                if hub.take_interrupted(engine, incarnation) {
                    drop(hub);
                    tracing::info!("engine {engine} was interrupted; starting it again");
                    if let Err(error) = self.spawn(engine) {
                        tracing::error!("could not restart engine {engine}: {error}");
                    }
                }
            }
            None => {
                let was_known = hub.engines().any(|e| e.pid == pid);
                if !was_known {
                    let text = format!("engine {id} (pid {pid}) {reason} before registering");
                    tracing::error!("{text}");
                    drop(hub);
                    self.state().start_failures.push(text);
                }
            }
        }
    }

    /// Why engines failed to start since the last call.
    pub fn take_start_failures(&self) -> Vec<String> {
        std::mem::take(&mut self.state().start_failures)
    }

    pub fn pid(&self, id: EngineId) -> Option<u32> {
        self.state().processes.get(&id).copied()
    }

    /// Kills every engine process at once and removes private files (kernel shutdown).
    pub fn kill_all(&self) {
        let mut state = self.state();
        for pid in state.processes.values() {
            signal(*pid, libc::SIGKILL);
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

/// Engines log to the kernel's log file when there is one, else to the kernel's stderr.
fn engine_log() -> Stdio {
    std::env::var_os(crate::paths::LOG_FILE_ENV)
        .and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        })
        .map(Stdio::from)
        .unwrap_or_else(Stdio::inherit)
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
