//! The hub's socket: a ROUTER that engines dial, HMAC-verified and sealed (XChaCha20-Poly1305,
//! keyed from the same secret) in both directions.
//!
//! The one ROUTER listens twice: on TCP for engines anywhere, and on a Unix socket in the
//! kernel's private directory (0700, see [`crate::private_dir`]) for the engines the kernel
//! starts on its own host. A message on loopback TCP costs libzmq's I/O thread and the system
//! noticeably more than one on a Unix socket, once per engine per run. Over both, every
//! message passes the same checks in the same order; the directory's mode only adds a lock
//! in front (no other user reaches the socket at all).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustpx_protocol::pieces::{self, Assembler, PieceError};
use rustpx_protocol::{from_wire, to_wire, ContentError, EngineConnection, LinkMessage, Piece};
use rustpx_wire::{
    address_to, decode_sealed, encode_sealed, encode_sealed_carrying, LinkCipher, SequenceCheck,
    Sequencer, Signer, SocketOptions, SocketType, WireError, WireMessage, ZmqSocket,
};
use tokio::sync::mpsc::UnboundedReceiver;

use super::hub::{Departure, HubHandle, Outgoing};
use super::hub_address::HubAddress;
use super::PxError;
use crate::drop_report::DropReport;

/// How often heartbeats and departures are checked.
const TICK: Duration = Duration::from_millis(250);

/// The largest frame the hub accepts: larger messages (pushed and pulled data for engines on
/// other hosts) travel in pieces, none of whose frames is larger. A peer announcing more is
/// disconnected before anything is allocated for it, and the hub serves everyone else on.
pub const MAX_FRAME_BYTES: i64 = pieces::MAX_FRAME_BYTES as i64;

/// Messages queued for one engine: no limit (libzmq's 0). A ROUTER drops what a full queue
/// cannot take without telling anyone, and a dropped piece or run request would leave a cell
/// waiting; a 1 GiB value alone is 4,096 pieces. What waits here is only what the kernel chose
/// to send to a live engine (its runs, their values and objects, one heartbeat answer per sign
/// of life from it), and an engine's queue goes when its connection does.
const SEND_QUEUE: i32 = 0;

/// The hub's Unix socket's name in the private directory.
const LOCAL_SOCKET: &str = "hub.sock";

/// Binds the hub on `address.bind` (loopback unless the user asks otherwise) with a fresh
/// random key, and on a Unix socket in the kernel's private directory, and serves it; returns
/// what engines need to connect, with `address.location` as the address they dial (and the
/// Unix socket as the one this host's engines dial).
pub async fn start(
    address: &HubAddress,
    hub: HubHandle,
    outbox: UnboundedReceiver<Outgoing>,
    on_departed: impl Fn(Departure) + Send + 'static,
) -> Result<EngineConnection, PxError> {
    let private = match crate::private_dir::dir() {
        Ok(dir) => Some(dir),
        Err(error) => {
            tracing::warn!("local engines dial the hub over TCP: {error}");
            None
        }
    };
    start_in(address, private, hub, outbox, on_departed).await
}

