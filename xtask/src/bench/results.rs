//! Turning harness runs into DESIGN.md's results format: one row per
//! (metric, peer), peer configuration, machine limits, a printed table.

use serde::Serialize;
use serde_json::Value;

use super::storage::HarnessLine;
use super::systems::{Side, System};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// Which field of the harness line a metric reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    OpsPerS,
    MbPerS,
    P99Us,
}

#[derive(Clone, Debug)]
pub struct MetricSpec {
    pub name: String,
    pub unit: &'static str,
    pub better: Better,
    pub pick: Pick,
}

#[derive(Debug)]
pub enum Outcome {
    Ok {
        line: HarnessLine,
        raw: Value,
        wall_seconds: f64,
    },
    Failed(String),
    TimedOut(u64),
    Missing(String),
}

/// One harness run and the metric values it produced.
#[derive(Debug)]
pub struct RunRecord {
    pub system: &'static str,
    pub workload: &'static str,
    pub size_bytes: u64,
    pub count: usize,
    pub outcome: Outcome,
    /// (metric, value or why there is none).
    pub values: Vec<(MetricSpec, Result<f64, String>)>,
}

impl RunRecord {
    pub fn new(
        system: &'static str,
        workload: &'static str,
        size_bytes: u64,
        count: usize,
        outcome: Outcome,
        metrics: &[MetricSpec],
    ) -> Self {
        let values = metrics
            .iter()
            .map(|m| (m.clone(), value_of(&outcome, m.pick)))
            .collect();
        Self {
            system,
            workload,
            size_bytes,
            count,
            outcome,
            values,
        }
    }

    pub fn missing(
        system: &'static str,
        workload: &'static str,
        size_bytes: u64,
        count: usize,
        why: &str,
    ) -> Self {
        Self {
            system,
            workload,
            size_bytes,
            count,
            outcome: Outcome::Missing(why.to_string()),
            values: Vec::new(),
        }
    }

    /// One line for the progress log.
    pub fn summary(&self) -> String {
        match &self.outcome {
            Outcome::Ok {
                line, wall_seconds, ..
            } => {
                let mut s = if self.count > 1 {
                    format!(
                        "{} ops/s, {} MB/s",
                        fmt_num(line.ops_per_s),
                        fmt_num(line.mb_per_s)
                    )
                } else {
                    format!("{} MB/s", fmt_num(line.mb_per_s))
                };
                if let Some(l) = &line.latency_us
                    && self.count > 1
                {
                    s += &format!(", p50 {} us, p99 {} us", fmt_num(l.p50), fmt_num(l.p99));
                }
                s + &format!(" ({wall_seconds:.1} s wall)")
            }
            Outcome::Failed(why) => format!("FAILED: {why}"),
            Outcome::TimedOut(s) => format!("TIMED OUT after {s} s"),
            Outcome::Missing(why) => format!("missing ({why})"),
        }
    }

    fn json(&self) -> Value {
        let (status, detail) = match &self.outcome {
            Outcome::Ok { raw, .. } => ("ok", ("result", raw.clone())),
            Outcome::Failed(why) => ("failed", ("error", Value::from(why.as_str()))),
            Outcome::TimedOut(s) => (
                "timeout",
                ("error", Value::from(format!("timed out after {s} s"))),
            ),
            Outcome::Missing(why) => ("missing", ("error", Value::from(why.as_str()))),
        };
        let mut v = serde_json::json!({
            "system": self.system,
            "workload": self.workload,
            "size_bytes": self.size_bytes,
            "count": self.count,
            "status": status,
        });
        v[detail.0] = detail.1;
        v
    }
}

