//! Incremental HTTP/1.1 response framing for the load generator.
//!
//! The generator only needs to know where a response ends, its status and
//! whether the server will close the connection, so this parses the head with
//! `httparse` (no allocation) and then skips the body by Content-Length, by
//! chunked framing or until EOF, without copying it anywhere. It is sans-IO:
//! the caller feeds whatever bytes it has read and is told how many were
//! consumed, which keeps it testable without sockets.

/// A response head larger than this is refused (servers under test send a few
/// hundred bytes; this only stops a broken peer from growing the buffer).
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Header lines parsed per response; more is a protocol error here.
pub const HEADERS_COUNT_MAX: usize = 64;
/// A chunk-size line (with extensions) or trailer line longer than this is refused.
pub const CHUNK_LINE_BYTES_MAX: usize = 4096;

/// Why the bytes from the server are not a usable HTTP/1.1 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("response head: {0}")]
    Head(httparse::Error),
    #[error("response head is longer than {HEAD_BYTES_MAX} bytes")]
    HeadTooLarge,
    #[error("response has no status code")]
    NoStatus,
    #[error("response status 101 (protocol upgrade) is not supported")]
    Upgrade,
    #[error("content-length header {value:?} is not a decimal byte count")]
    ContentLength { value: String },
    #[error("content-length headers disagree ({first} vs {second})")]
    ContentLengthConflict { first: u64, second: u64 },
    #[error("invalid chunk-size line")]
    ChunkSize,
    #[error("chunk-size or trailer line is longer than {CHUNK_LINE_BYTES_MAX} bytes")]
    ChunkLineTooLong,
    #[error("chunk data is not followed by CRLF")]
    ChunkTerminator,
    #[error("connection closed in the middle of the response ({0})")]
    UnexpectedEof(&'static str),
}

/// What the generator keeps from a complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseMeta {
    pub status: u16,
    /// The server closes after this response (`Connection: close`, HTTP/1.0
    /// without keep-alive, or a body delimited by EOF): do not reuse the socket.
    pub close: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All of `consumed` belongs to the response; feed more bytes.
    NeedMore { consumed: usize },
    /// The response ended after `consumed` bytes of this input.
    Done {
        consumed: usize,
        response: ResponseMeta,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length { remaining_bytes: u64 },
    ChunkSize,
    ChunkData { remaining_bytes: u64 },
    ChunkDataEnd,
    Trailers,
    UntilEof,
}

