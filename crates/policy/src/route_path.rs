//! The path a request is routed by: the request path normalized as nginx normalizes it before
//! it picks a `location`, so that an encoding cannot walk a request past a route's limits.
//!
//! An upstream framework decodes the path before it routes (uvicorn and Starlette do): without
//! this, `/api/v1/%6Cogin` would be routed here as some other route than `/api/v1/login`, and
//! escape its limit, while the API serves it as the login. nginx decodes first, so the same
//! `limit_req` in `location /api/v1/login` cannot be bypassed that way; this does the same,
//! step by step as `ngx_http_parse_complex_uri` (merge_slashes on, the default):
//!
//! 1. The path ends at the first `?` or `#`.
//! 2. `%XX` is decoded once. A decoded `/` separates segments and a decoded `.` makes dot
//!    segments (`%2F`, `%2e%2e`), as in nginx; a decoded `%`, `?` or `#` is a plain byte, so
//!    `%252F` stays `%2F` (no second decoding) and `/login%3Fx` is not `/login`.
//! 3. Empty segments are dropped (`//` is `/`), `.` segments removed and `..` segments remove
//!    the one before. A trailing `/` stays where the request had one, or ended in `/.` or `/..`.
//!
//! Case is kept and `;` is an ordinary byte, as in nginx on Linux. Refused ([`Unsafe`]), as
//! nginx answers them 400: a `%` not followed by two hex digits, a `..` that would climb above
//! `/`, and a decoded NUL; also any other decoded control byte, which no route name holds and
//! which would reach the upstream as a truncation or header-injection attempt.
//!
//! The request is forwarded with its target as sent (nginx's `proxy_pass` without a URI part):
//! only the decisions use this form.

use std::fmt;

/// Why a path cannot be normalized safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsafe {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// More `..` segments than segments before them.
    ClimbsAboveRoot,
    /// A decoded NUL or other control byte.
    ControlByte,
}

impl fmt::Display for Unsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unsafe::BadEscape => "bad percent-escape",
            Unsafe::ClimbsAboveRoot => "dot segments climb above /",
            Unsafe::ControlByte => "control byte",
        })
    }
}

/// Normalizes the request target `target` (a path, optionally followed by `?query` or
/// `#fragment`) into `out`, which is cleared first. `out` starts with `/` on success. No
/// allocation once `out` has grown to the longest path seen.
pub fn normalize(target: &[u8], out: &mut Vec<u8>) -> Result<(), Unsafe> {
    out.clear();
    out.push(b'/');
    // Bytes of the segment being read start at `seg` in `out`.
    let mut seg = out.len();
    let mut i = 0;
    loop {
        let byte = match target.get(i) {
            None | Some(b'?') | Some(b'#') => None,
            Some(b'%') => {
                let decoded = crate::percent::escape_at(target, i).ok_or(Unsafe::BadEscape)?;
                i += 2;
                Some(decoded)
            }
            Some(b) => Some(*b),
        };
        i += 1;
        match byte {
            Some(b'/') | None => {
                // A segment ended: `seg..` in `out` holds it.
                match &out[seg..] {
                    b"" => {}
                    b"." => out.truncate(seg),
                    b".." => {
                        out.truncate(seg);
                        // `out` ends in the `/` after the segment to remove.
                        if out.len() == 1 {
                            return Err(Unsafe::ClimbsAboveRoot);
                        }
                        out.pop();
                        let start = out.iter().rposition(|&b| b == b'/').map_or(1, |p| p + 1);
                        out.truncate(start);
                    }
                    _ if byte.is_some() => out.push(b'/'),
                    _ => {}
                }
                seg = out.len();
                if byte.is_none() {
                    return Ok(());
                }
            }
            Some(b) if b < 0x20 || b == 0x7f => return Err(Unsafe::ControlByte),
            Some(b) => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(target: &str) -> Result<String, Unsafe> {
        let mut out = Vec::new();
        normalize(target.as_bytes(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn plain_paths_are_unchanged() {
        for p in ["/", "/api", "/api/v1/login", "/api/", "/a;b=c/d", "/A/B"] {
            assert_eq!(norm(p).as_deref(), Ok(p), "{p}");
        }
    }

    #[test]
    fn escapes_are_decoded_once() {
        assert_eq!(norm("/api/v1/%6Cogin").as_deref(), Ok("/api/v1/login"));
        assert_eq!(norm("/%61pi/v1/login").as_deref(), Ok("/api/v1/login"));
        assert_eq!(
            norm("/api/v1/login%2faccess-token").as_deref(),
            Ok("/api/v1/login/access-token")
        );
        assert_eq!(norm("/api%252Fv1").as_deref(), Ok("/api%2Fv1"));
        assert_eq!(norm("/100%25").as_deref(), Ok("/100%"));
        assert_eq!(norm("/a%23b").as_deref(), Ok("/a#b"));
    }

    #[test]
    fn slashes_merge_and_dot_segments_resolve() {
        assert_eq!(norm("//login").as_deref(), Ok("/login"));
        assert_eq!(norm("/api//v1///login").as_deref(), Ok("/api/v1/login"));
        assert_eq!(norm("/x/../login").as_deref(), Ok("/login"));
        assert_eq!(norm("/./login").as_deref(), Ok("/login"));
        assert_eq!(norm("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(norm("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(norm("/a/%2e%2e/login").as_deref(), Ok("/login"));
        assert_eq!(norm("/a%2f..%2flogin").as_deref(), Ok("/login"));
        assert_eq!(norm("/a/...").as_deref(), Ok("/a/..."));
        assert_eq!(norm("/a/..b").as_deref(), Ok("/a/..b"));
        assert_eq!(norm("/.."), Err(Unsafe::ClimbsAboveRoot));
        assert_eq!(norm("/a/../.."), Err(Unsafe::ClimbsAboveRoot));
        assert_eq!(norm("/%2e%2e/etc/passwd"), Err(Unsafe::ClimbsAboveRoot));
    }

    #[test]
    fn the_path_ends_at_the_query_or_fragment() {
        assert_eq!(norm("/a?b=/../..").as_deref(), Ok("/a"));
        assert_eq!(norm("/a#frag").as_deref(), Ok("/a"));
        assert_eq!(norm("/a%3Fb/c").as_deref(), Ok("/a?b/c"));
        assert_eq!(norm("").as_deref(), Ok("/"));
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert_eq!(norm("/a%zz"), Err(Unsafe::BadEscape));
        assert_eq!(norm("/a%4"), Err(Unsafe::BadEscape));
        assert_eq!(norm("/a%00.php"), Err(Unsafe::ControlByte));
        assert_eq!(norm("/a%0d%0aSet-Cookie:x"), Err(Unsafe::ControlByte));
        assert_eq!(norm("/a%7f"), Err(Unsafe::ControlByte));
    }

    #[test]
    fn bytes_above_ascii_are_kept() {
        assert_eq!(norm("/caf%C3%A9").as_deref(), Ok("/café"));
        let mut out = Vec::new();
        normalize(b"/%C0%AE%C0%AE/x", &mut out).unwrap();
        assert_eq!(out, b"/\xC0\xAE\xC0\xAE/x");
    }
}
