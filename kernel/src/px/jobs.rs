//! Submitted batch jobs: the engines of `%engines start --launcher slurm --submit` and
//! `--launcher sge`, from submission to the job's end.
//!
//! A job is not a process of the kernel's, so the pool cannot wait for it: a watcher task asks
//! the scheduler (`squeue`, `qstat`) every [`POLL`] whether the job is still there, and when it
//! is not (finished, cancelled by the scheduler or by hand, out of time) its engines are marked
//! gone with a reason that names the job, as a process exit would mark them. `%engines stop`
//! cancels a job once none of its engines is left, and kernel shutdown cancels every job.
//!
//! Files: one directory per kernel (`$RUSTPX_JOB_DIR`, else `rustpx-jobs-PID` in Jupyter's
//! runtime directory), mode 0700, never one someone else made; in it the connection file
//! (0600, the key) that the engines read with `--connect`, the job scripts (0600) and the
//! scheduler's output. It must be on a filesystem the compute nodes see.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustpx_protocol::{EngineConnection, EngineId};

use super::connection_file::write_new_private;
use super::hub::{HubHandle, StartedEngineEnd};
use super::{lock, PxError};
use crate::launch::{shell_quote, BatchLauncher, EngineInvocation, LaunchError};

/// How often a watcher asks the scheduler about its job.
const POLL: Duration = Duration::from_secs(1);

/// How long a scheduler command (submit, status, cancel) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a job directory is chosen explicitly.
pub const JOB_DIR_ENV: &str = "RUSTPX_JOB_DIR";

/// One submitted job.
#[derive(Clone)]
struct Job {
    launcher: BatchLauncher,
    id: String,
    /// `slurm job 12`.
    label: String,
    engines: Vec<EngineId>,
    /// Hub incarnations at or after this one registered after the submission.
    first_incarnation: u64,
}

#[derive(Default)]
struct JobsState {
    /// Jobs still queued or running, by job label.
    jobs: HashMap<String, Job>,
    /// Job scripts written so far (names the next one).
    scripts: u32,
    /// Jobs that ended before their engines registered, with why.
    start_failures: Vec<String>,
}

/// What a submission would do, for `--print` and for the submission itself.
pub struct JobPlan {
    pub script: String,
    pub script_path: PathBuf,
    pub connection_file: PathBuf,
    pub program: String,
    pub args: Vec<String>,
}

