//! The chunked transfer coding (RFC 9112 7.1), read strictly, fed as the bytes arrive.
//!
//! One function per state, as hyper's HTTP/1 decoder is written: each takes the next byte and
//! says which state follows, or that the body is not chunked as the grammar says. Strict on
//! purpose where parsers are known to differ, since a chunked body the fast path passes on is
//! read again by the client, and two readers that end a body at different bytes see different
//! messages:
//! - every line ends in CRLF: a bare LF (accepted by nginx, and by Pingora inside chunk
//!   extensions) is how one message is read as two;
//! - a chunk size is 1 to 16 hex digits ([`MAX_CHUNK_SIZE_DIGITS`]), then optional
//!   whitespace, then `;` and extensions or the CRLF: `5 x`, an empty size and `0x5` are not
//!   sizes;
//! - extensions and trailer values hold visible characters, SP, HTAB and obs-text only; a
//!   trailer line is `name: value` with a token name (hyper parses trailers the same way);
//! - a size line is at most [`MAX_CHUNK_LINE`] bytes, the trailer section at most
//!   [`MAX_TRAILERS`].

use crate::limits::{MAX_CHUNK_LINE, MAX_CHUNK_SIZE_DIGITS, MAX_TRAILERS};

/// Finds the end of a chunked body, fed as it arrives, and what its chunks hold.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
    /// Bytes left of the current chunk (or the size being read).
    size: u64,
    /// Hex digits read of the current size.
    digits: u8,
    /// Bytes of the current size line.
    line: u32,
    /// Bytes of the trailer section so far.
    trailers: u32,
    /// Content bytes seen so far (chunk data, without the framing).
    content: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first digit of a chunk size.
    #[default]
    Start,
    /// More digits of the size, or what ends it.
    Size,
    /// Whitespace after the size: more of it, `;` or CR.
    SizeLws,
    /// A chunk extension, up to its CR.
    Extension,
    /// The LF of a size line.
    SizeLf,
    /// Chunk data (taken in bulk by [`Chunked::feed_with`]).
    Data,
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// After the last chunk or a trailer line: CR (the end) or a trailer name.
    TrailerStart,
    /// A trailer field name, up to its colon.
    TrailerName,
    /// A trailer field value, up to its CR.
    TrailerValue,
    /// The LF of a trailer line.
    TrailerLf,
    /// The LF of the empty line that ends the body.
    EndLf,
    /// The body ended.
    Done,
}

/// A chunked body that does not follow the grammar (or exceeds a limit).
#[derive(Debug, PartialEq, Eq)]
pub struct BadChunk;

type Step = Result<State, BadChunk>;

impl Chunked {
    /// Feeds the next bytes of the body. `Some(n)`: the body ended after the first `n` of them.
    #[inline]
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunk> {
        self.feed_with(bytes, |_| {})
    }

