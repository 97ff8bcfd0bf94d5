//! Launchers: how engine processes are started, locally or where the cores are.
//!
//! rustpx is not a cluster manager. Every launcher speaks the same contract: the kernel's hub
//! listens, its connection blob (address, key) reaches the engines, and the launcher starts
//! copies of `rustpx-engine` that dial in and register. A launcher only says which processes to
//! start for which engine ids ([`Launcher::commands`]); the pool in the kernel (or `rustpx
//! engines` on the command line) starts them, watches them, and stops and signals engines.
//! Keeping the launchers pure makes the exact command each one runs printable and testable.
//!
//! - [`LocalLauncher`]: one process per engine on this host (the default).
//! - [`SshLauncher`]: one `ssh HOST rustpx-engine` per engine, for a `host: n` map.
//! - [`MpiLauncher`]: one `mpiexec -n N rustpx-engine`; each rank's engine id is its rank.
//! - [`SlurmLauncher`]: one `srun --ntasks N rustpx-engine` inside an existing allocation.
//! - [`BatchLauncher`]: a job script submitted with `sbatch` or `qsub`, from outside any
//!   allocation; it starts no process of the kernel's, so its [`Launcher::batch`] is what counts.

mod batch;
mod local;
mod mpi;
mod slurm;
mod ssh;

use std::path::PathBuf;
use std::sync::Arc;

use rustpx_protocol::{EngineId, CONNECTION_ENV};
use thiserror::Error;

pub use batch::{BatchLauncher, JobOptions};
pub use local::LocalLauncher;
pub use mpi::MpiLauncher;
pub use slurm::SlurmLauncher;
pub use ssh::SshLauncher;

/// Why a launcher cannot start what was asked.
#[derive(Debug, Error, PartialEq)]
pub enum LaunchError {
    #[error("{0}")]
    Usage(String),
    #[error("the slurm launcher runs srun inside an allocation, and there is none here ($SLURM_JOB_ID is unset): start the kernel inside salloc or sbatch")]
    NoAllocation,
}

/// How the connection blob reaches an engine.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionDelivery {
    /// In `$RUSTPX_ENGINE_CONNECTION` (inherited through mpiexec and srun).
    Environment,
    /// As the first line of the engine's stdin (`--connect -`): ssh does not forward the
    /// environment, and a key on a command line is visible to every user of the remote host.
    /// `dial` replaces the hub address the engine dials (the remote end of an ssh tunnel).
    Stdin { dial: Option<String> },
}

/// One process a launcher wants started.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchCommand {
    pub program: String,
    pub args: Vec<String>,
    pub delivery: ConnectionDelivery,
    /// The engines this process starts (several for mpiexec and srun).
    pub ids: Vec<EngineId>,
    /// Where the engines run, for messages (`localhost`, an ssh host, `mpiexec`).
    pub place: String,
}

impl LaunchCommand {
    /// The connection blob this command's engines get: `connection`, dialling the tunnel's end
    /// when there is one.
    pub fn connection_json(&self, connection: &rustpx_protocol::EngineConnection) -> String {
        let mut connection = connection.clone();
        if let ConnectionDelivery::Stdin { dial: Some(url) } = &self.delivery {
            connection.url.clone_from(url);
        }
        serde_json::to_string(&connection).unwrap_or_default()
    }

    /// The process to start, with the connection `json` in its environment, or stdin piped for
    /// the caller to write the connection line to (see [`ConnectionDelivery`]).
    pub fn process(&self, json: &str) -> std::process::Command {
        let mut process = std::process::Command::new(&self.program);
        process.args(&self.args);
        match self.delivery {
            ConnectionDelivery::Environment => {
                process
                    .env(CONNECTION_ENV, json)
                    .stdin(std::process::Stdio::null());
            }
            ConnectionDelivery::Stdin { .. } => {
                process.stdin(std::process::Stdio::piped());
            }
        }
        process
    }

    /// The command as a shell line, with how the connection reaches it: what `--print` shows.
    pub fn shell_line(&self) -> String {
        let words: Vec<String> = std::iter::once(&self.program)
            .chain(&self.args)
            .map(|w| shell_quote(w))
            .collect();
        match &self.delivery {
            ConnectionDelivery::Environment => {
                format!(
                    "{CONNECTION_ENV}=\"$(cat CONNECTION_FILE)\" {}",
                    words.join(" ")
                )
            }
            ConnectionDelivery::Stdin { dial: None } => {
                format!("{} < CONNECTION_FILE", words.join(" "))
            }
            ConnectionDelivery::Stdin { dial: Some(url) } => format!(
                "{} < CONNECTION_FILE (with the engine dialling {url})",
                words.join(" ")
            ),
        }
    }
}

/// Where a launcher's engines run, which decides whether the hub must listen beyond loopback
/// and which engine binary runs by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// This host: the kernel's own `rustpx-engine`.
    ThisHost,
    /// Nodes that usually share this host's filesystem (a cluster): the kernel's own
    /// `rustpx-engine` path; a loopback hub only works if every rank lands here.
    MaybeOtherHosts,
    /// Other hosts: `rustpx-engine` from their `$PATH`, and a hub they can reach.
    OtherHosts,
}

impl Reach {
    /// The engine binary a launcher runs without `--engine`: `local` is this host's binary.
    pub fn default_binary(self, local: &std::path::Path) -> PathBuf {
        match self {
            Reach::OtherHosts => PathBuf::from("rustpx-engine"),
            Reach::ThisHost | Reach::MaybeOtherHosts => local.to_owned(),
        }
    }
}

