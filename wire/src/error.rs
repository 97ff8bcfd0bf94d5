//! Why a set of frames could not be turned into a message.

use thiserror::Error;

/// A frame set that is not a valid, correctly signed Jupyter message.
///
/// Every variant is a reason to log and drop the message: none of them is fatal to the process
/// that received it.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("no <IDS|MSG> delimiter among {0} frames")]
    MissingDelimiter(usize),
    #[error("only {0} frames after the delimiter; a message needs signature, header, parent header, metadata and content")]
    TooFewFrames(usize),
    #[error("the signature does not match the message (wrong key, or the message was altered)")]
    BadSignature,
    #[error("the {part} frame is not valid JSON: {source}")]
    BadJson {
        part: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("a message already received was sent again (a replay)")]
    Replayed,
    #[error("a link message without its sequence number")]
    Unnumbered,
    #[error("a link message addressed to another engine (moved between connections on the way)")]
    NotAddressedHere,
    #[error("an engine-link message that does not decrypt: {0}")]
    Sealed(#[from] crate::cipher::CipherError),
    #[error("unsupported signature scheme {0:?}; rustpx signs with hmac-sha256")]
    UnsupportedScheme(String),
    #[error("a signature of {0} bytes; an hmac-sha256 signature is 64 hex digits")]
    SignatureLength(usize),
}