    /// [`Chunked::feed`], handing each run of chunk data to `data` as it is read.
    #[inline]
    pub fn feed_with(
        &mut self,
        bytes: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<Option<usize>, BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Data {
                // Bounded by the bytes at hand, so the cast back to usize cannot truncate.
                let take = self.size.min((bytes.len() - i) as u64) as usize;
                data(&bytes[i..i + take]);
                self.size -= take as u64;
                self.content += take as u64;
                i += take;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.state = self.step(b)?;
            if self.state == State::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Content bytes fed so far: what the access log counts as body, as HttpProxy does.
    pub fn content(&self) -> u64 {
        self.content
    }

    /// Whether the body has ended.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// The part of the grammar the next byte belongs to (after an error: the part the
    /// refused byte was read as), for the differential tests to name a disagreement.
    pub fn expecting(&self) -> &'static str {
        use State::*;
        match self.state {
            Start | Size => "size",
            SizeLws => "size-whitespace",
            Extension => "extension",
            SizeLf => "size-lf",
            Data | DataCr | DataLf => "data",
            TrailerStart | TrailerName | TrailerValue | TrailerLf | EndLf => "trailers",
            Done => "done",
        }
    }

    fn step(&mut self, b: u8) -> Step {
        use State::*;
        match self.state {
            Start | Size | SizeLws | Extension | SizeLf => {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err(BadChunk);
                }
            }
            TrailerStart | TrailerName | TrailerValue | TrailerLf | EndLf => {
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return Err(BadChunk);
                }
            }
            Data | DataCr | DataLf | Done => {}
        }
        match self.state {
            Start => self.read_start(b),
            Size => self.read_size(b),
            SizeLws => read_size_lws(b),
            Extension => read_extension(b),
            SizeLf => self.read_size_lf(b),
            DataCr => expect(b, b'\r', DataLf),
            DataLf => expect(b, b'\n', Start),
            TrailerStart => read_trailer_start(b),
            TrailerName => read_trailer_name(b),
            TrailerValue => read_trailer_value(b),
            TrailerLf => expect(b, b'\n', TrailerStart),
            EndLf => expect(b, b'\n', Done),
            // Data is taken in bulk; nothing follows the end.
            Data | Done => Err(BadChunk),
        }
    }

    /// A size has at least one digit.
    fn read_start(&mut self, b: u8) -> Step {
        match hex(b) {
            Some(_) => self.read_size(b),
            None => Err(BadChunk),
        }
    }

    fn read_size(&mut self, b: u8) -> Step {
        if let Some(d) = hex(b) {
            self.digits += 1;
            if self.digits > MAX_CHUNK_SIZE_DIGITS {
                return Err(BadChunk);
            }
            // 16 hex digits fit in u64: no overflow.
            self.size = (self.size << 4) | u64::from(d);
            return Ok(State::Size);
        }
        match b {
            b' ' | b'\t' => Ok(State::SizeLws),
            b';' => Ok(State::Extension),
            b'\r' => Ok(State::SizeLf),
            _ => Err(BadChunk),
        }
    }

    fn read_size_lf(&mut self, b: u8) -> Step {
        if b != b'\n' {
            return Err(BadChunk);
        }
        self.digits = 0;
        self.line = 0;
        Ok(if self.size == 0 {
            State::TrailerStart
        } else {
            State::Data
        })
    }
}

/// Whitespace after a size: only more of it, an extension or the end of the line may follow
/// (`5 x` is no size).
fn read_size_lws(b: u8) -> Step {
    match b {
        b' ' | b'\t' => Ok(State::SizeLws),
        b';' => Ok(State::Extension),
        b'\r' => Ok(State::SizeLf),
        _ => Err(BadChunk),
    }
}

fn read_extension(b: u8) -> Step {
    match b {
        b'\r' => Ok(State::SizeLf),
        b if field_byte(b) => Ok(State::Extension),
        _ => Err(BadChunk),
    }
}

fn read_trailer_start(b: u8) -> Step {
    match b {
        b'\r' => Ok(State::EndLf),
        b if token_byte(b) => Ok(State::TrailerName),
        _ => Err(BadChunk),
    }
}

fn read_trailer_name(b: u8) -> Step {
    match b {
        b':' => Ok(State::TrailerValue),
        b if token_byte(b) => Ok(State::TrailerName),
        _ => Err(BadChunk),
    }
}

fn read_trailer_value(b: u8) -> Step {
    match b {
        b'\r' => Ok(State::TrailerLf),
        b if field_byte(b) => Ok(State::TrailerValue),
        _ => Err(BadChunk),
    }
}

fn expect(b: u8, want: u8, next: State) -> Step {
    if b == want {
        Ok(next)
    } else {
        Err(BadChunk)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A byte of a field value or a chunk extension: HTAB, SP, VCHAR, obs-text (RFC 9110 5.5).
fn field_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff)
}

