//! The hub's link in process, driven by raw signed frames from a real ZeroMQ DEALER: what an
//! engine (or an attacker on the network) sends, and what the hub does with it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use rustpx_protocol::{to_wire, EngineConnection, RegisterReply, RegisterRequest};
use rustpx_wire::{
    decode_sealed, encode, encode_sealed, LinkCipher, Sequencer, Signer, SocketOptions, SocketType,
    WireMessage, ZmqSocket,
};
use tokio::sync::mpsc::unbounded_channel;

use super::start_in;
use crate::px::hub::HubHandle;
use crate::px::hub_address::HubAddress;

/// A hub served on loopback, and what an engine needs to reach it; its Unix socket is in a
/// private directory of the test's own (removed when the guard drops).
async fn hub() -> (HubHandle, EngineConnection) {
    let (hub, connection, _dir) = hub_in(None).await;
    (hub, connection)
}

/// A hub whose Unix socket is in `private`, or in a fresh 0700 directory of this test's; the
/// directory is removed when the returned guard drops.
async fn hub_in(private: Option<&Path>) -> (HubHandle, EngineConnection, DirGuard) {
    let fresh = DirGuard::new();
    let (outbox, outgoing) = unbounded_channel();
    let hub = HubHandle::new(outbox);
    let address = HubAddress {
        bind: "127.0.0.1".into(),
        location: "127.0.0.1".into(),
    };
    let dir = private.unwrap_or(&fresh.0);
    let connection = start_in(&address, Some(dir), hub.clone(), outgoing, |_| {})
        .await
        .expect("the hub binds on loopback");
    (hub, connection, fresh)
}

/// A 0700 directory under the system's temporary one, removed on drop.
struct DirGuard(PathBuf);

