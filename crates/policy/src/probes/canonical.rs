//! Canonical form of a request path, so that encodings cannot slip a probe past the rules.
//!
//! The steps, in order (documented for users in `docs/probes.md`):
//!
//! 1. Cut the request target at the first `?` or `#`: only the path is matched.
//! 2. Percent-decode once. If that produced a `%` that starts another escape (`%252e`), decode
//!    a second time and remember whether the second level hid a `.`, `/`, `\` or `%`: that is
//!    double encoding, which legitimate clients do not send, and the matcher treats it as a probe.
//! 3. Split into segments on `/` and `\` (IIS and Windows treat both as separators).
//! 4. Drop `;` path parameters from every segment (`/..;/`, `/x;jsessionid=1`), as Tomcat does.
//! 5. Remove dot segments (RFC 3986 `remove_dot_segments`) and empty segments (`//`). A `..`
//!    that would climb above `/` is clamped and flagged.
//! 6. Fold ASCII letters to lower case: scanners vary case, and case-insensitive servers (IIS)
//!    would serve `/.ENV` as `/.env`. Bytes above 0x7F are kept as they are.
//!
//! Everything works on bytes: invalid UTF-8 and NUL bytes are kept (and flagged), never a panic.

use std::borrow::Cow;

/// A request path in canonical form, with what canonicalization noticed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    /// The canonical path: starts with `/`, lower-case ASCII, no `//`, `.` or `..` segments,
    /// no `;` parameters, no query. A trailing `/` is kept when the request had one.
    pub path: Vec<u8>,
    /// More `..` segments than there were segments to remove: the request tried to leave the
    /// document root.
    pub climbs_above_root: bool,
    /// A `.`, `/`, `\` or `%` was hidden under two levels of percent-encoding (`%252e`).
    pub double_encoded: bool,
    /// A `..` segment arrived in a disguise: percent-encoded dots or slashes, backslashes, or
    /// `;` parameters (`/..;/`). Plain `/a/../b` is not flagged.
    pub evasive_dot_segment: bool,
    /// The decoded path holds a control byte (NUL, CR, LF, ...): truncation or header
    /// injection attempts.
    pub control_byte: bool,
}

impl Canonical {
    /// The path as text, with invalid UTF-8 replaced by U+FFFD; for logs and tests.
    pub fn as_str_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.path)
    }
}

/// Canonicalizes `raw_path` (a request target's path, optionally with `?query` or `#fragment`).
///
/// This allocates; the matcher itself canonicalizes into reused per-thread buffers.
pub fn canonicalize(raw_path: &[u8]) -> Canonical {
    let mut scratch = Scratch::default();
    let flags = canonicalize_into(raw_path, &mut scratch);
    Canonical {
        path: scratch.out,
        climbs_above_root: flags.climbs_above_root,
        double_encoded: flags.double_encoded,
        evasive_dot_segment: flags.evasive_dot_segment,
        control_byte: flags.control_byte,
    }
}

/// What canonicalization noticed; see the fields of [`Canonical`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    pub climbs_above_root: bool,
    pub double_encoded: bool,
    pub evasive_dot_segment: bool,
    pub control_byte: bool,
}

/// Reusable buffers, so the request path does not allocate once a thread has warmed up.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    decoded: Vec<u8>,
    decoded_twice: Vec<u8>,
    /// The canonical path after [`canonicalize_into`].
    pub out: Vec<u8>,
    /// The lower-cased `User-Agent`, filled by the matcher.
    pub agent: Vec<u8>,
    /// The percent-decoded, lower-cased query, filled by [`decode_query_into`].
    pub query: Vec<u8>,
    query_once: Vec<u8>,
    /// Canonical path, `?`, decoded query: what payload signatures search.
    pub target: Vec<u8>,
}

impl Scratch {
    /// Buffers above this capacity are released after use, so one huge request does not pin
    /// memory in every worker thread.
    const KEEP_CAPACITY: usize = 16 * 1024;

