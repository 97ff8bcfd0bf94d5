//! Engines as the ranks of one `mpiexec -n N rustpx-engine`.
//!
//! Each rank asks for engine id `base + rank` (the engine reads `$PMI_RANK`, `$PMIX_RANK` or
//! `$OMPI_COMM_WORLD_RANK`), so `%%px -t 3` is rank 3 of the first batch. mpiexec ends the whole
//! job when one rank dies by a signal, but not when one exits: so an engine asked to stop or
//! interrupted over the link exits (status 128 + signal) instead of raising the signal. mpiexec passes the
//! environment, with the connection blob, to its ranks (MPICH's Hydra does by default; pass
//! `--launcher-arg -x --launcher-arg RUSTPX_ENGINE_CONNECTION` to Open MPI on other nodes).

use std::sync::Arc;

use rustpx_protocol::EngineId;

use super::{
    batch_engine_args, ConnectionDelivery, EngineInvocation, LaunchCommand, LaunchError, Launcher,
};

/// `mpiexec` (from `$PATH`, or `$RUSTPX_MPIEXEC`) with extra arguments such as `-hosts`.
#[derive(Debug, Clone)]
pub struct MpiLauncher {
    mpiexec_args: Vec<String>,
}

impl MpiLauncher {
    pub fn new(mpiexec_args: Vec<String>) -> MpiLauncher {
        MpiLauncher { mpiexec_args }
    }
}

impl Launcher for MpiLauncher {
    fn name(&self) -> &'static str {
        "mpi"
    }

    fn commands(
        &self,
        ids: &[EngineId],
        engine: &EngineInvocation,
    ) -> Result<Vec<LaunchCommand>, LaunchError> {
        let mut args = vec!["-n".to_owned(), ids.len().to_string()];
        args.extend(self.mpiexec_args.iter().cloned());
        args.push(engine.binary.display().to_string());
        args.extend(batch_engine_args(ids, engine));
        Ok(vec![LaunchCommand {
            program: std::env::var("RUSTPX_MPIEXEC").unwrap_or_else(|_| "mpiexec".into()),
            args,
            delivery: ConnectionDelivery::Environment,
            ids: ids.to_vec(),
            place: "mpiexec".into(),
        }])
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
    fn one_mpiexec_starts_the_batch_with_ids_from_the_ranks() {
        let launcher = MpiLauncher::new(vec!["-hosts".into(), "a,b".into()]);
        let commands = launcher.commands(&[4, 5, 6, 7], &invocation()).unwrap();
        assert_eq!(commands.len(), 1);
        assert_eq!(commands[0].ids, vec![4, 5, 6, 7]);
        assert!(commands[0]
            .shell_line()
            .ends_with("-n 4 -hosts a,b /opt/rustpx/rustpx-engine --id-base 4"));
    }
}
