//! Property tests of the wire decoder: arbitrary frames never panic it, a tampered signed
//! message is always refused, and an encoded message always decodes back.
//!
//! A longer run: `PROPTEST_CASES=200000 cargo test --release -p rustpx-wire --test fuzz_frames`

use bytes::Bytes;
use proptest::prelude::*;
use rustpx_wire::{
    decode, decode_sealed, encode, encode_sealed, LinkCipher, Signer, WireError, WireMessage,
    DELIMITER,
};

fn signer() -> Signer {
    Signer::new("hmac-sha256", "fuzz-key").unwrap()
}

fn cipher() -> LinkCipher {
    LinkCipher::from_link_key("fuzz-key")
}

fn frames_from(parts: Vec<Vec<u8>>) -> Option<Vec<Bytes>> {
    Some(parts.into_iter().map(Bytes::from).collect())
}

proptest! {
    #[test]
    fn arbitrary_frames_never_panic(parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..10)) {
        if let Some(message) = frames_from(parts) {
            let _ = decode(message, &signer());
        }
    }

    #[test]
    fn frames_around_a_delimiter_never_panic(
        before in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 0..3),
        after in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
    ) {
        let mut parts = before;
        parts.push(DELIMITER.to_vec());
        parts.extend(after);
        if let Some(message) = frames_from(parts) {
            let _ = decode(message, &signer());
        }
    }

    #[test]
    fn encode_then_decode_is_the_identity(text in "\\PC{0,100}", msg_type in "[a-z_]{1,20}") {
        let message = WireMessage::new(&msg_type, "session", serde_json::json!({"text": text}));
        let decoded = decode(encode(&message, &signer()), &signer()).unwrap();
        prop_assert_eq!(decoded.content, message.content);
        prop_assert_eq!(decoded.header.msg_type, msg_type);
    }

    #[test]
    fn any_change_to_a_signed_frame_is_refused(index in 2usize..6, byte in any::<u8>(), at in 0usize..8) {
        let message = WireMessage::new("execute_request", "s", serde_json::json!({"code": "1+1"}));
        let mut parts = encode(&message, &signer());
        let mut frame = parts[index].to_vec();
        let position = at % frame.len().max(1);
        if frame.is_empty() {
            frame.push(byte);
        } else if frame[position] == byte {
            frame[position] = byte.wrapping_add(1);
        } else {
            frame[position] = byte;
        }
        parts[index] = Bytes::from(frame);
        let result = decode(parts, &signer());
        prop_assert!(matches!(result, Err(WireError::BadSignature)), "{:?}", result.err());
    }

    #[test]
    fn arbitrary_buffers_after_a_signed_sealed_message_never_open(
        buffers in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..96), 1..4),
    ) {
        // Buffers are not signed: anyone on the path can replace them, and the cipher must refuse
        // them without panicking.
        let message = WireMessage::new("push_request", "s", serde_json::json!({}));
        let mut frames = encode_sealed(&message, &signer(), &cipher());
        frames.extend(buffers.into_iter().map(Bytes::from));
        let sealed = decode_sealed(frames, &signer()).unwrap();
        prop_assert!(matches!(sealed.open(&cipher()), Err(WireError::Sealed(_))));
    }

    #[test]
    fn sealed_messages_round_trip(text in "\\PC{0,100}", buffer in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut message = WireMessage::new("run_request", "s", serde_json::json!({"text": text}));
        message.buffers = vec![Bytes::from(buffer)];
        let opened = decode_sealed(encode_sealed(&message, &signer(), &cipher()), &signer())
            .unwrap()
            .open(&cipher())
            .unwrap();
        prop_assert_eq!(opened.content, message.content);
        prop_assert_eq!(opened.buffers, message.buffers);
    }
}
