//! Lean HTTP/1.1 framing for the proxy: request and response heads parsed
//! with `httparse` into offsets of the connection's read buffer, bodies
//! framed by `Content-Length`, chunked coding or connection close.
//!
//! Why not hyper server + client: per request they cost two tasks, a
//! channel hand-off and header maps on both sides; a proxy that forwards the
//! head bytes it already has is much cheaper (see the crate docs).
//! Everything here is pure (no IO) so it is tested directly.

use std::mem::MaybeUninit;
use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::limits::{
    CHUNK_TRAILERS_BYTES_MAX, REQUEST_HEAD_BUF_BYTES_MAX, REQUEST_HEADERS_COUNT_MAX,
};

/// One header as offsets into the head buffer.
#[derive(Clone, Debug)]
pub struct HeaderAt {
    pub name: Range<usize>,
    pub value: Range<usize>,
    pub kind: HeaderKind,
}

/// Headers the proxy treats specially (matched once, at parse time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderKind {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    /// Other hop-by-hop headers (RFC 9110 §7.6.1) and `proxy-connection`.
    HopByHop,
    Expect,
    Signature,
    SignatureInput,
    ContentDigest,
    XForwardedFor,
    KeyId,
}

fn classify(name: &[u8]) -> HeaderKind {
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        4 if is("host") => HeaderKind::Host,
        14 if is("content-length") => HeaderKind::ContentLength,
        17 if is("transfer-encoding") => HeaderKind::TransferEncoding,
        10 if is("connection") => HeaderKind::Connection,
        10 if is("keep-alive") => HeaderKind::HopByHop,
        2 if is("te") => HeaderKind::HopByHop,
        7 if is("trailer") || is("upgrade") => HeaderKind::HopByHop,
        18 if is("proxy-authenticate") => HeaderKind::HopByHop,
        19 if is("proxy-authorization") => HeaderKind::HopByHop,
        16 if is("proxy-connection") => HeaderKind::HopByHop,
        6 if is("expect") => HeaderKind::Expect,
        9 if is("signature") => HeaderKind::Signature,
        15 if is("signature-input") => HeaderKind::SignatureInput,
        14 if is("content-digest") => HeaderKind::ContentDigest,
        15 if is("x-forwarded-for") => HeaderKind::XForwardedFor,
        15 if is(crate::proxy::KEY_ID_HEADER) => HeaderKind::KeyId,
        _ => HeaderKind::Other,
    }
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
    /// Until the peer closes (responses only).
    Close,
}

/// Why a head was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("request head larger than {REQUEST_HEAD_BUF_BYTES_MAX} bytes")]
    TooLarge,
    #[error("more than {REQUEST_HEADERS_COUNT_MAX} header fields")]
    TooManyHeaders,
    #[error("invalid head: {0}")]
    Parse(httparse::Error),
    #[error("invalid content-length")]
    BadContentLength,
    #[error("transfer-encoding whose last coding is not chunked")]
    BadTransferEncoding,
    #[error("both transfer-encoding and content-length")]
    LengthAndEncoding,
    #[error("HTTP version other than 1.0 and 1.1")]
    BadVersion,
}

impl HeadError {
    /// 431 for size bounds, 400 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => {
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

fn offset_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    // Both come from the same buffer (httparse returns sub-slices).
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    start..start + part.len()
}

/// What the proxy needs of a request head.
#[derive(Debug, Default)]
pub struct RequestHead {
    pub len: usize,
    pub method: Range<usize>,
    pub target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<HeaderAt>,
    pub framing: Option<Framing>,
    /// `Connection: close` (1.1) or no `Connection: keep-alive` (1.0).
    pub close: bool,
    pub expect_continue: bool,
    pub signed: bool,
    /// A `Connection` header lists an option other than `keep-alive`
    /// (which may name a header to drop, see [`forwarded`]); without one,
    /// no header needs checking against the `Connection` lists.
    pub connection_options: bool,
}

