//! The hub's link in process, driven by raw signed frames from a real ZeroMQ DEALER: what an
//! engine (or an attacker on the network) sends, and what the hub does with it.

use std::time::Duration;

use bytes::Bytes;
use rustpx_protocol::{to_wire, EngineConnection, RegisterReply, RegisterRequest};
use rustpx_wire::{
    decode_sealed, encode, encode_sealed, LinkCipher, Sequencer, Signer, SocketOptions, SocketType,
    WireMessage, ZmqSocket,
};
use tokio::sync::mpsc::unbounded_channel;

use super::start;
use crate::px::hub::HubHandle;
use crate::px::hub_address::HubAddress;

/// A hub served on loopback, and what an engine needs to reach it.
async fn hub() -> (HubHandle, EngineConnection) {
    let (outbox, outgoing) = unbounded_channel();
    let hub = HubHandle::new(outbox);
    let address = HubAddress {
        bind: "127.0.0.1".into(),
        location: "127.0.0.1".into(),
    };
    let connection = start(&address, hub.clone(), outgoing, |_| {})
        .await
        .expect("the hub binds on loopback");
    (hub, connection)
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
