//! Accepting client connections without joining epoll unless they block.
//!
//! Why: a client that opens a connection per request (`Connection: close`)
//! usually has its request in the socket by the time it is accepted, and
//! the response fits the socket's send buffer. Registering such a socket
//! with the runtime costs an `epoll_ctl(ADD)`, tokio's `epoll_ctl(DEL)`
//! before close (mio#753: no way to let close remove it) and a slab entry
//! allocated and freed: measured 5–6 % of the cage's CPU on the
//! new-connection bench, for a socket that never waited. nginx adds the
//! socket too but lets close(2) remove it.
//!
//! [`ClientStream`] starts as a plain non-blocking socket and tries each
//! read and write directly. Only the first one that would block registers
//! it (then it stays registered until closed). Registration lost no
//! wake-up: `epoll_ctl(ADD)` reports readiness that is already there.
//!
//! The listener is an [`AsyncFd`] rather than a tokio `TcpListener`, whose
//! `accept` registers every stream it returns; `accept4` also sets
//! `O_NONBLOCK` so no `fcntl` follows.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags, SocketFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A worker's listener (non-blocking, registered once).
pub(crate) struct Listener(AsyncFd<std::net::TcpListener>);

impl Listener {
    /// `listener` must be non-blocking (tokio's `into_std` leaves it so).
    pub(crate) fn new(listener: std::net::TcpListener) -> io::Result<Listener> {
        // SAFETY: the std listener owns its descriptor, which stays open
        // and the same while the `AsyncFd` owns the listener (nothing here
        // replaces or closes it before the `AsyncFd` is dropped).
        let registered = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) };
        registered.map(Listener).map_err(io::Error::from)
    }

    /// The next connection, not registered with the runtime.
    pub(crate) async fn accept(&self) -> io::Result<(ClientStream, SocketAddr)> {
        // `async_io` clears the readiness on EAGAIN (the next wait waits
        // for a new connection) and spends the task's cooperative budget:
        // the accept loop yields to the connections it spawned instead of
        // emptying the whole backlog first.
        self.0
            .async_io(Interest::READABLE, accept_nonblocking)
            .await
    }
}