/// [`start`], with the Unix socket in `private` (a 0700 directory of ours), or none.
pub(crate) async fn start_in(
    address: &HubAddress,
    private: Option<&Path>,
    hub: HubHandle,
    outbox: UnboundedReceiver<Outgoing>,
    on_departed: impl Fn(Departure) + Send + 'static,
) -> Result<EngineConnection, PxError> {
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let signer = Signer::new("hmac-sha256", &key).map_err(PxError::Wire)?;
    let ip = &address.bind;
    let bind_to = format!("tcp://{ip}:*");
    // An engine's identity stays with its first connection (no handover): another peer that
    // claims it is refused by libzmq.
    let socket = ZmqSocket::bind(
        SocketType::ROUTER,
        &bind_to,
        &SocketOptions {
            send_queue: Some(SEND_QUEUE),
            ..SocketOptions::limited_to(MAX_FRAME_BYTES)
        },
    )
    .map_err(|e| PxError::Bind(bind_to.clone(), e.to_string()))?;
    let endpoint = socket.endpoint().unwrap_or_default();
    let port = endpoint
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .ok_or_else(|| PxError::Bind(endpoint.clone(), "not a TCP endpoint".into()))?;
    let host = match address.location.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => address.location.clone(),
    };
    let url = format!("tcp://{host}:{port}");
    tracing::info!("hub listening on {endpoint}; engines dial {url}");
    let local_url = private.and_then(|dir| match bind_local(&socket, dir) {
        Ok(local_url) => {
            tracing::info!("engines started on this host dial {local_url}");
            Some(local_url)
        }
        Err(error) => {
            tracing::warn!("local engines dial the hub over TCP: {error}");
            None
        }
    });
    // Always sealed, on loopback too: one mode, nothing to misconfigure, and the cost is small.
    let keys = LinkKeys {
        signer,
        cipher: LinkCipher::from_link_key(&key),
    };
    tokio::spawn(serve(socket, keys, hub, outbox, on_departed));
    Ok(EngineConnection {
        url,
        key,
        signature_scheme: "hmac-sha256".into(),
        kernel_file: None,
        local_url,
    })
}

