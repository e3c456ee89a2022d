//! Readiness: poll the agent's `/health` over plain HTTP/1.1 until it answers 200, then print the one
//! `metanode: ready ...` line the boot tests and operators wait for.
//!
//! One probe runs on the main loop every [`READINESS_POLL_INTERVAL`], bounded by connect and I/O
//! timeouts, so a hung agent delays the loop by at most those timeouts (see the const assertions in
//! `constants.rs` against the watchdog).

use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::constants::{
    READINESS_DEADLINE_MAX, READINESS_HEADERS_COUNT_MAX, READINESS_POLL_INTERVAL,
    READINESS_RESPONSE_BYTES_MAX,
};

/// A parsed `http://<ip>[:port]/path` URL. Only IP literals: PID 1 resolves no names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    addr: SocketAddr,
    /// As written in the URL, for the Host header.
    authority: String,
    path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("url `{url}`: only http:// is supported")]
    NotHttp { url: String },
    #[error("url `{url}`: host `{host}` is not an IP address (PID 1 does not resolve names)")]
    NotAnIp { url: String, host: String },
    #[error("url `{url}`: bad port `{port}`")]
    BadPort { url: String, port: String },
}

impl HttpTarget {
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(UrlError::NotHttp {
                url: url.to_owned(),
            });
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            // [v6]:port
            match bracketed.split_once(']') {
                Some((host, tail)) => (host, tail.strip_prefix(':')),
                None => (authority, None),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let ip: IpAddr = host.parse().map_err(|_| UrlError::NotAnIp {
            url: url.to_owned(),
            host: host.to_owned(),
        })?;
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().map_err(|_| UrlError::BadPort {
                url: url.to_owned(),
                port: p.to_owned(),
            })?,
        };
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("send request: {0}")]
    Write(io::Error),
    #[error("read response: {0}")]
    Read(io::Error),
    #[error("connection closed after {received_bytes} bytes, before the response head ended")]
    Truncated { received_bytes: usize },
    #[error("response head longer than {max} bytes")]
    TooLarge { max: usize },
    #[error("bad response: {0}")]
    BadResponse(String),
}

/// One `GET`: returns the status code of the response.
pub fn probe(
    target: &HttpTarget,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> Result<u16, ProbeError> {
    let mut stream =
        TcpStream::connect_timeout(&target.addr, connect_timeout).map_err(ProbeError::Connect)?;
    stream
        .set_read_timeout(Some(io_timeout))
        .map_err(ProbeError::Connect)?;
    stream
        .set_write_timeout(Some(io_timeout))
        .map_err(ProbeError::Connect)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: metanode-init\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream
        .write_all(request.as_bytes())
        .map_err(ProbeError::Write)?;
    let mut buffer = vec![0u8; READINESS_RESPONSE_BYTES_MAX];
    let mut filled = 0usize;
    loop {
        let Some(space) = buffer.get_mut(filled..).filter(|s| !s.is_empty()) else {
            return Err(ProbeError::TooLarge {
                max: READINESS_RESPONSE_BYTES_MAX,
            });
        };
        let read = match stream.read(space) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ProbeError::Read(e)),
        };
        if read == 0 {
            return Err(ProbeError::Truncated {
                received_bytes: filled,
            });
        }
        filled += read;
        let mut headers = [httparse::EMPTY_HEADER; READINESS_HEADERS_COUNT_MAX];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(buffer.get(..filled).unwrap_or(&[])) {
            Ok(httparse::Status::Complete(_)) => {
                return response
                    .code
                    .ok_or_else(|| ProbeError::BadResponse("no status code".to_owned()));
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(ProbeError::BadResponse(e.to_string())),
        }
    }
}

/// An address for the ready line (`ip/prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix_len)
    }
}

/// What goes into the ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyInfo<'a> {
    pub version: &'a str,
    pub slot: &'a str,
    pub addresses: &'a [InterfaceAddress],
    pub api_url: &'a str,
    pub sysctl_ok: bool,
}