    /// Frees buffers that one unusually long path has grown.
    pub fn trim(&mut self) {
        for buffer in [
            &mut self.decoded,
            &mut self.decoded_twice,
            &mut self.out,
            &mut self.agent,
            &mut self.query,
            &mut self.query_once,
            &mut self.target,
        ] {
            if buffer.capacity() > Self::KEEP_CAPACITY {
                *buffer = Vec::new();
            }
        }
    }
}

/// Which interesting bytes one percent-decoding pass produced.
#[derive(Debug, Clone, Copy, Default)]
struct Decoded {
    dot: bool,
    slash: bool,
    backslash: bool,
    percent: bool,
}

impl Decoded {
    fn any_separator_or_dot(self) -> bool {
        self.dot || self.slash || self.backslash
    }
}

/// Decodes `%XX` escapes of `src` into `dst`; a `%` not followed by two hex digits is kept.
fn percent_decode_into(src: &[u8], dst: &mut Vec<u8>) -> Decoded {
    dst.clear();
    dst.reserve(src.len());
    let mut seen = Decoded::default();
    let mut i = 0;
    while i < src.len() {
        let byte = src[i];
        if byte == b'%' {
            if let Some(value) = crate::percent::escape_at(src, i) {
                match value {
                    b'.' => seen.dot = true,
                    b'/' => seen.slash = true,
                    b'\\' => seen.backslash = true,
                    b'%' => seen.percent = true,
                    _ => {}
                }
                dst.push(value);
                i += 3;
                continue;
            }
        }
        dst.push(byte);
        i += 1;
    }
    seen
}

/// True when `bytes` holds a `%` followed by two hex digits.
fn has_escape(bytes: &[u8]) -> bool {
    bytes
        .windows(3)
        .any(|w| crate::percent::escape_at(w, 0).is_some())
}

/// Canonicalizes `raw_path` into `scratch.out` and reports what it noticed.
pub(crate) fn canonicalize_into(raw_path: &[u8], scratch: &mut Scratch) -> Flags {
    let path_end = raw_path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(raw_path.len());
    let raw = &raw_path[..path_end];
    let mut flags = Flags::default();

    // Decoding is skipped entirely for the common case of a path without escapes.
    let mut first_pass = Decoded::default();
    let source: &[u8] = if raw.contains(&b'%') {
        first_pass = percent_decode_into(raw, &mut scratch.decoded);
        // Any escape left after one pass was hidden: `%252e`, or Apache's `%%32%65`.
        if has_escape(&scratch.decoded) {
            let second_pass = percent_decode_into(&scratch.decoded, &mut scratch.decoded_twice);
            flags.double_encoded = second_pass.any_separator_or_dot() || second_pass.percent;
            // What the second level hid counts as an encoded dot or slash too.
            first_pass.dot |= second_pass.dot;
            first_pass.slash |= second_pass.slash;
            first_pass.backslash |= second_pass.backslash;
            &scratch.decoded_twice
        } else {
            &scratch.decoded
        }
    } else {
        raw
    };

    let segments = remove_dot_segments(source, &mut scratch.out);
    flags.climbs_above_root = segments.climbs_above_root;
    flags.control_byte = segments.control_byte;
    flags.evasive_dot_segment = segments.dot_dot_seen
        && (first_pass.any_separator_or_dot()
            || segments.backslash_seen
            || segments.dot_dot_with_params);
    flags
}

/// Percent-decodes the query of `raw_target` (after the first `?`, before `#`) into
/// `scratch.query`, lower-cased. Escapes left after one pass are decoded once more, so a
/// double-encoded payload (`%2524%257b`) reads as plainly as a single-encoded one. `+` is kept:
/// signatures treat it as a space themselves, and `+config-create+` needs it.
pub(crate) fn decode_query_into(raw_target: &[u8], scratch: &mut Scratch) {
    scratch.query.clear();
    let Some(start) = raw_target.iter().position(|&b| b == b'?') else {
        return;
    };
    let rest = &raw_target[start + 1..];
    let end = rest.iter().position(|&b| b == b'#').unwrap_or(rest.len());
    let raw = &rest[..end];
    if !raw.contains(&b'%') {
        scratch.query.extend(raw.iter().map(u8::to_ascii_lowercase));
        return;
    }
    percent_decode_into(raw, &mut scratch.query_once);
    if has_escape(&scratch.query_once) {
        percent_decode_into(&scratch.query_once, &mut scratch.query);
        scratch.query.make_ascii_lowercase();
    } else {
        scratch.query.clear();
        scratch
            .query
            .extend(scratch.query_once.iter().map(u8::to_ascii_lowercase));
    }
}