/// Parses a request head at the start of `buf`; `Ok(None)` when more bytes
/// are needed. Reuses `head`'s header vector.
pub fn parse_request(buf: &[u8], head: &mut RequestHead) -> Result<Option<()>, HeadError> {
    // Uninitialized slots: initializing 128 empty headers costs more than
    // parsing a typical head.
    let mut raw =
        [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; REQUEST_HEADERS_COUNT_MAX];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= REQUEST_HEAD_BUF_BYTES_MAX {
                return Err(HeadError::TooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Parse(e)),
    };
    if len > REQUEST_HEAD_BUF_BYTES_MAX {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Parse(httparse::Error::Token));
    };
    if version > 1 {
        return Err(HeadError::BadVersion);
    }
    head.len = len;
    head.method = offset_in(buf, method.as_bytes());
    head.target = offset_in(buf, target.as_bytes());
    head.minor_version = version;
    head.headers.clear();
    head.expect_continue = false;
    head.signed = false;
    head.connection_options = false;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut encoded = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for h in req.headers.iter() {
        let kind = classify(h.name.as_bytes());
        match kind {
            HeaderKind::ContentLength => {
                let n = parse_content_length(h.value).ok_or(HeadError::BadContentLength)?;
                if content_length.is_some_and(|prior| prior != n) {
                    return Err(HeadError::BadContentLength);
                }
                content_length = Some(n);
            }
            HeaderKind::TransferEncoding => {
                encoded = true;
                chunked = last_coding_is_chunked(h.value);
            }
            HeaderKind::Connection => {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    conn_close |= token.eq_ignore_ascii_case(b"close");
                    let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                    conn_keep_alive |= keep_alive;
                    head.connection_options |= !keep_alive && !token.is_empty();
                }
            }
            HeaderKind::Expect => {
                head.expect_continue |= h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            }
            HeaderKind::Signature | HeaderKind::SignatureInput => head.signed = true,
            _ => {}
        }
        head.headers.push(HeaderAt {
            name: offset_in(buf, h.name.as_bytes()),
            value: offset_in(buf, h.value),
            kind,
        });
    }
    head.framing = Some(match (encoded, content_length) {
        // RFC 9112 §6.3: both is a smuggling attempt or a broken client.
        (true, Some(_)) => return Err(HeadError::LengthAndEncoding),
        (true, None) if chunked => Framing::Chunked,
        (true, None) => return Err(HeadError::BadTransferEncoding),
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    });
    head.close = if version == 1 {
        conn_close
    } else {
        !conn_keep_alive || conn_close
    };
    Ok(Some(()))
}

/// Digits only (RFC 9110 §8.6), no sign, no overflow.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// What the proxy needs of an upstream response head.
#[derive(Debug, Default)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub reason: Range<usize>,
    pub headers: Vec<HeaderAt>,
    pub framing: Option<Framing>,
    /// The upstream connection cannot carry another request.
    pub close: bool,
    /// As [`RequestHead::connection_options`].
    pub connection_options: bool,
}

