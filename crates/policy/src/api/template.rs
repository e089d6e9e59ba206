//! Path templates (`/users/{user_id}/files/{name}.{ext}`) split into segments.

/// Templates deeper than this are refused: matching recurses once per segment, and no real
/// API comes near it.
const MAX_SEGMENTS: usize = 128;

/// One `/`-separated piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Literal text, percent-decoded (requests arrive decoded).
    Static(Box<[u8]>),
    /// `{name}`: exactly one non-empty segment.
    Param,
    /// Literal text around parameters inside one segment: `{name}.{ext}`, `v{version}`.
    Pattern(Glob),
}

/// Parses a template: starts with `/`, no query or fragment, balanced `{name}` parameters.
/// Empty segments are dropped, as the caller merges slashes in requests, and so is the
/// trailing slash (see the module docs). The error is the reason, for [`super::SpecError`].
pub(crate) fn parse_template(template: &str) -> Result<Vec<Segment>, String> {
    if !template.starts_with('/') {
        return Err("a path template must start with '/'".into());
    }
    if template.contains(['?', '#']) {
        return Err("a path template cannot contain a query ('?') or a fragment ('#')".into());
    }
    let segments = template
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(parse_segment)
        .collect::<Result<Vec<_>, _>>()?;
    if segments.len() > MAX_SEGMENTS {
        return Err(format!("more than {MAX_SEGMENTS} segments"));
    }
    Ok(segments)
}

/// A piece of a segment, before compilation.
enum Piece<'a> {
    Literal(&'a str),
    Param,
}

fn parse_segment(segment: &str) -> Result<Segment, String> {
    if !segment.contains(['{', '}']) {
        return Ok(Segment::Static(percent_decode(segment.as_bytes()).into()));
    }
    let mut pieces = Vec::new();
    let mut rest = segment;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                pieces.push(Piece::Literal(rest));
                rest = "";
            }
            Some(start) if rest[start..].starts_with('}') => {
                return Err(format!("'}}' without '{{' in segment {segment:?}"));
            }
            Some(start) => {
                if start > 0 {
                    pieces.push(Piece::Literal(&rest[..start]));
                }
                let after_open = &rest[start + 1..];
                let close = after_open
                    .find(['{', '}'])
                    .filter(|&end| after_open[end..].starts_with('}'))
                    .ok_or_else(|| format!("unclosed '{{' in segment {segment:?}"))?;
                if after_open[..close].trim().is_empty() {
                    return Err(format!("empty parameter name in segment {segment:?}"));
                }
                pieces.push(Piece::Param);
                rest = &after_open[close + 1..];
            }
        }
    }
    if let [Piece::Param] = pieces.as_slice() {
        return Ok(Segment::Param);
    }
    Ok(Segment::Pattern(Glob::compile(&pieces)))
}

/// A segment pattern compiled to byte tokens, so matching is the classic linear wildcard
/// algorithm instead of recursive backtracking over parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob(Box<[Token]>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Byte(u8),
    AnyByte,
    AnyRun,
}

impl Glob {
    fn compile(pieces: &[Piece<'_>]) -> Glob {
        let mut tokens = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Literal(text) => {
                    tokens.extend(percent_decode(text.as_bytes()).into_iter().map(Token::Byte))
                }
                // A parameter is non-empty: one byte, then any run.
                Piece::Param => tokens.extend([Token::AnyByte, Token::AnyRun]),
            }
        }
        Glob(tokens.into())
    }

    /// Whether `segment` (no `/` in it) matches.
    pub fn matches(&self, segment: &[u8]) -> bool {
        let tokens = &self.0;
        let (mut token, mut byte) = (0, 0);
        // The last AnyRun seen and the byte it currently extends to, for backtracking.
        let mut last_run: Option<(usize, usize)> = None;
        while byte < segment.len() {
            match tokens.get(token) {
                Some(Token::AnyRun) => {
                    last_run = Some((token, byte));
                    token += 1;
                }
                Some(Token::AnyByte) => {
                    token += 1;
                    byte += 1;
                }
                Some(Token::Byte(expected)) if segment.get(byte) == Some(expected) => {
                    token += 1;
                    byte += 1;
                }
                _ => match last_run {
                    Some((run_token, run_end)) => {
                        last_run = Some((run_token, run_end + 1));
                        token = run_token + 1;
                        byte = run_end + 1;
                    }
                    None => return false,
                },
            }
        }
        tokens[token.min(tokens.len())..]
            .iter()
            .all(|token| *token == Token::AnyRun)
    }
}

/// Decodes `%XX` escapes; malformed escapes stay as they are.
pub(crate) fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut index = 0;
    while let Some(&byte) = input.get(index) {
        match crate::percent::escape_at(input, index) {
            Some(decoded) => {
                out.push(decoded);
                index += 3;
            }
            None => {
                out.push(byte);
                index += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(segment: &str) -> Glob {
        match parse_segment(segment) {
            Ok(Segment::Pattern(glob)) => glob,
            other => panic!("{segment:?} is not a pattern: {other:?}"),
        }
    }

    #[test]
    fn segments_are_static_param_or_pattern() {
        assert_eq!(
            parse_template("/users//{id}/").unwrap(),
            vec![Segment::Static((*b"users").into()), Segment::Param]
        );
        assert_eq!(parse_template("/").unwrap(), vec![]);
        assert_eq!(
            parse_template("/a%20b").unwrap(),
            vec![Segment::Static((*b"a b").into())]
        );
    }

    #[test]
    fn patterns_need_non_empty_parameters() {
        let file = glob("{name}.{ext}");
        assert!(file.matches(b"report.pdf"));
        assert!(file.matches(b"archive.tar.gz"));
        assert!(!file.matches(b".pdf"));
        assert!(!file.matches(b"report."));
        assert!(!file.matches(b"report"));
        let version = glob("v{version}");
        assert!(version.matches(b"v2"));
        assert!(!version.matches(b"v"));
        assert!(!version.matches(b"x2"));
        let suffix = glob("{id}.json");
        assert!(suffix.matches(b"a.json.json"));
        assert!(!suffix.matches(b"a.jso"));
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in [
            "users",
            "/a/{",
            "/a/}",
            "/a/{}",
            "/a/{b{c}}",
            "/a?x=1",
            "/a/{b/c}",
        ] {
            assert!(parse_template(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_template(&"/a".repeat(MAX_SEGMENTS + 1)).is_err());
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode(b"a%2Fb%zz%4"), b"a/b%zz%4");
    }
}
