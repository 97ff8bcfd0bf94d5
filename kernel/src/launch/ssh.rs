//! Engines on other hosts over SSH: one `ssh HOST rustpx-engine --connect -` per engine.
//!
//! The connection blob goes down the session's stdin, never onto a command line (where every
//! user of the remote host could read the key). The session's stdin also tells the engine when
//! to stop: when the ssh process ends (the kernel stopped it or died), the remote engine sees
//! stdin close and exits, so no engine outlives its kernel on another host.

use std::sync::Arc;

use rustpx_protocol::EngineId;

use super::{ConnectionDelivery, EngineInvocation, LaunchCommand, LaunchError, Launcher};

/// SSH to each host of a `host: n` map.
#[derive(Debug, Clone)]
pub struct SshLauncher {
    hosts: Vec<(String, u32)>,
    /// Extra ssh options (`-i KEY`, `-p PORT`, `-o Option=value`).
    ssh_args: Vec<String>,
}

impl SshLauncher {
    pub fn new(
        hosts: Vec<(String, u32)>,
        ssh_args: Vec<String>,
    ) -> Result<SshLauncher, LaunchError> {
        if hosts.is_empty() {
            return Err(LaunchError::Usage(
                "the ssh launcher needs --hosts HOST:N[,HOST:N...]".into(),
            ));
        }
        Ok(SshLauncher { hosts, ssh_args })
    }
}

impl Launcher for SshLauncher {
    fn name(&self) -> &'static str {
        "ssh"
    }

    fn commands(
        &self,
        ids: &[EngineId],
        engine: &EngineInvocation,
    ) -> Result<Vec<LaunchCommand>, LaunchError> {
        let places = self
            .hosts
            .iter()
            .flat_map(|(host, n)| std::iter::repeat_n(host, *n as usize));
        let total: u32 = self.hosts.iter().map(|(_, n)| n).sum();
        if ids.len() != total as usize {
            return Err(LaunchError::Usage(format!(
                "--hosts asks for {total} engines, but {} were requested: give the counts in --hosts only",
                ids.len()
            )));
        }
        Ok(ids
            .iter()
            .zip(places)
            .map(|(id, host)| {
                let mut args = vec!["-T".to_owned(), "-o".into(), "BatchMode=yes".into()];
                args.extend(self.ssh_args.iter().cloned());
                args.push(host.clone());
                args.push("--".into());
                args.push(engine.binary.display().to_string());
                args.extend([
                    "--id".to_owned(),
                    id.to_string(),
                    "--connect".into(),
                    "-".into(),
                ]);
                args.extend(engine.extra_args.iter().cloned());
                LaunchCommand {
                    program: "ssh".into(),
                    args,
                    delivery: ConnectionDelivery::Stdin,
                    ids: vec![*id],
                    place: host.clone(),
                }
            })
            .collect())
    }

    fn reach(&self) -> super::Reach {
        super::Reach::OtherHosts
    }

    fn default_count(&self) -> Option<u32> {
        Some(self.hosts.iter().map(|(_, n)| n).sum())
    }

    fn for_restart(&self, command: &LaunchCommand) -> Arc<dyn Launcher> {
        Arc::new(SshLauncher {
            hosts: vec![(command.place.clone(), 1)],
            ssh_args: self.ssh_args.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::tests::invocation;

    #[test]
    fn engines_are_spread_over_the_hosts_in_order() {
        let launcher = SshLauncher::new(
            vec![("10.0.0.2".into(), 2), ("node-b".into(), 1)],
            vec!["-i".into(), "/k/id".into()],
        )
        .unwrap();
        let commands = launcher.commands(&[0, 1, 2], &invocation()).unwrap();
        let places: Vec<_> = commands.iter().map(|c| c.place.as_str()).collect();
        assert_eq!(places, ["10.0.0.2", "10.0.0.2", "node-b"]);
        assert_eq!(
            commands[2].shell_line(),
            "ssh -T -o BatchMode=yes -i /k/id node-b -- /opt/rustpx/rustpx-engine --id 2 --connect - < CONNECTION_FILE"
        );
        let again = launcher.for_restart(&commands[2]);
        let restarted = again.commands(&[2], &invocation()).unwrap();
        assert_eq!(restarted[0].place, "node-b");
    }

    #[test]
    fn a_count_that_disagrees_with_the_hosts_is_a_usage_error() {
        let launcher = SshLauncher::new(vec![("a".into(), 2)], vec![]).unwrap();
        assert!(launcher.commands(&[0], &invocation()).is_err());
        assert!(SshLauncher::new(vec![], vec![]).is_err());
    }
}
