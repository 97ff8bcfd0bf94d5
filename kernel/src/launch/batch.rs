//! Engines as a job submitted to a batch system: `sbatch` (Slurm) or `qsub` (Grid Engine), from
//! a kernel that runs outside any allocation.
//!
//! The launcher only says what to submit and how to ask about or cancel the job; the pool
//! writes the script into its private job directory and runs the commands (see
//! `px::jobs`). The job's engines read the connection (address and key) from a 0600 file in that
//! directory, which must be on a filesystem the compute nodes share (the kernel's runtime
//! directory under `$HOME` usually is; `$RUSTPX_JOB_DIR` chooses another). The key is never
//! in the script or on a command line.

use std::path::Path;
use std::sync::Arc;

use rustpx_core::batch_job::{JobRequest, Scheduler};
use rustpx_protocol::EngineId;

use super::{shell_quote, EngineInvocation, LaunchCommand, LaunchError, Launcher};

/// The name every submitted job carries.
pub const JOB_NAME: &str = "rustpx-engines";

/// What a submitted job looks like: the options of `%engines start` that shape it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobOptions {
    pub queue: Option<String>,
    pub time: Option<String>,
    pub resources: Vec<String>,
    /// The template's text (`--template FILE`, already read), else the scheduler's default.
    pub template: Option<String>,
    /// Extra arguments for `sbatch` or `qsub`.
    pub submit_args: Vec<String>,
}

/// Submits engines as one batch job.
#[derive(Debug, Clone)]
pub struct BatchLauncher {
    scheduler: Scheduler,
    options: JobOptions,
}

impl BatchLauncher {
    pub fn new(scheduler: Scheduler, options: JobOptions) -> BatchLauncher {
        BatchLauncher { scheduler, options }
    }

    pub fn scheduler(&self) -> Scheduler {
        self.scheduler
    }

    /// The job script for engines `ids`, whose connection is in `connection_file` and whose
    /// output goes to `output_dir`.
    pub fn script(
        &self,
        ids: &[EngineId],
        engine: &EngineInvocation,
        connection_file: &Path,
        output_dir: &Path,
    ) -> Result<String, LaunchError> {
        let mut words = vec![
            engine.binary.display().to_string(),
            "--connect".to_owned(),
            connection_file.display().to_string(),
        ];
        words.extend(engine.extra_args.iter().cloned());
        let request = JobRequest {
            scheduler: self.scheduler,
            ids: ids.to_vec(),
            job_name: JOB_NAME.to_owned(),
            output_dir: output_dir.display().to_string(),
            queue: self.options.queue.clone(),
            time: self.options.time.clone(),
            resources: self.options.resources.clone(),
            engine: words
                .iter()
                .map(|w| shell_quote(w))
                .collect::<Vec<_>>()
                .join(" "),
        };
        let template = self
            .options
            .template
            .as_deref()
            .unwrap_or(self.scheduler.default_template());
        request
            .render(template)
            .map_err(|e| LaunchError::Usage(e.to_string()))
    }

    /// The command that submits `script` and prints the job id alone.
    pub fn submit_command(&self, script: &Path) -> (String, Vec<String>) {
        let (program, mut args) = match self.scheduler {
            Scheduler::Slurm => (tool("RUSTPX_SBATCH", "sbatch"), vec!["--parsable".into()]),
            Scheduler::GridEngine => (tool("RUSTPX_QSUB", "qsub"), vec!["-terse".into()]),
        };
        args.extend(self.options.submit_args.iter().cloned());
        args.push(script.display().to_string());
        (program, args)
    }

    /// The job id in what the submit command printed: Slurm's `--parsable` gives `ID` or
    /// `ID;CLUSTER`, Grid Engine's `-terse` gives `ID` or, for an array job, `ID.1-N:1`.
    pub fn job_id(&self, printed: &str) -> Option<String> {
        let line = printed.lines().map(str::trim).find(|l| !l.is_empty())?;
        let id = match self.scheduler {
            Scheduler::Slurm => line.split(';').next()?,
            Scheduler::GridEngine => line.split('.').next()?,
        };
        (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| id.to_owned())
    }

