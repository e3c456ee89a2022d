//! Per-connection counters, merged once at the end into the run's report.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// One hour: anything slower is clamped (the request timeout is far below).
const HISTOGRAM_US_MAX: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// Microsecond histogram; unlike `crate::latency::Latency` it reports p90
/// and p99.9 and records zero (being on schedule is a zero delay).
#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatencySummaryUs {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TailSummaryUs {
    pub p99: u64,
    pub max: u64,
}

impl Hist {
    pub fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, HISTOGRAM_US_MAX, SIGNIFICANT_DIGITS)
                .expect("constant histogram bounds are valid"),
        )
    }

    pub fn record(&mut self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us.min(HISTOGRAM_US_MAX));
    }

    pub fn merge(&mut self, other: &Hist) {
        self.0
            .add(&other.0)
            .expect("histograms with equal bounds merge");
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Samples of at least `floor` (to within the histogram's precision).
    #[cfg(test)]
    pub fn count_at_least(&self, floor: Duration) -> u64 {
        let us = u64::try_from(floor.as_micros()).unwrap_or(u64::MAX);
        self.0
            .iter_recorded()
            .filter(|v| v.value_iterated_to() >= us)
            .map(|v| v.count_at_value())
            .sum()
    }

    /// `None` when nothing was recorded: never print an unmeasured number.
    pub fn summary(&self) -> Option<LatencySummaryUs> {
        (!self.0.is_empty()).then(|| LatencySummaryUs {
            p50: self.0.value_at_quantile(0.50),
            p90: self.0.value_at_quantile(0.90),
            p99: self.0.value_at_quantile(0.99),
            p999: self.0.value_at_quantile(0.999),
            max: self.0.max(),
        })
    }

    pub fn tail(&self) -> Option<TailSummaryUs> {
        (!self.0.is_empty()).then(|| TailSummaryUs {
            p99: self.0.value_at_quantile(0.99),
            max: self.0.max(),
        })
    }
}

/// Why a request got no response; counted per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    Connect,
    Write,
    Read,
    /// The bytes were not an HTTP/1.1 response (or more came than one).
    Protocol,
    /// No complete response within `--timeout-ms` (or before the drain ended).
    Timeout,
    /// Open loop: scheduled before the end of the run but never sent,
    /// because the run's drain time ran out first.
    NotSent,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Write => "write",
            ErrorKind::Read => "read",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NotSent => "not_sent",
        }
    }
}

/// What one connection task saw during the measured window.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub latency: Hist,
    /// Open loop: send time minus the later of intended time and the moment
    /// the connection became free, i.e. the generator's own lateness.
    pub behind_schedule: Hist,
    /// Open loop: how long a due request waited for its connection's previous
    /// response (the server being slow, not the generator).
    pub waited_for_connection: Hist,
    pub ok_2xx: u64,
    pub non_2xx_by_status: BTreeMap<u16, u64>,
    pub errors_by_kind: BTreeMap<ErrorKind, u64>,
    /// The first message of each error kind, so a failed run says why.
    pub error_examples: BTreeMap<ErrorKind, String>,
}

impl Stats {
    pub fn record_status(&mut self, status: u16) {
        if (200..300).contains(&status) {
            self.ok_2xx += 1;
        } else {
            *self.non_2xx_by_status.entry(status).or_default() += 1;
        }
    }

    pub fn record_error(&mut self, kind: ErrorKind, count: u64, example: impl FnOnce() -> String) {
        if count == 0 {
            return;
        }
        *self.errors_by_kind.entry(kind).or_default() += count;
        self.error_examples.entry(kind).or_insert_with(example);
    }

    pub fn responses(&self) -> u64 {
        self.ok_2xx + self.non_2xx_by_status.values().sum::<u64>()
    }

    pub fn errors(&self) -> u64 {
        self.errors_by_kind.values().sum()
    }

    pub fn merge(&mut self, other: &Stats) {
        self.latency.merge(&other.latency);
        self.behind_schedule.merge(&other.behind_schedule);
        self.waited_for_connection
            .merge(&other.waited_for_connection);
        self.ok_2xx += other.ok_2xx;
        for (&status, &n) in &other.non_2xx_by_status {
            *self.non_2xx_by_status.entry(status).or_default() += n;
        }
        for (&kind, &n) in &other.errors_by_kind {
            *self.errors_by_kind.entry(kind).or_default() += n;
        }
        for (&kind, example) in &other.error_examples {
            self.error_examples
                .entry(kind)
                .or_insert_with(|| example.clone());
        }
    }
}

