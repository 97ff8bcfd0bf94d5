//! ZeroMQ sockets for tokio, over libzmq (the `zmq` crate, which builds libzmq from source).
//!
//! libzmq is what every Python kernel and ipyparallel run on, and it brings what a socket facing
//! other users needs: a frame size limit enforced before anything is allocated for the frame
//! (`ZMQ_MAXMSGSIZE`: a peer announcing a 2^62-byte frame loses its connection, nobody else
//! notices), ROUTER sockets that drop rather than block when one peer stops reading, and the
//! `ipc` transport. The README's "Security" section has the comparison with the pure-Rust crate.
//!
//! A libzmq socket exposes a file descriptor (`ZMQ_FD`) that becomes readable whenever the
//! socket's state may have changed, for reading or writing alike, and only on a change. So every
//! operation is first tried without blocking, and only after it would block does the task wait
//! for that descriptor, clear it, and try again: nothing that arrived in between is missed.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;

use bytes::Bytes;
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub use zmq::SocketType;

/// A socket that could not be set up or used.
#[derive(Debug, Error)]
pub enum SocketError {
    #[error("cannot {action} {endpoint}: {source}")]
    Setup {
        action: &'static str,
        endpoint: String,
        source: zmq::Error,
    },
    #[error("cannot watch the socket's descriptor: {0}")]
    Watch(#[from] std::io::Error),
    #[error("{0}")]
    Transfer(zmq::Error),
}

/// How a socket is set up before it binds or connects.
#[derive(Debug, Clone)]
pub struct Options {
    /// The largest frame accepted from a peer; a peer that announces a larger one is
    /// disconnected before anything is allocated for it.
    pub max_frame_bytes: i64,
    /// The identity a DEALER presents to a ROUTER.
    pub identity: Option<Vec<u8>>,
    /// A ROUTER hands a known identity over to the newest connection that claims it (what
    /// ipykernel does on shell, control and stdin, so a client that reconnects gets its
    /// replies). Off where an identity must stay with its first owner (the engine hub).
    pub router_handover: bool,
    /// Messages queued for each peer before libzmq drops (PUB) or holds back (others) more;
    /// libzmq's default of 1,000 when `None`.
    pub send_queue: Option<i32>,
}

impl Options {
    /// Options with a frame limit and nothing else.
    pub fn limited_to(max_frame_bytes: i64) -> Self {
        Options {
            max_frame_bytes,
            identity: None,
            router_handover: false,
            send_queue: None,
        }
    }
}

/// The process's one libzmq context (its I/O thread serves every socket).
fn context() -> &'static zmq::Context {
    static CONTEXT: OnceLock<zmq::Context> = OnceLock::new();
    CONTEXT.get_or_init(zmq::Context::new)
}

/// A libzmq socket with its notification descriptor, which libzmq owns and keeps open for as
/// long as the socket lives.
struct Watched {
    socket: zmq::Socket,
    notify_fd: RawFd,
}

impl AsRawFd for Watched {
    fn as_raw_fd(&self) -> RawFd {
        self.notify_fd
    }
}

/// A received frame: libzmq's message, kept as it is and read through `Bytes`.
struct Frame(zmq::Message);

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A libzmq socket driven by tokio. Sends and receives whole multipart messages.
pub struct ZmqSocket {
    watched: AsyncFd<Watched>,
    /// A ROUTER or PUB: libzmq drops what a peer's full queue cannot take, so a send never
    /// waits and needs no readiness check first (asking libzmq costs a system call, once per
    /// message: per engine, for a run on every engine of the hub).
    never_waits: bool,
}

fn configured(kind: SocketType, options: &Options) -> Result<zmq::Socket, zmq::Error> {
    let socket = context().socket(kind)?;
    socket.set_maxmsgsize(options.max_frame_bytes)?;
    // Nothing waits for unsent messages when a socket closes: the peers are gone or going.
    socket.set_linger(0)?;
    if let Some(identity) = &options.identity {
        socket.set_identity(identity)?;
    }
    if options.router_handover {
        socket.set_router_handover(true)?;
    }
    if let Some(messages) = options.send_queue {
        socket.set_sndhwm(messages)?;
    }
    Ok(socket)
}

/// A configured socket of `kind`, bound or connected (`attach`) to `endpoint`; an error names
/// the `action` and the endpoint.
fn attached(
    kind: SocketType,
    endpoint: &str,
    options: &Options,
    action: &'static str,
    attach: fn(&zmq::Socket, &str) -> Result<(), zmq::Error>,
) -> Result<zmq::Socket, SocketError> {
    let setup = |source| SocketError::Setup {
        action,
        endpoint: endpoint.to_owned(),
        source,
    };
    let socket = configured(kind, options).map_err(setup)?;
    attach(&socket, endpoint).map_err(setup)?;
    Ok(socket)
}

impl ZmqSocket {
    /// Binds a new socket of `kind` to `endpoint` (`tcp://ip:*` picks a free port; see
    /// [`ZmqSocket::endpoint`]).
    pub fn bind(kind: SocketType, endpoint: &str, options: &Options) -> Result<Self, SocketError> {
        Self::open(kind, endpoint, options, "bind", zmq::Socket::bind)
    }

