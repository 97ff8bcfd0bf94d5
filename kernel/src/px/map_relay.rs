//! `%pxmap` connections of engines on other hosts, carried over the engine link.
//!
//! A map worker cell cannot reach the kernel's Unix socket from another host, so it connects to
//! its own engine process, which relays the connection's bytes over the signed and sealed link
//! as numbered streams ([`MapBytes`], [`MapCredit`], [`MapClose`]). Here each stream becomes an
//! in-memory duplex connection, routed by its token ([`super::relay_routes`]) to `%pxmap`'s
//! scheduler ([`super::map_server`]) or the Rust API's ([`super::api::scheduler`]), which serve
//! it exactly as a Unix connection, knowing from the link which engine it is.
//!
//! What an engine can make the hub hold is bounded before anything is queued: a piece is at most
//! [`MAP_PIECE_BYTES`], a stream may have at most [`MAP_WINDOW_BYTES`] that the scheduler has
//! not taken yet (the hub grants more as it takes them), and an engine at most
//! [`MAX_STREAMS_PER_ENGINE`] streams. An engine that breaks a bound loses that stream (its
//! chunks go back to the queue) and is told why; a stream whose engine left ends the same way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustpx_protocol::{
    from_wire, to_wire, EngineId, LinkMessage, MapBytes, MapClose, MapCredit, MAP_PIECE_BYTES,
    MAP_WINDOW_BYTES,
};
use rustpx_wire::WireMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::hub::Outgoing;
use super::lock;
pub use super::relay_routes::RelayedConnection;
use super::relay_routes::Routes;

/// Map connections one engine may have open at once (a worker opens one per map).
pub const MAX_STREAMS_PER_ENGINE: usize = 4;

/// The in-memory buffer between a stream and the scheduler, each way.
const DUPLEX_BYTES: usize = 256 << 10;

/// Why the scheduler ended a relayed connection; set before it drops the connection.
#[derive(Clone, Default)]
pub struct StreamEnding(Arc<Mutex<Option<String>>>);

impl StreamEnding {
    pub fn set(&self, reason: String) {
        *lock(&self.0) = Some(reason);
    }

    pub(super) fn take(&self) -> Option<String> {
        lock(&self.0).take()
    }
}

/// The relay's streams, shared by the link (which feeds them) and their pumps.
#[derive(Clone)]
pub struct MapRelay {
    state: Arc<Mutex<Streams>>,
    /// Where new connections go: the servers started so far, by token.
    routes: Routes,
    outbox: UnboundedSender<Outgoing>,
    /// The hub's link session, which every message to engines carries.
    session: Arc<str>,
}

#[derive(Default)]
struct Streams {
    open: HashMap<(Bytes, u64), Stream>,
}

/// One relayed connection, as the link sees it.
struct Stream {
    /// Pieces for the scheduler, written to the duplex by [`pump_in`] in order.
    feed: UnboundedSender<Bytes>,
    /// Bytes received and not yet taken by the scheduler: at most [`MAP_WINDOW_BYTES`].
    unacked: Arc<AtomicU64>,
}

impl MapRelay {
    pub fn new(outbox: UnboundedSender<Outgoing>, session: Arc<str>) -> MapRelay {
        MapRelay {
            state: Arc::default(),
            routes: Routes::default(),
            outbox,
            session,
        }
    }

    /// Whether a message from an engine is the relay's.
    pub fn carries(msg_type: &str) -> bool {
        msg_type == MapBytes::MSG_TYPE || msg_type == MapClose::MSG_TYPE
    }

    /// A server's end: relayed connections opening with `token` arrive here from now on.
    pub fn attach(&self, token: &str) -> UnboundedReceiver<RelayedConnection> {
        self.routes.attach(token)
    }

