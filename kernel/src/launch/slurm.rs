//! Engines as the tasks of one `srun` inside an existing Slurm allocation (`salloc`, `sbatch`).
//!
//! Each task asks for engine id `base + $SLURM_PROCID`. srun exports the environment, with the
//! connection blob, to its tasks by default. rustpx does not submit jobs: start the kernel (or
//! `rustpx engines`) inside the allocation.

use std::sync::Arc;

use rustpx_protocol::EngineId;

use super::{
    batch_engine_args, ConnectionDelivery, EngineInvocation, LaunchCommand, LaunchError, Launcher,
};

/// `srun` (from `$PATH`, or `$RUSTPX_SRUN`) with extra arguments such as `--nodes`.
#[derive(Debug, Clone)]
pub struct SlurmLauncher {
    srun_args: Vec<String>,
}

impl SlurmLauncher {
    pub fn new(srun_args: Vec<String>) -> SlurmLauncher {
        SlurmLauncher { srun_args }
    }

    /// Whether there is an allocation to run in.
    pub fn in_allocation() -> bool {
        std::env::var_os("SLURM_JOB_ID").is_some()
    }
}

impl Launcher for SlurmLauncher {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn commands(
        &self,
        ids: &[EngineId],
        engine: &EngineInvocation,
    ) -> Result<Vec<LaunchCommand>, LaunchError> {
        // One task per engine; an engine that exits (stopped, crashed) must not end the others.
        let mut args = vec![
            format!("--ntasks={}", ids.len()),
            "--kill-on-bad-exit=0".to_owned(),
            "--export=ALL".to_owned(),
        ];
        args.extend(self.srun_args.iter().cloned());
        args.push(engine.binary.display().to_string());
        args.extend(batch_engine_args(ids, engine));
        Ok(vec![LaunchCommand {
            program: std::env::var("RUSTPX_SRUN").unwrap_or_else(|_| "srun".into()),
            args,
            delivery: ConnectionDelivery::Environment,
            ids: ids.to_vec(),
            place: "srun".into(),
        }])
    }

    fn check_ready(&self) -> Result<(), LaunchError> {
        if Self::in_allocation() {
            Ok(())
        } else {
            Err(LaunchError::NoAllocation)
        }
    }

    fn for_restart(&self, _command: &LaunchCommand) -> Arc<dyn Launcher> {
        Arc::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::tests::invocation;

    #[test]
    fn srun_gets_one_task_per_engine_inside_the_allocation() {
        let launcher = SlurmLauncher::new(vec!["--nodes=2".into()]);
        let commands = launcher.commands(&[0, 1, 2], &invocation()).unwrap();
        assert_eq!(
            commands[0].shell_line(),
            "RUSTPX_ENGINE_CONNECTION=\"$(cat CONNECTION_FILE)\" srun --ntasks=3 --kill-on-bad-exit=0 --export=ALL --nodes=2 /opt/rustpx/rustpx-engine --id-base 0"
        );
    }
}
