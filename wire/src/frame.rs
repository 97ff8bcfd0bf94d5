//! `<IDS|MSG>` framing: between a list of ZeroMQ frames and a [`WireMessage`].

use crate::{SeenSignatures, Signer, WireError, WireMessage};
use bytes::Bytes;
use jupyter_protocol::Header;
use serde_json::Value;

/// The frame that separates routing identities from the message.
pub const DELIMITER: &[u8] = b"<IDS|MSG>";

/// Serialises `message` into frames, signing it with `signer`.
pub fn encode(message: &WireMessage, signer: &Signer) -> Vec<Bytes> {
    signed_frames(
        &message.identities,
        json_frames(message),
        message.buffers.iter().cloned(),
        signer,
    )
}

/// Splits frames into a message, verifying the signature before any JSON is parsed.
pub fn decode(frames: Vec<Bytes>, signer: &Signer) -> Result<WireMessage, WireError> {
    decode_signed(frames, signer).map(|(message, _)| message)
}

/// As [`decode`], and refuses a message whose signature `seen` has accepted before (a replay).
/// The signature is recorded only once it has been verified.
pub fn decode_once(
    frames: Vec<Bytes>,
    signer: &Signer,
    seen: &mut SeenSignatures,
) -> Result<WireMessage, WireError> {
    let (message, signature) = decode_signed(frames, signer)?;
    seen.first_time(&signature)?;
    Ok(message)
}

fn decode_signed(frames: Vec<Bytes>, signer: &Signer) -> Result<(WireMessage, Bytes), WireError> {
    let parts = Parts::verified(frames, signer)?;
    let (header, parent_header, metadata) = parts.envelope()?;
    let content = parse_json(&parts.content, "content")?;
    let message = WireMessage {
        identities: parts.identities,
        header,
        parent_header,
        metadata,
        content,
        buffers: parts.buffers,
    };
    Ok((message, parts.signature))
}

/// The frames of one message, split at the delimiter, before any JSON is read.
pub(crate) struct Parts {
    pub identities: Vec<Bytes>,
    pub signature: Bytes,
    pub header: Bytes,
    pub parent: Bytes,
    pub metadata: Bytes,
    pub content: Bytes,
    pub buffers: Vec<Bytes>,
}

impl Parts {
    /// Splits `frames` and checks the signature over header, parent header, metadata and content
    /// (buffers are not signed, as the specification says).
    pub fn verified(mut frames: Vec<Bytes>, signer: &Signer) -> Result<Parts, WireError> {
        let delimiter = frames
            .iter()
            .position(|f| f.as_ref() == DELIMITER)
            .ok_or(WireError::MissingDelimiter(frames.len()))?;
        let after = frames.len() - delimiter - 1;
        if after < 5 {
            return Err(WireError::TooFewFrames(after));
        }
        let mut rest = frames.split_off(delimiter + 1);
        frames.pop(); // the delimiter
        let buffers = rest.split_off(5);
        let [signature, header, parent, metadata, content]: [Bytes; 5] = rest
            .try_into()
            .map_err(|v: Vec<Bytes>| WireError::TooFewFrames(v.len()))?;
        signer.verify(&[&header, &parent, &metadata, &content], &signature)?;
        Ok(Parts {
            identities: frames,
            signature,
            header,
            parent,
            metadata,
            content,
            buffers,
        })
    }

    /// The header, parent header (`None` for `{}`) and metadata, parsed.
    pub fn envelope(&self) -> Result<(Header, Option<Header>, Value), WireError> {
        let header = parse_json(&self.header, "header")?;
        let parent_value: Value = parse_json(&self.parent, "parent header")?;
        // An empty object means "no parent".
        let parent_header =
            match &parent_value {
                Value::Object(map) if map.is_empty() => None,
                _ => Some(serde_json::from_value(parent_value).map_err(|source| {
                    WireError::BadJson {
                        part: "parent header",
                        source,
                    }
                })?),
            };
        let metadata = parse_json(&self.metadata, "metadata")?;
        Ok((header, parent_header, metadata))
    }
}

/// `bytes` as JSON of type `T`, or why not, naming the `part` of the message.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    part: &'static str,
) -> Result<T, WireError> {
    serde_json::from_slice(bytes).map_err(|source| WireError::BadJson { part, source })
}