impl JobPlan {
    /// The submit command as a shell line.
    pub fn submit_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The kernel's submitted jobs; cheap to clone.
#[derive(Clone)]
pub struct BatchJobs {
    hub: HubHandle,
    connection: Arc<EngineConnection>,
    state: Arc<Mutex<JobsState>>,
}

impl BatchJobs {
    pub fn new(hub: HubHandle, connection: Arc<EngineConnection>) -> BatchJobs {
        BatchJobs {
            hub,
            connection,
            state: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, JobsState> {
        lock(&self.state)
    }

    /// The job directory's path (it may not exist yet).
    pub fn dir() -> PathBuf {
        match std::env::var_os(JOB_DIR_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => crate::paths::runtime_dir().join(format!("rustpx-jobs-{}", std::process::id())),
        }
    }

    /// What submitting engines `ids` with `launcher` would write and run.
    pub fn plan(
        &self,
        launcher: &BatchLauncher,
        ids: &[EngineId],
        engine: &EngineInvocation,
    ) -> Result<JobPlan, LaunchError> {
        let dir = Self::dir();
        let connection_file = dir.join("connection.json");
        let script_path = dir.join(format!("job-{}.sh", self.state().scripts + 1));
        let script = launcher.script(ids, engine, &connection_file, &dir)?;
        let (program, args) = launcher.submit_command(&script_path);
        Ok(JobPlan {
            script,
            script_path,
            connection_file,
            program,
            args,
        })
    }

    /// Writes the job's files and submits it; returns the job's label (`slurm job 12`). The
    /// engines register by themselves once the job runs.
    pub fn submit(
        &self,
        launcher: &BatchLauncher,
        ids: &[EngineId],
        engine: &EngineInvocation,
    ) -> Result<String, PxError> {
        let plan = self.plan(launcher, ids, engine).map_err(PxError::Launch)?;
        let failed = |why: String| PxError::Launch(LaunchError::Usage(why));
        let dir = Self::dir();
        private_dir(&dir).map_err(|e| {
            failed(format!(
                "cannot use {} as the private job directory: {e} (set {JOB_DIR_ENV} to a directory of yours on a filesystem the compute nodes share)",
                dir.display()
            ))
        })?;
        let json = serde_json::to_string(&*self.connection).unwrap_or_default();
        write_private(&plan.connection_file, &json)
            .and_then(|()| write_private(&plan.script_path, &plan.script))
            .map_err(|e| {
                failed(format!(
                    "cannot write the job's files in {}: {e}",
                    dir.display()
                ))
            })?;
        self.state().scripts += 1;
        let first_incarnation = self.hub.next_incarnation();
        let output = run(&plan.program, &plan.args).map_err(|e| failed(e.to_string()))?;
        let job_id = launcher.job_id(&output).ok_or_else(|| {
            failed(format!(
                "{} printed no job id: {}",
                plan.program,
                output.trim()
            ))
        })?;
        let label = launcher.scheduler().job_label(&job_id);
        tracing::info!(
            "submitted {label} for engines {ids:?}: {}",
            plan.script_path.display()
        );
        self.hub.set_job(ids, Some(&label));
        let job = Job {
            launcher: launcher.clone(),
            id: job_id,
            label: label.clone(),
            engines: ids.to_vec(),
            first_incarnation,
        };
        self.state().jobs.insert(label.clone(), job.clone());
        let jobs = self.clone();
        tokio::spawn(async move { jobs.watch(job).await });
        Ok(label)
    }

    /// Asks the scheduler about `job` until it is gone, then marks its engines gone.
    async fn watch(&self, job: Job) {
        loop {
            tokio::time::sleep(POLL).await;
            if !self.state().jobs.contains_key(&job.label) {
                return;
            }
            let (program, args) = job.launcher.status_command(&job.id);
            let answer = tokio::time::timeout(
                COMMAND_TIMEOUT,
                tokio::process::Command::new(&program)
                    .args(&args)
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .output(),
            )
            .await;
            let (success, stdout) = match answer {
                Ok(Ok(output)) => (
                    output.status.success(),
                    String::from_utf8_lossy(&output.stdout).into_owned(),
                ),
                // A scheduler that cannot be asked says nothing about the job: ask again.
                Ok(Err(error)) => {
                    tracing::warn!("cannot run {program} for {}: {error}", job.label);
                    continue;
                }
                Err(_) => continue,
            };
            if let Err(state) = job.launcher.still_there(success, &stdout) {
                let reason = match state {
                    Some(state) => format!("the job ended ({state})"),
                    None => "the job is no longer queued or running".to_owned(),
                };
                self.ended(&job, &reason);
                return;
            }
        }
    }

    fn ended(&self, job: &Job, reason: &str) {
        self.state().jobs.remove(&job.label);
        for &id in &job.engines {
            if self
                .hub
                .end_started_engine(id, job.first_incarnation, reason)
                == StartedEngineEnd::NeverRegistered
            {
                let text = format!(
                    "engine {id}: {} ended before the engine registered; its output is in {}",
                    job.label,
                    Self::dir().display()
                );
                tracing::error!("{text}");
                self.state().start_failures.push(text);
            }
        }
    }

    /// Whether engine `id` belongs to a job still queued or running (its id is taken).
    pub fn holds(&self, id: EngineId) -> bool {
        self.state().jobs.values().any(|j| j.engines.contains(&id))
    }

    /// Why jobs failed to start their engines since the last call.
    pub fn take_start_failures(&self) -> Vec<String> {
        std::mem::take(&mut self.state().start_failures)
    }

    /// Cancels every job none of whose engines `alive` holds; returns their labels.
    pub fn cancel_unused(&self, alive: impl Fn(EngineId) -> bool) -> Vec<String> {
        let unused: Vec<Job> = self
            .state()
            .jobs
            .values()
            .filter(|j| !j.engines.iter().any(|id| alive(*id)))
            .cloned()
            .collect();
        unused.iter().map(|job| self.cancel(job)).collect()
    }

    /// Cancels every job and removes the key's file (kernel shutdown); a per-kernel job
    /// directory goes, one chosen with `$RUSTPX_JOB_DIR` keeps the jobs' output.
    pub fn cancel_all(&self) {
        let jobs: Vec<Job> = self.state().jobs.values().cloned().collect();
        for job in &jobs {
            self.cancel(job);
        }
        let dir = Self::dir();
        let _ = std::fs::remove_file(dir.join("connection.json"));
        if std::env::var_os(JOB_DIR_ENV).is_none() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    fn cancel(&self, job: &Job) -> String {
        let (program, args) = job.launcher.cancel_command(&job.id);
        if let Err(error) = run(&program, &args) {
            tracing::warn!("cancelling {}: {error}", job.label);
        }
        self.ended(job, "the job was cancelled");
        job.label.clone()
    }
}

/// Creates `dir` with mode 0700, or accepts it if it is already a real directory of ours that
/// no one else can enter.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => return Err(error),
        Err(_) => {}
    }
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::other(
            "it exists and is not a directory of this user's with mode 0700",
        ));
    }
    Ok(())
}

/// Writes `text` to a new private file at `path` (see [`write_new_private`]).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    write_new_private(path, text.as_bytes())
}

/// Runs a scheduler command to its end (bounded by [`COMMAND_TIMEOUT`]); its stdout, or why
/// it failed in its own words.
fn run(program: &str, args: &[String]) -> Result<String, String> {
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} did not answer within {} s",
                    COMMAND_TIMEOUT.as_secs()
                ));
            }
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "{program} failed ({}): {}",
            output.status,
            stderr.trim().lines().last().unwrap_or_default()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_directory_open_to_others_is_refused_and_files_are_private() {
        let base = std::env::temp_dir().join(format!("rustpx-jobs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(private_dir(&base).is_err());
        let dir = base.join("jobs");
        private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let file = dir.join("connection.json");
        std::os::unix::fs::symlink("/etc/passwd-not-here", &file).unwrap();
        write_private(&file, "{}").unwrap();
        let meta = std::fs::symlink_metadata(&file).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&base);
    }
}