fn value_of(outcome: &Outcome, pick: Pick) -> Result<f64, String> {
    let line = match outcome {
        Outcome::Ok { line, .. } => line,
        Outcome::Failed(why) => return Err(format!("failed: {}", first_line(why))),
        Outcome::TimedOut(s) => return Err(format!("timed out after {s} s")),
        Outcome::Missing(why) => return Err(why.clone()),
    };
    let v = match pick {
        Pick::OpsPerS => Some(line.ops_per_s),
        Pick::MbPerS => Some(line.mb_per_s),
        Pick::P99Us => line.latency_us.as_ref().map(|l| l.p99),
    };
    match v {
        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
        Some(v) => Err(format!("harness reported {v}, not a measurement")),
        None => Err("harness reported no latency".into()),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// How a system ran: its status and configuration, for the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
    #[serde(skip)]
    pub name: &'static str,
    #[serde(skip)]
    pub side: Side,
    /// ok | partial (some runs failed) | failed | missing
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_runs: Vec<String>,
}

impl SystemInfo {
    pub fn from_runs(
        system: &System,
        ready: &Result<(), String>,
        records: &[(Vec<MetricSpec>, RunRecord)],
    ) -> Self {
        let mine: Vec<&RunRecord> = records
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r.system == system.name)
            .collect();
        let first_ok = mine.iter().find_map(|r| match &r.outcome {
            Outcome::Ok { line, .. } => Some(line),
            _ => None,
        });
        let failed_runs: Vec<String> = mine
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_) | Outcome::TimedOut(_)))
            .map(|r| format!("{} {} B: {}", r.workload, r.size_bytes, r.summary()))
            .collect();
        let (status, note) = match (ready, first_ok, failed_runs.is_empty()) {
            (Err(why), _, _) => ("missing", Some(why.clone())),
            (Ok(()), Some(_), true) => ("ok", None),
            (Ok(()), Some(_), false) => (
                "partial",
                Some(format!("{} run(s) failed or timed out", failed_runs.len())),
            ),
            (Ok(()), None, _) if mine.is_empty() => ("ok", Some("no run selected".to_string())),
            (Ok(()), None, _) => ("failed", None),
        };
        Self {
            name: system.name,
            side: system.side,
            status,
            note,
            durability: first_ok.map(|l| l.durability.clone()),
            config: first_ok.map(|l| l.config.clone()),
            failed_runs,
        }
    }
}

/// A system's value of a metric, or why it has none.
type SystemValue = (&'static str, Result<f64, String>);

/// A row of DESIGN.md's format: one per (metric, peer).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub metric: String,
    pub unit: &'static str,
    pub ours: Option<f64>,
    pub peer: Option<&'static str>,
    pub peer_value: Option<f64>,
    pub better: Better,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ours_note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_note: Option<String>,
}

impl Row {
    /// >1 means ours is better, whatever the direction of the metric.
    pub fn advantage(&self) -> Option<f64> {
        let (ours, peer) = (self.ours?, self.peer_value?);
        Some(match self.better {
            Better::Higher => ours / peer,
            Better::Lower => peer / ours,
        })
    }
}