    /// The command that asks whether `job` is still queued or running (see [`Self::still_there`]).
    pub fn status_command(&self, job: &str) -> (String, Vec<String>) {
        match self.scheduler {
            Scheduler::Slurm => (
                tool("RUSTPX_SQUEUE", "squeue"),
                ["-h", "-j", job, "-o", "%T"].map(String::from).to_vec(),
            ),
            Scheduler::GridEngine => (
                tool("RUSTPX_QSTAT", "qstat"),
                ["-j", job].map(String::from).to_vec(),
            ),
        }
    }

    /// Whether the status command's exit `success` and `stdout` say the job is still there
    /// (pending or running); otherwise, the state it ended in when the scheduler says.
    pub fn still_there(&self, success: bool, stdout: &str) -> Result<(), Option<String>> {
        match self.scheduler {
            Scheduler::Slurm => {
                // squeue lists a job for a while after it ends, in its final state; an id it no
                // longer knows is an error.
                let state = stdout.lines().map(str::trim).find(|l| !l.is_empty());
                match state {
                    Some(
                        "PENDING" | "RUNNING" | "CONFIGURING" | "SUSPENDED" | "REQUEUED"
                        | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESIZING" | "SIGNALING",
                    ) if success => Ok(()),
                    Some(state) if success => Err(Some(state.to_owned())),
                    _ => Err(None),
                }
            }
            // qstat -j fails for a job it no longer has.
            Scheduler::GridEngine if success => Ok(()),
            Scheduler::GridEngine => Err(None),
        }
    }

    /// The command that cancels `job`.
    pub fn cancel_command(&self, job: &str) -> (String, Vec<String>) {
        match self.scheduler {
            Scheduler::Slurm => (tool("RUSTPX_SCANCEL", "scancel"), vec![job.to_owned()]),
            Scheduler::GridEngine => (tool("RUSTPX_QDEL", "qdel"), vec![job.to_owned()]),
        }
    }
}

/// A scheduler command: `$VARIABLE` if set (a wrapper, a full path), else `name` on `$PATH`.
fn tool(variable: &str, name: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| name.to_owned())
}

impl Launcher for BatchLauncher {
    fn name(&self) -> &'static str {
        self.scheduler.launcher_name()
    }

    /// Nothing runs as a process of the kernel: the pool submits [`Self::script`] instead.
    fn commands(
        &self,
        _ids: &[EngineId],
        _engine: &EngineInvocation,
    ) -> Result<Vec<LaunchCommand>, LaunchError> {
        Ok(Vec::new())
    }

    fn batch(&self) -> Option<&BatchLauncher> {
        Some(self)
    }

    fn for_restart(&self, _command: &LaunchCommand) -> Arc<dyn Launcher> {
        Arc::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::tests::invocation;
    use std::path::PathBuf;

    #[test]
    fn the_script_names_the_connection_file_never_the_key() {
        let launcher = BatchLauncher::new(Scheduler::Slurm, JobOptions::default());
        let mut engine = invocation();
        engine.extra_args = vec!["--cache-dir".into(), "/scratch/my cache".into()];
        let script = launcher
            .script(
                &[0, 1],
                &engine,
                &PathBuf::from("/home/u/jobs/connection.json"),
                &PathBuf::from("/home/u/jobs"),
            )
            .unwrap();
        assert!(script.ends_with(
            "srun --kill-on-bad-exit=0 /opt/rustpx/rustpx-engine --connect /home/u/jobs/connection.json --cache-dir '/scratch/my cache' --id-base 0\n"
        ));
    }

    #[test]
    fn job_ids_are_read_from_what_the_schedulers_print() {
        let slurm = BatchLauncher::new(Scheduler::Slurm, JobOptions::default());
        assert_eq!(slurm.job_id("12\n").as_deref(), Some("12"));
        assert_eq!(slurm.job_id("12;cluster\n").as_deref(), Some("12"));
        assert_eq!(slurm.job_id("sbatch: error\n"), None);
        let sge = BatchLauncher::new(Scheduler::GridEngine, JobOptions::default());
        assert_eq!(sge.job_id("7.1-2:1\n").as_deref(), Some("7"));
        assert_eq!(slurm.still_there(true, "RUNNING\n"), Ok(()));
        assert_eq!(
            slurm.still_there(true, "CANCELLED\n"),
            Err(Some("CANCELLED".into()))
        );
        assert_eq!(slurm.still_there(false, ""), Err(None));
    }
}
