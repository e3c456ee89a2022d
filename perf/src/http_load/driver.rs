//! Connection tasks: closed loop (back to back) and open loop (a fixed
//! schedule of intended send times, wrk2's method), over a minimal HTTP/1.1
//! client on tokio's `TcpStream`.
//!
//! Open loop: global slot `g` is due at `g / rate` seconds after the start and
//! belongs to connection `g % connections`, so the aggregate schedule is even.
//! Latency is measured from the slot's intended time, so a stall (a slow
//! response holding the connection, or the generator itself running late) is
//! charged to every request it delays instead of being omitted. Tokio's timer
//! has millisecond granularity, which would add up to a millisecond to every
//! open-loop latency; a pacer thread with a fine timer slack wakes a
//! dispatcher task that wakes the connections whose slots are due.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::report::{ErrorKind, Stats};
use super::request::RequestSource;
use super::response::{Progress, ResponseError, ResponseMeta, ResponseParser};

/// Read buffer per connection task; must hold the largest head and chunk line.
const READ_BUFFER_BYTES: usize = 64 * 1024;
const _: () = assert!(super::response::HEAD_BYTES_MAX < READ_BUFFER_BYTES);
const _: () = assert!(super::response::CHUNK_LINE_BYTES_MAX < READ_BUFFER_BYTES);
/// After a failed connect, wait before the next attempt so a dead target does
/// not turn the closed loop into a busy loop of refused connects.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);
/// With `--close`, how long to wait for the server's FIN after the response,
/// so the server (not the generator) holds TIME_WAIT and ports are not exhausted.
const CLOSE_EOF_WAIT: Duration = Duration::from_secs(1);
/// Default for `RunConfig::pacer_tick`.
pub const PACER_TICK_DEFAULT: Duration = Duration::from_micros(50);
/// Timer slack asked for the pacer thread (Linux default is 50 µs).
const PACER_TIMER_SLACK_NS: libc::c_ulong = 1_000;

/// How a run is driven.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: SocketAddr,
    pub connections: usize,
    pub threads: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// `Some` = open loop at this many requests per second in total.
    pub rate_rps: Option<f64>,
    /// A new TCP connection per request.
    pub close: bool,
    /// A request without a complete response after this is a timeout; also
    /// how long in-flight and overdue requests may drain after the end.
    pub timeout: Duration,
    /// Open loop: the pacer sleeps at least this long between wake-ups.
    /// Batching slots bounds its CPU use at high rates, at the price of up to
    /// this much lateness (charged to latency and shown as behind schedule).
    pub pacer_tick: Duration,
}

/// Merged counters and the measured wall time.
#[derive(Debug)]
pub struct Outcome {
    pub stats: Stats,
    pub elapsed: Duration,
    /// The presigned pool ran out before the end.
    pub presigned_exhausted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("start the tokio runtime: {0}")]
    Runtime(io::Error),
    #[error("start the pacer thread: {0}")]
    Pacer(io::Error),
    #[error("a connection task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

#[derive(Debug)]
struct Ctx {
    config: RunConfig,
    source: RequestSource,
    start: Instant,
    measure_start: Instant,
    deadline: Instant,
    drain_end: Instant,
    /// Open loop: one wake-up per connection, signalled by the dispatcher.
    slot_due: Vec<Notify>,
    /// Open loop: the pacer thread's wake-up of the dispatcher task.
    tick: Notify,
    /// Responses and errors so far (progress output only).
    completed: AtomicU64,
}

impl Ctx {
    /// Open loop: intended time of global slot `g`.
    fn slot_time(&self, g: u64, rate_rps: f64) -> Instant {
        self.start + Duration::from_secs_f64(g as f64 / rate_rps)
    }
}

/// Why one request got no response.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("write: {0}")]
    Write(io::Error),
    #[error("read: {0}")]
    Read(io::Error),
    #[error("{0}")]
    Protocol(#[from] ResponseError),
    #[error("{0} bytes arrived after the end of the response")]
    TrailingBytes(usize),
    #[error("no complete response in time")]
    Timeout,
}

