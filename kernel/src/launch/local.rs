//! The default launcher: one `rustpx-engine` per engine on the kernel's own host.

use std::sync::Arc;

use rustpx_protocol::EngineId;

use super::{ConnectionDelivery, EngineInvocation, LaunchCommand, LaunchError, Launcher};

/// Engines as child processes of the kernel; each exits when the kernel (`parent`) is gone.
#[derive(Debug, Clone)]
pub struct LocalLauncher {
    parent: u32,
}

impl LocalLauncher {
    pub fn new(parent: u32) -> LocalLauncher {
        LocalLauncher { parent }
    }
}

impl Launcher for LocalLauncher {
    fn name(&self) -> &'static str {
        "local"
    }

    fn commands(
        &self,
        ids: &[EngineId],
        engine: &EngineInvocation,
    ) -> Result<Vec<LaunchCommand>, LaunchError> {
        Ok(ids
            .iter()
            .map(|id| {
                let mut args = vec![
                    "--id".to_owned(),
                    id.to_string(),
                    "--parent-pid".to_owned(),
                    self.parent.to_string(),
                ];
                args.extend(engine.extra_args.iter().cloned());
                LaunchCommand {
                    program: engine.binary.display().to_string(),
                    args,
                    delivery: ConnectionDelivery::Environment,
                    ids: vec![*id],
                    place: "localhost".into(),
                }
            })
            .collect())
    }

    fn signals_directly(&self) -> bool {
        true
    }

    fn reach(&self) -> super::Reach {
        super::Reach::ThisHost
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
    fn one_process_per_engine_that_watches_the_kernel() {
        let commands = LocalLauncher::new(42)
            .commands(&[3, 4], &invocation())
            .unwrap();
        assert_eq!(commands.len(), 2);
        assert_eq!(
            commands[1].shell_line(),
            "RUSTPX_ENGINE_CONNECTION=\"$(cat CONNECTION_FILE)\" /opt/rustpx/rustpx-engine --id 4 --parent-pid 42"
        );
    }
}
