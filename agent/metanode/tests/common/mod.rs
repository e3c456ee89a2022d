//! Shared helpers for tests that spawn the real `metanode` binary: start and
//! stop an agent, a minimal HTTP/1.1 client over std sockets (so tests see
//! exactly what went over the wire), and a CLI runner. Every wait is bounded.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_metanode")
}

/// A running `metanode agent`, killed on drop if the test did not stop it.
pub struct Agent {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub url: String,
    log: PathBuf,
}

impl Agent {
    /// `metanode agent --dev --data-dir DIR` on a kernel-chosen port.
    pub fn start(data_dir: &Path) -> Agent {
        let dir = data_dir.to_str().expect("utf-8 path");
        Agent::start_args(&["agent", "--dev", "--data-dir", dir], data_dir)
    }

    /// Start with explicit arguments (port 0 and a warn log level are
    /// added); the log goes next to `data_dir`.
    pub fn start_args(args: &[&str], data_dir: &Path) -> Agent {
        let log = data_dir.with_extension("agent.log");
        let log_file = std::fs::File::create(&log).expect("create agent log");
        let mut child = Command::new(bin())
            .args(args)
            .args(["--api-listen", "127.0.0.1:0", "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn metanode agent");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("metanode: serving api on ") {
                        let url = rest.split_whitespace().next().expect("url").to_string();
                        assert!(
                            line.contains(&format!("(store: {}", data_dir.display())),
                            "serving line names the store: {line}"
                        );
                        assert!(
                            line.contains("io: io_uring)") || line.contains("io: posix)"),
                            "serving line names the io backend: {line}"
                        );
                        break url;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "agent printed no serving line within {START_TIMEOUT:?}; log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        };
        let addr: SocketAddr = url
            .strip_prefix("http://")
            .expect("http url")
            .parse()
            .expect("socket address");
        Agent {
            child: Some(child),
            addr,
            url,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet
        // reaped, so it cannot have been reused).
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait()
    }

    /// Wait (bounded) for the agent to exit on its own.
    pub fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "agent did not exit within {STOP_TIMEOUT:?}; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One HTTP response as received.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// False when the connection ended before `Content-Length` bytes came.
    pub complete: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not json ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The message of a `{"error": "..."}` body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "no error field in {:?}",
                    String::from_utf8_lossy(&self.body)
                )
            })
            .to_string()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to agent");
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    stream
}

/// Send one request on a new connection (`Connection: close`) and read the
/// answer. A `body` gets a `Content-Length`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let mut stream = connect(addr);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .expect("send request head");
    if let Some(body) = body {
        stream.write_all(body).expect("send request body");
    }
    read_response(&mut BufReader::new(stream), method == "HEAD")
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], None)
}

/// Read one response (after any `100 Continue`).
pub fn read_response(reader: &mut impl BufRead, head_only: bool) -> Response {
    loop {
        let (status, headers) = read_head(reader);
        if status == 100 {
            continue;
        }
        let length: Option<usize> = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().expect("numeric content-length"));
        // Only streams of unknown length (CAR responses) are chunked.
        let chunked = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        let mut body = Vec::new();
        let mut complete = true;
        if !head_only && status != 304 {
            match length {
                _ if chunked => complete = read_chunked(reader, &mut body),
                Some(n) => {
                    let mut buf = vec![0u8; 64 * 1024];
                    while body.len() < n {
                        match reader.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                complete = false;
                                break;
                            }
                            Ok(k) => body.extend_from_slice(&buf[..k]),
                        }
                    }
                }
                None => {
                    let _ = reader.read_to_end(&mut body);
                }
            }
        }
        return Response {
            status,
            headers,
            body,
            complete,
        };
    }
}

/// A chunked body; false when it breaks off before the last chunk (the
/// agent aborts a stream that hits damage).
fn read_chunked(reader: &mut impl BufRead, body: &mut Vec<u8>) -> bool {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        let Ok(size) = usize::from_str_radix(line.trim(), 16) else {
            return false;
        };
        if size == 0 {
            let mut end = String::new();
            let _ = reader.read_line(&mut end);
            return true;
        }
        let start = body.len();
        body.resize(start + size, 0);
        if reader.read_exact(&mut body[start..]).is_err() {
            body.truncate(start);
            return false;
        }
        let mut crlf = [0u8; 2];
        if reader.read_exact(&mut crlf).is_err() {
            return false;
        }
    }
}

/// Status line and headers of one response.
pub fn read_head(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read header");
        assert!(n > 0, "eof in headers");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').expect("header line");
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    (status, headers)
}

/// Deterministic, incompressible-enough test data.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Run `metanode ARGS` with a bounded wait; stdin from `input` if given.
pub fn cli(args: &[&str], input: Option<&[u8]>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn metanode");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(output) => output.expect("wait for metanode"),
        Err(_) => {
            // SAFETY: kill(2) on the child we spawned; it has not been
            // reaped (wait_with_output has not returned).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("metanode {args:?} did not finish within 120 s");
        }
    }
}

/// Run the CLI expecting success; return stdout.
pub fn cli_ok(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let out = cli(args, input);
    assert!(
        out.status.success(),
        "metanode {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Run the CLI with `--json` expecting success; parse its one JSON line.
pub fn cli_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let stdout = cli_ok(&all, None);
    serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "metanode {all:?} printed no json ({e}): {:?}",
            String::from_utf8_lossy(&stdout)
        )
    })
}