/// Parses a response head at the start of `buf`; `Ok(None)` when more bytes
/// are needed. `no_body`: the request was HEAD (the status may add more).
pub fn parse_response(
    buf: &[u8],
    no_body: bool,
    head: &mut ResponseHead,
) -> Result<Option<()>, HeadError> {
    let mut raw =
        [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; REQUEST_HEADERS_COUNT_MAX];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut raw)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= REQUEST_HEAD_BUF_BYTES_MAX {
                return Err(HeadError::TooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Parse(e)),
    };
    if len > REQUEST_HEAD_BUF_BYTES_MAX {
        return Err(HeadError::TooLarge);
    }
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err(HeadError::Parse(httparse::Error::Status));
    };
    head.len = len;
    head.status = status;
    head.reason = resp.reason.map_or(0..0, |r| offset_in(buf, r.as_bytes()));
    head.headers.clear();
    head.connection_options = false;
    let mut content_length: Option<u64> = None;
    let mut encoded = false;
    let mut chunked = false;
    let mut conn_close = version == 0;
    for h in resp.headers.iter() {
        let kind = classify(h.name.as_bytes());
        match kind {
            HeaderKind::ContentLength => {
                let n = parse_content_length(h.value).ok_or(HeadError::BadContentLength)?;
                if content_length.is_some_and(|prior| prior != n) {
                    return Err(HeadError::BadContentLength);
                }
                content_length = Some(n);
            }
            HeaderKind::TransferEncoding => {
                encoded = true;
                chunked = last_coding_is_chunked(h.value);
            }
            HeaderKind::Connection => {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                    if token.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if version == 0 && keep_alive {
                        conn_close = false;
                    }
                    head.connection_options |= !keep_alive && !token.is_empty();
                }
            }
            _ => {}
        }
        head.headers.push(HeaderAt {
            name: offset_in(buf, h.name.as_bytes()),
            value: offset_in(buf, h.value),
            kind,
        });
    }
    let bodiless = no_body || (100..200).contains(&status) || status == 204 || status == 304;
    head.framing = Some(if bodiless {
        Framing::Empty
    } else if encoded && chunked {
        // With both, chunked wins (RFC 9112 §6.3) and the connection is not
        // reused: the length disagreed with the framing.
        conn_close |= content_length.is_some();
        Framing::Chunked
    } else if encoded {
        Framing::Close
    } else {
        match content_length {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    });
    head.close = conn_close || head.framing == Some(Framing::Close);
    Ok(Some(()))
}

/// Incremental chunked-coding decoder.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    Size,
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("trailer section larger than {CHUNK_TRAILERS_BYTES_MAX} bytes")]
    Trailers,
    #[error("decoded body larger than {max} bytes")]
    TooLarge { max: u64 },
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        matches!(self.state, ChunkState::Done)
    }

    /// Decodes from `input`, appending data to `out` (at most `max` bytes in
    /// all); returns the bytes of `input` consumed.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: u64,
    ) -> Result<usize, ChunkError> {
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        pos += used;
                        if (out.len() as u64).saturating_add(size) > max {
                            return Err(ChunkError::TooLarge { max });
                        }
                        self.state = if size == 0 {
                            ChunkState::Trailers
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => {
                        // A size line is short; a long one is garbage.
                        if rest.len() > 1024 {
                            return Err(ChunkError::Size);
                        }
                        return Ok(pos);
                    }
                    Err(_) => return Err(ChunkError::Size),
                },
                ChunkState::Data(remaining) => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    let take = rest
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    out.extend_from_slice(rest.get(..take).unwrap_or_default());
                    pos += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if !rest.starts_with(b"\r\n") {
                        return Err(ChunkError::DataEnd);
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    // Trailer fields are dropped (never forwarded); only the
                    // end of the section matters.
                    let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                        if self.trailer_bytes + rest.len() > CHUNK_TRAILERS_BYTES_MAX {
                            return Err(ChunkError::Trailers);
                        }
                        return Ok(pos);
                    };
                    self.trailer_bytes += eol + 2;
                    if self.trailer_bytes > CHUNK_TRAILERS_BYTES_MAX {
                        return Err(ChunkError::Trailers);
                    }
                    pos += eol + 2;
                    if eol == 0 {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }
}

/// `name` is one of the comma-separated tokens of a `Connection` value
/// (such headers are hop-by-hop too).
pub fn listed_in_connection(buf: &[u8], headers: &[HeaderAt], name: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| h.kind == HeaderKind::Connection)
        .filter_map(|h| buf.get(h.value.clone()))
        .flat_map(|v| v.split(|b| *b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(name))
}