impl DirGuard {
    fn new() -> DirGuard {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!(
            "rustpx-linktest-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .expect("a private test directory");
        DirGuard(path)
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `connection`, dialling the hub's Unix socket as the engines the kernel starts do.
fn over_ipc(connection: &EngineConnection) -> EngineConnection {
    let mut local = connection.clone();
    local.url = connection
        .local_url
        .clone()
        .expect("the hub listens on a Unix socket too");
    assert!(local.url.starts_with("ipc://"), "{}", local.url);
    local
}

/// A peer dialling the hub with `session` as its identity, as engines do.
fn peer(connection: &EngineConnection, session: &str) -> ZmqSocket {
    let options = SocketOptions {
        identity: Some(session.as_bytes().to_vec()),
        ..SocketOptions::limited_to(1 << 20)
    };
    ZmqSocket::connect(SocketType::DEALER, &connection.url, &options).expect("dial the hub")
}

fn registration(session: &str, numbering: &mut Sequencer) -> WireMessage {
    let request = RegisterRequest {
        requested_id: None,
        pid: std::process::id(),
        hostname: "test".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        platform: rustpx_protocol::this_platform(),
        shares_files: true,
        link_version: rustpx_protocol::LINK_VERSION,
    };
    let mut message = to_wire(session, &request);
    numbering.stamp(&mut message);
    message
}

/// The next message the hub sends `socket`, if one comes within `wait`.
async fn reply(socket: &mut ZmqSocket, keys: &Keys, wait: Duration) -> Option<WireMessage> {
    let frames = tokio::time::timeout(wait, socket.recv()).await.ok()?.ok()?;
    let sealed = decode_sealed(frames, &keys.signer).expect("the hub signs what it sends");
    Some(
        sealed
            .open(&keys.cipher)
            .expect("the hub seals what it sends"),
    )
}

/// What an engine signs and seals with, from the connection's secret.
struct Keys {
    signer: Signer,
    cipher: LinkCipher,
}

impl Keys {
    fn frames(&self, message: &WireMessage) -> Vec<Bytes> {
        encode_sealed(message, &self.signer, &self.cipher)
    }
}

fn keys(connection: &EngineConnection) -> Keys {
    Keys {
        signer: Signer::new(&connection.signature_scheme, &connection.key).expect("a valid key"),
        cipher: LinkCipher::from_link_key(&connection.key),
    }
}

const ANSWER: Duration = Duration::from_secs(5);
const SILENCE: Duration = Duration::from_millis(500);

#[tokio::test]
async fn a_signed_registration_is_answered_with_an_id() {
    let (hub, connection) = hub().await;
    let keys = keys(&connection);
    let mut engine = peer(&connection, "engine-a");
    let request = registration("engine-a", &mut Sequencer::default());
    engine.send(keys.frames(&request)).await.unwrap();

    let answer = reply(&mut engine, &keys, ANSWER).await.expect("a reply");
    assert_eq!(answer.msg_type(), "register_reply");
    let content: RegisterReply = serde_json::from_value(answer.content).unwrap();
    assert_eq!(content.refused, None);
    let id = content.engine_id.expect("an engine id");
    assert_eq!(hub.live_ids(), vec![id]);
}

#[tokio::test]
async fn a_wrongly_signed_registration_is_dropped_and_the_hub_serves_on() {
    let (hub, connection) = hub().await;
    let keys = keys(&connection);
    let forger = Keys {
        signer: Signer::new("hmac-sha256", "not-the-key").unwrap(),
        cipher: LinkCipher::from_link_key("not-the-key"),
    };
    let mut engine = peer(&connection, "engine-b");
    let mut numbering = Sequencer::default();
    let forged = registration("engine-b", &mut numbering);
    engine.send(forger.frames(&forged)).await.unwrap();
    assert!(reply(&mut engine, &keys, SILENCE).await.is_none());
    assert!(hub.live_ids().is_empty());

    let genuine = registration("engine-b", &mut numbering);
    engine.send(keys.frames(&genuine)).await.unwrap();
    assert!(reply(&mut engine, &keys, ANSWER).await.is_some());
    assert_eq!(hub.live_ids().len(), 1);
}

#[tokio::test]
async fn a_replayed_registration_registers_nobody() {
    let (hub, connection) = hub().await;
    let keys = keys(&connection);
    let mut engine = peer(&connection, "engine-c");
    let frames = keys.frames(&registration("engine-c", &mut Sequencer::default()));
    engine.send(frames.clone()).await.unwrap();
    assert!(reply(&mut engine, &keys, ANSWER).await.is_some());

    // The same signed frames again, byte for byte: the number is taken.
    engine.send(frames).await.unwrap();
    assert!(reply(&mut engine, &keys, SILENCE).await.is_none());
    assert_eq!(hub.live_ids().len(), 1);
}

#[tokio::test]
async fn a_message_signed_for_another_session_is_dropped() {
    let (hub, connection) = hub().await;
    let keys = keys(&connection);
    // Correctly signed, but the header names a session that is not this connection's identity
    // (a registration captured from another engine's connection).
    let mut thief = peer(&connection, "thief");
    let captured = registration("engine-d", &mut Sequencer::default());
    thief.send(keys.frames(&captured)).await.unwrap();
    assert!(reply(&mut thief, &keys, SILENCE).await.is_none());
    assert!(hub.live_ids().is_empty());
}

#[tokio::test]
async fn a_signed_but_unsealed_registration_is_dropped() {
    // Right signing key, plain content (what an engine from before the link was sealed sends):
    // the link has no plain mode, so it registers nobody, and a sealed one still does.
    let (hub, connection) = hub().await;
    let keys = keys(&connection);
    let mut engine = peer(&connection, "engine-e");
    let mut numbering = Sequencer::default();
    let plain = registration("engine-e", &mut numbering);
    engine.send(encode(&plain, &keys.signer)).await.unwrap();
    assert!(reply(&mut engine, &keys, SILENCE).await.is_none());
    assert!(hub.live_ids().is_empty());

    let sealed = registration("engine-e", &mut numbering);
    engine.send(keys.frames(&sealed)).await.unwrap();
    assert!(reply(&mut engine, &keys, ANSWER).await.is_some());
    assert_eq!(hub.live_ids().len(), 1);
}

#[tokio::test]
async fn the_unix_socket_is_in_a_directory_only_we_can_enter() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (_hub, connection, dir) = hub_in(None).await;
    let url = over_ipc(&connection).url;
    let path = Path::new(url.strip_prefix("ipc://").unwrap());
    assert_eq!(path.parent(), Some(dir.0.as_path()));
    let metadata = std::fs::metadata(&dir.0).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o700);
    assert_eq!(metadata.uid(), rustpx_protocol::user_dirs::my_uid());
    assert!(
        std::fs::symlink_metadata(path).is_ok(),
        "no socket at {url}"
    );
    // The blob engines elsewhere get never names it.
    let blob = serde_json::to_string(&connection).unwrap();
    assert!(!blob.contains("ipc://"), "{blob}");
}

#[tokio::test]
async fn a_directory_others_can_enter_gets_no_socket() {
    use std::os::unix::fs::PermissionsExt;
    let open = DirGuard::new();
    std::fs::set_permissions(&open.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_hub, connection, _dir) = hub_in(Some(&open.0)).await;
    assert_eq!(connection.local_url, None);
    assert!(connection.url.starts_with("tcp://"));
    assert!(!open.0.join(super::LOCAL_SOCKET).exists());
}

#[tokio::test]
async fn over_the_unix_socket_only_a_signed_and_sealed_registration_counts() {
    let (hub, connection, _dir) = hub_in(None).await;
    let local = over_ipc(&connection);
    let keys = keys(&connection);
    let mut engine = peer(&local, "engine-f");
    let mut numbering = Sequencer::default();
    // Unsigned (no key at all), then signed with another key, then signed but not sealed.
    let unsigned = Signer::new("hmac-sha256", "").unwrap();
    engine
        .send(encode(&registration("engine-f", &mut numbering), &unsigned))
        .await
        .unwrap();
    let forger = Keys {
        signer: Signer::new("hmac-sha256", "not-the-key").unwrap(),
        cipher: LinkCipher::from_link_key("not-the-key"),
    };
    engine
        .send(forger.frames(&registration("engine-f", &mut numbering)))
        .await
        .unwrap();
    engine
        .send(encode(
            &registration("engine-f", &mut numbering),
            &keys.signer,
        ))
        .await
        .unwrap();
    assert!(reply(&mut engine, &keys, SILENCE).await.is_none());
    assert!(hub.live_ids().is_empty());

    let genuine = registration("engine-f", &mut numbering);
    engine.send(keys.frames(&genuine)).await.unwrap();
    let answer = reply(&mut engine, &keys, ANSWER)
        .await
        .expect("a reply over ipc");
    assert_eq!(answer.msg_type(), "register_reply");
    assert_eq!(hub.live_ids().len(), 1);
}

#[tokio::test]
async fn a_replay_over_the_unix_socket_of_a_tcp_registration_registers_nobody() {
    // The same hub behind both: a message captured on one transport is as stale on the other.
    let (hub, connection, _dir) = hub_in(None).await;
    let keys = keys(&connection);
    let mut first = peer(&connection, "engine-g");
    let frames = keys.frames(&registration("engine-g", &mut Sequencer::default()));
    first.send(frames.clone()).await.unwrap();
    assert!(reply(&mut first, &keys, ANSWER).await.is_some());

    // The first connection goes; a new one over the Unix socket claims its identity and sends
    // the captured frames byte for byte.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut replayer = peer(&over_ipc(&connection), "engine-g");
    replayer.send(frames).await.unwrap();
    assert!(reply(&mut replayer, &keys, SILENCE).await.is_none());
    assert_eq!(hub.live_ids().len(), 1);
}
