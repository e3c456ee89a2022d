//! Network escapes: raw sockets (needs CAP_NET_RAW) and TCP egress the cage should drop.

use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use super::ProbeError;
use crate::args::ProbeArgs;
use crate::errno::{Errno, check_int};
use crate::limits::EGRESS_CONNECT_TIMEOUT_MS;
use crate::report::{Attempts, Report};
use crate::sys;

pub fn raw_socket(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    let eth_p_all = libc::c_int::from((libc::ETH_P_ALL as u16).to_be());
    let tries = [
        (
            "socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)",
            libc::AF_PACKET,
            eth_p_all,
        ),
        (
            "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)",
            libc::AF_INET,
            libc::IPPROTO_ICMP,
        ),
        (
            "socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6)",
            libc::AF_INET6,
            libc::IPPROTO_ICMPV6,
        ),
    ];
    let mut attempts = Attempts::new();
    for (what, domain, protocol) in tries {
        // SAFETY: socket takes integers only and returns a new fd or an error.
        let socket = sys::own_fd(libc::c_long::from(unsafe {
            libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol)
        }));
        attempts.record(
            what,
            socket.map(|fd| format!("raw socket fd {}", fd.as_raw_fd())),
        );
    }
    Ok(attempts.into_report())
}

pub fn egress(args: &ProbeArgs) -> Result<Report, ProbeError> {
    let addr = args.socket_addr(
        "--addr",
        "the IP:PORT of the listener the test runs on the host",
    )?;
    let what = format!("TCP connect to {addr}");
    let mut attempts = Attempts::new();
    match connect_with_timeout(addr) {
        Ok(Some(local)) => attempts.succeeded(what, format!("connected from {local}")),
        Ok(None) => attempts.contained(
            what,
            format!("no answer within {EGRESS_CONNECT_TIMEOUT_MS} ms (dropped)"),
        ),
        Err(errno) => attempts.denied(what, errno),
    }
    Ok(attempts.into_report())
}

/// Non-blocking connect + poll by hand: std's connect_timeout reads the clock through the vDSO, which
/// PR_SET_TSC turns into a SIGSEGV inside the cage. Returns the local address on success, None on timeout.
fn connect_with_timeout(addr: SocketAddr) -> Result<Option<String>, Errno> {
    let (domain, storage, length) = sockaddr(addr);
    // SAFETY: socket takes integers only and returns a new fd or an error.
    let socket = sys::own_fd(libc::c_long::from(unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    }))?;
    // SAFETY: storage holds a sockaddr of `length` bytes for this family.
    let started = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            length,
        )
    };
    if started < 0 {
        let errno = Errno::last();
        if errno.0 != libc::EINPROGRESS {
            return Err(errno);
        }
        let mut pollfd = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ready = loop {
            // An EINTR restarts the full wait: the probe has no signal handlers, so that cannot repeat forever.
            // SAFETY: pollfd is one valid pollfd.
            let ready =
                unsafe { libc::poll(&mut pollfd, 1, EGRESS_CONNECT_TIMEOUT_MS as libc::c_int) };
            if ready >= 0 || Errno::last().0 != libc::EINTR {
                break ready;
            }
        };
        if ready < 0 {
            return Err(Errno::last());
        }
        if ready == 0 {
            return Ok(None);
        }
        let mut error: libc::c_int = 0;
        let mut error_length = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: error and error_length are valid out-pointers of the sizes given.
        check_int(unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut error as *mut libc::c_int).cast(),
                &mut error_length,
            )
        })?;
        if error != 0 {
            return Err(Errno(error));
        }
    }
    let stream = std::net::TcpStream::from(socket);
    Ok(Some(stream.local_addr().map_or_else(
        |error| error.to_string(),
        |local| local.to_string(),
    )))
}

fn sockaddr(addr: SocketAddr) -> (libc::c_int, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain bytes, for which all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (
                libc::AF_INET,
                storage,
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                libc::AF_INET6,
                storage,
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}