#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    status: u16,
    close: bool,
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseParser {
    pub fn new() -> Self {
        Self {
            state: State::Head,
            status: 0,
            close: false,
        }
    }

    /// Ready for the next response on the same connection.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Consumes as much of `input` as belongs to the current response. The
    /// head must be fed from its first byte: bytes reported unconsumed must be
    /// fed again, followed by newly read ones.
    pub fn feed(&mut self, input: &[u8]) -> Result<Progress, ResponseError> {
        let mut pos = 0usize;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            match self.state {
                State::Head => match self.parse_head(rest)? {
                    Some(used) => pos += used,
                    None => return Ok(Progress::NeedMore { consumed: pos }),
                },
                State::Length { remaining_bytes } => {
                    let take = take_bytes(remaining_bytes, rest.len());
                    pos += take;
                    let left = remaining_bytes - take as u64;
                    if left == 0 {
                        return Ok(self.done(pos));
                    }
                    self.state = State::Length {
                        remaining_bytes: left,
                    };
                    return Ok(Progress::NeedMore { consumed: pos });
                }
                State::ChunkSize => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        pos += used;
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData {
                                remaining_bytes: size,
                            }
                        };
                    }
                    Ok(httparse::Status::Partial) => {
                        if rest.len() > CHUNK_LINE_BYTES_MAX {
                            return Err(ResponseError::ChunkLineTooLong);
                        }
                        return Ok(Progress::NeedMore { consumed: pos });
                    }
                    Err(httparse::InvalidChunkSize) => return Err(ResponseError::ChunkSize),
                },
                State::ChunkData { remaining_bytes } => {
                    let take = take_bytes(remaining_bytes, rest.len());
                    pos += take;
                    let left = remaining_bytes - take as u64;
                    if left > 0 {
                        self.state = State::ChunkData {
                            remaining_bytes: left,
                        };
                        return Ok(Progress::NeedMore { consumed: pos });
                    }
                    self.state = State::ChunkDataEnd;
                }
                State::ChunkDataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = State::ChunkSize;
                    }
                    [] | [b'\r'] => return Ok(Progress::NeedMore { consumed: pos }),
                    _ => return Err(ResponseError::ChunkTerminator),
                },
                State::Trailers => match find_crlf(rest) {
                    // The empty line ends the trailer section and the message.
                    Some(0) => return Ok(self.done(pos + 2)),
                    Some(line_end) => pos += line_end + 2,
                    None if rest.len() > CHUNK_LINE_BYTES_MAX => {
                        return Err(ResponseError::ChunkLineTooLong);
                    }
                    None => return Ok(Progress::NeedMore { consumed: pos }),
                },
                State::UntilEof => {
                    return Ok(Progress::NeedMore {
                        consumed: input.len(),
                    });
                }
            }
        }
    }

    /// The peer closed the connection: only a body delimited by EOF ends here.
    pub fn finish_eof(&mut self) -> Result<ResponseMeta, ResponseError> {
        match self.state {
            State::UntilEof => Ok(ResponseMeta {
                status: self.status,
                close: true,
            }),
            State::Head => Err(ResponseError::UnexpectedEof("in the head")),
            State::Length { .. } => Err(ResponseError::UnexpectedEof("before content-length")),
            _ => Err(ResponseError::UnexpectedEof("in a chunked body")),
        }
    }

    fn done(&mut self, consumed: usize) -> Progress {
        let response = ResponseMeta {
            status: self.status,
            close: self.close,
        };
        self.reset();
        Progress::Done { consumed, response }
    }

    /// `Some(head length)` once the head is complete and the body state is set.
    fn parse_head(&mut self, input: &[u8]) -> Result<Option<usize>, ResponseError> {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let mut response = httparse::Response::new(&mut headers);
        let head_bytes = match response.parse(input).map_err(ResponseError::Head)? {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial if input.len() > HEAD_BYTES_MAX => {
                return Err(ResponseError::HeadTooLarge);
            }
            httparse::Status::Partial => return Ok(None),
        };
        let status = response.code.ok_or(ResponseError::NoStatus)?;
        if status == 101 {
            return Err(ResponseError::Upgrade);
        }
        if (100..200).contains(&status) {
            // Interim response (100 Continue, 103 Early Hints): the final one follows.
            return Ok(Some(head_bytes));
        }

        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut other_transfer_coding = false;
        let mut says_close = false;
        let mut says_keep_alive = false;
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                let length = parse_content_length(header.value)?;
                match content_length {
                    Some(first) if first != length => {
                        return Err(ResponseError::ContentLengthConflict {
                            first,
                            second: length,
                        });
                    }
                    _ => content_length = Some(length),
                }
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                // Only the last coding decides the framing (RFC 9112 §6.3).
                let last = header
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .map(trim_ascii)
                    .unwrap_or_default();
                chunked = last.eq_ignore_ascii_case(b"chunked");
                other_transfer_coding = !chunked;
            } else if header.name.eq_ignore_ascii_case("connection") {
                for token in header.value.split(|&b| b == b',').map(trim_ascii) {
                    says_close |= token.eq_ignore_ascii_case(b"close");
                    says_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
        // HTTP/1.0 closes unless it asks for keep-alive; HTTP/1.1 keeps alive
        // unless it says close.
        let close = says_close || (response.version != Some(1) && !says_keep_alive);

        self.status = status;
        self.close = close;
        self.state = if status == 204 || status == 304 {
            State::Length { remaining_bytes: 0 }
        } else if chunked {
            State::ChunkSize
        } else if other_transfer_coding {
            self.close = true;
            State::UntilEof
        } else if let Some(length) = content_length {
            State::Length {
                remaining_bytes: length,
            }
        } else {
            self.close = true;
            State::UntilEof
        };
        Ok(Some(head_bytes))
    }
}

fn take_bytes(remaining_bytes: u64, available: usize) -> usize {
    usize::try_from(remaining_bytes).map_or(available, |r| r.min(available))
}