/// `metanode: ready version=<v> slot=<s> addresses=<a,b> api=<url>`, plus ` sysctl=FAILED` when the
/// sysctl policy did not apply. No address at all prints `addresses=none`.
pub fn ready_line(info: &ReadyInfo<'_>) -> String {
    let addresses = if info.addresses.is_empty() {
        "none".to_owned()
    } else {
        info.addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut line = format!(
        "metanode: ready version={} slot={} addresses={addresses} api={}",
        info.version, info.slot, info.api_url
    );
    if !info.sysctl_ok {
        line.push_str(" sysctl=FAILED");
    }
    line
}

/// What a readiness step decided.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadinessStep {
    /// Not time to probe, or already decided.
    Idle,
    /// Probed; not ready yet.
    Pending,
    /// The probe got 200 (reported once).
    Ready,
    /// The deadline passed first (reported once), with the last probe's outcome. Probing goes on:
    /// a later 200 is still reported as `Ready`.
    NotReady { last: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the deadline.
    Waiting,
    /// Past the deadline (`NotReady` reported); still probing, so an agent that comes up late is
    /// still announced.
    Late,
    /// Ready reported.
    Done,
}

/// The probe schedule: pure; the caller passes the time and the probe to run.
#[derive(Debug, Clone)]
pub struct Readiness {
    deadline: Instant,
    next_probe: Instant,
    phase: Phase,
    last: String,
}

impl Readiness {
    /// `deadline_after` is clamped to [`READINESS_DEADLINE_MAX`].
    pub fn new(now: Instant, deadline_after: Duration) -> Self {
        Self {
            deadline: now + deadline_after.min(READINESS_DEADLINE_MAX),
            next_probe: now,
            phase: Phase::Waiting,
            last: "no probe yet".to_owned(),
        }
    }

    /// Probe if one is due. Ready wins over a deadline reached in the same step.
    pub fn step(
        &mut self,
        now: Instant,
        probe: impl FnOnce() -> Result<u16, ProbeError>,
    ) -> ReadinessStep {
        if self.phase == Phase::Done || now < self.next_probe {
            return ReadinessStep::Idle;
        }
        self.next_probe = now + READINESS_POLL_INTERVAL;
        match probe() {
            Ok(200) => {
                self.phase = Phase::Done;
                return ReadinessStep::Ready;
            }
            Ok(status) => self.last = format!("status {status}"),
            Err(e) => self.last = e.to_string(),
        }
        if self.phase == Phase::Waiting && now >= self.deadline {
            self.phase = Phase::Late;
            return ReadinessStep::NotReady {
                last: self.last.clone(),
            };
        }
        ReadinessStep::Pending
    }

    /// When the next probe is due (`None` once ready).
    pub fn next_due(&self) -> Option<Instant> {
        (self.phase != Phase::Done).then_some(self.next_probe)
    }

    /// Ready was reported.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Done
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use super::*;

    #[test]
    fn parses_urls() {
        let t = HttpTarget::parse("http://127.0.0.1:8080/health").expect("v4");
        assert_eq!(t.addr(), "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(t.path(), "/health");
        assert_eq!(t.to_string(), "http://127.0.0.1:8080/health");
        let t = HttpTarget::parse("http://[::1]:9000").expect("v6");
        assert_eq!(t.addr(), "[::1]:9000".parse().expect("addr"));
        assert_eq!(t.path(), "/");
        assert_eq!(
            HttpTarget::parse("http://10.0.0.1/x")
                .expect("port 80")
                .addr()
                .port(),
            80
        );
        assert_eq!(
            HttpTarget::parse("https://127.0.0.1/health"),
            Err(UrlError::NotHttp {
                url: "https://127.0.0.1/health".into()
            })
        );
        assert_eq!(
            HttpTarget::parse("http://localhost:1/health"),
            Err(UrlError::NotAnIp {
                url: "http://localhost:1/health".into(),
                host: "localhost".into()
            })
        );
        assert_eq!(
            HttpTarget::parse("http://127.0.0.1:99999/"),
            Err(UrlError::BadPort {
                url: "http://127.0.0.1:99999/".into(),
                port: "99999".into()
            })
        );
    }

    /// Serve `responses` (one per connection) on loopback and return the URL and the requests seen.
    fn serve(responses: Vec<&'static [u8]>) -> (HttpTarget, thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = thread::spawn(move || {
            let mut requests = Vec::new();
            for response in responses {
                let (mut stream, _) = listener.accept().expect("accept");
                let mut buffer = [0u8; 1024];
                let mut request = Vec::new();
                while !request.ends_with(b"\r\n\r\n") {
                    let n = stream.read(&mut buffer).expect("read");
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buffer[..n]);
                }
                requests.push(String::from_utf8_lossy(&request).into_owned());
                stream.write_all(response).expect("write");
            }
            requests
        });
        (
            HttpTarget::parse(&format!("http://{addr}/health")).expect("url"),
            handle,
        )
    }

    #[test]
    fn probe_reads_the_status_over_real_tcp() {
        let (target, server) = serve(vec![
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-",
            b"garbage\r\n\r\n",
        ]);
        let timeout = Duration::from_secs(5);
        assert_eq!(probe(&target, timeout, timeout).expect("503"), 503);
        assert_eq!(probe(&target, timeout, timeout).expect("200"), 200);
        assert!(matches!(
            probe(&target, timeout, timeout),
            Err(ProbeError::Truncated { received_bytes: 25 })
        ));
        assert!(matches!(
            probe(&target, timeout, timeout),
            Err(ProbeError::BadResponse(_))
        ));
        let requests = server.join().expect("server");
        let host = target.addr().to_string();
        assert!(
            requests[0].starts_with(&format!("GET /health HTTP/1.1\r\nHost: {host}\r\n")),
            "{requests:?}"
        );
        assert!(requests[0].contains("Connection: close\r\n"));
    }

    #[test]
    fn probe_of_a_closed_port_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let target = HttpTarget::parse(&format!("http://{addr}/health")).expect("url");
        let timeout = Duration::from_secs(5);
        assert!(matches!(
            probe(&target, timeout, timeout),
            Err(ProbeError::Connect(_))
        ));
    }

    fn refused() -> Result<u16, ProbeError> {
        Err(ProbeError::Connect(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        )))
    }

    #[test]
    fn probes_every_interval_until_ready() {
        let start = Instant::now();
        let mut readiness = Readiness::new(start, Duration::from_secs(120));
        let mut probes = 0;
        let mut t = start;
        let mut outcome = ReadinessStep::Idle;
        // 10 ms steps; ready from 1 s on.
        for _ in 0..1000 {
            let step = readiness.step(t, || {
                probes += 1;
                if t - start >= Duration::from_secs(1) {
                    Ok(200)
                } else {
                    refused()
                }
            });
            if step == ReadinessStep::Ready {
                outcome = step;
                break;
            }
            t += Duration::from_millis(10);
        }
        assert_eq!(outcome, ReadinessStep::Ready);
        assert_eq!(t - start, Duration::from_secs(1));
        // 0, 100, ..., 1000 ms.
        assert_eq!(probes, 11);
        assert_eq!(
            readiness.step(t + Duration::from_secs(1), || Ok(200)),
            ReadinessStep::Idle,
            "reported once"
        );
        assert_eq!(readiness.next_due(), None);
    }

    #[test]
    fn deadline_reports_not_ready_once_and_a_late_ready_still_counts() {
        let start = Instant::now();
        let mut readiness = Readiness::new(start, Duration::from_millis(250));
        assert_eq!(readiness.step(start, refused), ReadinessStep::Pending);
        assert_eq!(
            readiness.step(start + Duration::from_millis(100), || Ok(503)),
            ReadinessStep::Pending
        );
        assert_eq!(
            readiness.step(start + Duration::from_millis(200), || Ok(500)),
            ReadinessStep::Pending
        );
        assert_eq!(
            readiness.step(start + Duration::from_millis(300), || Ok(503)),
            ReadinessStep::NotReady {
                last: "status 503".into()
            }
        );
        // Still probing after the deadline; not-ready is not reported twice.
        assert_eq!(
            readiness.next_due(),
            Some(start + Duration::from_millis(400))
        );
        assert_eq!(
            readiness.step(start + Duration::from_millis(400), refused),
            ReadinessStep::Pending
        );
        // A late 200 is announced.
        assert_eq!(
            readiness.step(start + Duration::from_millis(500), || Ok(200)),
            ReadinessStep::Ready
        );
        assert!(readiness.is_ready());
        assert_eq!(
            readiness.step(start + Duration::from_millis(600), || Ok(200)),
            ReadinessStep::Idle
        );
    }

    #[test]
    fn ready_line_format() {
        let addresses = [
            InterfaceAddress {
                ip: "10.0.2.15".parse().expect("ip"),
                prefix_len: 24,
            },
            InterfaceAddress {
                ip: "fe80::1".parse().expect("ip"),
                prefix_len: 64,
            },
        ];
        let info = ReadyInfo {
            version: "0.1.0",
            slot: "a",
            addresses: &addresses,
            api_url: "http://10.0.2.15:8080",
            sysctl_ok: true,
        };
        assert_eq!(
            ready_line(&info),
            "metanode: ready version=0.1.0 slot=a addresses=10.0.2.15/24,fe80::1/64 api=http://10.0.2.15:8080"
        );
        let failed = ReadyInfo {
            addresses: &[],
            sysctl_ok: false,
            ..info
        };
        assert_eq!(
            ready_line(&failed),
            "metanode: ready version=0.1.0 slot=a addresses=none api=http://10.0.2.15:8080 sysctl=FAILED"
        );
    }
}