    /// Connects a new socket of `kind` to `endpoint`. libzmq connects in the background and
    /// reconnects by itself; nothing here waits for the peer.
    pub fn connect(
        kind: SocketType,
        endpoint: &str,
        options: &Options,
    ) -> Result<Self, SocketError> {
        Self::open(kind, endpoint, options, "connect to", zmq::Socket::connect)
    }

    fn open(
        kind: SocketType,
        endpoint: &str,
        options: &Options,
        action: &'static str,
        attach: fn(&zmq::Socket, &str) -> Result<(), zmq::Error>,
    ) -> Result<Self, SocketError> {
        Self::watch(attached(kind, endpoint, options, action, attach)?)
    }

    fn watch(socket: zmq::Socket) -> Result<Self, SocketError> {
        let notify_fd = socket.get_fd().map_err(SocketError::Transfer)?;
        let never_waits = matches!(
            socket.get_socket_type(),
            Ok(SocketType::ROUTER | SocketType::PUB)
        );
        let watched = Watched { socket, notify_fd };
        // SAFETY: the descriptor belongs to the socket, which the `AsyncFd` owns: it stays open
        // and the same until the `AsyncFd` (and with it the socket) is dropped.
        let watched = unsafe { AsyncFd::register_with_interest(watched, Interest::READABLE) }
            .map_err(|error| SocketError::Watch(error.into_parts().1))?;
        Ok(ZmqSocket {
            watched,
            never_waits,
        })
    }

    fn socket(&self) -> &zmq::Socket {
        &self.watched.get_ref().socket
    }

    /// Binds this socket to one more endpoint: one ROUTER can take peers on TCP and on a Unix
    /// socket (`ipc://PATH`) at once, serving them as one.
    pub fn bind_also(&self, endpoint: &str) -> Result<(), SocketError> {
        self.socket()
            .bind(endpoint)
            .map_err(|source| SocketError::Setup {
                action: "bind",
                endpoint: endpoint.to_owned(),
                source,
            })
    }

    /// The address the socket was bound to last, with the port the system picked.
    pub fn endpoint(&self) -> Option<String> {
        self.socket().get_last_endpoint().ok()?.ok()
    }

    /// The next whole message, waiting for one.
    pub async fn recv(&mut self) -> Result<Vec<Bytes>, SocketError> {
        loop {
            if let Some(frames) = self.try_recv()? {
                return Ok(frames);
            }
            self.wait_for_change().await?;
        }
    }

    /// A message that has already arrived, or `None` without waiting. Frames are handed over
    /// without a copy: each `Bytes` owns libzmq's message.
    pub fn try_recv(&mut self) -> Result<Option<Vec<Bytes>>, SocketError> {
        let socket = self.socket();
        let first = match socket.recv_msg(zmq::DONTWAIT) {
            Ok(frame) => frame,
            Err(zmq::Error::EAGAIN) => return Ok(None),
            Err(error) => return Err(SocketError::Transfer(error)),
        };
        let mut more = first.get_more();
        let mut frames = vec![Bytes::from_owner(Frame(first))];
        // The rest of a multipart message has arrived with its first frame.
        while more {
            let frame = socket.recv_msg(0).map_err(SocketError::Transfer)?;
            more = frame.get_more();
            frames.push(Bytes::from_owner(Frame(frame)));
        }
        Ok(Some(frames))
    }

    /// Sends one message. A ROUTER or PUB socket never waits (a peer whose queue is full loses
    /// the message, as in libzmq); a DEALER waits while its queue to the peer is full. Frames
    /// that own their bytes alone are handed to libzmq without a copy.
    pub async fn send(&mut self, frames: Vec<Bytes>) -> Result<(), SocketError> {
        // Once the socket can take a message's first frame it takes the whole message.
        while !self.never_waits {
            let events = self.socket().get_events().map_err(SocketError::Transfer)?;
            if events.contains(zmq::POLLOUT) {
                break;
            }
            self.wait_for_change().await?;
        }
        let socket = self.socket();
        let last = frames.len().saturating_sub(1);
        for (index, frame) in frames.into_iter().enumerate() {
            let flags = if index < last { zmq::SNDMORE } else { 0 };
            let message = zmq::Message::from(Vec::<u8>::from(frame));
            socket.send(message, flags).map_err(SocketError::Transfer)?;
        }
        Ok(())
    }

    async fn wait_for_change(&mut self) -> Result<(), SocketError> {
        let mut guard = self.watched.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }
}

/// Binds a ROUTER on `endpoint` and echoes every message back to its sender on a thread of its
/// own, as ipykernel's heartbeat does. One peer that stops reading fills only its own queue;
/// the others keep their answers.
pub fn spawn_echo(endpoint: &str, options: &Options) -> Result<(), SocketError> {
    let socket = attached(
        SocketType::ROUTER,
        endpoint,
        options,
        "bind",
        zmq::Socket::bind,
    )?;
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || {
            // Returns only when the context ends, which is at process exit.
            if let Err(error) = zmq::proxy(&socket, &socket) {
                tracing::warn!("heartbeat stopped: {error}");
            }
        })
        .map_err(SocketError::Watch)?;
    Ok(())
}