impl RequestError {
    fn kind(&self) -> ErrorKind {
        match self {
            RequestError::Connect(_) => ErrorKind::Connect,
            RequestError::Write(_) => ErrorKind::Write,
            RequestError::Read(_) => ErrorKind::Read,
            RequestError::Protocol(_) | RequestError::TrailingBytes(_) => ErrorKind::Protocol,
            RequestError::Timeout => ErrorKind::Timeout,
        }
    }
}

/// One connection slot: its socket (reopened after close or error), a reused
/// read buffer and parser, and its counters.
struct Worker {
    ctx: Arc<Ctx>,
    stream: Option<TcpStream>,
    buf: Box<[u8]>,
    parser: ResponseParser,
    stats: Stats,
}

impl Worker {
    fn new(ctx: Arc<Ctx>) -> Self {
        Self {
            ctx,
            stream: None,
            buf: vec![0u8; READ_BUFFER_BYTES].into_boxed_slice(),
            parser: ResponseParser::new(),
            stats: Stats::default(),
        }
    }

    /// Sends `request` and reads its whole response (one in flight per
    /// connection: no pipelining).
    async fn exchange(&mut self, request: &[u8]) -> Result<ResponseMeta, RequestError> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(self.ctx.config.target)
                    .await
                    .map_err(RequestError::Connect)?;
                stream.set_nodelay(true).map_err(RequestError::Connect)?;
                self.stream.insert(stream)
            }
        };
        stream
            .write_all(request)
            .await
            .map_err(RequestError::Write)?;

        let buf = &mut self.buf[..];
        let parser = &mut self.parser;
        parser.reset();
        let (mut start, mut end) = (0usize, 0usize);
        loop {
            match parser.feed(buf.get(start..end).unwrap_or_default())? {
                Progress::NeedMore { consumed } => start += consumed,
                Progress::Done { consumed, response } => {
                    start += consumed;
                    if start != end {
                        return Err(RequestError::TrailingBytes(end - start));
                    }
                    return Ok(response);
                }
            }
            if start == end {
                (start, end) = (0, 0);
            } else if end == buf.len() {
                // Unconsumed head or chunk line: move it to the front. The
                // parser refuses those before they fill the buffer.
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            let n = stream
                .read(buf.get_mut(end..).unwrap_or_default())
                .await
                .map_err(RequestError::Read)?;
            if n == 0 {
                return Ok(parser.finish_eof()?);
            }
            end += n;
        }
    }

    /// One request with its timeout, counted if `measured`.
    async fn request(&mut self, request: &[u8], sent: Instant, measured: bool) -> Sent {
        let ctx = Arc::clone(&self.ctx);
        let give_up = (sent + ctx.config.timeout).min(ctx.drain_end);
        let result = match tokio::time::timeout_at(give_up.into(), self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(RequestError::Timeout),
        };
        let done = Instant::now();
        ctx.completed.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(response) => {
                if measured {
                    self.stats.record_status(response.status);
                }
                if response.close || ctx.config.close {
                    self.close_gracefully().await;
                }
                Sent {
                    done,
                    responded: true,
                    connect_failed: false,
                }
            }
            Err(error) => {
                if measured {
                    self.stats
                        .record_error(error.kind(), 1, || error.to_string());
                }
                self.stream = None;
                Sent {
                    done,
                    responded: false,
                    connect_failed: matches!(error, RequestError::Connect(_)),
                }
            }
        }
    }

    /// Waits briefly for the server's FIN so TIME_WAIT lands on its side.
    async fn close_gracefully(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            let mut scratch = [0u8; 512];
            let _ = tokio::time::timeout(CLOSE_EOF_WAIT, async {
                while let Ok(n) = stream.read(&mut scratch).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

/// How one request ended, for the loop that sent it.
#[derive(Debug, Clone, Copy)]
struct Sent {
    done: Instant,
    responded: bool,
    connect_failed: bool,
}

/// Back-to-back requests until the deadline; latency from the send (with a
/// new connection, from before the connect).
async fn closed_loop(mut worker: Worker) -> Stats {
    let ctx = Arc::clone(&worker.ctx);
    loop {
        let sent = Instant::now();
        if sent >= ctx.deadline {
            break;
        }
        let Some(request) = ctx.source.next() else {
            break;
        };
        let measured = sent >= ctx.measure_start;
        let outcome = worker.request(request, sent, measured).await;
        if measured && outcome.responded {
            worker.stats.latency.record(outcome.done - sent);
        }
        if outcome.connect_failed {
            tokio::time::sleep(CONNECT_BACKOFF).await;
        }
    }
    worker.stats
}

/// This connection's slots `g = k * connections + index` until the deadline;
/// latency from each slot's intended time.
async fn open_loop(mut worker: Worker, index: usize, rate_rps: f64) -> Stats {
    let ctx = Arc::clone(&worker.ctx);
    let connections = ctx.config.connections as u64;
    let Some(slot_due) = ctx.slot_due.get(index) else {
        return worker.stats;
    };
    let mut free_since = ctx.start;
    let mut g = index as u64;
    loop {
        let intended = ctx.slot_time(g, rate_rps);
        if intended >= ctx.deadline {
            break;
        }
        if Instant::now() >= ctx.drain_end {
            let unsent = (g..)
                .step_by(ctx.config.connections)
                .map(|g| ctx.slot_time(g, rate_rps))
                .take_while(|&t| t < ctx.deadline)
                .filter(|&t| t >= ctx.measure_start)
                .count() as u64;
            worker.stats.record_error(ErrorKind::NotSent, unsent, || {
                format!("{unsent} scheduled requests on one connection were still unsent when the drain ended")
            });
            break;
        }
        // A stale wake-up (for a slot this connection was already late for)
        // just leads to another look at the clock.
        while Instant::now() < intended {
            slot_due.notified().await;
        }
        let Some(request) = ctx.source.next() else {
            break;
        };
        let sent = Instant::now();
        let measured = intended >= ctx.measure_start;
        let outcome = worker.request(request, sent, measured).await;
        if measured {
            let ready = intended.max(free_since);
            worker.stats.behind_schedule.record(sent - ready);
            worker
                .stats
                .waited_for_connection
                .record(free_since.saturating_duration_since(intended));
            if outcome.responded {
                worker.stats.latency.record(outcome.done - intended);
            }
        }
        free_since = Instant::now();
        if outcome.connect_failed {
            tokio::time::sleep(CONNECT_BACKOFF).await;
            free_since = Instant::now();
        }
        g += connections;
    }
    worker.stats
}

/// Slots `0..due_slots` are due at `now`.
fn due_slots(ctx: &Ctx, now: Instant, rate_rps: f64) -> u64 {
    (now.saturating_duration_since(ctx.start).as_secs_f64() * rate_rps).floor() as u64 + 1
}

/// Wakes the dispatcher each time a slot falls due (batched by
/// `RunConfig::pacer_tick`), until the last slot before the deadline or `stop`. A
/// thread, because tokio's timer would round to 1 ms; it wakes one task per
/// tick rather than each connection, since every wake from outside the
/// runtime costs a system call.
fn pace(ctx: &Ctx, rate_rps: f64, stop: &AtomicBool) {
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack; the
    // argument is a plain integer and no memory is passed to the kernel.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, PACER_TIMER_SLACK_NS);
    }
    while !stop.load(Ordering::Relaxed) {
        ctx.tick.notify_one();
        let next_time = ctx.slot_time(due_slots(ctx, Instant::now(), rate_rps), rate_rps);
        if next_time >= ctx.deadline {
            break;
        }
        std::thread::sleep(
            next_time
                .saturating_duration_since(Instant::now())
                .max(ctx.config.pacer_tick),
        );
    }
}

/// Inside the runtime: on each pacer tick, wakes the connections whose slots
/// fell due (wakes from the runtime's own thread need no system call).
async fn dispatch(ctx: Arc<Ctx>, rate_rps: f64) {
    let connections = ctx.slot_due.len() as u64;
    let mut next = 0u64;
    while ctx.slot_time(next, rate_rps) < ctx.deadline {
        ctx.tick.notified().await;
        let due = due_slots(&ctx, Instant::now(), rate_rps);
        if due.saturating_sub(next) >= connections {
            ctx.slot_due.iter().for_each(Notify::notify_one);
        } else {
            for g in next..due {
                if let Some(n) = ctx.slot_due.get((g % connections) as usize) {
                    n.notify_one();
                }
            }
        }
        next = next.max(due);
    }
}

/// Runs the load and returns the merged counters. `progress` prints a line
/// per second to stderr.
pub fn run(config: RunConfig, source: RequestSource, progress: bool) -> Result<Outcome, RunError> {
    assert!(
        config.connections > 0 && config.threads > 0,
        "validated by the CLI"
    );
    let runtime = if config.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .enable_all()
            .build()
    }
    .map_err(RunError::Runtime)?;

    let start = Instant::now();
    let measure_start = start + config.warmup;
    let deadline = measure_start + config.duration;
    let slot_count = if config.rate_rps.is_some() {
        config.connections
    } else {
        0
    };
    let ctx = Arc::new(Ctx {
        start,
        measure_start,
        deadline,
        drain_end: deadline + config.timeout,
        slot_due: (0..slot_count).map(|_| Notify::new()).collect(),
        tick: Notify::new(),
        completed: AtomicU64::new(0),
        config,
        source,
    });

    let stop = Arc::new(AtomicBool::new(false));
    let pacer = match ctx.config.rate_rps {
        Some(rate_rps) => {
            let (ctx, stop) = (Arc::clone(&ctx), Arc::clone(&stop));
            Some(
                std::thread::Builder::new()
                    .name("http-load-pacer".into())
                    .spawn(move || pace(&ctx, rate_rps, &stop))
                    .map_err(RunError::Pacer)?,
            )
        }
        None => None,
    };

    let result = runtime.block_on(async {
        let reporter = progress.then(|| tokio::spawn(report_progress(Arc::clone(&ctx))));
        let dispatcher = ctx
            .config
            .rate_rps
            .map(|rate_rps| tokio::spawn(dispatch(Arc::clone(&ctx), rate_rps)));
        let tasks: Vec<_> = (0..ctx.config.connections)
            .map(|index| {
                let worker = Worker::new(Arc::clone(&ctx));
                match ctx.config.rate_rps {
                    Some(rate_rps) => tokio::spawn(open_loop(worker, index, rate_rps)),
                    None => tokio::spawn(closed_loop(worker)),
                }
            })
            .collect();
        let mut stats = Stats::default();
        for task in tasks {
            stats.merge(&task.await?);
        }
        let elapsed = Instant::now().saturating_duration_since(ctx.measure_start);
        if let Some(reporter) = reporter {
            reporter.abort();
        }
        if let Some(dispatcher) = dispatcher {
            // Done on its own after the last slot; aborted if the connections
            // stopped early (presigned pool exhausted).
            dispatcher.abort();
        }
        Ok(Outcome {
            stats,
            elapsed,
            presigned_exhausted: ctx.source.exhausted(),
        })
    });
    stop.store(true, Ordering::Relaxed);
    if let Some(pacer) = pacer {
        pacer.join().expect("the pacer thread does not panic");
    }
    result
}

async fn report_progress(ctx: Arc<Ctx>) {
    let mut last = 0u64;
    let mut tick = tokio::time::interval_at(
        (ctx.start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    loop {
        let now = tick.tick().await;
        let completed = ctx.completed.load(Ordering::Relaxed);
        let phase = if now.into_std() < ctx.measure_start {
            "warm-up"
        } else {
            "measure"
        };
        eprintln!(
            "{:>4.0} s {phase}: {} requests/s",
            now.into_std()
                .saturating_duration_since(ctx.start)
                .as_secs_f64(),
            completed - last
        );
        last = completed;
    }
}
