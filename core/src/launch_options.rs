//! What `%engines start` and `rustpx engines` say about a launcher, checked before anything
//! starts. The launchers themselves (processes, ssh, srun) live in the kernel; this is only the
//! user's choice and its rules, so a bad combination is a usage error at parse time.

use thiserror::Error;

use crate::batch_job::Scheduler;

/// A launcher choice that cannot work, in words the user can act on.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("{0}")]
pub struct LaunchUsageError(pub String);

/// Why the ssh launcher cannot start anything without hosts (checked here and by the launcher).
pub const SSH_NEEDS_HOSTS: &str = "the ssh launcher needs --hosts HOST:N[,HOST:N...]";

/// The launchers users can name, for messages.
pub const LAUNCHER_NAMES: &str = "local, ssh, mpi, slurm, sge";

/// The options of `%engines start` and `rustpx engines` that choose and shape a launcher; also
/// the clap option group `%engines start` flattens in.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct LaunchOptions {
    /// `local`, `ssh`, `mpi`, `slurm` or `sge`; `None` is local.
    #[arg(long, help = "local (the default), ssh, mpi, slurm or sge")]
    pub launcher: Option<String>,
    /// `--hosts a:2,b:1` for ssh. The last `--hosts` gives the whole list (the `::std` path
    /// keeps clap from reading a `Vec` as a repeatable option); none is `""`, no hosts.
    #[arg(long, value_parser = parse_hosts, default_value = "", hide_default_value = true,
          help = "For ssh: HOST:N,HOST:N... (the engines per host)")]
    pub hosts: ::std::vec::Vec<(String, u32)>,
    /// `--engine PATH`: the engine binary to run (on the engine hosts for remote launchers).
    #[arg(
        long,
        value_name = "PATH",
        help = "The engine binary (default: beside this binary for local, rustpx-engine on the hosts' PATH otherwise)"
    )]
    pub engine: Option<String>,
    /// `--launcher-arg ARG`, repeatable: extra arguments for ssh, mpiexec or srun (or for
    /// sbatch or qsub, when a job is submitted).
    #[arg(
        long = "launcher-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        help = "An extra argument for ssh, mpiexec, srun, sbatch or qsub (repeatable)"
    )]
    pub launcher_args: Vec<String>,
    /// `--engine-arg ARG`, repeatable: extra arguments for every engine.
    #[arg(
        long = "engine-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        help = "An extra argument for every engine (repeatable), e.g. --fetch-objects"
    )]
    pub engine_args: Vec<String>,
    /// `--tunnel` (ssh): engines reach the hub through their ssh session.
    #[arg(
        long,
        help = "For ssh: engines reach the hub through their ssh session"
    )]
    pub tunnel: bool,
    /// `--submit` (slurm): submit a batch job with `sbatch` instead of running `srun` inside
    /// the kernel's allocation (the sge launcher always submits).
    #[arg(
        long,
        help = "For slurm: submit a batch job (from the notebook's %engines start)"
    )]
    pub submit: bool,
    /// `--queue NAME`: the Slurm partition or Grid Engine queue of a submitted job.
    #[arg(
        long,
        value_name = "NAME",
        help = "A submitted job's partition or queue"
    )]
    pub queue: Option<String>,
    /// `--time HH:MM:SS`: a submitted job's wall-clock limit.
    #[arg(
        long,
        value_name = "HH:MM:SS",
        help = "A submitted job's wall-clock limit"
    )]
    pub time: Option<String>,
    /// `--resource ARG`, repeatable: one more `#SBATCH` / `#$` line in the job script.
    #[arg(
        long = "resource",
        value_name = "ARG",
        allow_hyphen_values = true,
        help = "One more #SBATCH / #$ line in a submitted job's script (repeatable)"
    )]
    pub resources: Vec<String>,
    /// `--template FILE`: the job script's template (see `rustpx_core::batch_job`).
    #[arg(long, value_name = "FILE", help = "A submitted job's script template")]
    pub template: Option<String>,
}

/// The launchers, by what they need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LauncherKind {
    Local,
    Ssh,
    Mpi,
    /// `srun` inside the kernel's allocation.
    Slurm,
    /// A job submitted to a batch system.
    Batch(Scheduler),
}

