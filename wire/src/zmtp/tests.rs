use std::path::PathBuf;

use bytes::Bytes;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use super::decoder::{Decoded, Decoder};
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
    // A frame over 64 KiB is written from its own buffer, between the others' headers.
    let large = Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    let sent = vec![
        Bytes::from_static(b"<IDS|MSG>"),
        Bytes::new(),
        large,
        long.clone(),
    ];
    dealer
        .send(sent.clone(), std::time::Duration::from_secs(10))
        .await
        .unwrap();
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

/// The READY command of a ROUTER, framed.
fn router_ready() -> Vec<u8> {
    let mut body = vec![5];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&6u32.to_be_bytes());
    body.extend_from_slice(b"ROUTER");
    let mut out = Vec::new();
    put_frame(&mut out, COMMAND, &body);
    out
}

/// A peer that greets and readies like a ROUTER, then writes `then`.
async fn fake_router(path: PathBuf, then: Vec<u8>) {
    let listener = UnixListener::bind(&path).unwrap();
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut greeting_in = [0u8; GREETING_BYTES];
    stream.read_exact(&mut greeting_in).await.unwrap();
    let mut out = greeting();
    out.extend_from_slice(&router_ready());
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
    let router = router_ready();
    assert!(check_ready(&router[2..]).is_ok());
    let dealer = ready(b"x");
    assert!(check_ready(&dealer[2..]).is_err());
    assert!(check_ready(&dealer[2..10]).is_err(), "truncated");
}

/// The peer's bytes for `messages`, framed as a ROUTER frames them.
fn framed(messages: &[Vec<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::new();
    for frames in messages {
        let last = frames.len() - 1;
        for (index, frame) in frames.iter().enumerate() {
            put_frame(&mut out, if index < last { MORE } else { 0 }, frame);
        }
    }
    out
}

/// Feeds `bytes` to a decoder in pieces ending at `cuts`, taking every whole message after each
/// piece, as the dealer does after each read.
fn decode_in_pieces(
    bytes: &[u8],
    cuts: &[usize],
    max_frame_bytes: u64,
) -> Result<Vec<Vec<Bytes>>, ZmtpError> {
    let mut decoder = Decoder::new(max_frame_bytes);
    let mut ends: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    let mut from = 0;
    let mut out = Vec::new();
    for end in ends {
        decoder.room().extend_from_slice(&bytes[from..end]);
        from = end;
        while let Some(decoded) = decoder.next()? {
            match decoded {
                Decoded::Message(frames) => out.push(frames),
                Decoded::Command(_) => panic!("no command was sent"),
            }
        }
    }
    assert_eq!(decoder.buffered(), 0, "every byte was taken");
    Ok(out)
}

fn message() -> impl Strategy<Value = Vec<Vec<u8>>> {
    // Frames short and long (over 255 bytes is ZMTP's long form), empty ones included.
    let frame = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8),
        prop::collection::vec(any::<u8>(), 250..300),
    ];
    prop::collection::vec(frame, 1..6)
}

proptest! {
    #[test]
    fn messages_come_back_whole_however_the_reads_split_them(
        messages in prop::collection::vec(message(), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let bytes = framed(&messages);
        let decoded = decode_in_pieces(&bytes, &cuts, 1 << 20).unwrap();
        let expected: Vec<Vec<Bytes>> = messages
            .into_iter()
            .map(|frames| frames.into_iter().map(Bytes::from).collect())
            .collect();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn no_message_comes_out_of_a_cut_short_stream(
        frames in message(),
        cut in any::<usize>(),
    ) {
        let bytes = framed(&[frames]);
        let short = &bytes[..cut % bytes.len()];
        let mut decoder = Decoder::new(1 << 20);
        decoder.room().extend_from_slice(short);
        prop_assert_eq!(decoder.next().unwrap(), None);
        prop_assert_eq!(decoder.buffered(), short.len(), "nothing taken from a partial message");
    }

    #[test]
    fn any_bytes_give_messages_an_error_or_a_wait_never_a_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        max_frame_bytes in 0u64..400,
    ) {
        let mut decoder = Decoder::new(max_frame_bytes);
        let mut ends: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
        ends.push(bytes.len());
        ends.sort_unstable();
        let mut from = 0;
        let mut taken = 0usize;
        'feed: for end in ends {
            decoder.room().extend_from_slice(&bytes[from..end]);
            from = end;
            loop {
                let before = decoder.buffered();
                match decoder.next() {
                    Ok(Some(Decoded::Message(frames))) => {
                        for frame in &frames {
                            prop_assert!(frame.len() as u64 <= max_frame_bytes);
                        }
                        prop_assert!(frames.len() <= MAX_FRAMES);
                        taken += before - decoder.buffered();
                    }
                    Ok(Some(Decoded::Command(body))) => {
                        prop_assert!(body.len() as u64 <= MAX_COMMAND_BYTES);
                        // Parsing a command from the peer never panics either.
                        let _ = check_ready(&body);
                        taken += before - decoder.buffered();
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
        prop_assert!(taken <= bytes.len());
    }

    #[test]
    fn any_greeting_is_checked_without_a_panic(theirs in prop::collection::vec(any::<u8>(), GREETING_BYTES)) {
        let _ = check_greeting(&theirs);
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_its_body_arrives(
        limit in 0u64..100_000,
        over in 1u64..(u64::MAX / 2),
        more in any::<bool>(),
    ) {
        let size = limit.saturating_add(over);
        let mut header = vec![LONG | if more { MORE } else { 0 }];
        header.extend_from_slice(&size.to_be_bytes());
        let mut decoder = Decoder::new(limit);
        decoder.room().extend_from_slice(&header);
        let refused = matches!(decoder.next(), Err(ZmtpError::FrameTooLarge(s, l)) if s == size && l == limit);
        prop_assert!(refused);
        prop_assert!(decoder.room().capacity() < 8 << 20, "no room was made for the announced body");
    }
}

#[test]
fn a_message_of_the_most_frames_trickled_in_a_frame_at_a_time_comes_out_whole() {
    // 65,536 empty frames fed two bytes (one frame) at a time. Each header is parsed once, so
    // this takes milliseconds; parsing from the message's start on each piece, as the first
    // version did, took about 2 billion header reads.
    let frames = vec![Vec::new(); MAX_FRAMES];
    let bytes = framed(&[frames]);
    let mut decoder = Decoder::new(1 << 20);
    let mut decoded = None;
    for piece in bytes.chunks(2) {
        decoder.room().extend_from_slice(piece);
        if let Some(message) = decoder.next().unwrap() {
            decoded = Some(message);
        }
    }
    match decoded {
        Some(Decoded::Message(frames)) => assert_eq!(frames.len(), MAX_FRAMES),
        other => panic!("expected one message of {MAX_FRAMES} frames, got {other:?}"),
    }
}
