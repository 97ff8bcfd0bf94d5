//! Decodes a call's results straight into the caller's `Vec<R>`.
//!
//! The results arrive as chunks of `Vec<Result<R, String>>` (what the engines send). Decoding
//! each chunk into that type and then collecting the values built a second vector four times as
//! large as the values for a `u64` map (a million items: 32 MB more to allocate, fault in and
//! copy); a serde seed pushes each value into the one output vector as it is read.

use std::fmt;

use bincode::Options;
use serde::de::{DeserializeOwned, DeserializeSeed, SeqAccess, Visitor};

/// The values of `bytes` (chunks as [`crate::decode_results`] reads them), or the first item's
/// failure message. `expected` sizes the output up front (a hint; any count is accepted).
pub fn decode_values<R: DeserializeOwned>(
    bytes: &[u8],
    expected: usize,
) -> Result<Vec<R>, ValuesError> {
    let options = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes();
    // A hint from the kernel, not a promise: never reserve more than the bytes could hold.
    let mut values = Vec::with_capacity(expected.min(bytes.len()));
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(8).ok_or(ValuesError::Truncated)?;
        let len = u64::from_le_bytes(len.try_into().map_err(|_| ValuesError::Truncated)?);
        let chunk = usize::try_from(len)
            .ok()
            .and_then(|len| tail.get(..len))
            .ok_or(ValuesError::Truncated)?;
        let failure = options
            .deserialize_seed(PushValues(&mut values), chunk)
            .map_err(|error| ValuesError::Decode(error.to_string()))?;
        if let Some(message) = failure {
            return Err(ValuesError::Failed(message));
        }
        rest = &tail[chunk.len()..];
    }
    Ok(values)
}

/// Why [`decode_values`] gave no values.
#[derive(Debug, Clone, PartialEq)]
pub enum ValuesError {
    Truncated,
    Decode(String),
    /// An item failed on its engine: its message.
    Failed(String),
}

impl fmt::Display for ValuesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValuesError::Truncated => write!(f, "truncated results"),
            ValuesError::Decode(why) => write!(f, "{why}"),
            ValuesError::Failed(message) => write!(f, "{message}"),
        }
    }
}

/// Reads one chunk's `Vec<Result<R, String>>`, pushing the values; its value is the first
/// failure's message, if any.
struct PushValues<'a, R>(&'a mut Vec<R>);

impl<'de, R: DeserializeOwned> DeserializeSeed<'de> for PushValues<'_, R> {
    type Value = Option<String>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, R: DeserializeOwned> Visitor<'de> for PushValues<'_, R> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence of results")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let mut failure = None;
        while let Some(item) = seq.next_element::<Result<R, String>>()? {
            match item {
                Ok(value) => self.0.push(value),
                Err(message) => {
                    failure.get_or_insert(message);
                }
            }
        }
        Ok(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[Vec<Result<u64, String>>]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for part in parts {
            let encoded = bincode::serialize(part).unwrap();
            bytes.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&encoded);
        }
        bytes
    }

    #[test]
    fn values_of_every_chunk_in_order_and_the_first_failure() {
        let bytes = chunks(&[vec![Ok(1), Ok(2)], vec![], vec![Ok(3)]]);
        assert_eq!(decode_values::<u64>(&bytes, 3), Ok(vec![1, 2, 3]));
        // The hint is only a hint.
        assert_eq!(decode_values::<u64>(&bytes, usize::MAX), Ok(vec![1, 2, 3]));
        let failed = chunks(&[vec![Ok(1)], vec![Err("boom".into()), Err("later".into())]]);
        assert_eq!(
            decode_values::<u64>(&failed, 3),
            Err(ValuesError::Failed("boom".into()))
        );
        assert_eq!(
            decode_values::<u64>(&bytes[..bytes.len() - 1], 3),
            Err(ValuesError::Truncated)
        );
    }
}