/// Every system's value of one metric, for the chart.
#[derive(Debug, Clone)]
pub struct Panel {
    pub metric: String,
    pub unit: &'static str,
    pub better: Better,
    pub bars: Vec<(&'static str, Option<f64>)>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub when: String,
    pub mode: &'static str,
    pub machine: Value,
    pub ours: serde_json::Map<String, Value>,
    pub peers: serde_json::Map<String, Value>,
    pub workload: Value,
    pub rows: Vec<Row>,
    pub runs: Vec<Value>,
    #[serde(skip)]
    pub panels: Vec<Panel>,
}

impl Report {
    pub fn build(
        mode: &'static str,
        machine: Value,
        workload: Value,
        systems: &[SystemInfo],
        records: &[(Vec<MetricSpec>, RunRecord)],
    ) -> Self {
        let side_of = |name: &str| systems.iter().find(|s| s.name == name).map(|s| s.side);
        // Metrics in the order the jobs ran, each with every system's value.
        let mut metrics: Vec<(MetricSpec, Vec<SystemValue>)> = Vec::new();
        for (specs, record) in records {
            let values: Vec<(MetricSpec, Result<f64, String>)> = if record.values.is_empty() {
                // A system that could not run still names its metrics.
                let why = match &record.outcome {
                    Outcome::Missing(why) => why.clone(),
                    other => format!("{other:?}"),
                };
                specs
                    .iter()
                    .map(|m| (m.clone(), Err(why.clone())))
                    .collect()
            } else {
                record.values.clone()
            };
            for (spec, value) in values {
                match metrics.iter_mut().find(|(m, _)| m.name == spec.name) {
                    Some((_, entries)) => entries.push((record.system, value)),
                    None => metrics.push((spec, vec![(record.system, value)])),
                }
            }
        }
        let mut rows = Vec::new();
        let mut panels = Vec::new();
        for (spec, entries) in &metrics {
            let ours = entries
                .iter()
                .find(|(s, _)| matches!(side_of(s), Some(Side::Ours | Side::OursHttp)));
            let (ours_value, ours_note) = match ours {
                Some((_, Ok(v))) => (Some(*v), None),
                Some((name, Err(why))) => (None, Some(format!("{name}: {why}"))),
                None => (None, Some("ours not selected".to_string())),
            };
            let peers: Vec<&SystemValue> = entries
                .iter()
                .filter(|(s, _)| side_of(s) == Some(Side::Peer))
                .collect();
            let row = |peer: Option<&'static str>,
                       peer_value: Option<f64>,
                       peer_note: Option<String>| Row {
                metric: spec.name.clone(),
                unit: spec.unit,
                ours: ours_value,
                peer,
                peer_value,
                better: spec.better,
                ours_note: ours_note.clone(),
                peer_note,
            };
            if peers.is_empty() {
                rows.push(row(None, None, None));
            }
            for (name, value) in peers {
                match value {
                    Ok(v) => rows.push(row(Some(name), Some(*v), None)),
                    Err(why) => rows.push(row(Some(name), None, Some(why.clone()))),
                }
            }
            let bars: Vec<(&'static str, Option<f64>)> = entries
                .iter()
                .map(|(s, v)| (*s, v.as_ref().ok().copied()))
                .collect();
            // An HTTP metric with a library twin becomes one more bar in the
            // twin's panel, so the chart shows ours via HTTP next to ours.
            let twin = library_twin(&spec.name)
                .and_then(|name| panels.iter_mut().find(|p: &&mut Panel| p.metric == name));
            match twin {
                Some(panel) => {
                    let at = panel
                        .bars
                        .iter()
                        .position(|(s, _)| *s == "ours")
                        .map_or(0, |i| i + 1);
                    for (n, bar) in bars.into_iter().enumerate() {
                        panel.bars.insert(at + n, bar);
                    }
                }
                None => panels.push(Panel {
                    metric: spec.name.clone(),
                    unit: spec.unit,
                    better: spec.better,
                    bars,
                }),
            }
        }
        let mut ours = serde_json::Map::new();
        let mut peers = serde_json::Map::new();
        for info in systems {
            let value = serde_json::to_value(info).unwrap_or(Value::Null);
            match info.side {
                Side::Ours => {
                    ours.insert("library".into(), value);
                }
                Side::OursHttp => {
                    ours.insert("http".into(), value);
                }
                Side::Peer => {
                    peers.insert(info.name.into(), value);
                }
            }
        }
        Report {
            bench: "storage",
            when: crate::time::now_iso8601(),
            mode,
            machine,
            ours,
            peers,
            workload,
            rows,
            runs: records.iter().map(|(_, r)| r.json()).collect(),
            panels,
        }
    }

    pub fn to_json_pretty(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out += &format!("\nstorage bench ({}), {}\n", self.mode, self.when);
        out += &format!("machine: {}\n", machine_line(&self.machine));
        out += &format!(
            "{:<36} {:<6} {:>12}  {:<11} {:>12}  {}\n",
            "metric", "unit", "ours", "peer", "peer value", "ours vs peer (>1 = ours better)"
        );
        for row in &self.rows {
            let adv = row
                .advantage()
                .map_or_else(|| "-".to_string(), |a| format!("{a:.2}x"));
            out += &format!(
                "{:<36} {:<6} {:>12}  {:<11} {:>12}  {}\n",
                row.metric,
                row.unit,
                row.ours.map_or_else(|| "missing".into(), fmt_num),
                row.peer.unwrap_or("-"),
                match (row.peer, row.peer_value) {
                    (None, _) => "-".to_string(),
                    (Some(_), Some(v)) => fmt_num(v),
                    (Some(_), None) => "missing".to_string(),
                },
                adv
            );
        }
        for (side, infos) in [("ours", &self.ours), ("peer", &self.peers)] {
            for (name, info) in infos {
                let status = info["status"].as_str().unwrap_or("?");
                if status != "ok" {
                    let note = info["note"].as_str().unwrap_or("");
                    out += &format!("{side} {name}: {status} {note}\n");
                }
            }
        }
        out
    }
}

/// `http_put_1KiB_req_per_s_keepalive` -> `put_1KiB_ops_per_s`: the library
/// metric measuring the same thing. Connection-per-request metrics have none.
fn library_twin(metric: &str) -> Option<String> {
    let rest = metric.strip_prefix("http_")?;
    if let Some(base) = rest.strip_suffix("_req_per_s_keepalive") {
        return Some(format!("{base}_ops_per_s"));
    }
    if let Some(base) = rest.strip_suffix("_keepalive") {
        return Some(base.to_string());
    }
    rest.ends_with("_MB_per_s").then(|| rest.to_string())
}

fn machine_line(machine: &Value) -> String {
    if let Some(e) = machine.get("error") {
        return e.as_str().unwrap_or("error").to_string();
    }
    let num = |k: &str| {
        machine
            .get(k)
            .and_then(Value::as_f64)
            .map_or("?".into(), fmt_num)
    };
    format!(
        "{} cores, kernel {}, {}; BLAKE3 {} MB/s/core; fsync 4 KiB p50 {} us p99 {} us; io_uring 4 KiB QD64 ({}) read {} IOPS, write {} IOPS",
        machine["cores"]
            .as_u64()
            .map_or("?".into(), |c| c.to_string()),
        machine["kernel"].as_str().unwrap_or("?"),
        machine["filesystem"].as_str().unwrap_or("?"),
        num("blake3_one_core_MB_per_s"),
        machine["fsync_4KiB_latency_us"]["p50"]
            .as_f64()
            .map_or("?".into(), fmt_num),
        machine["fsync_4KiB_latency_us"]["p99"]
            .as_f64()
            .map_or("?".into(), fmt_num),
        machine["io_uring_mode"].as_str().unwrap_or("?"),
        num("io_uring_4KiB_randread_iops"),
        num("io_uring_4KiB_randwrite_iops"),
    )
}

/// 1234567.8 -> "1,234,568"; 12.345 -> "12.3"; 0.1234 -> "0.123".
/// Nearest-rank percentile of sorted samples (None when there are none). One definition for
/// every bench so their p50/p99 mean the same thing.
/// One chart panel per metric (rows of one metric with different peers
/// share it): ours first, then each peer that has a value.
pub fn panels_from_rows(rows: &[Row]) -> Vec<Panel> {
    let mut panels: Vec<Panel> = Vec::new();
    for r in rows {
        let at = match panels.iter().position(|p| p.metric == r.metric) {
            Some(i) => i,
            None => {
                panels.push(Panel {
                    metric: r.metric.clone(),
                    unit: r.unit,
                    better: r.better,
                    bars: vec![("ours", r.ours)],
                });
                panels.len() - 1
            }
        };
        if let (Some(peer), Some(v), Some(panel)) = (r.peer, r.peer_value, panels.get_mut(at)) {
            panel.bars.push((peer, Some(v)));
        }
    }
    panels
}

/// The middle value (the upper one of an even count); `None` when empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.abs() >= 100.0 {
        let digits = format!("{:.0}", v.abs());
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if v < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::storage::LatencyLine;
    use super::super::systems::by_name;
    use super::*;