fn find_crlf(input: &[u8]) -> Option<usize> {
    input.windows(2).position(|w| w == b"\r\n")
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

fn parse_content_length(value: &[u8]) -> Result<u64, ResponseError> {
    let invalid = || ResponseError::ContentLength {
        value: String::from_utf8_lossy(value).into_owned(),
    };
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes the way the socket loop does
    /// (unconsumed bytes are offered again with the next piece) and returns
    /// each completed response with the input offset where it ended.
    fn feed_in_steps(
        input: &[u8],
        step: usize,
    ) -> Result<Vec<(usize, ResponseMeta)>, ResponseError> {
        let mut parser = ResponseParser::new();
        let mut out = Vec::new();
        let mut start = 0usize;
        let mut end = 0usize;
        while end < input.len() {
            end = (end + step).min(input.len());
            loop {
                match parser.feed(&input[start..end])? {
                    Progress::NeedMore { consumed } => {
                        start += consumed;
                        break;
                    }
                    Progress::Done { consumed, response } => {
                        start += consumed;
                        out.push((start, response));
                    }
                }
            }
        }
        Ok(out)
    }

    const KEEP_ALIVE: ResponseMeta = ResponseMeta {
        status: 200,
        close: false,
    };

    #[test]
    fn content_length_in_any_split() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello";
        for step in 1..=wire.len() {
            assert_eq!(
                feed_in_steps(wire, step).unwrap(),
                vec![(wire.len(), KEEP_ALIVE)],
                "step {step}"
            );
        }
    }

    #[test]
    fn two_responses_back_to_back_end_at_their_boundaries() {
        let first: &[u8] = b"HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\nnop";
        let wire = [first, b"HTTP/1.1 204 No Content\r\n\r\n"].concat();
        let first = first.len();
        let got = feed_in_steps(&wire, 7).unwrap();
        assert_eq!(
            got,
            vec![
                (
                    first,
                    ResponseMeta {
                        status: 404,
                        close: false
                    }
                ),
                (
                    wire.len(),
                    ResponseMeta {
                        status: 204,
                        close: false
                    }
                ),
            ]
        );
    }

    #[test]
    fn chunked_with_extension_and_trailer_in_any_split() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in 1..=wire.len() {
            assert_eq!(
                feed_in_steps(wire, step).unwrap(),
                vec![(wire.len(), KEEP_ALIVE)],
                "step {step}"
            );
        }
    }

    #[test]
    fn connection_close_and_http10_are_reported() {
        let wire =
            b"HTTP/1.1 503 Busy\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            feed_in_steps(wire, wire.len()).unwrap(),
            vec![(
                wire.len(),
                ResponseMeta {
                    status: 503,
                    close: true
                }
            )]
        );
        let http10 = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert!(feed_in_steps(http10, 3).unwrap()[0].1.close);
        let http10_keep =
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok";
        assert!(!feed_in_steps(http10_keep, 3).unwrap()[0].1.close);
    }

    #[test]
    fn body_until_eof_ends_only_at_eof() {
        // http.server style: HTTP/1.0, no length.
        let wire = b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP\r\n\r\nanything at all";
        let mut parser = ResponseParser::new();
        assert_eq!(
            parser.feed(wire).unwrap(),
            Progress::NeedMore {
                consumed: wire.len()
            }
        );
        assert_eq!(
            parser.finish_eof().unwrap(),
            ResponseMeta {
                status: 200,
                close: true
            }
        );
    }

    #[test]
    fn interim_100_continue_is_skipped() {
        let wire =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(
            feed_in_steps(wire, 4).unwrap(),
            vec![(
                wire.len(),
                ResponseMeta {
                    status: 201,
                    close: false
                }
            )]
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let cases: &[(&[u8], ResponseError)] = &[
            (
                b"HTTP/1.1 2x0 OK\r\n\r\n",
                ResponseError::Head(httparse::Error::Status),
            ),
            (
                b"SMTP ready\r\n\r\n",
                ResponseError::Head(httparse::Error::Version),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                ResponseError::ContentLength { value: "-1".into() },
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                ResponseError::ContentLength {
                    value: "99999999999999999999999".into(),
                },
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                ResponseError::ContentLengthConflict {
                    first: 1,
                    second: 2,
                },
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                ResponseError::ChunkSize,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
                ResponseError::ChunkTerminator,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
                ResponseError::ChunkSize,
            ),
            (b"HTTP/1.1 101 Switching\r\n\r\n", ResponseError::Upgrade),
        ];
        for (wire, want) in cases {
            let got = feed_in_steps(wire, wire.len());
            assert_eq!(
                got.as_ref().err(),
                Some(want),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn oversized_head_and_chunk_line_are_refused() {
        let mut head = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        head.resize(HEAD_BYTES_MAX + 10, b'a');
        assert_eq!(
            ResponseParser::new().feed(&head),
            Err(ResponseError::HeadTooLarge)
        );
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        chunked.resize(chunked.len() + CHUNK_LINE_BYTES_MAX + 10, b'e');
        assert_eq!(
            ResponseParser::new().feed(&chunked),
            Err(ResponseError::ChunkLineTooLong)
        );
    }

    #[test]
    fn eof_mid_response_names_where() {
        let mut parser = ResponseParser::new();
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert_eq!(
            parser.feed(wire).unwrap(),
            Progress::NeedMore {
                consumed: wire.len()
            }
        );
        assert_eq!(
            parser.finish_eof(),
            Err(ResponseError::UnexpectedEof("before content-length"))
        );
        assert_eq!(
            ResponseParser::new().finish_eof(),
            Err(ResponseError::UnexpectedEof("in the head"))
        );
    }
}
