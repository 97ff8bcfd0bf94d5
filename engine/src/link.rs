//! The engine's side of the link to the hub: register, heartbeat, receive runs, send results.
//!
//! The link runs on its own thread with a tokio runtime, so heartbeats keep flowing while a cell
//! runs on the main thread; a cell in an endless loop is busy, not dead. The engine gives up and
//! exits when the hub does not answer registration in time or stays silent for too long, saying
//! which address it tried.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustpx_protocol::pieces::{self, Assembler};
use rustpx_protocol::{
    from_wire, to_wire, EngineConnection, EngineExit, EngineId, Heartbeat, LinkMessage, ObjectData,
    ObjectRequest, Piece, Platform, RegisterReply, RegisterRequest, RunRequest, ShutdownRequest,
    SignalRequest,
};
use rustpx_wire::{
    check_addressed_to, decode_sealed, encode_sealed, encode_sealed_carrying, LinkCipher,
    SequenceCheck, Sequencer, Signer, WireError, WireMessage,
};
use tokio::sync::mpsc;

use crate::delivery::{Delivery, PreparedRun};
use crate::hub_socket::HubSocket;
use crate::map_relay::Relay;

/// How often the engine says it is alive.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(500);

/// The largest frame taken from the hub: larger messages (cell objects, pushed data) come in
/// pieces, none of whose frames is larger.
const MAX_FRAME_BYTES: u64 = pieces::MAX_FRAME_BYTES as u64;

/// Settings for how patient the engine is with the hub.
pub struct Patience {
    pub register_timeout: Duration,
    pub hub_silence: Duration,
}

/// Who this engine is, as it tells the hub.
pub struct Identity {
    pub requested_id: Option<EngineId>,
    pub platform: Platform,
}

/// What the engine sends the hub: the queue the link drains (cell output, run replies), and the
/// `%pxmap` relay that adds to it, when this engine has one (it does not share the kernel's
/// files, so its map worker cannot reach the kernel's socket).
pub struct Outgoing {
    pub queue: mpsc::Receiver<WireMessage>,
    pub map_relay: Option<Relay>,
}