    fn ok(ops: f64, p99: f64) -> Outcome {
        Outcome::Ok {
            line: HarnessLine {
                ops_per_s: ops,
                mb_per_s: ops / 1000.0,
                latency_us: Some(LatencyLine {
                    p50: p99 / 2.0,
                    p99,
                }),
                durability: "fsync".into(),
                config: serde_json::json!({"k": 1}),
            },
            raw: serde_json::json!({}),
            wall_seconds: 1.0,
        }
    }

    fn specs() -> Vec<MetricSpec> {
        vec![
            MetricSpec {
                name: "put_1KiB_ops_per_s".into(),
                unit: "ops/s",
                better: Better::Higher,
                pick: Pick::OpsPerS,
            },
            MetricSpec {
                name: "put_1KiB_p99_us".into(),
                unit: "us",
                better: Better::Lower,
                pick: Pick::P99Us,
            },
        ]
    }

    #[test]
    fn one_row_per_metric_and_peer_with_missing_values_noted() {
        let s = specs();
        let records = vec![
            (
                s.clone(),
                RunRecord::new("ours", "put", 1024, 10, ok(2000.0, 100.0), &s),
            ),
            (
                s.clone(),
                RunRecord::new("iroh-blobs", "put", 1024, 10, ok(1000.0, 400.0), &s),
            ),
            (
                s.clone(),
                RunRecord::missing("helia", "put", 1024, 10, "not installed"),
            ),
            (
                s.clone(),
                RunRecord::new(
                    "flatfs",
                    "put",
                    1024,
                    10,
                    Outcome::Failed("boom\nmore".into()),
                    &s,
                ),
            ),
        ];
        let systems: Vec<SystemInfo> = ["ours", "iroh-blobs", "helia", "flatfs"]
            .iter()
            .map(|n| {
                let ready = if *n == "helia" {
                    Err("not installed".to_string())
                } else {
                    Ok(())
                };
                SystemInfo::from_runs(by_name(n).expect("system"), &ready, &records)
            })
            .collect();
        let report = Report::build(
            "quick",
            serde_json::json!({}),
            serde_json::json!({}),
            &systems,
            &records,
        );
        assert_eq!(report.rows.len(), 6);
        let ops_iroh = &report.rows[0];
        assert_eq!(
            (ops_iroh.metric.as_str(), ops_iroh.peer),
            ("put_1KiB_ops_per_s", Some("iroh-blobs"))
        );
        assert_eq!(ops_iroh.advantage(), Some(2.0));
        let p99_iroh = report
            .rows
            .iter()
            .find(|r| r.metric == "put_1KiB_p99_us" && r.peer == Some("iroh-blobs"))
            .expect("p99 row");
        assert_eq!(p99_iroh.advantage(), Some(4.0));
        let helia = report
            .rows
            .iter()
            .find(|r| r.peer == Some("helia"))
            .expect("helia row");
        assert_eq!(helia.peer_value, None);
        assert_eq!(helia.peer_note.as_deref(), Some("not installed"));
        let flatfs = report
            .rows
            .iter()
            .find(|r| r.peer == Some("flatfs"))
            .expect("flatfs row");
        assert_eq!(flatfs.peer_note.as_deref(), Some("failed: boom"));
        assert_eq!(report.peers["helia"]["status"], "missing");
        assert_eq!(report.peers["flatfs"]["status"], "failed");
        assert_eq!(report.ours["library"]["durability"], "fsync");
        let json: Value =
            serde_json::from_str(&report.to_json_pretty().expect("json")).expect("parse");
        assert_eq!(json["rows"][0]["ours"], 2000.0);
        assert_eq!(json["rows"][0]["better"], "higher");
        assert!(report.table().contains("2.00x"));
    }

