//! Engines on other hosts over SSH: one `ssh HOST rustpx-engine --connect -` per engine.
//!
//! The connection blob goes down the session's stdin, never onto a command line (where every
//! user of the remote host could read the key). The session's stdin also tells the engine when
//! to stop: when the ssh process ends (the kernel stopped it or died), the remote engine sees
//! stdin close and exits, so no engine outlives its kernel on another host.
//!
//! With `--tunnel`, the hub stays on loopback: each session forwards a Unix socket on the
//! engine host (`ssh -R /tmp/rustpx-hub-X.sock:HUB`, created by sshd with mode 0600 under a
//! fresh random name) to the hub, and the engine dials `ipc://` that socket. The link is then
//! encrypted by ssh end to end and reachable by nobody else on either host, as ipyparallel's
//! ssh tunnels keep its controller on loopback.

use std::sync::Arc;

use rustpx_protocol::EngineId;

use super::{ConnectionDelivery, EngineInvocation, LaunchCommand, LaunchError, Launcher};

/// SSH to each host of a `host: n` map.
#[derive(Debug, Clone)]
pub struct SshLauncher {
    hosts: Vec<(String, u32)>,
    /// Extra ssh options (`-i KEY`, `-p PORT`, `-o Option=value`).
    ssh_args: Vec<String>,
    /// Whether engines reach the hub through their ssh session (see the module).
    tunnel: bool,
}

impl SshLauncher {
    pub fn new(
        hosts: Vec<(String, u32)>,
        ssh_args: Vec<String>,
        tunnel: bool,
    ) -> Result<SshLauncher, LaunchError> {
        if hosts.is_empty() {
            return Err(LaunchError::Usage(
                rustpx_core::launch_options::SSH_NEEDS_HOSTS.into(),
            ));
        }
        Ok(SshLauncher {
            hosts,
            ssh_args,
            tunnel,
        })
    }

    /// The `-R` forward of a fresh remote socket to the hub, and the address the engine dials.
    fn tunnel_to(hub_url: &str) -> Result<(Vec<String>, String), LaunchError> {
        let hub = hub_url
            .strip_prefix("tcp://")
            .filter(|rest| rest.rsplit_once(':').is_some())
            .ok_or_else(|| {
                LaunchError::Usage(format!(
                    "--tunnel forwards to a TCP hub, and the hub is at {hub_url:?}"
                ))
            })?;
        let name = uuid::Uuid::new_v4().simple().to_string();
        let remote = format!("/tmp/rustpx-hub-{}.sock", &name[..16]);
        let args = vec![
            "-o".to_owned(),
            "ExitOnForwardFailure=yes".into(),
            "-o".into(),
            "StreamLocalBindUnlink=yes".into(),
            "-R".into(),
            format!("{remote}:{hub}"),
        ];
        Ok((args, format!("ipc://{remote}")))
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
        ids.iter()
            .zip(places)
            .map(|(id, host)| {
                let mut args = vec!["-T".to_owned(), "-o".into(), "BatchMode=yes".into()];
                let dial = if self.tunnel {
                    let (forward, dial) = Self::tunnel_to(&engine.hub_url)?;
                    args.extend(forward);
                    Some(dial)
                } else {
                    None
                };
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
                Ok(LaunchCommand {
                    program: "ssh".into(),
                    args,
                    delivery: ConnectionDelivery::Stdin { dial },
                    ids: vec![*id],
                    place: host.clone(),
                })
            })
            .collect()
    }

    fn reach(&self) -> super::Reach {
        super::Reach::OtherHosts
    }

    fn tunnels(&self) -> bool {
        self.tunnel
    }

    fn default_count(&self) -> Option<u32> {
        Some(self.hosts.iter().map(|(_, n)| n).sum())
    }

    fn for_restart(&self, command: &LaunchCommand) -> Arc<dyn Launcher> {
        Arc::new(SshLauncher {
            hosts: vec![(command.place.clone(), 1)],
            ssh_args: self.ssh_args.clone(),
            tunnel: self.tunnel,
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
            false,
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
        let launcher = SshLauncher::new(vec![("a".into(), 2)], vec![], false).unwrap();
        assert!(launcher.commands(&[0], &invocation()).is_err());
        assert!(SshLauncher::new(vec![], vec![], false).is_err());
    }

    #[test]
    fn a_tunnel_forwards_a_fresh_remote_socket_to_the_hub_and_the_engine_dials_it() {
        let launcher = SshLauncher::new(vec![("node".into(), 2)], vec![], true).unwrap();
        let commands = launcher.commands(&[0, 1], &invocation()).unwrap();
        let forward = |c: &LaunchCommand| {
            let at = c.args.iter().position(|a| a == "-R").unwrap();
            c.args[at + 1].clone()
        };
        let (a, b) = (forward(&commands[0]), forward(&commands[1]));
        assert_ne!(a, b, "each engine gets a socket of its own");
        let (socket, hub) = a.split_once(':').unwrap();
        assert!(socket.starts_with("/tmp/rustpx-hub-") && socket.ends_with(".sock"));
        assert_eq!(hub, "127.0.0.1:5555");
        assert_eq!(
            commands[0].delivery,
            ConnectionDelivery::Stdin {
                dial: Some(format!("ipc://{socket}"))
            }
        );
        assert!(commands[0]
            .args
            .contains(&"ExitOnForwardFailure=yes".to_owned()));
        let json = commands[0].connection_json(&rustpx_protocol::EngineConnection {
            url: "tcp://127.0.0.1:5555".into(),
            key: "k".into(),
            signature_scheme: "hmac-sha256".into(),
            kernel_file: None,
            local_url: None,
        });
        assert!(json.contains(&format!("ipc://{socket}")), "{json}");
    }
}