/// Why the hub does not listen on a Unix socket (local engines then use TCP).
#[derive(Debug, thiserror::Error)]
enum LocalSocketError {
    #[error("cannot inspect {0}: {1}")]
    Inspect(String, std::io::Error),
    #[error("{0} is not a directory only this user can enter (owner uid {1}, mode {2:o})")]
    NotPrivate(String, u32, u32),
    #[error("the socket path {0} is longer than a Unix socket address can be (107 bytes)")]
    TooLong(String),
    #[error(transparent)]
    Bind(#[from] rustpx_wire::SocketError),
}

/// Binds `socket` also to `ipc://DIR/hub.sock`, once `dir` is checked to be ours alone: the
/// directory's mode is what keeps other users away from the socket.
fn bind_local(socket: &ZmqSocket, dir: &Path) -> Result<String, LocalSocketError> {
    use std::os::unix::fs::MetadataExt;
    let shown = dir.display().to_string();
    let metadata =
        std::fs::symlink_metadata(dir).map_err(|e| LocalSocketError::Inspect(shown.clone(), e))?;
    let mode = metadata.mode() & 0o777;
    let private = metadata.is_dir() && metadata.uid() == rustpx_protocol::user_dirs::my_uid();
    if !private || mode & 0o077 != 0 {
        return Err(LocalSocketError::NotPrivate(shown, metadata.uid(), mode));
    }
    let path = dir.join(LOCAL_SOCKET);
    let path = path.to_str().map(str::to_owned).unwrap_or_default();
    if path.is_empty() || path.len() > 107 {
        return Err(LocalSocketError::TooLong(
            dir.join(LOCAL_SOCKET).display().to_string(),
        ));
    }
    let url = format!("ipc://{path}");
    socket.bind_also(&url)?;
    Ok(url)
}

/// What the link signs with and seals with, both from the one secret in the connection file.
struct LinkKeys {
    signer: Signer,
    cipher: LinkCipher,
}

async fn serve(
    mut socket: ZmqSocket,
    keys: LinkKeys,
    hub: HubHandle,
    mut outbox: UnboundedReceiver<Outgoing>,
    on_departed: impl Fn(Departure) + Send + 'static,
) {
    let mut ticker = tokio::time::interval(TICK);
    let mut drops = DropReport::new("hub");
    // Every message on the link is numbered by its sender; a replayed registration, heartbeat
    // or reply (captured on the network) carries a number already taken and is dropped.
    let mut numbers_seen = SequenceCheck::default();
    let mut numbering = Sequencer::default();
    // Each engine's large messages arrive in pieces, one message at a time per engine.
    let mut assemblers: HashMap<Bytes, Assembler> = HashMap::new();
    loop {
        tokio::select! {
            frames = socket.recv() => {
                let mut frames = frames;
                // What else has arrived is taken in the same turn (a run on every engine brings
                // their replies at once), up to a bound so that sends and ticks are not starved.
                // Nothing is taken that this turn does not handle.
                for taken in 1..=BATCH {
                    match frames {
                        Ok(frames) => match admit(frames, &keys, &mut numbers_seen) {
                            Ok((identity, message)) if message.msg_type() == Piece::MSG_TYPE => {
                                // The piece itself tells the hub its engine is alive.
                                hub.receive(identity.clone(), &message);
                                match put_together(&mut assemblers, &hub, &identity, &message, &keys) {
                                    Ok(Some(whole)) => hub.receive(identity, &whole),
                                    Ok(None) => {}
                                    Err(Refused::PieceFromStranger) => drops.dropped(&Refused::PieceFromStranger),
                                    Err(reason) => {
                                        // A message of a live engine is lost (perhaps a run's
                                        // reply): the engine goes, with the reason, rather
                                        // than leave a cell waiting for good.
                                        tracing::warn!("hub: {reason}");
                                        hub.engine_failed(identity, format!("its link broke a large message ({reason})"));
                                    }
                                }
                            }
                            Ok((identity, message)) => hub.receive(identity, &message),
                            Err(reason) => drops.dropped(&reason),
                        },
                        Err(error) => drops.dropped(&format_args!("receive failed: {error}")),
                    }
                    if taken == BATCH {
                        break;
                    }
                    match socket.try_recv().transpose() {
                        Some(more) => frames = more,
                        None => break,
                    }
                }
            }
            Some(first) = outbox.recv() => {
                // A run on every engine queues a request for each: send what is queued in one
                // turn, up to the same bound.
                let (mut identity, mut message) = first;
                for taken in 1..=BATCH {
                    send(&mut socket, &keys, &mut numbering, identity, message).await;
                    if taken == BATCH {
                        break;
                    }
                    match outbox.try_recv() {
                        Ok(more) => (identity, message) = more,
                        Err(_) => break,
                    }
                }
            }
            _ = ticker.tick() => {
                for departure in hub.check_heartbeats(Instant::now()) {
                    on_departed(departure);
                }
                assemblers.retain(|identity, _| hub.is_engine(identity));
            }
        }
    }
}

/// How many messages one turn of the hub's loop receives or sends before it looks at the others.
const BATCH: usize = 256;

/// Addresses, numbers, seals and sends one message to the engine whose connection is `identity`,
/// in pieces when it is large.
async fn send(
    socket: &mut ZmqSocket,
    keys: &LinkKeys,
    numbering: &mut Sequencer,
    identity: Bytes,
    message: WireMessage,
) {
    let msg_type = message.msg_type().to_owned();
    let session = message.header.session.clone();
    let frames = sealed_for(&identity, message, keys, numbering, encode_sealed);
    let sent = if pieces::needs_pieces(&frames) {
        send_pieces(socket, keys, numbering, &identity, &session, &frames).await
    } else {
        let mut routed = Vec::with_capacity(frames.len() + 1);
        routed.push(identity);
        routed.extend(frames);
        socket.send(routed).await
    };
    if let Err(error) = sent {
        // A shutdown request races the kill that follows it (kernel shutdown, `%engines
        // stop`): an engine already gone needs no request.
        if msg_type == "shutdown_request" {
            tracing::debug!("hub: shutdown_request not delivered: {error}");
        } else {
            tracing::warn!("hub: send of {msg_type} failed: {error}");
        }
    }
}

/// The encoder of a message: [`encode_sealed`], or `encode_sealed_carrying` for a piece.
type Encoder = fn(&WireMessage, &Signer, &LinkCipher) -> Vec<Bytes>;

/// `message` addressed to `identity`, numbered, sealed (by `encode`) and signed, without the
/// routing frame.
fn sealed_for(
    identity: &Bytes,
    mut message: WireMessage,
    keys: &LinkKeys,
    numbering: &mut Sequencer,
    encode: Encoder,
) -> Vec<Bytes> {
    address_to(&mut message, identity);
    message.identities.clear();
    numbering.stamp(&mut message);
    encode(&message, &keys.signer, &keys.cipher)
}

/// Sends the sealed `frames` of one message as pieces, each its own sealed message; libzmq
/// queues them in order for the engine.
async fn send_pieces(
    socket: &mut ZmqSocket,
    keys: &LinkKeys,
    numbering: &mut Sequencer,
    identity: &Bytes,
    session: &str,
    frames: &[Bytes],
) -> Result<(), rustpx_wire::SocketError> {
    for (piece, buffers) in pieces::split(frames) {
        let mut wire = to_wire(session, &piece);
        wire.buffers = buffers;
        let mut routed = vec![identity.clone()];
        routed.extend(sealed_for(
            identity,
            wire,
            keys,
            numbering,
            encode_sealed_carrying,
        ));
        socket.send(routed).await?;
    }
    Ok(())
}

/// An engine's large message, once `piece` (admitted) is its last piece, itself admitted:
/// signature, sender and decryption are checked, not its number (its pieces' numbers were).
/// Pieces are kept only for live engines.
fn put_together(
    assemblers: &mut HashMap<Bytes, Assembler>,
    hub: &HubHandle,
    identity: &Bytes,
    piece: &WireMessage,
    keys: &LinkKeys,
) -> Result<Option<WireMessage>, Refused> {
    if !hub.is_engine(identity) {
        return Err(Refused::PieceFromStranger);
    }
    let description: Piece = from_wire(piece)?;
    let assembler = assemblers.entry(identity.clone()).or_default();
    let Some(mut frames) = assembler.add(&description, piece.buffers.clone())? else {
        return Ok(None);
    };
    frames.insert(0, identity.clone());
    let (_, whole) = admit_unnumbered(frames, keys)?;
    Ok(Some(whole))
}

/// The sender's identity and the message in `frames`, opened, if it passes every check in
/// order: signature, sender, number, then decryption. Nothing is decrypted for a message that
/// is forged, altered, replayed or sent on another engine's behalf.
fn admit(
    frames: Vec<Bytes>,
    keys: &LinkKeys,
    numbers_seen: &mut SequenceCheck,
) -> Result<(Bytes, WireMessage), Refused> {
    let (identity, sealed) = signed_by_sender(frames, keys)?;
    numbers_seen.accept(sealed.envelope())?;
    let mut message = pieces::open(sealed, &keys.cipher)?;
    message.identities.remove(0);
    Ok((identity, message))
}

/// [`admit`] without the number's check, for a message put together from pieces.
fn admit_unnumbered(frames: Vec<Bytes>, keys: &LinkKeys) -> Result<(Bytes, WireMessage), Refused> {
    let (identity, sealed) = signed_by_sender(frames, keys)?;
    let mut message = sealed.open(&keys.cipher)?;
    message.identities.remove(0);
    Ok((identity, message))
}

/// The sender's identity and its sealed message, if the signature is right and the message is
/// in the session of the connection it came on.
fn signed_by_sender(
    frames: Vec<Bytes>,
    keys: &LinkKeys,
) -> Result<(Bytes, rustpx_wire::SealedMessage), Refused> {
    let sealed = decode_sealed(frames, &keys.signer)?;
    // A ROUTER puts the peer's identity first.
    let Some(identity) = sealed.envelope().identities.first().cloned() else {
        return Err(Refused::NoIdentity);
    };
    // An engine's connection identity is its (signed) session: a message replayed from another
    // connection does not match it.
    if identity.as_ref() != sealed.envelope().header.session.as_bytes() {
        return Err(Refused::NotItsSession);
    }
    Ok((identity, sealed))
}

/// Why the hub dropped a message from the link.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("no peer identity")]
    NoIdentity,
    #[error("a message whose session is not its sender's")]
    NotItsSession,
    #[error("a piece of a message from a peer that is not a live engine")]
    PieceFromStranger,
    #[error("a piece without its description: {0}")]
    Content(#[from] ContentError),
    #[error("pieces of a large message did not fit together: {0}")]
    Pieces(#[from] PieceError),
}

#[cfg(test)]
mod tests;