/// What every launcher needs to know about the engines it starts.
#[derive(Debug, Clone)]
pub struct EngineInvocation {
    /// The `rustpx-engine` to run: a path on this host for the local launcher, the path (or
    /// the name on `$PATH`) on the engine hosts for the others.
    pub binary: PathBuf,
    /// Extra arguments for every engine (`--fetch-objects`, `--cache-dir DIR`).
    pub extra_args: Vec<String>,
    /// The hub's address (`tcp://HOST:PORT`), for a launcher that tunnels to it.
    pub hub_url: String,
}

/// A way to start engines.
pub trait Launcher: Send + Sync {
    /// Its name as users choose it (`--launcher NAME`).
    fn name(&self) -> &'static str;

    /// The processes to start for engines `ids`, which are consecutive and free.
    fn commands(
        &self,
        ids: &[EngineId],
        engine: &EngineInvocation,
    ) -> Result<Vec<LaunchCommand>, LaunchError>;

    /// How many engines a start without `-n` makes (the `host: n` map of ssh fixes it).
    fn default_count(&self) -> Option<u32> {
        None
    }

    /// Whether the kernel can signal these engines' processes itself (same host, own pid);
    /// otherwise an interrupt travels over the engine link.
    fn signals_directly(&self) -> bool {
        false
    }

    /// Where its engines run: always on other hosts (ssh), perhaps (mpiexec, srun: the
    /// nodes the MPI host file or the allocation names), or here.
    fn reach(&self) -> Reach {
        Reach::MaybeOtherHosts
    }

    /// Whether its engines reach the hub through a tunnel of their own (ssh `--tunnel`), so
    /// the hub may stay on loopback however far away they run.
    fn tunnels(&self) -> bool {
        false
    }

    /// Whether the launcher can start engines here now (slurm needs an allocation).
    fn check_ready(&self) -> Result<(), LaunchError> {
        Ok(())
    }

    /// The batch launcher this is, when its engines come from a submitted job rather than from
    /// processes the kernel starts.
    fn batch(&self) -> Option<&BatchLauncher> {
        None
    }

    /// The launcher that starts engine `id` again where `command` started it (a restart).
    fn for_restart(&self, command: &LaunchCommand) -> Arc<dyn Launcher>;
}

pub use rustpx_core::launch_options::{parse_hosts, LaunchOptions, LAUNCHER_NAMES};
use rustpx_core::launch_options::{LaunchUsageError, LauncherKind};

impl From<LaunchUsageError> for LaunchError {
    fn from(error: LaunchUsageError) -> Self {
        LaunchError::Usage(error.0)
    }
}

/// What `launcher` runs for `options`: `--engine`, else the launcher's default given this
/// host's engine binary `local`, with the `--engine-arg`s.
pub fn invocation(
    options: &LaunchOptions,
    launcher: &dyn Launcher,
    local: &std::path::Path,
) -> EngineInvocation {
    EngineInvocation {
        binary: match &options.engine {
            Some(path) => PathBuf::from(path),
            None => launcher.reach().default_binary(local),
        },
        extra_args: options.engine_args.clone(),
        hub_url: String::new(),
    }
}

/// Builds the launcher `options` asks for, once they pass [`LaunchOptions::check`].
pub fn launcher_for(options: &LaunchOptions) -> Result<Arc<dyn Launcher>, LaunchError> {
    let args = options.launcher_args.clone();
    Ok(match options.check()? {
        LauncherKind::Local => Arc::new(LocalLauncher::new(std::process::id())),
        LauncherKind::Ssh => Arc::new(SshLauncher::new(
            options.hosts.clone(),
            args,
            options.tunnel,
        )?),
        LauncherKind::Mpi => Arc::new(MpiLauncher::new(args)),
        LauncherKind::Slurm => Arc::new(SlurmLauncher::new(args)),
        LauncherKind::Batch(scheduler) => {
            let template = match &options.template {
                Some(path) => Some(std::fs::read_to_string(home_path(path)).map_err(|error| {
                    LaunchError::Usage(format!(
                        "--template {path}: cannot read the job template: {error}"
                    ))
                })?),
                None => None,
            };
            Arc::new(BatchLauncher::new(
                scheduler,
                JobOptions {
                    queue: options.queue.clone(),
                    time: options.time.clone(),
                    resources: options.resources.clone(),
                    template,
                    submit_args: args,
                },
            ))
        }
    })
}

/// `path` with a leading `~/` read as the home directory, as a shell would.
fn home_path(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Quotes `word` for a POSIX shell when it needs it.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The engine's own arguments for a batch launcher: the ids are `base + rank`.
fn batch_engine_args(ids: &[EngineId], engine: &EngineInvocation) -> Vec<String> {
    let mut args = engine.extra_args.clone();
    args.push("--id-base".into());
    args.push(ids.first().copied().unwrap_or(0).to_string());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn invocation() -> EngineInvocation {
        EngineInvocation {
            binary: PathBuf::from("/opt/rustpx/rustpx-engine"),
            extra_args: vec![],
            hub_url: "tcp://127.0.0.1:5555".into(),
        }
    }

    #[test]
    fn a_bad_choice_is_a_usage_error_before_any_launcher_exists() {
        let options = LaunchOptions {
            launcher: Some("pbs".into()),
            ..Default::default()
        };
        let error = launcher_for(&options).err().unwrap().to_string();
        assert!(error.contains("pbs") && error.contains(LAUNCHER_NAMES));
    }

    #[test]
    fn shell_lines_quote_what_needs_quoting_and_never_show_the_key() {
        let command = LaunchCommand {
            program: "ssh".into(),
            args: vec!["-o".into(), "Opt=a b".into(), "it's".into()],
            delivery: ConnectionDelivery::Stdin { dial: None },
            ids: vec![0],
            place: "h".into(),
        };
        assert_eq!(
            command.shell_line(),
            r"ssh -o 'Opt=a b' 'it'\''s' < CONNECTION_FILE"
        );
    }
}