/// What segment processing noticed.
#[derive(Debug, Default)]
struct SegmentReport {
    climbs_above_root: bool,
    control_byte: bool,
    dot_dot_seen: bool,
    dot_dot_with_params: bool,
    backslash_seen: bool,
}

/// Writes the canonical form of the already decoded `source` into `out`: segments split on `/`
/// and `\`, `;` parameters dropped, empty and dot segments removed, ASCII lower-cased.
fn remove_dot_segments(source: &[u8], out: &mut Vec<u8>) -> SegmentReport {
    out.clear();
    out.reserve(source.len() + 1);
    out.push(b'/');
    let mut report = SegmentReport::default();
    // `out[segment_start..]` is the segment being built; `out[..segment_start]` ends with '/'.
    let mut segment_start = 1;
    let mut in_params = false;
    let mut segment_had_params = false;
    for &byte in source {
        if byte < 0x20 || byte == 0x7f {
            report.control_byte = true;
        }
        if byte == b'/' || byte == b'\\' {
            report.backslash_seen |= byte == b'\\';
            finish_segment(
                out,
                &mut segment_start,
                segment_had_params,
                false,
                &mut report,
            );
            in_params = false;
            segment_had_params = false;
        } else if in_params {
            // Inside `;params`: dropped.
        } else if byte == b';' {
            in_params = true;
            segment_had_params = true;
        } else {
            out.push(byte.to_ascii_lowercase());
        }
    }
    finish_segment(
        out,
        &mut segment_start,
        segment_had_params,
        true,
        &mut report,
    );
    report
}