/// A `tchar` of RFC 9110 5.6.2.
fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The content of `body` and the offset its end is at, or the error.
    fn decode(body: &[u8]) -> Result<Option<(usize, Vec<u8>)>, BadChunk> {
        let mut chunks = Chunked::default();
        let mut content = Vec::new();
        let end = chunks.feed_with(body, |d| content.extend_from_slice(d))?;
        Ok(end.map(|end| (end, content)))
    }

    #[test]
    fn chunked_bodies_end_after_the_last_chunk_and_trailers() {
        let body = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\nNEXT";
        assert_eq!(
            decode(body),
            Ok(Some((body.len() - 4, b"hello0123456789".to_vec())))
        );
        // Whole, and split at every byte: the same end, just before NEXT.
        let mut whole = Chunked::default();
        assert_eq!(whole.feed(body), Ok(Some(body.len() - 4)));
        assert_eq!(whole.content(), 15);
        for split in 1..body.len() - 4 {
            let mut parts = Chunked::default();
            assert_eq!(parts.feed(&body[..split]), Ok(None), "split at {split}");
            assert_eq!(parts.feed(&body[split..]), Ok(Some(body.len() - 4 - split)));
        }
        assert_eq!(decode(b"0\r\n\r\n"), Ok(Some((5, Vec::new()))));
        assert_eq!(
            decode(b"5 \t;a\r\nhello\r\n0\r\n\r\n").map(|e| e.is_some()),
            Ok(true)
        );
        // Found by the differential test: 16 digits with leading zeros are a size to Pingora
        // (httparse's limit), and were refused here.
        assert_eq!(
            decode(b"0000000000000005\r\nhello\r\n0\r\n\r\n"),
            Ok(Some((30, b"hello".to_vec())))
        );
        assert_eq!(decode(b"0\r\nx:\r\n\r\n").map(|e| e.is_some()), Ok(true));
    }

    #[test]
    fn anything_off_the_grammar_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b";a\r\n",
            b"0x5\r\n",
            b"5 x\r\n",
            b"5\r\nhelloX",
            b"00000000000000005\r\n",
            b"fffffffffffffffff\r\n",
            // Bare LF anywhere: after the size, the data, the extension, the trailers.
            b"5\nhello\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5;a\nhello\r\n",
            b"2;\nxx\r\n55\r\n0\r\n\r\n",
            b"0\r\nX: 1\n\r\n",
            b"0\r\n\n",
            // A control byte in an extension or a trailer; a CR alone.
            b"5;a\x00b\r\n",
            b"0\r\nX: \x01\r\n\r\n",
            b"5\rhello",
            // A trailer line that is no field.
            b"0\r\nno colon\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
            b"0\r\n x: folded\r\n\r\n",
        ] {
            assert_eq!(Chunked::default().feed(bad), Err(BadChunk), "{bad:?}");
        }
    }

    #[test]
    fn long_extensions_and_trailers_are_cut_at_their_limits() {
        let mut long = b"5;".to_vec();
        long.extend(std::iter::repeat_n(b'x', 100_000));
        assert_eq!(Chunked::default().feed(&long), Err(BadChunk));
        let mut trailers = b"0\r\n".to_vec();
        for i in 0..10_000 {
            trailers.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        assert_eq!(Chunked::default().feed(&trailers), Err(BadChunk));
        // Within the limits, fed a byte at a time.
        let mut fine = b"5;".to_vec();
        fine.extend(std::iter::repeat_n(b'e', 4000));
        fine.extend_from_slice(b"\r\nhello\r\n0\r\nx: 1\r\n\r\n");
        let mut chunks = Chunked::default();
        let ends: Vec<_> = fine.iter().map(|b| chunks.feed(&[*b])).collect();
        assert_eq!(ends.last(), Some(&Ok(Some(1))));
        assert!(ends[..ends.len() - 1].iter().all(|e| *e == Ok(None)));
    }
}
