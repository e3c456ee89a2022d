//! The one JSON line a harness prints on stdout.

use serde::{Deserialize, Serialize};

use crate::latency::LatencyUs;

/// What happened to GC during `put-during-gc`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GcOutcome {
    /// Blobs filled before the timed phase; half of them were unpinned.
    pub filled_count: usize,
    pub unpinned_count: usize,
    /// Every unpinned blob was gone when the timed puts ended.
    pub finished_during_puts: bool,
    /// Every unpinned blob was gone within the bounded wait after the puts.
    pub finished: bool,
    /// From the GC trigger to the first poll that found every unpinned blob
    /// gone; absent when GC did not finish.
    pub seconds: Option<f64>,
}

/// The protocol's output line. Fields that were not measured are absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub system: String,
    pub workload: String,
    pub size_bytes: u64,
    pub count: u64,
    pub inflight: u64,
    pub seconds: f64,
    pub ops_per_s: f64,
    /// 10^6 bytes per second.
    pub mb_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<LatencyUs>,
    pub durability: String,
    pub config: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc: Option<GcOutcome>,
    /// unixfs-add and car-export: the root CID of the imported file as the
    /// system printed it. Every system importing the same input with Kubo's
    /// parameters must print the same one; the orchestrator checks that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cid: Option<String>,
    /// unixfs-add: blocks the import wrote; car-export: blocks in the CAR
    /// (absent when the system does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks_count: Option<u64>,
    /// car-export: bytes of the CAR stream, header included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub car_bytes: Option<u64>,
}

impl Report {
    /// The JSON line, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a report has only finite numbers and string keys")
    }

    /// Prints the line on stdout; diagnostics go to stderr.
    pub fn emit(&self) {
        println!("{}", self.to_line());
    }
}

/// Operations and MB (10^6 bytes) per second over `seconds`; zero seconds
/// cannot be measured, so they are clamped to one nanosecond.
pub fn rates(ops: u64, bytes: u64, seconds: f64) -> (f64, f64) {
    let seconds = seconds.max(1e-9);
    (ops as f64 / seconds, bytes as f64 / 1e6 / seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_matches_the_protocol_shape() {
        let (ops_per_s, mb_per_s) = rates(20_000, 20_000 * 1024, 2.0);
        let report = Report {
            system: "flatfs".into(),
            workload: "put".into(),
            size_bytes: 1024,
            count: 20_000,
            inflight: 64,
            seconds: 2.0,
            ops_per_s,
            mb_per_s,
            latency_us: Some(LatencyUs {
                p50: 3100,
                p99: 9000,
                max: 15000,
            }),
            durability: "fdatasync before ack".into(),
            config: serde_json::json!({"workers": 64}),
            gc: None,
            root_cid: None,
            blocks_count: None,
            car_bytes: None,
        };
        let value: serde_json::Value = serde_json::from_str(&report.to_line()).expect("valid json");
        assert_eq!(value["ops_per_s"], 10_000.0);
        assert_eq!(value["mb_per_s"], 10.24);
        assert_eq!(value["latency_us"]["p99"], 9000);
        assert!(value.get("gc").is_none());
        assert!(value.get("root_cid").is_none());
        assert!(value.get("car_bytes").is_none());
        let back: Report = serde_json::from_value(value).expect("round trip");
        assert_eq!(back, report);
    }

    /// Values of a real quick-bench run (32 MiB input, seed 1): 128 raw
    /// leaves + 1 dag-pb root, the CAR Helia's export produced too.
    #[test]
    fn car_export_line_carries_root_and_car_size() {
        let car_bytes = 33_565_931;
        let (ops_per_s, mb_per_s) = rates(1, car_bytes, 0.5);
        let report = Report {
            system: "ours".into(),
            workload: "car-export".into(),
            size_bytes: 32 << 20,
            count: 1,
            inflight: 1,
            seconds: 0.5,
            ops_per_s,
            mb_per_s,
            latency_us: None,
            durability: "group commit".into(),
            config: serde_json::json!({}),
            gc: None,
            root_cid: Some("bafybeidpinj56g2hg5amvkao7hwdqgahrwtrlnixhjhko6vjzf7srftjlu".into()),
            blocks_count: Some(129),
            car_bytes: Some(car_bytes),
        };
        let value: serde_json::Value = serde_json::from_str(&report.to_line()).expect("valid json");
        assert_eq!(
            value["root_cid"],
            "bafybeidpinj56g2hg5amvkao7hwdqgahrwtrlnixhjhko6vjzf7srftjlu"
        );
        assert_eq!(value["car_bytes"], 33_565_931u64);
        assert_eq!(value["blocks_count"], 129);
        assert_eq!(value["mb_per_s"], 67.131862);
        let back: Report = serde_json::from_value(value).expect("round trip");
        assert_eq!(back, report);
    }
}
