//! `%pxmap` on an engine that cannot reach the kernel's Unix socket (another host): the map
//! worker cell connects to this engine's own socket instead, and the engine relays each
//! connection's bytes over the signed and sealed link, numbered as a stream.
//!
//! The socket lives in a directory this process creates with mode 0700 (never one that already
//! exists), so only this user reaches it; the kernel's scheduler still checks the worker's token.
//! What goes to the hub waits for the hub's grants ([`MapCredit`]): at most [`MAP_WINDOW_BYTES`]
//! of a stream are ever on their way, so a fast worker never floods the link or the hub.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustpx_protocol::{
    from_wire, to_wire, LinkMessage, MapBytes, MapClose, MapCredit, MAP_PIECE_BYTES,
    MAP_WINDOW_BYTES,
};
use rustpx_wire::WireMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::{self, Sender, UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;

/// Where a map worker cell finds this engine's socket (read by the client crate's map worker).
pub const RELAY_ENV: &str = "RUSTPX_MAP_RELAY";

/// The engine's map socket, bound before the link starts so that its path is known when the
/// first cell runs.
pub struct RelaySocket {
    pub path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl RelaySocket {
    /// Binds `map.sock` in a fresh private directory under the temporary directory, which
    /// [`crate::files::remove_created`] removes at exit.
    pub fn bind() -> std::io::Result<RelaySocket> {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let dir =
            std::env::temp_dir().join(format!("rustpx-engine-{}-{suffix}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        crate::files::remember_created(dir.clone());
        let path = dir.join("map.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(RelaySocket { path, listener })
    }
}

/// The relayed streams of this engine, served on the link's runtime.
pub struct Relay {
    listener: UnixListener,
    next_stream: u64,
    streams: Arc<Mutex<HashMap<u64, Stream>>>,
    to_hub: Sender<WireMessage>,
}

/// One worker connection, as the link sees it.
struct Stream {
    /// Bytes from the hub, written to the worker in order by [`down`].
    to_worker: UnboundedSender<Bytes>,
    /// Bytes the hub has granted and [`up`] has not sent yet.
    credit: Arc<Semaphore>,
}

impl Relay {
    /// Serves `socket` (must be called on the link's runtime); what goes to the hub is queued
    /// on `to_hub`, which the link signs, seals and sends.
    pub fn new(socket: RelaySocket, to_hub: Sender<WireMessage>) -> std::io::Result<Relay> {
        Ok(Relay {
            listener: UnixListener::from_std(socket.listener)?,
            next_stream: 0,
            streams: Arc::default(),
            to_hub,
        })
    }

    /// The next worker connection.
    pub async fn accept(&self) -> std::io::Result<UnixStream> {
        self.listener
            .accept()
            .await
            .map(|(connection, _)| connection)
    }

    /// Starts relaying a worker's connection as a new stream.
    pub fn open(&mut self, connection: UnixStream) {
        self.next_stream += 1;
        let stream = self.next_stream;
        let (read, write) = connection.into_split();
        let credit = Arc::new(Semaphore::new(MAP_WINDOW_BYTES as usize));
        let (to_worker, from_hub) = mpsc::unbounded_channel();
        lock(&self.streams).insert(
            stream,
            Stream {
                to_worker,
                credit: credit.clone(),
            },
        );
        tokio::spawn(up(
            read,
            stream,
            credit,
            self.to_hub.clone(),
            self.streams.clone(),
        ));
        tokio::spawn(down(write, from_hub));
    }

    /// Whether a message from the hub is the relay's.
    pub fn carries(msg_type: &str) -> bool {
        [MapBytes::MSG_TYPE, MapCredit::MSG_TYPE, MapClose::MSG_TYPE].contains(&msg_type)
    }

    /// Handles the hub's bytes, grants and ends of streams.
    pub fn receive(&self, message: &WireMessage) {
        let mut streams = lock(&self.streams);
        match message.msg_type() {
            MapBytes::MSG_TYPE => {
                if let Ok(bytes) = from_wire::<MapBytes>(message) {
                    if let Some(stream) = streams.get(&bytes.stream) {
                        for piece in &message.buffers {
                            let _ = stream.to_worker.send(piece.clone());
                        }
                    }
                }
            }
            MapCredit::MSG_TYPE => {
                if let Ok(grant) = from_wire::<MapCredit>(message) {
                    if let Some(stream) = streams.get(&grant.stream) {
                        let bytes = grant.bytes.min(MAP_WINDOW_BYTES) as usize;
                        stream.credit.add_permits(bytes);
                    }
                }
            }
            MapClose::MSG_TYPE => {
                if let Ok(close) = from_wire::<MapClose>(message) {
                    if let Some(reason) = &close.reason {
                        tracing::warn!("the hub ended map stream {}: {reason}", close.stream);
                    }
                    // The worker gets what came before the end, then end of file.
                    if let Some(stream) = streams.remove(&close.stream) {
                        stream.credit.close();
                    }
                }
            }
            _ => {}
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends what the worker writes to the hub, a piece at a time and only as far as the hub has
/// granted; then the stream's end.
async fn up(
    mut read: OwnedReadHalf,
    stream: u64,
    credit: Arc<Semaphore>,
    to_hub: Sender<WireMessage>,
    streams: Arc<Mutex<HashMap<u64, Stream>>>,
) {
    let piece = MAP_PIECE_BYTES as usize;
    let mut buffer = vec![0u8; piece];
    let reason = loop {
        // As much as the hub has granted, up to a piece (at least one byte, waiting for it);
        // only this task takes grants, so they cannot shrink meanwhile. A closed semaphore is
        // the hub's end of the stream: stop.
        let want = credit.available_permits().clamp(1, piece);
        let Ok(granted) = credit.acquire_many(want as u32).await else {
            break None;
        };
        let n = match read.read(&mut buffer[..want]).await {
            Ok(0) => break None,
            Ok(n) => n,
            Err(error) => break Some(format!("the worker's connection failed: {error}")),
        };
        granted.forget();
        credit.add_permits(want - n);
        let mut message = to_wire("", &MapBytes { stream });
        message.buffers = vec![Bytes::copy_from_slice(&buffer[..n])];
        if to_hub.send(message).await.is_err() {
            break None;
        }
    };
    lock(&streams).remove(&stream);
    let _ = to_hub.send(to_wire("", &MapClose { stream, reason })).await;
}

/// Writes the hub's bytes to the worker; once the hub ends the stream, the worker reads end of
/// file.
async fn down(mut write: OwnedWriteHalf, mut from_hub: UnboundedReceiver<Bytes>) {
    while let Some(piece) = from_hub.recv().await {
        if write.write_all(&piece).await.is_err() {
            break;
        }
    }
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_socket_is_in_a_fresh_directory_only_this_user_enters() {
        let socket = RelaySocket::bind().unwrap();
        let dir = socket.path.parent().unwrap().to_owned();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(socket.path.ends_with("map.sock"));
        let again = RelaySocket::bind().unwrap();
        assert_ne!(again.path, socket.path);
        for path in [&socket.path, &again.path] {
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
    }

    /// A worker's bytes reach the hub only as far as the hub granted them, and the hub's bytes
    /// and end reach the worker.
    #[tokio::test]
    async fn the_worker_is_relayed_within_the_hubs_grants() {
        let (to_hub, mut at_hub) = mpsc::channel(64);
        let socket = RelaySocket::bind().unwrap();
        let dir = socket.path.parent().unwrap().to_owned();
        let mut relay = Relay::new(socket, to_hub).unwrap();
        let mut worker =
            UnixStream::connect(relay.listener.local_addr().unwrap().as_pathname().unwrap())
                .await
                .unwrap();
        let accepted = relay.accept().await.unwrap();
        relay.open(accepted);
        // More than the window: only the window goes until the hub grants more.
        let total = MAP_WINDOW_BYTES as usize + MAP_PIECE_BYTES as usize;
        let writer = tokio::spawn(async move {
            worker.write_all(&vec![5u8; total]).await.unwrap();
            worker
        });
        let mut sent = 0usize;
        while sent < MAP_WINDOW_BYTES as usize {
            let message = at_hub.recv().await.unwrap();
            assert_eq!(message.msg_type(), MapBytes::MSG_TYPE);
            sent += message.buffers[0].len();
        }
        assert_eq!(sent, MAP_WINDOW_BYTES as usize);
        let more = tokio::time::timeout(std::time::Duration::from_millis(300), at_hub.recv()).await;
        assert!(more.is_err(), "sent past the window: {more:?}");
        let grant = to_wire(
            "hub",
            &MapCredit {
                stream: 1,
                bytes: MAP_PIECE_BYTES,
            },
        );
        relay.receive(&grant);
        let mut rest = 0;
        while rest < MAP_PIECE_BYTES as usize {
            rest += at_hub.recv().await.unwrap().buffers[0].len();
        }
        assert_eq!(rest, MAP_PIECE_BYTES as usize);
        let mut worker = writer.await.unwrap();
        let mut down = to_wire("hub", &MapBytes { stream: 1 });
        down.buffers.push(Bytes::from_static(b"chunk"));
        relay.receive(&down);
        relay.receive(&to_wire(
            "hub",
            &MapClose {
                stream: 1,
                reason: None,
            },
        ));
        let mut got = Vec::new();
        worker.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"chunk");
        let _ = std::fs::remove_dir_all(dir);
    }
}