/// Whether a header is forwarded (either direction): not hop-by-hop and
/// not named by a `Connection` header. `connection_options`: the head's
/// flag of that name (false: no `Connection` list can name this header;
/// `keep-alive` names the hop-by-hop `Keep-Alive` at most).
pub fn forwarded(buf: &[u8], headers: &[HeaderAt], h: &HeaderAt, connection_options: bool) -> bool {
    match h.kind {
        HeaderKind::Connection | HeaderKind::TransferEncoding | HeaderKind::HopByHop => false,
        _ if !connection_options => true,
        _ => !buf
            .get(h.name.clone())
            .is_some_and(|name| listed_in_connection(buf, headers, name)),
    }
}

/// Appends `name: value\r\n`.
pub fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal digits of `n`.
pub fn put_u64(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

/// `Date` header value (IMF-fixdate), recomputed at most once a second.
#[derive(Debug, Default)]
pub struct DateCache {
    second: u64,
    value: Vec<u8>,
}

impl DateCache {
    pub fn get(&mut self) -> &[u8] {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.value.is_empty() || now != self.second {
            self.second = now;
            self.value.clear();
            self.value
                .extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        }
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text<'a>(buf: &'a [u8], r: &Range<usize>) -> &'a str {
        std::str::from_utf8(&buf[r.clone()]).unwrap()
    }

    #[test]
    fn request_head_offsets_and_framing() {
        let buf = b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\nSignature: s\r\n\r\nabcNEXT";
        let mut head = RequestHead::default();
        assert_eq!(parse_request(&buf[..20], &mut head), Ok(None));
        assert_eq!(parse_request(buf, &mut head), Ok(Some(())));
        assert_eq!(text(buf, &head.method), "POST");
        assert_eq!(text(buf, &head.target), "/a?b=1");
        assert_eq!(&buf[head.len..head.len + 3], b"abc");
        assert_eq!(head.framing, Some(Framing::Length(3)));
        assert!(head.close && head.signed && !head.expect_continue);
        assert_eq!(head.headers.len(), 4);
        assert_eq!(head.headers[0].kind, HeaderKind::Host);
        assert_eq!(text(buf, &head.headers[0].value), "x");

        let buf = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        parse_request(buf, &mut head).unwrap();
        assert!(!head.close);
        assert_eq!(head.framing, Some(Framing::Empty));
        let buf = b"GET / HTTP/1.0\r\n\r\n";
        parse_request(buf, &mut head).unwrap();
        assert!(head.close);
    }

    #[test]
    fn request_heads_that_are_refused() {
        let mut head = RequestHead::default();
        let cases: [(&[u8], HeadError); 5] = [
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::LengthAndEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                HeadError::BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n",
                HeadError::BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                HeadError::BadTransferEncoding,
            ),
            (
                b"NOT A REQUEST\r\n\r\n",
                HeadError::Parse(httparse::Error::Version),
            ),
        ];
        for (buf, expected) in cases {
            let got = parse_request(buf, &mut head).unwrap_err();
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&expected),
                "{}: {got}",
                String::from_utf8_lossy(buf)
            );
            assert_eq!(got.status(), http::StatusCode::BAD_REQUEST);
        }
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=REQUEST_HEADERS_COUNT_MAX {
            many.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let e = parse_request(&many, &mut head).unwrap_err();
        assert_eq!(e, HeadError::TooManyHeaders);
        assert_eq!(
            e.status(),
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let mut huge = b"GET / HTTP/1.1\r\nx: ".to_vec();
        huge.resize(REQUEST_HEAD_BUF_BYTES_MAX + 1, b'a');
        assert_eq!(parse_request(&huge, &mut head), Err(HeadError::TooLarge));
    }

    #[test]
    fn response_framing() {
        let mut head = ResponseHead::default();
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        parse_response(buf, false, &mut head).unwrap();
        assert_eq!(
            (head.status, head.framing, head.close),
            (200, Some(Framing::Length(2)), false)
        );
        assert_eq!(text(buf, &head.reason), "OK");
        parse_response(buf, true, &mut head).unwrap();
        assert_eq!(head.framing, Some(Framing::Empty));
        let buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        parse_response(buf, false, &mut head).unwrap();
        assert_eq!((head.framing, head.close), (Some(Framing::Chunked), false));
        let buf = b"HTTP/1.1 200 OK\r\n\r\n";
        parse_response(buf, false, &mut head).unwrap();
        assert_eq!((head.framing, head.close), (Some(Framing::Close), true));
        let buf = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n";
        parse_response(buf, false, &mut head).unwrap();
        assert_eq!(head.framing, Some(Framing::Empty));
        let buf = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        parse_response(buf, false, &mut head).unwrap();
        assert!(head.close);
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n", false, &mut head).is_err());
    }

    #[test]
    fn chunked_decoding_in_pieces() {
        let input = b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\nrest";
        // Byte by byte and whole give the same body.
        for step in [1, 3, input.len()] {
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            let mut fed = 0;
            let mut pending: Vec<u8> = Vec::new();
            while !d.is_done() {
                let end = (fed + step).min(input.len());
                pending.extend_from_slice(&input[fed..end]);
                fed = end;
                let used = d.decode(&pending, &mut out, 1024).unwrap();
                pending.drain(..used);
            }
            assert_eq!(out, b"abc0123456789abcdef");
            assert_eq!(&input[fed - pending.len()..fed], &pending[..]);
            assert!(b"rest".starts_with(&pending) || pending.is_empty());
        }
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        assert_eq!(
            d.decode(b"10\r\n", &mut out, 8),
            Err(ChunkError::TooLarge { max: 8 })
        );
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.decode(b"zz\r\n", &mut out, 8), Err(ChunkError::Size));
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.decode(b"1\r\naXX", &mut out, 8), Err(ChunkError::DataEnd));
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_not_forwarded() {
        let buf = b"GET / HTTP/1.1\r\nConnection: x-private, close\r\nX-Private: 1\r\nKeep-Alive: 5\r\nX-Ok: 2\r\n\r\n";
        let mut head = RequestHead::default();
        parse_request(buf, &mut head).unwrap();
        assert!(head.connection_options);
        let kept: Vec<&str> = head
            .headers
            .iter()
            .filter(|h| forwarded(buf, &head.headers, h, head.connection_options))
            .map(|h| text(buf, &h.name))
            .collect();
        assert_eq!(kept, ["X-Ok"]);

        // Only `keep-alive` listed: nothing to look up, hop-by-hop still dropped.
        let buf = b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: 5\r\nX-Ok: 2\r\nContent-Length: 0\r\n\r\n";
        let mut resp = ResponseHead::default();
        parse_response(buf, false, &mut resp).unwrap();
        assert!(!resp.connection_options);
        let kept: Vec<&str> = resp
            .headers
            .iter()
            .filter(|h| forwarded(buf, &resp.headers, h, resp.connection_options))
            .map(|h| text(buf, &h.name))
            .collect();
        assert_eq!(kept, ["X-Ok", "Content-Length"]);
        let buf = b"HTTP/1.1 200 OK\r\nConnection: x-private\r\nX-Private: 1\r\nContent-Length: 0\r\n\r\n";
        parse_response(buf, false, &mut resp).unwrap();
        assert!(resp.connection_options);
        assert!(!forwarded(buf, &resp.headers, &resp.headers[1], true));
    }

    #[test]
    fn numbers_and_dates() {
        let mut out = Vec::new();
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            out.clear();
            put_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        assert_eq!(parse_content_length(b" 42 "), Some(42));
        assert_eq!(parse_content_length(b"99999999999999999999"), None);
        let mut dates = DateCache::default();
        let d = String::from_utf8(dates.get().to_vec()).unwrap();
        assert!(d.ends_with(" GMT") && d.len() == 29, "{d}");
    }
}
