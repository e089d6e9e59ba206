//! Percent-escapes (`%XX`), read the one way every part of the engine reads them.

/// The value of an ASCII hex digit.
pub(crate) fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The byte the escape starting at `at` in `bytes` stands for: `Some` when `bytes[at]` is `%`
/// followed by two hex digits.
pub(crate) fn escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    match (bytes.get(at), bytes.get(at + 1), bytes.get(at + 2)) {
        (Some(b'%'), Some(&high), Some(&low)) => Some(hex_value(high)? << 4 | hex_value(low)?),
        _ => None,
    }
}
