use std::path::PathBuf;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use super::*;

/// A fresh directory for one test's socket.
fn socket_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rustpx-zmtp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).unwrap();
    dir.join(name)
}

#[tokio::test]
async fn a_libzmq_router_and_the_dealer_exchange_multipart_messages_both_ways() {
    let path = socket_path("router.sock");
    let context = zmq::Context::new();
    let router = context.socket(zmq::ROUTER).unwrap();
    router.bind(&format!("ipc://{}", path.display())).unwrap();
    let mut dealer = ZmtpDealer::connect(&path, b"engine-session", 1 << 20)
        .await
        .unwrap();

    let long = Bytes::from(vec![7u8; 300]);
    let sent = vec![Bytes::from_static(b"<IDS|MSG>"), Bytes::new(), long.clone()];
    dealer.send(sent.clone()).await.unwrap();
    let received = tokio::task::spawn_blocking(move || {
        let frames = router.recv_multipart(0).unwrap();
        (router, frames)
    })
    .await
    .unwrap();
    let (router, frames) = received;
    assert_eq!(
        frames[0], b"engine-session",
        "the ROUTER knows the identity"
    );
    let rest: Vec<Bytes> = frames[1..].iter().cloned().map(Bytes::from).collect();
    assert_eq!(rest, sent);

    let big = vec![9u8; 100_000];
    router
        .send_multipart([&b"engine-session"[..], b"short", &big], 0)
        .unwrap();
    router
        .send_multipart([&b"engine-session"[..], b"second"], 0)
        .unwrap();
    let first = dealer.recv().await.unwrap();
    assert_eq!(first, vec![Bytes::from_static(b"short"), Bytes::from(big)]);
    assert_eq!(
        dealer.recv().await.unwrap(),
        vec![Bytes::from_static(b"second")]
    );
}

/// A peer that greets and readies like a ROUTER, then writes `then`.
async fn fake_router(path: PathBuf, then: Vec<u8>) {
    let listener = UnixListener::bind(&path).unwrap();
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut greeting_in = [0u8; GREETING_BYTES];
    stream.read_exact(&mut greeting_in).await.unwrap();
    let mut out = greeting();
    let mut body = vec![5];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&6u32.to_be_bytes());
    body.extend_from_slice(b"ROUTER");
    put_frame(&mut out, COMMAND, &body);
    out.extend_from_slice(&then);
    stream.write_all(&out).await.unwrap();
    // Keep the connection open until the dealer gives up.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
}

#[tokio::test]
async fn a_frame_announced_over_the_limit_ends_the_connection_before_it_is_read() {
    let path = socket_path("liar.sock");
    // 2^62 bytes announced, none sent: nothing may be allocated for it.
    let mut frame = vec![LONG];
    frame.extend_from_slice(&(1u64 << 62).to_be_bytes());
    tokio::spawn(fake_router(path.clone(), frame));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut dealer = ZmtpDealer::connect(&path, b"me", 1 << 20).await.unwrap();
    let error = dealer.recv().await.unwrap_err();
    assert!(
        matches!(error, ZmtpError::FrameTooLarge(size, limit) if size == 1 << 62 && limit == 1 << 20),
        "{error}"
    );
}

#[tokio::test]
async fn an_endless_message_of_empty_frames_is_cut_off() {
    let path = socket_path("frames.sock");
    let frames: Vec<u8> = std::iter::repeat_n([MORE, 0], MAX_FRAMES + 1)
        .flatten()
        .collect();
    tokio::spawn(fake_router(path.clone(), frames));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut dealer = ZmtpDealer::connect(&path, b"me", 1 << 20).await.unwrap();
    let error = dealer.recv().await.unwrap_err();
    assert!(matches!(error, ZmtpError::TooManyFrames), "{error}");
}

#[tokio::test]
async fn a_peer_that_is_not_zmtp_is_refused_at_the_greeting() {
    let path = socket_path("http.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let reply = format!("HTTP/1.1 200 OK\r\n{}", " ".repeat(64));
        let _ = stream.write_all(reply.as_bytes()).await;
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    let error = match ZmtpDealer::connect(&path, b"me", 1 << 20).await {
        Ok(_) => panic!("connected to an HTTP server"),
        Err(error) => error,
    };
    assert!(matches!(error, ZmtpError::Handshake(_)), "{error}");
}

#[test]
fn the_ready_command_of_a_router_passes_and_of_a_dealer_does_not() {
    let router = {
        let mut out = Vec::new();
        let mut body = vec![5];
        body.extend_from_slice(b"READY");
        body.push(11);
        body.extend_from_slice(b"Socket-Type");
        body.extend_from_slice(&6u32.to_be_bytes());
        body.extend_from_slice(b"ROUTER");
        put_frame(&mut out, COMMAND, &body);
        out
    };
    assert!(check_ready(&router[2..]).is_ok());
    let dealer = ready(b"x");
    assert!(check_ready(&dealer[2..]).is_err());
    assert!(check_ready(&dealer[2..10]).is_err(), "truncated");
}