    /// Handles a relay message from the link peer `identity`, which is the live engine `engine`
    /// (`None`: no live engine has that identity, and the message is dropped).
    pub fn receive(&self, identity: Bytes, engine: Option<EngineId>, message: &WireMessage) {
        let Some(engine) = engine else {
            tracing::warn!(
                "map relay: dropped a {} from a peer that is not a live engine",
                message.msg_type()
            );
            return;
        };
        match message.msg_type() {
            MapBytes::MSG_TYPE => match from_wire::<MapBytes>(message) {
                Ok(bytes) => self.bytes(identity, engine, bytes.stream, &message.buffers),
                Err(error) => tracing::warn!("map relay: engine {engine}: {error}"),
            },
            MapClose::MSG_TYPE => match from_wire::<MapClose>(message) {
                // The worker closed its connection: the scheduler reads what came, then the end.
                Ok(close) => {
                    lock(&self.state).open.remove(&(identity, close.stream));
                }
                Err(error) => tracing::warn!("map relay: engine {engine}: {error}"),
            },
            _ => {}
        }
    }

    /// A piece of stream `stream` from `engine`, checked against every bound before it is kept.
    fn bytes(&self, identity: Bytes, engine: EngineId, stream: u64, buffers: &[Bytes]) {
        let [piece] = buffers else {
            return self.refuse(
                &identity,
                stream,
                format!(
                    "a map_bytes message carries one buffer, not {}",
                    buffers.len()
                ),
            );
        };
        let size = piece.len() as u64;
        if size > MAP_PIECE_BYTES {
            return self.refuse(
                &identity,
                stream,
                format!("a piece of {size} bytes, over the limit of {MAP_PIECE_BYTES}"),
            );
        }
        let mut state = lock(&self.state);
        let key = (identity.clone(), stream);
        if !state.open.contains_key(&key) {
            if let Err(reason) = self.open(&mut state, key.clone(), engine) {
                drop(state);
                return self.refuse(&identity, stream, reason);
            }
        }
        let Some(entry) = state.open.get(&key) else {
            return;
        };
        let unacked = entry.unacked.load(Ordering::SeqCst);
        if unacked + size > MAP_WINDOW_BYTES {
            state.open.remove(&key);
            drop(state);
            return self.refuse(
                &identity,
                stream,
                format!(
                    "{} bytes sent that the hub had not granted (the window is {MAP_WINDOW_BYTES})",
                    unacked + size
                ),
            );
        }
        entry.unacked.fetch_add(size, Ordering::SeqCst);
        let _ = entry.feed.send(piece.clone());
    }

    /// Opens a stream: a duplex connection for the scheduler and the two pumps that carry it.
    fn open(&self, state: &mut Streams, key: (Bytes, u64), engine: EngineId) -> Result<(), String> {
        let streams = state.open.keys().filter(|(peer, _)| *peer == key.0).count();
        if streams >= MAX_STREAMS_PER_ENGINE {
            return Err(format!(
                "engine {engine} has {streams} map connections open already"
            ));
        }
        if !self.routes.any() {
            return Err("no %pxmap or API call is running".into());
        }
        let (ours, theirs) = tokio::io::duplex(DUPLEX_BYTES);
        let ending = StreamEnding::default();
        let (routes, routed_ending) = (self.routes.clone(), ending.clone());
        tokio::spawn(async move {
            if let Err(reason) = routes.route(engine, theirs, routed_ending).await {
                tracing::warn!("map relay: engine {engine}: refused a stream: {reason}");
            }
        });
        let (feed, pieces) = mpsc::unbounded_channel();
        let unacked = Arc::new(AtomicU64::new(0));
        let (read, write) = tokio::io::split(ours);
        tokio::spawn(pump_in(
            write,
            pieces,
            unacked.clone(),
            self.clone(),
            key.clone(),
        ));
        tokio::spawn(pump_out(read, ending, self.clone(), key.clone()));
        state.open.insert(key, Stream { feed, unacked });
        Ok(())
    }

    /// Ends the streams of peers that are no longer live engines (an engine died or left):
    /// the scheduler sees their connections end and puts their chunks back.
    pub fn drop_peers(&self, is_live: impl Fn(&Bytes) -> bool) {
        let peers: Vec<Bytes> = lock(&self.state)
            .open
            .keys()
            .map(|(peer, _)| peer.clone())
            .collect();
        let gone: Vec<Bytes> = peers.into_iter().filter(|peer| !is_live(peer)).collect();
        if !gone.is_empty() {
            lock(&self.state)
                .open
                .retain(|(peer, _), _| !gone.contains(peer));
        }
    }

