//! HTTP/1 framing as portcullis's fast path reads it: which request heads it serves itself,
//! where an upstream response's body ends, and the chunked transfer coding.
//!
//! Pure functions and one byte-fed state machine, no I/O, no Pingora, no tokio: the fast path
//! (`crates/portcullis/src/fast/`) calls them, and the differential tests (`crates/h1-diff`,
//! `fuzz/`) feed the same bytes to them and to Pingora's HTTP/1 code, which the `HttpProxy`
//! path uses. Where the two differ on purpose, `docs/framing.md` says which is right and why.
#![forbid(unsafe_code)]

pub mod chunked;
pub mod limits;
pub mod request;
pub mod response;

/// A `Content-Length` value: ASCII digits only (RFC 9110 `1*DIGIT`), optional whitespace
/// around. `+5`, `5, 5`, `0x5` and an empty value are not lengths; leading zeros are (as
/// Pingora and nginx read them), a value past `u64` is not.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(content_length(b"5"), Some(5));
        assert_eq!(content_length(b" 0 "), Some(0));
        // Found by the differential test: Pingora reads 20 digits with leading zeros as 5;
        // the fast path refused them (a 502 where HttpProxy relays).
        assert_eq!(content_length(b"00000000000000000005"), Some(5));
        assert_eq!(content_length(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b" ",
            b"+5",
            b"-1",
            b"5, 5",
            b"0x5",
            b"5 5",
            b"18446744073709551616",
        ] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
    }
}