/// The JSON object printed with `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// "closed" (back-to-back) or "open" (fixed schedule, `--rate`).
    pub mode: &'static str,
    pub target: String,
    pub connections: usize,
    pub threads: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Open loop: the intended total request rate.
    pub rate_rps: Option<f64>,
    /// One TCP connection per request (`Connection: close`).
    pub close: bool,
    pub signed: bool,
    /// Responses received for requests started (closed) or scheduled (open)
    /// in the measured window, any status.
    pub requests: u64,
    pub ok_2xx: u64,
    pub non_2xx_by_status: BTreeMap<u16, u64>,
    /// Requests that got no response (transport, protocol, timeout, not sent).
    pub errors: u64,
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    pub error_examples: BTreeMap<&'static str, String>,
    /// From the end of warm-up until the last connection finished.
    pub elapsed_s: f64,
    pub rps: f64,
    pub ok_rps: f64,
    /// Open loop: from the intended send time; closed loop: from the send
    /// (with `--close`, including the TCP connect).
    pub latency_us: Option<LatencySummaryUs>,
    pub behind_schedule_us: Option<TailSummaryUs>,
    pub waited_for_connection_us: Option<TailSummaryUs>,
    /// Signed mode: how many requests were signed before the clock started.
    pub presigned: Option<usize>,
    /// Signed mode: the pool ran out and connections stopped early.
    pub presigned_exhausted: bool,
}

impl Report {
    pub fn human(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, k: &str, v: String| {
            out.push_str(&format!("  {k:<24} {v}\n"));
        };
        out.push_str(&format!(
            "{} loop against {}: {} connections, {} threads, {:.1} s (+{:.1} s warm-up){}{}\n",
            self.mode,
            self.target,
            self.connections,
            self.threads,
            self.duration_s,
            self.warmup_s,
            self.rate_rps
                .map(|r| format!(", rate {r:.0}/s"))
                .unwrap_or_default(),
            if self.close {
                ", new connection per request"
            } else {
                ""
            },
        ));
        line(
            &mut out,
            "requests",
            format!("{} in {:.2} s", self.requests, self.elapsed_s),
        );
        line(
            &mut out,
            "rps (2xx rps)",
            format!("{:.0} ({:.0})", self.rps, self.ok_rps),
        );
        line(&mut out, "ok 2xx", self.ok_2xx.to_string());
        if !self.non_2xx_by_status.is_empty() {
            line(&mut out, "non-2xx", format!("{:?}", self.non_2xx_by_status));
        }
        line(
            &mut out,
            "errors",
            format!("{} {:?}", self.errors, self.errors_by_kind),
        );
        for (kind, example) in &self.error_examples {
            line(&mut out, &format!("  first {kind} error"), example.clone());
        }
        match self.latency_us {
            Some(l) => line(
                &mut out,
                "latency us",
                format!(
                    "p50 {} p90 {} p99 {} p99.9 {} max {}",
                    l.p50, l.p90, l.p99, l.p999, l.max
                ),
            ),
            None => line(&mut out, "latency us", "no responses".into()),
        }
        if let Some(b) = self.behind_schedule_us {
            line(
                &mut out,
                "behind schedule us",
                format!("p99 {} max {}", b.p99, b.max),
            );
        }
        if let Some(w) = self.waited_for_connection_us {
            line(
                &mut out,
                "waited for conn us",
                format!("p99 {} max {}", w.p99, w.max),
            );
        }
        if let Some(n) = self.presigned {
            line(
                &mut out,
                "presigned",
                format!(
                    "{n}{}",
                    if self.presigned_exhausted {
                        " (ran out: run stopped early)"
                    } else {
                        ""
                    }
                ),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_recorded_and_quantiles_are_known() {
        let mut h = Hist::new();
        h.record(Duration::ZERO);
        for us in 1..=999u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(
            h.summary(),
            Some(LatencySummaryUs {
                p50: 499,
                p90: 899,
                p99: 989,
                p999: 998,
                max: 999
            })
        );
        assert_eq!(Hist::new().summary(), None);
    }

    #[test]
    fn stats_merge_adds_counts_and_keeps_first_example() {
        let mut a = Stats::default();
        a.record_status(200);
        a.record_status(404);
        a.record_error(ErrorKind::Connect, 1, || "refused".into());
        let mut b = Stats::default();
        b.record_status(204);
        b.record_status(404);
        b.record_status(503);
        b.record_error(ErrorKind::Connect, 2, || "other".into());
        b.record_error(ErrorKind::Timeout, 0, || "never".into());
        a.merge(&b);
        assert_eq!(a.ok_2xx, 2);
        assert_eq!(a.non_2xx_by_status, BTreeMap::from([(404, 2), (503, 1)]));
        assert_eq!(a.responses(), 5);
        assert_eq!(a.errors(), 3);
        assert_eq!(
            a.error_examples
                .get(&ErrorKind::Connect)
                .map(String::as_str),
            Some("refused")
        );
        assert!(!a.errors_by_kind.contains_key(&ErrorKind::Timeout));
    }
}
