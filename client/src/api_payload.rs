//! The payloads of the direct view's data requests ([`crate::api_wire::Kind`] `Push`, `Pull`,
//! `Scatter`, `Gather`): values as opaque bincode bytes, each with its length, so that the kernel
//! moves them to and from files without knowing their types. Decoding checks every length
//! against the bytes really there: the kernel decodes what a plain cell sent.

/// A value to push: its variable name, `std::any::type_name` of its type, its bincode.
pub type Named = (String, String, Vec<u8>);

/// Per entry: the name's and the type's length (u32) and text, the value's length (u64) and bytes.
pub fn encode_named(entries: &[Named]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, type_name, value) in entries {
        for text in [name, type_name] {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// The entries [`encode_named`] wrote; the error names what is malformed.
pub fn decode_named(mut bytes: &[u8]) -> Result<Vec<Named>, String> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let name = text(take_u32(&mut bytes)?, &mut bytes, "a name")?;
        let type_name = text(take_u32(&mut bytes)?, &mut bytes, "a type")?;
        let value = take(take_u64(&mut bytes)?, &mut bytes, "a value")?.to_vec();
        entries.push((name, type_name, value));
    }
    Ok(entries)
}

/// Per part: its length (u64) and its bytes.
pub fn encode_parts<P: AsRef<[u8]>>(parts: &[P]) -> Vec<u8> {
    let total: usize = parts.iter().map(|p| p.as_ref().len() + 8).sum();
    let mut out = Vec::with_capacity(total);
    for part in parts {
        out.extend_from_slice(&(part.as_ref().len() as u64).to_le_bytes());
        out.extend_from_slice(part.as_ref());
    }
    out
}

/// The parts [`encode_parts`] wrote, borrowed from `bytes`.
pub fn decode_parts(mut bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut parts = Vec::new();
    while !bytes.is_empty() {
        let len = take_u64(&mut bytes)?;
        parts.push(take(len, &mut bytes, "a part")?);
    }
    Ok(parts)
}

/// The results of a task that never ran (its engine died): the bincode of a
/// `Vec<Result<R, String>>` holding one `Err`, the same bytes whatever `R` is.
pub fn failed_task(message: &str) -> Vec<u8> {
    bincode::serialize(&[Err::<(), &str>(message)][..]).unwrap_or_default()
}

fn take<'a>(len: u64, bytes: &mut &'a [u8], what: &str) -> Result<&'a [u8], String> {
    let len = usize::try_from(len).map_err(|_| format!("{what} of {len} bytes"))?;
    if len > bytes.len() {
        return Err(format!(
            "{what} of {len} bytes where {} remain",
            bytes.len()
        ));
    }
    let (head, tail) = bytes.split_at(len);
    *bytes = tail;
    Ok(head)
}

fn take_u32(bytes: &mut &[u8]) -> Result<u64, String> {
    let raw = take(4, bytes, "a length")?;
    Ok(u64::from(u32::from_le_bytes([
        raw[0], raw[1], raw[2], raw[3],
    ])))
}

fn take_u64(bytes: &mut &[u8]) -> Result<u64, String> {
    let raw = take(8, bytes, "a length")?;
    let mut word = [0u8; 8];
    word.copy_from_slice(raw);
    Ok(u64::from_le_bytes(word))
}

fn text(len: u64, bytes: &mut &[u8], what: &str) -> Result<String, String> {
    let raw = take(len, bytes, what)?;
    String::from_utf8(raw.to_vec()).map_err(|_| format!("{what} that is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_parts_round_trip() {
        let entries = vec![
            ("a".to_owned(), "u64".to_owned(), vec![1, 2, 3]),
            ("b".to_owned(), "alloc::string::String".to_owned(), vec![]),
        ];
        assert_eq!(decode_named(&encode_named(&entries)).unwrap(), entries);
        let parts: Vec<Vec<u8>> = vec![vec![9; 5], vec![], vec![7]];
        let encoded = encode_parts(&parts);
        let decoded = decode_parts(&encoded).unwrap();
        assert_eq!(decoded, parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
    }

    #[test]
    fn a_failed_task_decodes_as_an_error_of_any_result_type() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(failed_task("gone").len() as u64).to_le_bytes());
        bytes.extend_from_slice(&failed_task("gone"));
        let results = crate::decode_results::<Vec<String>>(&bytes, "test").unwrap();
        assert_eq!(results, vec![Err("gone".to_owned())]);
    }

    #[test]
    fn vectors_of_numbers_decode_from_bytes_in_one_copy_and_check_their_length() {
        let numbers: Vec<u64> = (0..1000).collect();
        let bytes = bincode::serialize(&numbers).unwrap();
        let decoded = crate::numbers::from_bytes::<Vec<u64>>(&bytes).unwrap();
        assert_eq!(decoded.unwrap(), numbers);
        let short = crate::numbers::from_bytes::<Vec<u64>>(&bytes[..bytes.len() - 1]).unwrap();
        assert!(short
            .unwrap_err()
            .contains("1000 items of 8 bytes do not fill 7999 bytes"));
        assert!(crate::numbers::from_bytes::<Vec<String>>(&bytes).is_none());
    }

    #[test]
    fn lengths_beyond_the_bytes_are_errors_not_allocations() {
        let mut bytes = encode_named(&[("a".into(), "u8".into(), vec![1])]);
        bytes.truncate(bytes.len() - 1);
        assert!(decode_named(&bytes)
            .unwrap_err()
            .contains("a value of 1 bytes where 0 remain"));
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.push(0);
        assert!(decode_parts(&huge).is_err());
        assert!(decode_named(&[1, 0, 0]).is_err());
    }
}
