//! Engine-link messages as they travel: signed like any Jupyter message, with the content and
//! every buffer sealed by the [`LinkCipher`].
//!
//! What is sealed is what says anything about the user's work: the content (cell sources, object
//! requests, outputs, errors) and the buffers (compiled cell objects, pushed and pulled values).
//! The header (message type, session, id, date) and the metadata (the sequence number) stay
//! readable, so that the receiver can check the signature, the sender's session and the number
//! before it decrypts anything: a tampered, forged or replayed message is dropped unopened.
//!
//! The signature covers the sealed content, as it covered the plain one. Buffers are not signed
//! (as on the Jupyter channels), but each sealed buffer is authenticated by its tag, with the
//! signed header, its position and the number of buffers as associated data: a buffer altered,
//! taken from another message, reordered or dropped does not open.

use bytes::Bytes;

use crate::cipher::LinkCipher;
use crate::frame::{json_frames, parse_json, signed_frames, Parts};
use crate::{Signer, WireError, WireMessage};

/// Serialises `message` into frames with its content and buffers sealed, then signs it.
pub fn encode_sealed(message: &WireMessage, signer: &Signer, cipher: &LinkCipher) -> Vec<Bytes> {
    encode(message, signer, cipher, true)
}

/// [`encode_sealed`] for a message whose buffers are parts of another message's sealed and
/// signed frames (a piece of a large message): only the content is sealed, and the buffers are
/// checked when that message is whole, by its own signature and seals. Sealing them again would
/// encrypt every large value twice on the way out and decrypt it twice on the way in.
pub fn encode_sealed_carrying(
    message: &WireMessage,
    signer: &Signer,
    cipher: &LinkCipher,
) -> Vec<Bytes> {
    encode(message, signer, cipher, false)
}

fn encode(
    message: &WireMessage,
    signer: &Signer,
    cipher: &LinkCipher,
    seal_buffers: bool,
) -> Vec<Bytes> {
    let [header, parent, metadata, content] = json_frames(message);
    let pieces = message.buffers.len() + 1;
    let content = cipher.seal(&content, &context(&header, 0, pieces));
    let buffers: Vec<Bytes> = message
        .buffers
        .iter()
        .enumerate()
        .map(|(i, buffer)| match seal_buffers {
            true => Bytes::from(cipher.seal(buffer, &context(&header, i + 1, pieces))),
            false => buffer.clone(),
        })
        .collect();
    signed_frames(
        &message.identities,
        [header, parent, metadata, content],
        buffers,
        signer,
    )
}

/// Checks the signature of a sealed message and reads its header and metadata; its content and
/// buffers stay sealed until [`SealedMessage::open`].
pub fn decode_sealed(frames: Vec<Bytes>, signer: &Signer) -> Result<SealedMessage, WireError> {
    let mut parts = Parts::verified(frames, signer)?;
    let (header, parent_header, metadata) = parts.envelope()?;
    let envelope = WireMessage {
        identities: std::mem::take(&mut parts.identities),
        header,
        parent_header,
        metadata,
        content: serde_json::Value::Null,
        buffers: Vec::new(),
    };
    Ok(SealedMessage { parts, envelope })
}

/// A signed engine-link message whose content and buffers are still sealed.
pub struct SealedMessage {
    parts: Parts,
    envelope: WireMessage,
}

impl SealedMessage {
    /// The message without its content (null) and buffers (none): what the receiver checks
    /// before decrypting (the sender's session, the sequence number).
    pub fn envelope(&self) -> &WireMessage {
        &self.envelope
    }

    /// The message of [`encode_sealed_carrying`]: its content decrypted, its buffers as they
    /// came (the caller checks them as parts of the message they carry).
    pub fn open_carrying(self, cipher: &LinkCipher) -> Result<WireMessage, WireError> {
        self.opened(cipher, false)
    }

    /// The whole message, content and buffers decrypted; an error if any piece does not open.
    pub fn open(self, cipher: &LinkCipher) -> Result<WireMessage, WireError> {
        self.opened(cipher, true)
    }

    fn opened(self, cipher: &LinkCipher, open_buffers: bool) -> Result<WireMessage, WireError> {
        let SealedMessage {
            parts,
            mut envelope,
        } = self;
        let pieces = parts.buffers.len() + 1;
        let content = cipher.open(&parts.content, &context(&parts.header, 0, pieces))?;
        envelope.content = parse_json(&content, "content")?;
        if !open_buffers {
            envelope.buffers = parts.buffers;
            return Ok(envelope);
        }
        envelope.buffers = parts
            .buffers
            .iter()
            .enumerate()
            .map(|(i, sealed)| {
                cipher
                    .open(sealed, &context(&parts.header, i + 1, pieces))
                    .map(Bytes::from)
            })
            .collect::<Result<_, _>>()?;
        Ok(envelope)
    }
}

/// The associated data of piece `index` (0 the content, then the buffers) of `pieces`, in the
/// message whose header frame is `header`: the header names the message (its id is random).
fn context(header: &[u8], index: usize, pieces: usize) -> Vec<u8> {
    let mut context = Vec::with_capacity(header.len() + 16);
    context.extend_from_slice(&(index as u64).to_le_bytes());
    context.extend_from_slice(&(pieces as u64).to_le_bytes());
    context.extend_from_slice(header);
    context
}

#[cfg(test)]
mod tests;