impl LaunchOptions {
    /// The launcher these options name, once every option is one that launcher takes.
    pub fn check(&self) -> Result<LauncherKind, LaunchUsageError> {
        let name = self.launcher.as_deref().unwrap_or("local");
        if name != "ssh" && !self.hosts.is_empty() {
            return Err(LaunchUsageError(format!(
                "--hosts is for the ssh launcher, not {name}"
            )));
        }
        if name != "ssh" && self.tunnel {
            return Err(LaunchUsageError(format!(
                "--tunnel is for the ssh launcher, not {name}"
            )));
        }
        if name == "local" && !self.launcher_args.is_empty() {
            return Err(LaunchUsageError(
                "--launcher-arg is for the ssh, mpi, slurm and sge launchers".into(),
            ));
        }
        let kind = match name {
            "local" => LauncherKind::Local,
            "ssh" if self.hosts.is_empty() => return Err(LaunchUsageError(SSH_NEEDS_HOSTS.into())),
            "ssh" => LauncherKind::Ssh,
            "mpi" | "mpiexec" => LauncherKind::Mpi,
            "slurm" | "srun" if self.submit => LauncherKind::Batch(Scheduler::Slurm),
            "slurm" | "srun" => LauncherKind::Slurm,
            "sge" | "gridengine" | "qsub" => LauncherKind::Batch(Scheduler::GridEngine),
            other => {
                return Err(LaunchUsageError(format!(
                    "unknown launcher '{other}': choose one of {LAUNCHER_NAMES}"
                )))
            }
        };
        if self.submit && !matches!(kind, LauncherKind::Batch(_)) {
            return Err(LaunchUsageError(format!(
                "--submit is for the slurm launcher (sge always submits), not {name}"
            )));
        }
        if !matches!(kind, LauncherKind::Batch(_)) {
            let job_only = [
                ("--queue", self.queue.is_some()),
                ("--time", self.time.is_some()),
                ("--resource", !self.resources.is_empty()),
                ("--template", self.template.is_some()),
            ];
            if let Some((option, _)) = job_only.iter().find(|(_, given)| *given) {
                return Err(LaunchUsageError(format!(
                    "{option} shapes a submitted job: use it with --launcher slurm --submit or --launcher sge"
                )));
            }
        }
        Ok(kind)
    }
}

/// Parses `a:2,b,c:3` (a host without a count gets one engine).
pub fn parse_hosts(text: &str) -> Result<Vec<(String, u32)>, LaunchUsageError> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let part = part.trim();
            match part.rsplit_once(':') {
                Some((host, count)) if !host.is_empty() => {
                    let n: u32 = count.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        LaunchUsageError(format!(
                            "--hosts: '{part}' needs a positive engine count after the colon (host:n)"
                        ))
                    })?;
                    Ok((host.to_owned(), n))
                }
                _ => Ok((part.to_owned(), 1)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_with_and_without_counts() {
        assert_eq!(
            parse_hosts("a:2,b, c:3").unwrap(),
            vec![("a".into(), 2), ("b".into(), 1), ("c".into(), 3)]
        );
        assert!(parse_hosts("a:0").is_err());
        assert!(parse_hosts("a:x").unwrap_err().0.contains("host:n"));
    }

    #[test]
    fn an_unknown_launcher_names_the_known_ones() {
        let options = LaunchOptions {
            launcher: Some("pbs".into()),
            ..Default::default()
        };
        let error = options.check().unwrap_err().0;
        assert_eq!(
            error,
            format!("unknown launcher 'pbs': choose one of {LAUNCHER_NAMES}")
        );
    }

    #[test]
    fn hosts_belong_to_ssh_only() {
        let options = LaunchOptions {
            launcher: Some("mpi".into()),
            hosts: vec![("a".into(), 1)],
            ..Default::default()
        };
        assert_eq!(
            options.check().unwrap_err().0,
            "--hosts is for the ssh launcher, not mpi"
        );
    }

    #[test]
    fn job_options_need_a_submitted_job() {
        let options = LaunchOptions {
            launcher: Some("slurm".into()),
            queue: Some("debug".into()),
            ..Default::default()
        };
        assert_eq!(
            options.check().unwrap_err().0,
            "--queue shapes a submitted job: use it with --launcher slurm --submit or --launcher sge"
        );
        let submitted = LaunchOptions {
            submit: true,
            ..options
        };
        assert_eq!(submitted.check(), Ok(LauncherKind::Batch(Scheduler::Slurm)));
        let mpi = LaunchOptions {
            launcher: Some("mpi".into()),
            submit: true,
            ..Default::default()
        };
        assert!(mpi
            .check()
            .unwrap_err()
            .0
            .starts_with("--submit is for the slurm"));
        let sge = LaunchOptions {
            launcher: Some("sge".into()),
            ..Default::default()
        };
        assert_eq!(sge.check(), Ok(LauncherKind::Batch(Scheduler::GridEngine)));
    }

    #[test]
    fn ssh_needs_hosts() {
        let options = LaunchOptions {
            launcher: Some("ssh".into()),
            ..Default::default()
        };
        assert!(options.check().unwrap_err().0.contains("--hosts HOST:N"));
    }
}