    #[test]
    fn metric_without_peers_has_a_null_peer_row() {
        let s = vec![MetricSpec {
            name: "http_get_1KiB_req_per_s_new_conn".into(),
            unit: "req/s",
            better: Better::Higher,
            pick: Pick::OpsPerS,
        }];
        let records = vec![(
            s.clone(),
            RunRecord::new("ours-http", "get-new-conn", 1024, 5, ok(500.0, 1.0), &s),
        )];
        let systems = vec![SystemInfo::from_runs(
            by_name("ours-http").expect("system"),
            &Ok(()),
            &records,
        )];
        let report = Report::build("quick", Value::Null, Value::Null, &systems, &records);
        assert_eq!(report.rows.len(), 1);
        assert_eq!(report.rows[0].peer, None);
        assert_eq!(report.rows[0].ours, Some(500.0));
    }

    #[test]
    fn http_metrics_join_their_library_twin_panel() {
        assert_eq!(
            library_twin("http_put_1KiB_req_per_s_keepalive").as_deref(),
            Some("put_1KiB_ops_per_s")
        );
        assert_eq!(
            library_twin("http_put_4KiB_p99_us_keepalive").as_deref(),
            Some("put_4KiB_p99_us")
        );
        assert_eq!(
            library_twin("http_read_1GiB_MB_per_s").as_deref(),
            Some("read_1GiB_MB_per_s")
        );
        assert_eq!(library_twin("http_get_1KiB_req_per_s_new_conn"), None);
        assert_eq!(library_twin("put_1KiB_ops_per_s"), None);

        let lib = specs();
        let http = vec![MetricSpec {
            name: "http_put_1KiB_req_per_s_keepalive".into(),
            unit: "req/s",
            better: Better::Higher,
            pick: Pick::OpsPerS,
        }];
        let records = vec![
            (
                lib.clone(),
                RunRecord::new("ours", "put", 1024, 10, ok(2000.0, 100.0), &lib),
            ),
            (
                http.clone(),
                RunRecord::new("ours-http", "put", 1024, 10, ok(900.0, 300.0), &http),
            ),
            (
                lib.clone(),
                RunRecord::new("flatfs", "put", 1024, 10, ok(1000.0, 400.0), &lib),
            ),
        ];
        let systems: Vec<SystemInfo> = ["ours", "ours-http", "flatfs"]
            .iter()
            .map(|n| SystemInfo::from_runs(by_name(n).expect("system"), &Ok(()), &records))
            .collect();
        let report = Report::build("quick", Value::Null, Value::Null, &systems, &records);
        let ops = report
            .panels
            .iter()
            .find(|p| p.metric == "put_1KiB_ops_per_s")
            .expect("ops panel");
        assert_eq!(
            ops.bars,
            vec![
                ("ours", Some(2000.0)),
                ("ours-http", Some(900.0)),
                ("flatfs", Some(1000.0))
            ]
        );
        assert!(report.panels.iter().all(|p| !p.metric.starts_with("http_")));
        // The rows keep the HTTP metric with its own name and no peer.
        assert!(
            report
                .rows
                .iter()
                .any(|r| r.metric == "http_put_1KiB_req_per_s_keepalive" && r.peer.is_none())
        );
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(fmt_num(1_234_567.8), "1,234,568");
        assert_eq!(fmt_num(100.0), "100");
        assert_eq!(fmt_num(12.345), "12.3");
        assert_eq!(fmt_num(0.1234), "0.123");
    }
}