/// Closes the segment `out[*segment_start..]`: keeps it (with a '/' unless it is the last),
/// drops it (empty or `.`), or drops it and the one before (`..`).
fn finish_segment(
    out: &mut Vec<u8>,
    segment_start: &mut usize,
    had_params: bool,
    is_last: bool,
    report: &mut SegmentReport,
) {
    match &out[*segment_start..] {
        b"" => {}
        b"." => out.truncate(*segment_start),
        b".." => {
            report.dot_dot_seen = true;
            report.dot_dot_with_params |= had_params;
            out.truncate(*segment_start);
            if *segment_start <= 1 {
                report.climbs_above_root = true;
            } else {
                // out is "/a/b/"; drop "b/" by cutting after the '/' that precedes it.
                let previous_slash = out[..*segment_start - 1]
                    .iter()
                    .rposition(|&b| b == b'/')
                    .unwrap_or(0);
                out.truncate(previous_slash + 1);
                *segment_start = out.len();
            }
        }
        _ => {
            if !is_last {
                out.push(b'/');
                *segment_start = out.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> String {
        canonicalize(raw.as_bytes()).as_str_lossy().into_owned()
    }

    #[test]
    fn plain_paths_are_unchanged() {
        assert_eq!(path("/"), "/");
        assert_eq!(path("/api/v1/users"), "/api/v1/users");
        assert_eq!(path("/static/"), "/static/");
        assert_eq!(path(""), "/");
    }

    #[test]
    fn query_and_fragment_are_not_part_of_the_path() {
        assert_eq!(path("/api/v1/search?q=/.env"), "/api/v1/search");
        assert_eq!(path("/page#/.git/config"), "/page");
        assert_eq!(path("?x"), "/");
    }

    #[test]
    fn percent_encoding_is_decoded() {
        assert_eq!(path("/%2e%65nv"), "/.env");
        assert_eq!(path("/%2E%45NV"), "/.env");
        // Malformed escapes are kept literally.
        assert_eq!(path("/100%"), "/100%");
        assert_eq!(path("/a%zzb"), "/a%zzb");
        assert_eq!(path("/a%2"), "/a%2");
    }

    #[test]
    fn an_encoded_query_mark_stays_in_the_path() {
        // `%3f` is data, not the start of the query.
        assert_eq!(path("/.env%3fx=1"), "/.env?x=1");
    }

    #[test]
    fn repeated_slashes_collapse() {
        assert_eq!(path("//.env"), "/.env");
        assert_eq!(path("/a///b//"), "/a/b/");
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(path("/./.env"), "/.env");
        assert_eq!(path("/foo/../.env"), "/.env");
        assert_eq!(path("/a/b/.."), "/a/");
        assert_eq!(path("/a/b/."), "/a/b/");
        assert_eq!(path("/a/./b/../../c"), "/c");
        let plain = canonicalize(b"/foo/../bar");
        assert!(!plain.climbs_above_root && !plain.evasive_dot_segment);
        // Dots that are part of a name are not dot segments.
        assert_eq!(path("/a/.../b/..c/.d"), "/a/.../b/..c/.d");
    }

    #[test]
    fn climbing_above_the_root_is_clamped_and_flagged() {
        let c = canonicalize(b"/../../etc/passwd");
        assert_eq!(c.as_str_lossy(), "/etc/passwd");
        assert!(c.climbs_above_root);
        let c = canonicalize(b"/cgi-bin/.%2e/.%2e/bin/sh");
        assert_eq!(c.as_str_lossy(), "/bin/sh");
        assert!(c.climbs_above_root);
        assert!(c.evasive_dot_segment);
        assert!(!canonicalize(b"/a/b/../../c").climbs_above_root);
    }

    #[test]
    fn case_is_folded() {
        assert_eq!(path("/.ENV"), "/.env");
        assert_eq!(path("/WP-Login.PHP"), "/wp-login.php");
    }

    #[test]
    fn path_parameters_are_dropped_per_segment() {
        assert_eq!(path("/.env;x=1"), "/.env");
        assert_eq!(path("/foo;jsessionid=abc/bar"), "/foo/bar");
        let c = canonicalize(b"/mifs/..;/services/LogService");
        assert_eq!(c.as_str_lossy(), "/services/logservice");
        assert!(c.evasive_dot_segment);
        assert!(!c.climbs_above_root);
    }

    #[test]
    fn backslashes_are_separators() {
        assert_eq!(path("\\.env"), "/.env");
        assert_eq!(path("/a\\..\\.git\\config"), "/.git/config");
        assert!(canonicalize(b"/a\\..\\b").evasive_dot_segment);
        assert_eq!(path("/a%5c.env"), "/a/.env");
    }

    #[test]
    fn double_encoding_is_decoded_and_flagged() {
        let c = canonicalize(b"/%252e%252e/%252e%252e/etc/passwd");
        assert!(c.double_encoded);
        assert!(c.climbs_above_root);
        assert_eq!(c.as_str_lossy(), "/etc/passwd");
        let c = canonicalize(b"/%252Eenv");
        assert!(c.double_encoded);
        assert_eq!(c.as_str_lossy(), "/.env");
        // Nested escapes of the escape itself: %25%32%65 is "%2e".
        let c = canonicalize(b"/%25%32%65%25%32%65/x");
        assert!(c.double_encoded);
        // Apache CVE-2021-42013: a literal '%' followed by encoded hex digits.
        let c = canonicalize(b"/cgi-bin/%%32%65%%32%65/%%32%65%%32%65/bin/sh");
        assert!(c.double_encoded);
        assert!(c.climbs_above_root);
        // A doubly encoded space is a client bug, not an evasion.
        let c = canonicalize(b"/files/a%2520b");
        assert!(!c.double_encoded);
        assert_eq!(c.as_str_lossy(), "/files/a b");
        // A literal percent sign is fine.
        assert!(!canonicalize(b"/discount/100%25").double_encoded);
    }

    #[test]
    fn control_bytes_and_invalid_utf8_do_not_panic() {
        let c = canonicalize(b"/.env%00.jpg");
        assert!(c.control_byte);
        assert_eq!(c.path, b"/.env\0.jpg");
        let c = canonicalize(b"/\xff\xfe/%c3%28");
        assert!(!c.control_byte);
        assert_eq!(c.path, b"/\xff\xfe/\xc3(");
        assert!(canonicalize(b"/a%0d%0aSet-Cookie:x").control_byte);
    }
}