/// Sets TCP_DEFER_ACCEPT on `listener`: a connection is handed to
/// `accept` only once its first bytes are there (or, for a client that
/// stays silent, after about `hold_s` seconds), so an HTTP client's request
/// is readable at accept and the worker wakes once, not twice. A client
/// that connects and sends nothing takes no worker slot while the kernel
/// holds it. nginx offers the same as `listen … deferred`.
pub(crate) fn set_defer_accept(
    listener: &impl std::os::fd::AsRawFd,
    hold_s: u32,
) -> io::Result<()> {
    // At least one second (zero would turn it off).
    let secs = libc::c_int::try_from(hold_s.max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is the caller's open listener; the option
    // value is a c_int that lives across the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&secs).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn accept_nonblocking(listener: &std::net::TcpListener) -> io::Result<(ClientStream, SocketAddr)> {
    let (fd, peer) =
        rustix::net::acceptfrom_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?;
    let stream = std::net::TcpStream::from(fd);
    // A TCP accept always has the peer's address; asked again if not.
    let peer = match peer.and_then(|a| SocketAddr::try_from(a).ok()) {
        Some(peer) => peer,
        None => stream.peer_addr()?,
    };
    Ok((
        ClientStream {
            sock: Sock::Plain(stream),
            closing: false,
        },
        peer,
    ))
}

/// A client socket, registered with the runtime at its first would-block.
#[derive(Debug)]
pub(crate) struct ClientStream {
    sock: Sock,
    /// The connection closes after what is being written: hold it back
    /// (`MSG_MORE`) so close(2) sends it with the FIN in one segment.
    closing: bool,
}

#[derive(Debug)]
enum Sock {
    /// Non-blocking, not in the worker's epoll set.
    Plain(std::net::TcpStream),
    Registered(tokio::net::TcpStream),
    /// Registration failed (the socket was closed); every call fails.
    Failed,
}

/// A stream whose connection can be told that what it writes next is the
/// last thing it sends before it is dropped.
pub(crate) trait LastWrite {
    /// Everything written from now on is followed by close(2) with no
    /// wait in between (holding it back is only safe then).
    fn last_write(&mut self);
}

impl LastWrite for ClientStream {
    fn last_write(&mut self) {
        self.closing = true;
    }
}

impl LastWrite for tokio_rustls::server::TlsStream<ClientStream> {
    fn last_write(&mut self) {
        self.get_mut().0.last_write();
    }
}

/// What a direct attempt on a plain socket did.
enum Attempt<T> {
    Done(io::Result<T>),
    /// It would block: register and wait through the runtime.
    Register,
}

impl ClientStream {
    /// Registers a plain socket (after its first would-block) and returns
    /// the registered stream.
    fn register(&mut self) -> io::Result<&mut tokio::net::TcpStream> {
        if let Sock::Plain(_) = self.sock {
            let Sock::Plain(plain) = std::mem::replace(&mut self.sock, Sock::Failed) else {
                unreachable!("matched above")
            };
            self.sock = Sock::Registered(tokio::net::TcpStream::from_std(plain)?);
        }
        match &mut self.sock {
            Sock::Registered(s) => Ok(s),
            _ => Err(failed()),
        }
    }

    /// One I/O call: `direct` on the plain socket while it has never had
    /// to wait; at its first would-block (and from then on) `registered`
    /// on the tokio stream, which waits for readiness. `arg` is the
    /// buffer both need.
    ///
    /// A direct call spends one unit of the task's cooperative budget, as
    /// tokio's own sockets do: a socket that never has to wait would
    /// otherwise let a connection task run on for as long as its client
    /// keeps it fed (a flood of pipelined requests the cage answers
    /// itself, a fast body) and starve the worker's other connections.
    fn poll_io<A: ?Sized, T>(
        &mut self,
        cx: &mut Context<'_>,
        arg: &mut A,
        mut direct: impl FnMut(&std::net::TcpStream, SendFlags, &mut A) -> rustix::io::Result<T>,
        registered: impl FnOnce(
            Pin<&mut tokio::net::TcpStream>,
            &mut Context<'_>,
            &mut A,
        ) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Sock::Plain(s) = &self.sock {
            let budget = std::task::ready!(tokio::task::coop::poll_proceed(cx));
            let flags = self.send_flags();
            match attempt(|| direct(s, flags, arg)) {
                Attempt::Done(r) => {
                    budget.made_progress();
                    return Poll::Ready(r);
                }
                // The unit goes back: the registered call spends its own.
                Attempt::Register => {}
            }
        }
        match self.register() {
            Ok(s) => registered(Pin::new(s), cx, arg),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// NOSIGNAL: a peer that reset gets EPIPE, not SIGPIPE. MORE once
    /// closing: held back for the FIN (see the `Drop` impl).
    fn send_flags(&self) -> SendFlags {
        if self.closing {
            SendFlags::NOSIGNAL | SendFlags::MORE
        } else {
            SendFlags::NOSIGNAL
        }
    }

    /// Answers a connection the cage has no slot for with `response` and
    /// closes it, without waiting and without joining epoll. The bytes the
    /// client already sent (TCP_DEFER_ACCEPT hands a connection over with
    /// its request) are read and dropped first, up to `drain_bytes_max`:
    /// close(2) on unread bytes sends a reset, which can destroy the answer
    /// before the client reads it; drained, the close sends the answer
    /// with a FIN (`Drop`). Best effort: nothing here waits, so a client
    /// still sending meets a reset as before.
    pub(crate) fn refuse(mut self, response: &[u8], drain_bytes_max: usize) {
        let Sock::Plain(s) = &self.sock else {
            return;
        };
        let mut scratch = [0u8; 4096];
        let mut drained = 0;
        while drained < drain_bytes_max {
            match rustix::net::recv(s, &mut scratch[..], RecvFlags::DONTWAIT) {
                Ok((0, _)) | Err(_) => break,
                Ok((n, _)) => drained += n,
            }
        }
        self.closing = true;
        let _ = rustix::net::send(s, response, self.send_flags());
    }

    /// Whether the socket has joined the runtime's epoll set (tests).
    #[cfg(test)]
    pub(crate) fn is_registered(&self) -> bool {
        matches!(self.sock, Sock::Registered(_))
    }

    /// The socket while it has not joined the epoll set (tests).
    #[cfg(test)]
    pub(crate) fn plain(&self) -> Option<&std::net::TcpStream> {
        match &self.sock {
            Sock::Plain(s) => Some(s),
            _ => None,
        }
    }
}

fn failed() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the client socket could not join the runtime's epoll set",
    )
}

/// Retries on EINTR; `Register` on EAGAIN.
fn attempt<T>(mut op: impl FnMut() -> rustix::io::Result<T>) -> Attempt<T> {
    loop {
        match op() {
            Ok(v) => return Attempt::Done(Ok(v)),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => return Attempt::Register,
            Err(e) => return Attempt::Done(Err(e.into())),
        }
    }
}

/// A closing socket ends with shutdown(SHUT_WR) before close(2): the FIN
/// joins the bytes held back by MSG_MORE and both leave in one segment.
/// close(2) alone would do the same, except when the client has sent bytes
/// nobody read: then close(2) answers with a reset and drops what was never
/// sent, the whole response. Bytes already read past the request make the
/// proxy linger instead; these are bytes that arrived after the last read.
/// After shutdown, what the window lets leave at once (a small response:
/// all of it) is on its way before the reset; a bigger response can still
/// be cut short, as with any server that closes on unread input.
impl Drop for ClientStream {
    fn drop(&mut self) {
        if let (true, Sock::Plain(s)) = (self.closing, &self.sock) {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_io(
            cx,
            buf,
            |s, _, buf| {
                // SAFETY: recv only writes initialised bytes into the
                // slice; it never de-initialises any.
                let unfilled = unsafe { buf.unfilled_mut() };
                let ((filled, _), _) = rustix::net::recv(s, unfilled, RecvFlags::empty())?;
                let n = filled.len();
                // SAFETY: recv wrote `n` bytes at the start of the
                // unfilled part (rustix returns the written prefix).
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                Ok(())
            },
            |s, cx, buf| s.poll_read(cx, buf),
        )
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = buf;
        self.get_mut().poll_io(
            cx,
            &mut buf,
            |s, flags, buf| rustix::net::send(s, buf, flags),
            |s, cx, buf| s.poll_write(cx, buf),
        )
    }

    /// rustls hands a TLS flight over as one slice per record: one
    /// sendmsg, so they leave in one segment rather than one each.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut bufs = bufs;
        self.get_mut().poll_io(
            cx,
            &mut bufs,
            |s, flags, bufs| {
                rustix::net::sendmsg(s, bufs, &mut SendAncillaryBuffer::default(), flags)
            },
            |s, cx, bufs| s.poll_write_vectored(cx, bufs),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().sock {
            Sock::Registered(s) => Pin::new(s).poll_flush(cx),
            // Nothing is buffered in user space; bytes held back for the
            // FIN leave at the shutdown in `Drop`, which follows without a
            // wait.
            Sock::Plain(_) => Poll::Ready(Ok(())),
            Sock::Failed => Poll::Ready(Err(failed())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().sock {
            Sock::Registered(s) => Pin::new(s).poll_shutdown(cx),
            Sock::Plain(s) => Poll::Ready(s.shutdown(std::net::Shutdown::Write)),
            Sock::Failed => Poll::Ready(Err(failed())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (tokio::net::TcpStream, ClientStream) {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let listener = Listener::new(std_listener).unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap(), "the peer is the client");
        (client, server)
    }

    /// The case the type exists for: the request is there at accept and the
    /// response fits, so the socket never joins epoll.
    #[tokio::test]
    async fn a_request_that_is_already_there_needs_no_registration() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"ping").await.unwrap();
        // Let loopback deliver before the server reads.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        server.write_all(b"pong").await.unwrap();
        server.shutdown().await.unwrap();
        assert!(!server.is_registered(), "nothing had to wait");
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong", "shutdown ended the stream after the reply");
    }

    /// A read before the data arrives registers and then wakes when it
    /// comes (no lost wake-up between the would-block and the ADD).
    #[tokio::test]
    async fn a_read_that_would_block_registers_and_wakes() {
        let (mut client, mut server) = pair().await;
        let reader = tokio::spawn(async move {
            let mut got = [0u8; 5];
            server.read_exact(&mut got).await.unwrap();
            (got, server)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"hello").await.unwrap();
        let (got, server) = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the registered read woke")
            .unwrap();
        assert_eq!(&got, b"hello");
        assert!(server.is_registered());
    }

    /// A write larger than the socket buffers blocks, registers and
    /// finishes once the client reads.
    #[tokio::test]
    async fn a_write_that_would_block_registers_and_completes() {
        let (mut client, mut server) = pair().await;
        let big = vec![7u8; 16 << 20];
        let writer = tokio::spawn(async move {
            server.write_all(&big).await.unwrap();
            server.shutdown().await.unwrap();
            server
        });
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back.len(), 16 << 20);
        assert!(back.iter().all(|b| *b == 7));
        assert!(writer.await.unwrap().is_registered());
    }

    /// Bytes held back for the FIN (MSG_MORE) leave with the close: the
    /// client gets all of them, then end of stream, at once.
    #[tokio::test]
    async fn the_last_write_leaves_with_the_close() {
        let (mut client, mut server) = pair().await;
        server.last_write();
        server
            .write_all(b"HTTP/1.1 200 OK\r\n\r\nbye")
            .await
            .unwrap();
        server.flush().await.unwrap();
        assert!(!server.is_registered());
        // Held back (until the close, or the kernel's probe timer at 200 ms
        // or more), so that the FIN can join it.
        let mut early = [0u8; 64];
        assert!(
            tokio::time::timeout(Duration::from_millis(50), client.read(&mut early))
                .await
                .is_err(),
            "the last bytes waited for the FIN"
        );
        drop(server);
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut back))
            .await
            .expect("nothing is held past the close")
            .unwrap();
        assert_eq!(back, b"HTTP/1.1 200 OK\r\n\r\nbye");
    }

    /// End of stream and a reset come back as such, registered or not.
    #[tokio::test]
    async fn eof_and_reset_are_reported() {
        let (client, mut server) = pair().await;
        drop(client);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut buf = [0u8; 8];
        assert_eq!(server.read(&mut buf).await.unwrap(), 0, "EOF");

        let (client, mut server) = pair().await;
        // Linger 0: close sends a reset.
        rustix::net::sockopt::set_socket_linger(&client, Some(Duration::ZERO)).unwrap();
        drop(client);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let err = server.write_all(&[1u8; 64]).await.unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "{err}"
        );
    }
}
