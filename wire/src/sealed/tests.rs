use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::{decode, encode, CipherError, Sequencer};

fn signer() -> Signer {
    Signer::new("hmac-sha256", "link-secret").unwrap()
}

fn cipher() -> LinkCipher {
    LinkCipher::from_link_key("link-secret")
}

fn message() -> WireMessage {
    let mut message = WireMessage::new("run_request", "engine-a", json!({"code": "SECRET CELL"}));
    message.identities = vec![Bytes::from_static(b"engine-a")];
    message.buffers = vec![
        Bytes::from_static(b"SECRET VALUE"),
        Bytes::from_static(b"second buffer"),
    ];
    Sequencer::default().stamp(&mut message);
    message
}

fn contains(frames: &[Bytes], needle: &[u8]) -> bool {
    frames
        .iter()
        .any(|f| f.windows(needle.len()).any(|w| w == needle))
}

#[test]
fn a_sealed_message_round_trips() {
    let sent = message();
    let sealed = decode_sealed(encode_sealed(&sent, &signer(), &cipher()), &signer()).unwrap();
    assert_eq!(sealed.envelope().msg_type(), "run_request");
    assert_eq!(sealed.envelope().metadata["seq"], 1);
    assert_eq!(sealed.envelope().content, serde_json::Value::Null);
    let opened = sealed.open(&cipher()).unwrap();
    assert_eq!(opened.identities, sent.identities);
    assert_eq!(opened.header.msg_id, sent.header.msg_id);
    assert_eq!(opened.content, sent.content);
    assert_eq!(opened.buffers, sent.buffers);
    assert!(opened.parent_header.is_none());
}

#[test]
fn content_and_buffers_are_not_readable_on_the_wire() {
    let frames = encode_sealed(&message(), &signer(), &cipher());
    assert!(!contains(&frames, b"SECRET"));
    assert!(contains(&encode(&message(), &signer()), b"SECRET"));
    // A receiver of the plain framing cannot read the content either.
    assert!(matches!(
        decode(frames, &signer()),
        Err(WireError::BadJson {
            part: "content",
            ..
        })
    ));
}

#[test]
fn two_encodings_of_one_message_differ() {
    let sent = message();
    let (a, b) = (
        encode_sealed(&sent, &signer(), &cipher()),
        encode_sealed(&sent, &signer(), &cipher()),
    );
    // The header is the same; the sealed content and buffers (and so the signature) are not.
    let delimiter = a
        .iter()
        .position(|f| f.as_ref() == crate::DELIMITER)
        .unwrap();
    assert_eq!(a[delimiter + 2], b[delimiter + 2]);
    for i in [delimiter + 1, delimiter + 5, delimiter + 6, delimiter + 7] {
        assert_ne!(a[i], b[i], "frame {i}");
    }
}

#[test]
fn tampered_content_is_dropped_by_the_signature_before_decryption() {
    let mut frames = encode_sealed(&message(), &signer(), &cipher());
    let content = frames.len() - 3;
    let mut altered = frames[content].to_vec();
    altered[30] ^= 1;
    frames[content] = Bytes::from(altered);
    assert!(matches!(
        decode_sealed(frames, &signer()),
        Err(WireError::BadSignature)
    ));
}

#[test]
fn tampered_moved_or_missing_buffers_do_not_open() {
    let frames = encode_sealed(&message(), &signer(), &cipher());
    let last = frames.len() - 1;
    let open = |frames: Vec<Bytes>| decode_sealed(frames, &signer()).unwrap().open(&cipher());

    let mut tampered = frames.clone();
    let mut altered = tampered[last].to_vec();
    altered[30] ^= 1;
    tampered[last] = Bytes::from(altered);
    let mut swapped = frames.clone();
    swapped.swap(last, last - 1);
    let mut dropped = frames.clone();
    dropped.pop();
    let mut foreign = frames.clone();
    foreign[last] = encode_sealed(&message(), &signer(), &cipher())[last].clone();
    for (case, frames) in [
        ("tampered", tampered),
        ("swapped", swapped),
        ("dropped", dropped),
        ("foreign", foreign),
    ] {
        assert!(
            matches!(
                open(frames),
                Err(WireError::Sealed(CipherError::Unauthentic))
            ),
            "{case}"
        );
    }
}

#[test]
fn another_key_is_refused() {
    let frames = encode_sealed(&message(), &signer(), &cipher());
    let other = LinkCipher::from_link_key("another secret");
    let sealed = decode_sealed(frames, &signer()).unwrap();
    assert!(matches!(
        sealed.open(&other),
        Err(WireError::Sealed(CipherError::Unauthentic))
    ));
}

#[test]
fn truncated_frames_are_refused_without_panicking() {
    let frames = encode_sealed(&message(), &signer(), &cipher());
    // A truncated buffer (not signed): refused when opened.
    let last = frames.len() - 1;
    for len in [0, 5, 39, 40, frames[last].len() - 1] {
        let mut cut = frames.clone();
        cut[last] = frames[last].slice(..len);
        let result = decode_sealed(cut, &signer()).unwrap().open(&cipher());
        assert!(matches!(result, Err(WireError::Sealed(_))), "length {len}");
    }
    // A truncated signed frame: refused by the signature.
    let content = frames.len() - 3;
    let mut cut = frames.clone();
    cut[content] = frames[content].slice(..10);
    assert!(matches!(
        decode_sealed(cut, &signer()),
        Err(WireError::BadSignature)
    ));
    // Too few frames.
    assert!(matches!(
        decode_sealed(frames[..4].to_vec(), &signer()),
        Err(WireError::TooFewFrames(_))
    ));
}

#[test]
fn a_signed_but_unsealed_content_does_not_open() {
    // A peer with the signing key that sends plain content (an older engine) is refused.
    let frames = encode(&message(), &signer());
    let sealed = decode_sealed(frames, &signer()).unwrap();
    assert!(matches!(sealed.open(&cipher()), Err(WireError::Sealed(_))));
}

#[test]
fn a_carrying_message_seals_its_content_and_carries_its_buffers_as_they_are() {
    let original = message();
    let frames = encode_sealed_carrying(&original, &signer(), &cipher());
    // The buffers (already sealed frames of another message, in real use) are not sealed again;
    // the content is.
    assert!(contains(&frames, b"SECRET VALUE"));
    assert!(!contains(&frames, b"SECRET CELL"));
    let opened = decode_sealed(frames, &signer())
        .unwrap()
        .open_carrying(&cipher())
        .unwrap();
    assert_eq!(opened.content, original.content);
    assert_eq!(opened.buffers, original.buffers);
    // Opened as a fully sealed message, its plain buffers do not open.
    let frames = encode_sealed_carrying(&original, &signer(), &cipher());
    assert!(decode_sealed(frames, &signer())
        .unwrap()
        .open(&cipher())
        .is_err());
}
