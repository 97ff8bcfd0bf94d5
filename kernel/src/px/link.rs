//! The hub's socket: a ROUTER that engines dial, HMAC-verified in both directions.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustpx_protocol::EngineConnection;
use rustpx_wire::zeromq::{RouterSocket, Socket, SocketRecv, SocketSend};
use rustpx_wire::{decode, encode, Signer};
use tokio::sync::mpsc::UnboundedReceiver;

use super::hub::{Departure, Hub, Outgoing};
use super::hub_address::HubAddress;
use super::{lock, PxError};
use crate::drop_report::DropReport;

/// How often heartbeats and departures are checked.
const TICK: Duration = Duration::from_millis(250);

/// Binds the hub on `address.bind` (loopback unless the user asks otherwise) with a fresh
/// random key and serves it; returns what engines need to connect, with `address.location` as
/// the address they dial.
pub async fn start(
    address: &HubAddress,
    hub: Arc<Mutex<Hub>>,
    outbox: UnboundedReceiver<Outgoing>,
    on_departed: impl Fn(Departure) + Send + 'static,
) -> Result<EngineConnection, PxError> {
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let signer = Signer::new("hmac-sha256", &key).map_err(PxError::Wire)?;
    let mut socket = RouterSocket::new();
    let ip = &address.bind;
    let endpoint = socket
        .bind(&format!("tcp://{ip}:0"))
        .await
        .map_err(|e| PxError::Bind(format!("tcp://{ip}:0"), e.to_string()))?;
    let port = match &endpoint {
        rustpx_wire::zeromq::Endpoint::Tcp(_, port) => *port,
        other => {
            return Err(PxError::Bind(
                other.to_string(),
                "not a TCP endpoint".into(),
            ))
        }
    };
    let host = match address.location.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => address.location.clone(),
    };
    let url = format!("tcp://{host}:{port}");
    tracing::info!("hub listening on {endpoint}; engines dial {url}");
    tokio::spawn(serve(socket, signer, hub, outbox, on_departed));
    Ok(EngineConnection {
        url,
        key,
        signature_scheme: "hmac-sha256".into(),
        kernel_file: None,
    })
}

async fn serve(
    socket: RouterSocket,
    signer: Signer,
    hub: Arc<Mutex<Hub>>,
    mut outbox: UnboundedReceiver<Outgoing>,
    on_departed: impl Fn(Departure) + Send + 'static,
) {
    let (mut sender, mut receiver) = socket.split();
    let mut ticker = tokio::time::interval(TICK);
    let mut drops = DropReport::new("hub");
    loop {
        tokio::select! {
            frames = receiver.recv() => {
                let frames = match frames {
                    Ok(frames) => frames,
                    Err(error) => {
                        drops.dropped(&format_args!("receive failed: {error}"));
                        continue;
                    }
                };
                match decode(frames, &signer) {
                    Ok(mut message) => {
                        // A ROUTER puts the peer's identity first.
                        if message.identities.is_empty() {
                            drops.dropped(&"no peer identity");
                            continue;
                        }
                        let identity: Bytes = message.identities.remove(0);
                        lock(&hub).receive(identity, &message);
                    }
                    Err(error) => drops.dropped(&error),
                }
            }
            Some((identity, mut message)) = outbox.recv() => {
                message.identities = vec![identity];
                if let Err(error) = sender.send(encode(&message, &signer)).await {
                    // A shutdown request races the kill that follows it (kernel shutdown,
                    // `%engines stop`): an engine already gone needs no request.
                    if message.msg_type() == "shutdown_request" {
                        tracing::debug!("hub: shutdown_request not delivered: {error}");
                    } else {
                        tracing::warn!("hub: send of {} failed: {error}", message.msg_type());
                    }
                }
            }
            _ = ticker.tick() => {
                let departures = {
                    let mut hub = lock(&hub);
                    hub.check_heartbeats(Instant::now());
                    hub.take_departures()
                };
                for departure in departures {
                    on_departed(departure);
                }
            }
        }
    }
}
