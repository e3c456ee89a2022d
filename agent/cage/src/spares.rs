//! Buffers of finished client connections, kept by their worker for the
//! next connection.
//!
//! Why: a client that opens a connection per request (`Connection: close`)
//! otherwise pays for a dozen allocations and frees per request: the read
//! and write buffers, and header vectors and the request-hash input that
//! grow from empty by doubling. Profiled under wrk with new connections,
//! the allocator was about 6 % of the cage's CPU and the largest part of
//! what a new connection cost over a kept-alive one.
//!
//! Bounds: a worker keeps at most [`CONN_SPARES_COUNT_MAX`] spares, and a
//! buffer that grew past [`CONN_SPARE_BUFFER_BYTES_MAX`] (a large body) is
//! freed, not kept, so one large upload does not pin memory. A spare holds
//! bytes of an earlier connection past its length; every user writes
//! before it reads (buffers are cleared, and the parsers overwrite the
//! heads they fill), so nothing of one client reaches another.

use bytes::BytesMut;
use parking_lot::Mutex;

use crate::h1::HeaderAt;
use crate::limits::{
    CONN_SPARE_BUFFER_BYTES_MAX, CONN_SPARE_HEADERS_COUNT, CONN_SPARES_COUNT_MAX, READ_CHUNK_BYTES,
};

/// What a client connection allocates, reused across its requests and then
/// across connections.
#[derive(Debug)]
pub(crate) struct ConnBuffers {
    pub rbuf: BytesMut,
    pub wbuf: Vec<u8>,
    pub request_headers: Vec<HeaderAt>,
    pub response_headers: Vec<HeaderAt>,
    /// A decoded chunked request body.
    pub req_body: Vec<u8>,
    /// The request hash input ([`crate::receipt::RequestHashInput`]).
    pub req_hash_input: Vec<u8>,
    /// A decoded chunked upstream body.
    pub up_body: Vec<u8>,
    /// `x-forwarded-for` text of the client's address.
    pub peer_ip_text: String,
}

impl ConnBuffers {
    fn new() -> Self {
        ConnBuffers {
            rbuf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            wbuf: Vec::with_capacity(READ_CHUNK_BYTES),
            request_headers: Vec::with_capacity(CONN_SPARE_HEADERS_COUNT),
            response_headers: Vec::with_capacity(CONN_SPARE_HEADERS_COUNT),
            req_body: Vec::new(),
            req_hash_input: Vec::new(),
            up_body: Vec::new(),
            peer_ip_text: String::new(),
        }
    }

    /// Empties every buffer and frees the ones over the bound; false when
    /// the read buffer is over the bound (the spare is then not kept).
    fn reset(&mut self) -> bool {
        fn bound<T>(v: &mut Vec<T>) {
            v.clear();
            if v.capacity() * size_of::<T>() > CONN_SPARE_BUFFER_BYTES_MAX {
                *v = Vec::new();
            }
        }
        bound(&mut self.wbuf);
        bound(&mut self.request_headers);
        bound(&mut self.response_headers);
        bound(&mut self.req_body);
        bound(&mut self.req_hash_input);
        bound(&mut self.up_body);
        self.peer_ip_text.clear();
        if self.peer_ip_text.capacity() > CONN_SPARE_BUFFER_BYTES_MAX {
            self.peer_ip_text = String::new();
        }
        self.rbuf.clear();
        // After `advance`, `capacity()` leaves out the consumed front of the
        // storage (a large body read earlier on a kept-alive connection):
        // move the empty view back to the start first, so the bound is
        // checked against the whole allocation. (The proxy never splits the
        // read buffer, so its storage is its own.)
        let _ = self.rbuf.try_reclaim(self.rbuf.capacity() + 1);
        self.rbuf.capacity() <= CONN_SPARE_BUFFER_BYTES_MAX
            && self.rbuf.try_reclaim(READ_CHUNK_BYTES)
    }
}

/// One worker's spare connection buffers. Only the worker's thread uses it,
/// so the lock is never contended (it is there because connection tasks
/// must be `Send`).
#[derive(Debug, Default)]
pub(crate) struct Spares {
    spare: Mutex<Vec<ConnBuffers>>,
}

impl Spares {
    /// A spare set of buffers, or a new one.
    pub fn take(&self) -> ConnBuffers {
        self.spare.lock().pop().unwrap_or_else(ConnBuffers::new)
    }

    /// Keeps `buffers` for a later connection, within the bounds.
    pub fn put(&self, mut buffers: ConnBuffers) {
        if !buffers.reset() {
            return;
        }
        let mut spare = self.spare.lock();
        if spare.len() < CONN_SPARES_COUNT_MAX {
            spare.push(buffers);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.spare.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn a_spare_comes_back_empty_with_its_capacity() {
        let spares = Spares::default();
        let mut b = spares.take();
        b.rbuf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        b.wbuf.extend_from_slice(b"secret of the last client");
        b.req_hash_input.extend_from_slice(&[7; 300]);
        b.peer_ip_text.push_str("192.0.2.1");
        let wbuf_at = b.wbuf.as_ptr();
        spares.put(b);
        assert_eq!(spares.len(), 1);
        let b = spares.take();
        assert_eq!(spares.len(), 0);
        assert!(b.rbuf.is_empty() && b.wbuf.is_empty() && b.req_hash_input.is_empty());
        assert!(b.peer_ip_text.is_empty());
        assert_eq!(b.wbuf.as_ptr(), wbuf_at, "the same storage, reused");
        assert!(b.req_hash_input.capacity() >= 300);
        assert!(b.rbuf.capacity() >= READ_CHUNK_BYTES);
    }

    #[test]
    fn grown_buffers_are_freed_and_the_count_is_bounded() {
        let spares = Spares::default();
        let mut b = spares.take();
        b.up_body.resize(CONN_SPARE_BUFFER_BYTES_MAX + 1, 0);
        spares.put(b);
        let b = spares.take();
        assert_eq!(b.up_body.capacity(), 0, "a large body buffer is not kept");

        let mut big = spares.take();
        big.rbuf.reserve(CONN_SPARE_BUFFER_BYTES_MAX + 1);
        spares.put(big);
        assert_eq!(spares.len(), 0, "a grown read buffer is not kept");

        // A large body read and consumed (`advance`) on a kept-alive
        // connection leaves a small view of a large storage.
        let mut consumed = spares.take();
        consumed.rbuf.resize(1024 * 1024, b'x');
        consumed.rbuf.advance(1024 * 1024 - 20 * 1024);
        assert!(consumed.rbuf.capacity() <= CONN_SPARE_BUFFER_BYTES_MAX);
        spares.put(consumed);
        assert_eq!(
            spares.len(),
            0,
            "the storage behind a consumed body is not kept"
        );

        // A read buffer advanced within the bound is kept, from its start.
        let mut small = spares.take();
        small.rbuf.extend_from_slice(&[b'y'; 1000]);
        small.rbuf.advance(1000);
        spares.put(small);
        assert_eq!(spares.len(), 1);
        assert!(spares.take().rbuf.capacity() >= READ_CHUNK_BYTES);

        for _ in 0..CONN_SPARES_COUNT_MAX + 5 {
            spares.put(ConnBuffers::new());
        }
        assert_eq!(spares.len(), CONN_SPARES_COUNT_MAX);
    }
}