/// Connects, registers and then serves the link until shutdown; runs whose objects are on this
/// host go to `runs`, in the order the hub sent them.
pub async fn serve(
    connection: EngineConnection,
    identity: Identity,
    patience: Patience,
    mut delivery: Delivery,
    outgoing: Outgoing,
    runs: std_mpsc::Sender<PreparedRun>,
    registered: std_mpsc::Sender<EngineId>,
) -> Result<()> {
    let Outgoing {
        queue: mut outgoing,
        mut map_relay,
    } = outgoing;
    // An empty key would switch signing off and seal with a key anyone can derive.
    if connection.key.is_empty() {
        bail!("the connection file's key is empty: the engine link is always signed and sealed; use the file the kernel wrote (%engines shows where)");
    }
    let signer = Signer::new(&connection.signature_scheme, &connection.key)?;
    // Everything on the link is sealed with a key derived from the same secret.
    let cipher = LinkCipher::from_link_key(&connection.key);
    let session = uuid::Uuid::new_v4().to_string();
    let mut seal = Seal {
        signer: signer.clone(),
        cipher: cipher.clone(),
        session: session.clone(),
        numbering: Sequencer::default(),
    };
    // What the hub sends is numbered too: a replay of it is dropped.
    let mut numbers_seen = SequenceCheck::default();
    // Over TCP libzmq connects (and reconnects) in the background; the registration timeout
    // below says when the hub was not reached. The hub's Unix socket is dialled directly.
    let mut socket = tokio::time::timeout(
        patience.register_timeout,
        HubSocket::open(
            &connection.url,
            session.as_bytes(),
            MAX_FRAME_BYTES,
            patience.register_timeout,
            patience.hub_silence,
        ),
    )
    .await
    .map_err(|_| unreachable(&connection, &patience))??;

    let register = RegisterRequest {
        requested_id: identity.requested_id,
        pid: std::process::id(),
        hostname: hostname(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        platform: identity.platform,
        shares_files: delivery.shares_files(),
        link_version: rustpx_protocol::LINK_VERSION,
    };
    tokio::time::timeout(
        patience.register_timeout,
        socket.send(seal.frames(to_wire(&session, &register))),
    )
    .await
    .map_err(|_| unreachable(&connection, &patience))??;
    let reply = tokio::time::timeout(patience.register_timeout, socket.recv())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the hub at {} did not answer registration within {:?} (is the kernel running, and is the key right?)",
                connection.url,
                patience.register_timeout
            )
        })??;
    let reply = admit(reply, &signer, &cipher, &session, &mut numbers_seen)
        .context("the hub's registration reply")?;
    let reply: RegisterReply = from_wire(&reply)?;
    let engine_id = match (reply.engine_id, reply.refused) {
        (Some(id), None) => id,
        (_, Some(reason)) => bail!("the hub refused this engine: {reason}"),
        (None, None) => bail!("the hub's registration reply has no engine id"),
    };
    let _ = registered.send(engine_id);
    if let Some(dir) = delivery.cache_dir() {
        tracing::info!(
            "compiled cells are fetched from the hub into {}",
            dir.display()
        );
    }
    tracing::info!(
        "registered with the hub at {} as engine {engine_id}",
        connection.url
    );

    let mut ticker = tokio::time::interval(HEARTBEAT_PERIOD);
    let mut last_heard = Instant::now();
    // The hub's large messages arrive in pieces, one message at a time.
    let mut assembler = Assembler::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if last_heard.elapsed() > patience.hub_silence {
                    bail!("the hub at {} has been silent for {:?}; exiting", connection.url, patience.hub_silence);
                }
                // A new message each time: each header (id, date) is unique.
                send_not_counted(&mut socket, seal.frames(to_wire(&session, &Heartbeat::default())), &mut last_heard).await?;
            }
            Some(message) = outgoing.recv() => {
                send_message(&mut socket, &mut seal, message, &mut last_heard).await?;
            }
            accepted = accept_map_connection(map_relay.as_ref()) => match (accepted, map_relay.as_mut()) {
                (Ok(connection), Some(relay)) => relay.open(connection),
                (Err(error), _) => tracing::warn!("map relay: accept failed: {error}"),
                _ => {}
            },
            frames = socket.recv() => {
                let message = match admit(frames?, &signer, &cipher, &session, &mut numbers_seen) {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!("dropped a message from the hub: {error}");
                        continue;
                    }
                };
                // A piece is a sign of life too: a large message on a slow network takes a while.
                last_heard = Instant::now();
                let message = if message.msg_type() == Piece::MSG_TYPE {
                    match whole_message(&mut assembler, &message, &signer, &cipher, &session) {
                        Ok(Some(whole)) => whole,
                        Ok(None) => continue,
                        Err(error) => {
                            // A message of the hub's is lost (perhaps a run): leave with the
                            // reason rather than have the kernel wait for its reply for good.
                            let reason = format!("the link broke a large message from the hub ({error:#})");
                            let goodbye = to_wire(&session, &EngineExit { reason: reason.clone() });
                            send_not_counted(&mut socket, seal.frames(goodbye), &mut last_heard).await?;
                            // The send may only have queued it: give the socket a moment.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            bail!("{reason}");
                        }
                    }
                } else {
                    message
                };
                match message.msg_type() {
                    Heartbeat::MSG_TYPE => {
                        // The hub slows heartbeats down as its pool grows.
                        let asked = from_wire::<Heartbeat>(&message).ok().and_then(|h| h.period_ms);
                        if let Some(period) = asked.map(heartbeat_period).filter(|p| *p != ticker.period()) {
                            ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                        }
                    }
                    kind if Relay::carries(kind) => match &map_relay {
                        Some(relay) => relay.receive(&message),
                        None => tracing::warn!("dropped a {kind}: this engine relays no map"),
                    },
                    RunRequest::MSG_TYPE => match from_wire::<RunRequest>(&message) {
                        Ok(run) => {
                            let (ask, ready) = delivery.arrived(run, message.buffers.clone());
                            if !ask.is_empty() {
                                tracing::debug!("fetching {} objects from the hub", ask.len());
                                let request = to_wire(&session, &ObjectRequest { sha256: ask });
                                send_message(&mut socket, &mut seal, request, &mut last_heard).await?;
                            }
                            forward(&runs, ready)?;
                        }
                        Err(error) => tracing::warn!("dropped a run request: {error}"),
                    },
                    ObjectData::MSG_TYPE => match from_wire::<ObjectData>(&message) {
                        Ok(data) => {
                            let bytes = message.buffers.first().map(|b| b.as_ref());
                            forward(&runs, delivery.object_arrived(&data, bytes))?;
                        }
                        Err(error) => tracing::warn!("dropped an object: {error}"),
                    },
                    SignalRequest::MSG_TYPE => match from_wire::<SignalRequest>(&message) {
                        Ok(request) => {
                            tracing::info!("the hub asks for signal {}", request.signal);
                            if let Some(reason) = terminating(request.signal) {
                                // Exit rather than die by the signal: mpiexec ends every rank of
                                // a job when one is killed by a signal, but lets one exit.
                                let goodbye = to_wire(&session, &EngineExit { reason });
                                let _ = socket.send(seal.frames(goodbye)).await;
                                // The send only queued it: give the socket a moment to write.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                // SAFETY: _exit ends the process at once, as the signal would;
                                // the cell thread may be stuck in user code.
                                unsafe { libc::_exit(128 + request.signal) };
                            }
                            // SAFETY: kill on our own pid has no memory-safety preconditions.
                            unsafe { libc::kill(libc::getpid(), request.signal) };
                        }
                        Err(error) => tracing::warn!("dropped a signal request: {error}"),
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

/// The heartbeat period the hub asked for, within bounds that keep a confused hub from making
/// an engine beat constantly or fall silent.
fn heartbeat_period(asked_ms: u64) -> Duration {
    Duration::from_millis(asked_ms).clamp(HEARTBEAT_PERIOD / 5, HEARTBEAT_PERIOD * 20)
}

/// The next connection of a map worker cell to the relay's socket; never, without a relay.
async fn accept_map_connection(relay: Option<&Relay>) -> std::io::Result<tokio::net::UnixStream> {
    match relay {
        Some(relay) => relay.accept().await,
        None => std::future::pending().await,
    }
}

/// The message in `frames` from the hub, if its signature is right, it is addressed to this
/// engine (`me`, its session) and its number is new (all checked before anything is decrypted),
/// and it opens.
fn admit(
    frames: Vec<bytes::Bytes>,
    signer: &Signer,
    cipher: &LinkCipher,
    me: &str,
    numbers_seen: &mut SequenceCheck,
) -> Result<WireMessage, WireError> {
    let sealed = decode_sealed(frames, signer)?;
    check_addressed_to(sealed.envelope(), me)?;
    numbers_seen.accept(sealed.envelope())?;
    pieces::open(sealed, cipher)
}

/// The hub's large message, once `piece` (verified and opened) is its last piece, itself
/// verified and opened: its signature and recipient are checked, not its number (its pieces'
/// numbers were).
fn whole_message(
    assembler: &mut Assembler,
    piece: &WireMessage,
    signer: &Signer,
    cipher: &LinkCipher,
    me: &str,
) -> Result<Option<WireMessage>> {
    let description: Piece = from_wire(piece)?;
    let Some(frames) = assembler.add(&description, piece.buffers.clone())? else {
        return Ok(None);
    };
    let sealed = decode_sealed(frames, signer)?;
    check_addressed_to(sealed.envelope(), me)?;
    Ok(Some(sealed.open(cipher)?))
}

/// Seals `message` and sends it, in pieces when it is large (each piece made as it goes; its
/// buffers are slices of the sealed frames, not copies).
async fn send_message(
    socket: &mut HubSocket,
    seal: &mut Seal,
    message: WireMessage,
    last_heard: &mut Instant,
) -> Result<()> {
    let frames = seal.frames(message);
    if !pieces::needs_pieces(&frames) {
        return send_not_counted(socket, frames, last_heard).await;
    }
    for (piece, buffers) in pieces::split(&frames) {
        let mut wire = to_wire(&seal.session, &piece);
        wire.buffers = buffers;
        let sealed = seal.carrying(wire);
        send_not_counted(socket, sealed, last_heard).await?;
    }
    Ok(())
}

/// Signs, seals and numbers what the engine sends, so that only the hub can read it and can
/// tell a replay from a new message.
/// Every message goes out in the link's session, which is also the socket's identity: the hub
/// takes a message only from the connection whose identity is its session.
struct Seal {
    signer: Signer,
    cipher: LinkCipher,
    session: String,
    numbering: Sequencer,
}

impl Seal {
    fn frames(&mut self, message: WireMessage) -> Vec<bytes::Bytes> {
        self.encoded(message, encode_sealed)
    }

    /// A piece: its buffers are another message's sealed frames, not sealed again.
    fn carrying(&mut self, message: WireMessage) -> Vec<bytes::Bytes> {
        self.encoded(message, encode_sealed_carrying)
    }

    fn encoded(
        &mut self,
        mut message: WireMessage,
        encode: fn(&WireMessage, &Signer, &LinkCipher) -> Vec<bytes::Bytes>,
    ) -> Vec<bytes::Bytes> {
        message.header.session.clone_from(&self.session);
        self.numbering.stamp(&mut message);
        encode(&message, &self.signer, &self.cipher)
    }
}

/// Why the engine exits for `signal`, when the signal's default action ends the process.
fn terminating(signal: i32) -> Option<String> {
    let name = match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGKILL => "SIGKILL",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        _ => return None,
    };
    Some(format!("ended by {name} from the kernel"))
}

fn forward(runs: &std_mpsc::Sender<PreparedRun>, ready: Vec<PreparedRun>) -> Result<()> {
    for run in ready {
        if runs.send(run).is_err() {
            bail!("the runner thread is gone");
        }
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// The error of a hub not reached within the registration's timeout.
fn unreachable(connection: &EngineConnection, patience: &Patience) -> anyhow::Error {
    anyhow::anyhow!(
        "could not reach the hub at {} within {:?}",
        connection.url,
        patience.register_timeout
    )
}

/// Sends on the hub's socket without counting the wait as the hub's silence: while a large
/// message goes out, the hub's heartbeats wait unread behind it, and the silence check must not
/// take that for a dead hub (a hub that takes nothing at all fails the send itself).
async fn send_not_counted(
    socket: &mut HubSocket,
    frames: Vec<bytes::Bytes>,
    last_heard: &mut Instant,
) -> Result<()> {
    let started = Instant::now();
    socket.send(frames).await?;
    *last_heard += started.elapsed();
    Ok(())
}