    /// Ends `stream` of `to` and tells the engine why.
    fn refuse(&self, to: &Bytes, stream: u64, reason: String) {
        tracing::warn!("map relay: refused a stream: {reason}");
        lock(&self.state).open.remove(&(to.clone(), stream));
        self.send(
            to,
            &MapClose {
                stream,
                reason: Some(reason),
            },
            None,
        );
    }

    fn send<M: LinkMessage>(&self, to: &Bytes, content: &M, piece: Option<Bytes>) {
        let mut message = to_wire(&self.session, content);
        message.buffers.extend(piece);
        let _ = self.outbox.send((to.clone(), message));
    }
}

/// Writes a stream's pieces into the scheduler's connection, granting the engine each piece's
/// size again once the scheduler has taken it; the connection's end follows the stream's.
async fn pump_in(
    mut write: WriteHalf<DuplexStream>,
    mut pieces: UnboundedReceiver<Bytes>,
    unacked: Arc<AtomicU64>,
    relay: MapRelay,
    (peer, stream): (Bytes, u64),
) {
    while let Some(piece) = pieces.recv().await {
        if write.write_all(&piece).await.is_err() {
            break;
        }
        let bytes = piece.len() as u64;
        unacked.fetch_sub(bytes, Ordering::SeqCst);
        relay.send(&peer, &MapCredit { stream, bytes }, None);
    }
    let _ = write.shutdown().await;
}

