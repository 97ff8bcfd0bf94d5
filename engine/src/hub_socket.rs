//! The engine's socket to the hub: libzmq's DEALER on TCP (engines on other hosts), or a ZMTP
//! stream the link thread reads and writes itself on the hub's Unix socket (`ipc://`, engines
//! the kernel started on its own host).
//!
//! Why two: with libzmq every message in or out of an engine passes through libzmq's I/O thread,
//! a hand-off and a context switch each way, once per engine per run; on a pool of hundreds of
//! engines on a few cores those are what a run costs. The hub's side is the same libzmq ROUTER
//! for both, with the same checks; what travels is the same signed and sealed messages.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use rustpx_wire::{SocketOptions, SocketType, ZmqSocket, ZmtpDealer, ZmtpError};

/// How long to wait between attempts while the hub's Unix socket is not there yet.
const RETRY: Duration = Duration::from_millis(50);

/// The socket and how long a send may wait on it.
pub struct HubSocket {
    end: End,
    /// How long a send may go without the hub taking anything. A hub that stops reading (stopped,
    /// deadlocked, or a squatter on its path) would otherwise hold the link's loop in a write for
    /// good: its silence check and a signal's exit would never run again.
    write_patience: Duration,
}

enum End {
    Zmq(ZmqSocket),
    Local(ZmtpDealer),
}

impl HubSocket {
    /// Dials `url` as `identity`, taking frames of up to `max_frame_bytes`. libzmq connects in
    /// the background (the registration's timeout says when the hub was not reached); the Unix
    /// socket is dialled now, again until `patience` runs out while it does not exist yet or
    /// refuses. A send during which the hub takes nothing for `write_patience` fails.
    pub async fn open(
        url: &str,
        identity: &[u8],
        max_frame_bytes: u64,
        patience: Duration,
        write_patience: Duration,
    ) -> Result<HubSocket> {
        let end = open_end(url, identity, max_frame_bytes, patience).await?;
        Ok(HubSocket {
            end,
            write_patience,
        })
    }

    /// Sends one message. Fails when the hub takes nothing for `write_patience`: on the Unix
    /// socket, no byte written for that long (a large message to a hub that keeps reading may
    /// take longer); with libzmq, whose send returns once the message is queued, the send.
    pub async fn send(&mut self, frames: Vec<Bytes>) -> Result<()> {
        let patience = self.write_patience;
        let stalled =
            || anyhow!("the hub has taken nothing from this engine for {patience:?}: exiting");
        match &mut self.end {
            End::Local(dealer) => match dealer.send(frames, patience).await {
                Err(ZmtpError::Stalled(_)) => Err(stalled()),
                other => Ok(other?),
            },
            End::Zmq(socket) => match tokio::time::timeout(patience, socket.send(frames)).await {
                Err(_) => Err(stalled()),
                Ok(sent) => Ok(sent?),
            },
        }
    }

    /// The next message from the hub; cancel-safe (it waits in the link's `select!`).
    pub async fn recv(&mut self) -> Result<Vec<Bytes>> {
        Ok(match &mut self.end {
            End::Zmq(socket) => socket.recv().await?,
            End::Local(dealer) => dealer.recv().await?,
        })
    }
}

/// Dials the hub (see [`HubSocket::open`]).
async fn open_end(
    url: &str,
    identity: &[u8],
    max_frame_bytes: u64,
    patience: Duration,
) -> Result<End> {
    let Some(path) = url.strip_prefix("ipc://") else {
        let options = SocketOptions {
            identity: Some(identity.to_vec()),
            ..SocketOptions::limited_to(i64::try_from(max_frame_bytes).unwrap_or(i64::MAX))
        };
        let socket = ZmqSocket::connect(SocketType::DEALER, url, &options)
            .with_context(|| format!("could not connect to the hub at {url}"))?;
        return Ok(End::Zmq(socket));
    };
    let deadline = Instant::now() + patience;
    loop {
        match ZmtpDealer::connect(Path::new(path), identity, max_frame_bytes).await {
            Ok(dealer) => return Ok(End::Local(dealer)),
            Err(ZmtpError::Connect(_, error))
                if Instant::now() < deadline
                    && matches!(
                        error.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
            {
                tokio::time::sleep(RETRY).await;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("could not connect to the hub at {url}"))
            }
        }
    }
}
