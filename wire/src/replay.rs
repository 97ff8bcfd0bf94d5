//! Refusing replayed messages: a signed message, captured and sent again, must not act twice.
//!
//! Two guards, for two kinds of peer:
//! - Jupyter clients sign each message once and never resend it, so the Jupyter channels
//!   remember the signatures they have accepted ([`SeenSignatures`]), as jupyter_client's
//!   `Session` does with its digest history, and refuse a repeat.
//! - On the engine link, each side numbers what it sends in its session ([`Sequencer`], the
//!   `seq` field of the signed metadata) and the other side accepts only numbers above the last
//!   one it took from that session ([`SequenceCheck`]). That costs one number per session, where
//!   a signature history would grow with every heartbeat, and it refuses a replayed
//!   registration or heartbeat however old it is.

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::Value;

use crate::{WireError, WireMessage};

/// How many signatures a Jupyter channel remembers (jupyter_client keeps 2^16 too).
pub const REMEMBERED_SIGNATURES: usize = 1 << 16;

/// The signatures of accepted messages, the oldest forgotten first once full.
#[derive(Debug)]
pub struct SeenSignatures {
    order: VecDeque<Vec<u8>>,
    seen: HashSet<Vec<u8>>,
    capacity: usize,
}

impl Default for SeenSignatures {
    fn default() -> Self {
        Self::with_capacity(REMEMBERED_SIGNATURES)
    }
}

impl SeenSignatures {
    pub fn with_capacity(capacity: usize) -> Self {
        SeenSignatures {
            order: VecDeque::new(),
            seen: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `signature` (hex); an error if it was seen before, in either case of its hex
    /// digits (both verify). Unsigned messages (a connection without a key) have nothing to
    /// remember and always pass.
    pub fn first_time(&mut self, signature: &[u8]) -> Result<(), WireError> {
        if signature.is_empty() {
            return Ok(());
        }
        let signature = signature.to_ascii_lowercase();
        if !self.seen.insert(signature.clone()) {
            return Err(WireError::Replayed);
        }
        self.order.push_back(signature);
        if self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        Ok(())
    }
}

/// Numbers the messages one side of the link sends: 1, 2, 3, ...
#[derive(Debug, Default)]
pub struct Sequencer {
    last: u64,
}

impl Sequencer {
    /// Puts the next number into `message`'s (signed) metadata.
    pub fn stamp(&mut self, message: &mut WireMessage) {
        self.last += 1;
        set_metadata(message, "seq", Value::from(self.last));
    }
}

/// Sets one field of `message`'s metadata (which the signature covers), making it an object if
/// it is not one.
fn set_metadata(message: &mut WireMessage, field: &str, value: Value) {
    if !message.metadata.is_object() {
        message.metadata = Value::Object(Default::default());
    }
    if let Value::Object(map) = &mut message.metadata {
        map.insert(field.to_owned(), value);
    }
}

/// The signed metadata field naming a link message's recipient (its session).
const RECIPIENT: &str = "to";

/// Names `recipient` (an engine's session, which is also its connection's identity) in
/// `message`'s signed metadata. The hub numbers what it sends to all engines with one counter, so
/// without this a message to one engine, moved by someone on the path onto another engine's
/// connection, would be taken there.
pub fn address_to(message: &mut WireMessage, recipient: &[u8]) {
    let recipient = String::from_utf8_lossy(recipient).into_owned();
    set_metadata(message, RECIPIENT, Value::from(recipient));
}

/// Refuses a message whose signed recipient is not `me`.
pub fn check_addressed_to(message: &WireMessage, me: &str) -> Result<(), WireError> {
    match message.metadata.get(RECIPIENT).and_then(Value::as_str) {
        Some(recipient) if recipient == me => Ok(()),
        _ => Err(WireError::NotAddressedHere),
    }
}

/// The last number accepted from each session.
#[derive(Debug, Default)]
pub struct SequenceCheck {
    last: HashMap<String, u64>,
}

impl SequenceCheck {
    /// Accepts `message` if its number is above the last one taken from its session. Call only
    /// on messages whose signature was verified: sessions come from signed headers, so only
    /// holders of the key add entries.
    pub fn accept(&mut self, message: &WireMessage) -> Result<(), WireError> {
        let seq = message
            .metadata
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or(WireError::Unnumbered)?;
        let last = self.last.entry(message.header.session.clone()).or_insert(0);
        if seq <= *last {
            return Err(WireError::Replayed);
        }
        *last = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_once_then_forgotten_when_old() {
        let mut seen = SeenSignatures::with_capacity(2);
        assert!(seen.first_time(b"a").is_ok());
        assert!(matches!(seen.first_time(b"a"), Err(WireError::Replayed)));
        assert!(seen.first_time(b"b").is_ok());
        assert!(seen.first_time(b"c").is_ok());
        // "a" was the oldest of three with room for two.
        assert!(seen.first_time(b"a").is_ok());
        assert!(matches!(seen.first_time(b"A"), Err(WireError::Replayed)));
        assert!(seen.first_time(b"").is_ok());
        assert!(seen.first_time(b"").is_ok());
    }

    #[test]
    fn numbers_must_rise_within_a_session() {
        let mut sender = Sequencer::default();
        let mut check = SequenceCheck::default();
        let mut first = WireMessage::new("heartbeat", "engine-a", Value::Null);
        let mut second = first.clone();
        sender.stamp(&mut first);
        sender.stamp(&mut second);
        assert!(check.accept(&first).is_ok());
        assert!(check.accept(&second).is_ok());
        assert!(matches!(check.accept(&second), Err(WireError::Replayed)));
        assert!(matches!(check.accept(&first), Err(WireError::Replayed)));
        // Another session has numbers of its own.
        let mut other = WireMessage::new("heartbeat", "engine-b", Value::Null);
        Sequencer::default().stamp(&mut other);
        assert!(check.accept(&other).is_ok());
        let unnumbered = WireMessage::new("heartbeat", "engine-c", Value::Null);
        assert!(matches!(
            check.accept(&unnumbered),
            Err(WireError::Unnumbered)
        ));
    }

    #[test]
    fn a_link_message_is_taken_only_by_the_engine_it_names() {
        let mut message = WireMessage::new("run_request", "hub", Value::Null);
        assert!(matches!(
            check_addressed_to(&message, "engine-a"),
            Err(WireError::NotAddressedHere)
        ));
        address_to(&mut message, b"engine-a");
        assert!(check_addressed_to(&message, "engine-a").is_ok());
        assert!(matches!(
            check_addressed_to(&message, "engine-b"),
            Err(WireError::NotAddressedHere)
        ));
    }
}
