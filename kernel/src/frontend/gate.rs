//! What the shell and control channels let in: messages signed with the connection's key, each
//! one once.
//!
//! A captured request sent again verifies like the original, so the signatures of accepted
//! messages are remembered (shared by both channels: a request recorded on one and replayed on
//! the other is a replay too), as jupyter_client's `Session` does with its digest history.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use rustpx_wire::{decode_once, encode, SeenSignatures, Signer, WireError, WireMessage};

/// Verifies and signs for one connection; clones share what they have seen.
#[derive(Clone)]
pub struct Gate {
    signer: Signer,
    seen: Arc<Mutex<SeenSignatures>>,
}

impl Gate {
    pub fn new(signer: Signer) -> Self {
        Gate {
            signer,
            seen: Arc::default(),
        }
    }

    /// The message in `frames` if it is correctly signed and was not accepted before.
    pub fn admit(&self, frames: Vec<Bytes>) -> Result<WireMessage, WireError> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        decode_once(frames, &self.signer, &mut seen)
    }

    /// `message` as signed frames.
    pub fn seal(&self, message: &WireMessage) -> Vec<Bytes> {
        encode(message, &self.signer)
    }
}
