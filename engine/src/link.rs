//! The engine's side of the link to the hub: register, heartbeat, receive runs, send results.
//!
//! The link runs on its own thread with a tokio runtime, so heartbeats keep flowing while a cell
//! runs on the main thread; a cell in an endless loop is busy, not dead. The engine gives up and
//! exits when the hub does not answer registration in time or stays silent for too long, saying
//! which address it tried.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustpx_protocol::{
    from_wire, to_wire, EngineConnection, EngineId, Heartbeat, LinkMessage, RegisterReply,
    RegisterRequest, RunRequest, ShutdownRequest,
};
use rustpx_wire::zeromq::{DealerSocket, Socket, SocketOptions, SocketRecv, SocketSend};
use rustpx_wire::{decode, encode, Signer, WireMessage};
use tokio::sync::mpsc;

/// How often the engine says it is alive.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(500);

/// Settings for how patient the engine is with the hub.
pub struct Patience {
    pub register_timeout: Duration,
    pub hub_silence: Duration,
}

/// Connects, registers and then serves the link until shutdown; run requests go to `runs`.
pub async fn serve(
    connection: EngineConnection,
    requested_id: Option<EngineId>,
    patience: Patience,
    mut outgoing: mpsc::UnboundedReceiver<WireMessage>,
    runs: std_mpsc::Sender<RunRequest>,
    registered: std_mpsc::Sender<EngineId>,
) -> Result<()> {
    let signer = Signer::new(&connection.signature_scheme, &connection.key)?;
    let session = uuid::Uuid::new_v4().to_string();
    let mut options = SocketOptions::default();
    options.peer_identity(
        session
            .as_bytes()
            .to_vec()
            .try_into()
            .context("engine identity")?,
    );
    let mut socket = DealerSocket::with_options(options);
    tokio::time::timeout(patience.register_timeout, socket.connect(&connection.url))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "could not reach the hub at {} within {:?}",
                connection.url,
                patience.register_timeout
            )
        })?
        .with_context(|| format!("could not connect to the hub at {}", connection.url))?;

    let register = RegisterRequest {
        requested_id,
        pid: std::process::id(),
        hostname: hostname(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    socket
        .send(encode(&to_wire(&session, &register), &signer))
        .await?;
    let reply = tokio::time::timeout(patience.register_timeout, socket.recv())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the hub at {} did not answer registration within {:?} (is the kernel running, and is the key right?)",
                connection.url,
                patience.register_timeout
            )
        })??;
    let reply = decode(reply, &signer).context("the hub's registration reply")?;
    let reply: RegisterReply = from_wire(&reply)?;
    let engine_id = match (reply.engine_id, reply.refused) {
        (Some(id), None) => id,
        (_, Some(reason)) => bail!("the hub refused this engine: {reason}"),
        (None, None) => bail!("the hub's registration reply has no engine id"),
    };
    let _ = registered.send(engine_id);
    tracing::info!(
        "registered with the hub at {} as engine {engine_id}",
        connection.url
    );

    let (mut send_half, mut recv_half) = socket.split();
    let heartbeat = to_wire(&session, &Heartbeat {});
    let mut ticker = tokio::time::interval(HEARTBEAT_PERIOD);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if last_heard.elapsed() > patience.hub_silence {
                    bail!("the hub at {} has been silent for {:?}; exiting", connection.url, patience.hub_silence);
                }
                send_half.send(encode(&heartbeat, &signer)).await?;
            }
            Some(message) = outgoing.recv() => {
                send_half.send(encode(&message, &signer)).await?;
            }
            frames = recv_half.recv() => {
                let message = match decode(frames?, &signer) {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!("dropped a message from the hub: {error}");
                        continue;
                    }
                };
                last_heard = Instant::now();
                match message.msg_type() {
                    Heartbeat::MSG_TYPE => {}
                    RunRequest::MSG_TYPE => match from_wire::<RunRequest>(&message) {
                        Ok(run) => {
                            if runs.send(run).is_err() {
                                bail!("the runner thread is gone");
                            }
                        }
                        Err(error) => tracing::warn!("dropped a run request: {error}"),
                    },
                    ShutdownRequest::MSG_TYPE => {
                        tracing::info!("shutdown requested by the hub");
                        return Ok(());
                    }
                    other => tracing::warn!("dropped an unknown message type {other:?}"),
                }
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}