/// Sends what the scheduler writes to the engine, then the stream's end with the scheduler's
/// reason, once it dropped the connection (so the end never overtakes the last bytes).
async fn pump_out(
    mut read: ReadHalf<DuplexStream>,
    ending: StreamEnding,
    relay: MapRelay,
    (peer, stream): (Bytes, u64),
) {
    let mut buffer = vec![0u8; MAP_PIECE_BYTES as usize];
    while let Ok(n @ 1..) = read.read(&mut buffer).await {
        let piece = Bytes::copy_from_slice(&buffer[..n]);
        relay.send(&peer, &MapBytes { stream }, Some(piece));
    }
    lock(&relay.state).open.remove(&(peer.clone(), stream));
    let reason = ending.take();
    relay.send(&peer, &MapClose { stream, reason }, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(stream: u64, bytes: &[u8]) -> WireMessage {
        let mut message = to_wire("engine", &MapBytes { stream });
        message.buffers.push(Bytes::copy_from_slice(bytes));
        message
    }

    /// The next message the relay sent the engine, as (type, content).
    async fn sent(outbox: &mut UnboundedReceiver<Outgoing>) -> (String, serde_json::Value) {
        let (_, message) = tokio::time::timeout(std::time::Duration::from_secs(5), outbox.recv())
            .await
            .expect("the relay answers")
            .expect("the outbox is open");
        (message.msg_type().to_owned(), message.content)
    }

    fn relay() -> (MapRelay, UnboundedReceiver<Outgoing>) {
        let (outbox, sent) = mpsc::unbounded_channel();
        (MapRelay::new(outbox, "hub".into()), sent)
    }

    #[tokio::test]
    async fn pieces_reach_the_scheduler_in_order_and_are_granted_back() {
        let (relay, mut outbox) = relay();
        let mut scheduler = relay.attach("tok");
        let peer = Bytes::from_static(b"engine-a");
        relay.receive(peer.clone(), Some(3), &piece(1, b"tok\nhello "));
        relay.receive(peer.clone(), Some(3), &piece(1, b"world"));
        let mut connection = scheduler.recv().await.expect("a connection");
        assert_eq!(connection.engine, 3);
        let mut read = [0u8; 15];
        connection.read.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"tok\nhello world");
        assert_eq!(sent(&mut outbox).await.1["bytes"], 10);
        assert_eq!(sent(&mut outbox).await.1["bytes"], 5);
        // What the scheduler writes goes to the engine; its end, with its reason, after that.
        connection.write.write_all(b"chunk").await.unwrap();
        connection.ending.set("done with you".into());
        drop(connection);
        assert_eq!(
            sent(&mut outbox).await,
            ("map_bytes".into(), serde_json::json!({"stream": 1}))
        );
        let (kind, close) = sent(&mut outbox).await;
        assert_eq!(
            (kind.as_str(), close["reason"].as_str()),
            ("map_close", Some("done with you"))
        );
    }

    #[tokio::test]
    async fn a_piece_over_the_limit_is_refused_and_opens_nothing() {
        let (relay, mut outbox) = relay();
        let mut scheduler = relay.attach("tok");
        let big = vec![0u8; MAP_PIECE_BYTES as usize + 1];
        relay.receive(Bytes::from_static(b"e"), Some(1), &piece(7, &big));
        let (kind, close) = sent(&mut outbox).await;
        assert_eq!(kind, "map_close");
        assert_eq!(
            close["reason"],
            format!(
                "a piece of {} bytes, over the limit of {MAP_PIECE_BYTES}",
                big.len()
            )
        );
        assert!(scheduler.try_recv().is_err());
    }

    #[tokio::test]
    async fn bytes_past_the_window_end_the_stream() {
        let (relay, mut outbox) = relay();
        // The scheduler takes the connection but reads nothing: no grant comes back.
        let mut scheduler = relay.attach("tok");
        let peer = Bytes::from_static(b"e");
        let mut full = vec![1u8; MAP_PIECE_BYTES as usize];
        full[..4].copy_from_slice(b"tok\n");
        let pieces = MAP_WINDOW_BYTES / MAP_PIECE_BYTES;
        for _ in 0..pieces + 1 {
            relay.receive(peer.clone(), Some(1), &piece(2, &full));
        }
        let _held = scheduler.recv().await;
        let mut reason = None;
        while reason.is_none() {
            let (kind, content) = sent(&mut outbox).await;
            if kind == "map_close" {
                reason = content["reason"].as_str().map(str::to_owned);
            }
        }
        assert!(
            reason
                .as_deref()
                .is_some_and(|r| r.contains("bytes sent that the hub had not granted")),
            "{reason:?}"
        );
    }

    #[tokio::test]
    async fn strangers_and_streams_without_a_map_are_refused() {
        let (relay, mut outbox) = relay();
        relay.receive(Bytes::from_static(b"nobody"), None, &piece(1, b"x"));
        relay.receive(Bytes::from_static(b"e"), Some(1), &piece(1, b"x"));
        let (kind, close) = sent(&mut outbox).await;
        assert_eq!(
            (kind.as_str(), close["reason"].as_str()),
            ("map_close", Some("no %pxmap or API call is running"))
        );
        assert!(
            outbox.try_recv().is_err(),
            "a stranger is not even answered"
        );
    }

    #[tokio::test]
    async fn a_stream_with_a_token_no_server_holds_is_closed_with_the_reason() {
        let (relay, mut outbox) = relay();
        let mut scheduler = relay.attach("tok");
        relay.receive(Bytes::from_static(b"e"), Some(1), &piece(4, b"guess\nrest"));
        let mut close = None;
        while close.is_none() {
            let (kind, content) = sent(&mut outbox).await;
            if kind == "map_close" {
                close = Some(content);
            }
        }
        let close = close.unwrap();
        assert_eq!(close["stream"], 4);
        assert_eq!(
            close["reason"],
            "a connection whose token no running %pxmap or API call holds"
        );
        assert!(scheduler.try_recv().is_err(), "no server was given it");
    }

    #[tokio::test]
    async fn an_engine_may_hold_only_a_few_streams() {
        let (relay, mut outbox) = relay();
        let _scheduler = relay.attach("tok");
        for stream in 0..=MAX_STREAMS_PER_ENGINE as u64 {
            relay.receive(Bytes::from_static(b"e"), Some(1), &piece(stream, b"x"));
        }
        let mut reason = None;
        while reason.is_none() {
            let (kind, content) = sent(&mut outbox).await;
            if kind == "map_close" {
                reason = content["reason"].as_str().map(str::to_owned);
            }
        }
        assert_eq!(
            reason.as_deref(),
            Some(
                format!("engine 1 has {MAX_STREAMS_PER_ENGINE} map connections open already")
                    .as_str()
            )
        );
    }
}