/// The JSON frames of `message`: header, parent header (`{}` for none), metadata and content.
pub(crate) fn json_frames(message: &WireMessage) -> [Vec<u8>; 4] {
    // Serialising these JSON values cannot fail: they are already `Value`s or plain structs.
    let header = serde_json::to_vec(&message.header).unwrap_or_default();
    let parent = match &message.parent_header {
        Some(parent) => serde_json::to_vec(parent).unwrap_or_default(),
        None => b"{}".to_vec(),
    };
    let metadata = serde_json::to_vec(&message.metadata).unwrap_or_default();
    let content = serde_json::to_vec(&message.content).unwrap_or_default();
    [header, parent, metadata, content]
}

/// The frames of a message whose four JSON parts (the last possibly sealed) are given, signed.
pub(crate) fn signed_frames(
    identities: &[Bytes],
    [header, parent, metadata, content]: [Vec<u8>; 4],
    buffers: impl IntoIterator<Item = Bytes>,
    signer: &Signer,
) -> Vec<Bytes> {
    let signature = signer.sign(&[&header, &parent, &metadata, &content]);
    let mut frames: Vec<Bytes> = identities.to_vec();
    frames.push(Bytes::from_static(DELIMITER));
    frames.push(Bytes::from(signature));
    frames.push(Bytes::from(header));
    frames.push(Bytes::from(parent));
    frames.push(Bytes::from(metadata));
    frames.push(Bytes::from(content));
    frames.extend(buffers);
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn signer() -> Signer {
        Signer::new("hmac-sha256", "test-key").unwrap()
    }

    #[test]
    fn a_message_survives_encode_then_decode() {
        let mut message = WireMessage::new("execute_request", "s1", json!({"code": "1+1"}));
        message.identities = vec![Bytes::from_static(b"client-a")];
        message.buffers = vec![Bytes::from_static(b"raw")];
        let decoded = decode(encode(&message, &signer()), &signer()).unwrap();
        assert_eq!(decoded.identities, message.identities);
        assert_eq!(decoded.header.msg_id, message.header.msg_id);
        assert_eq!(decoded.content, json!({"code": "1+1"}));
        assert!(decoded.parent_header.is_none());
        assert_eq!(decoded.buffers, message.buffers);
    }

    #[test]
    fn a_reply_carries_its_parent_and_identities() {
        let mut request = WireMessage::new("kernel_info_request", "s1", json!({}));
        request.identities = vec![Bytes::from_static(b"peer")];
        let reply = WireMessage::reply_to(&request, "kernel_info_reply", json!({}));
        let decoded = decode(encode(&reply, &signer()), &signer()).unwrap();
        assert_eq!(decoded.parent_id(), request.header.msg_id);
        assert_eq!(decoded.identities, request.identities);
        assert_eq!(decoded.header.session, "s1");
    }

    #[test]
    fn a_message_signed_with_another_key_is_refused() {
        let message = WireMessage::new("x", "s", json!({}));
        let other = Signer::new("hmac-sha256", "wrong").unwrap();
        assert!(matches!(
            decode(encode(&message, &other), &signer()),
            Err(WireError::BadSignature)
        ));
    }

    #[test]
    fn a_tampered_content_frame_is_refused() {
        let message = WireMessage::new("x", "s", json!({"a": 1}));
        let mut frames = encode(&message, &signer());
        let last = frames.len() - 1;
        frames[last] = Bytes::from_static(b"{\"a\":2}");
        assert!(matches!(
            decode(frames, &signer()),
            Err(WireError::BadSignature)
        ));
    }

    #[test]
    fn the_same_signed_frames_are_taken_once() {
        let frames = encode(&WireMessage::new("x", "s", json!({})), &signer());
        let mut seen = SeenSignatures::default();
        assert!(decode_once(frames.clone(), &signer(), &mut seen).is_ok());
        assert!(matches!(
            decode_once(frames, &signer(), &mut seen),
            Err(WireError::Replayed)
        ));
    }

    #[test]
    fn malformed_frame_sets_are_refused_with_a_reason() {
        let no_delim = vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")];
        assert!(matches!(
            decode(no_delim, &signer()),
            Err(WireError::MissingDelimiter(2))
        ));
        let short = vec![Bytes::from_static(DELIMITER), Bytes::from_static(b"sig")];
        assert!(matches!(
            decode(short, &signer()),
            Err(WireError::TooFewFrames(1))
        ));
        let unsigned = Signer::new("hmac-sha256", "").unwrap();
        let bad_json = vec![
            Bytes::from_static(DELIMITER),
            Bytes::new(),
            Bytes::from_static(b"not json"),
            Bytes::from_static(b"{}"),
            Bytes::from_static(b"{}"),
            Bytes::from_static(b"{}"),
        ];
        assert!(matches!(
            decode(bad_json, &unsigned),
            Err(WireError::BadJson { part: "header", .. })
        ));
    }
}
