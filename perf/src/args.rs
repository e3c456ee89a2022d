//! The harness protocol's command line, shared by every system's harness.
//!
//! A harness with extra flags (e.g. `ours-harness --http URL`) flattens
//! [`HarnessArgs`] into its own `clap::Parser` and implements
//! `AsRef<HarnessArgs>` for it.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Blobs must be at least this large: the first 8 bytes carry the blob index,
/// which is what makes every blob of a run unique (see `blobgen`).
pub const SIZE_BYTES_MIN: usize = 8;
/// Keeps `count * size_bytes` of pre-generated blobs within memory.
pub const SIZE_BYTES_MAX: usize = 64 << 20;
pub const COUNT_MAX: usize = 10_000_000;
pub const INFLIGHT_MAX: usize = 4096;
/// Pre-generated blobs are held in memory for the whole run.
pub const GENERATED_BYTES_MAX: u64 = 8 << 30;

const _: () = assert!(SIZE_BYTES_MIN <= SIZE_BYTES_MAX);
const _: () = assert!(SIZE_BYTES_MAX as u64 <= GENERATED_BYTES_MAX);

/// The workloads of the storage bench protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// N unique blobs of S bytes, K in flight; a put counts once durable.
    Put,
    /// Untimed put of N blobs, then timed gets in random order, verified.
    Get,
    /// Add the --input file as one blob; MB/s including durability.
    AddLarge,
    /// Untimed add-large, then a timed full read, verified; MB/s.
    ReadLarge,
    /// Fill N blobs, unpin half, then N timed puts while GC runs.
    PutDuringGc,
    /// Import the --input file as UnixFS with Kubo's defaults (256 KiB fixed
    /// chunks, raw leaves, CIDv1, balanced layout of 174 links, sha2-256);
    /// MB/s of file bytes including durability; the line names the root CID.
    UnixfsAdd,
    /// Untimed unixfs-add, then a timed CARv1 export of the whole DAG
    /// (dag-scope=all) into a byte counter; MB/s of CAR bytes.
    CarExport,
}

impl Workload {
    /// The name used on the command line and in the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::AddLarge => "add-large",
            Workload::ReadLarge => "read-large",
            Workload::PutDuringGc => "put-during-gc",
            Workload::UnixfsAdd => "unixfs-add",
            Workload::CarExport => "car-export",
        }
    }

    /// Whether the workload reads the pre-generated `--input` file.
    pub fn uses_input(self) -> bool {
        matches!(
            self,
            Workload::AddLarge | Workload::ReadLarge | Workload::UnixfsAdd | Workload::CarExport
        )
    }
}

/// `<harness> --dir DIR --workload W [--size-bytes S] [--count N] [--inflight K]
/// [--total-bytes T] [--seed X] [--input PATH]`
#[derive(Clone, Debug, Parser)]
#[command(about = "Storage bench harness: runs one workload and prints one JSON line on stdout.")]
pub struct HarnessArgs {
    /// Empty directory on the bench disk where the store lives.
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// Size of each blob for put, get and put-during-gc.
    #[arg(long, default_value_t = 4096)]
    pub size_bytes: usize,
    /// Number of blobs (N).
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Operations in flight at once (K).
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// Size of the --input file (add-large, read-large, unixfs-add,
    /// car-export).
    #[arg(long, default_value_t = 1 << 30)]
    pub total_bytes: u64,
    /// Seed of the deterministic blob contents.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The pre-generated file for the workloads that read one.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// car-export: after the untimed import, write back and drop the host's page cache
    /// (`sync`, then 1 to /proc/sys/vm/drop_caches; root only), so the timed export starts
    /// from disk whatever the import left cached (a buffered importer leaves its blocks hot, an
    /// O_DIRECT one does not).
    #[arg(long)]
    pub cold_export: bool,
}

impl AsRef<HarnessArgs> for HarnessArgs {
    fn as_ref(&self) -> &HarnessArgs {
        self
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("--size-bytes {0} is outside {SIZE_BYTES_MIN}..={SIZE_BYTES_MAX}")]
    SizeBytes(usize),
    #[error("--count {0} is outside 1..={COUNT_MAX}")]
    Count(usize),
    #[error("--inflight {0} is outside 1..={INFLIGHT_MAX}")]
    Inflight(usize),
    #[error(
        "--count {count} x --size-bytes {size_bytes} exceeds {GENERATED_BYTES_MAX} bytes of generated blobs"
    )]
    GeneratedBytes { count: usize, size_bytes: usize },
    #[error("--workload {0} needs --input PATH (the pre-generated large file)")]
    InputMissing(&'static str),
    #[error(
        "--workload put-during-gc needs --count of at least 2 (half of the blobs are unpinned)"
    )]
    GcCount,
}

impl HarnessArgs {
    /// Checks the bounds that clap's types cannot express.
    pub fn validate(&self) -> Result<(), ArgsError> {
        if !(SIZE_BYTES_MIN..=SIZE_BYTES_MAX).contains(&self.size_bytes) {
            return Err(ArgsError::SizeBytes(self.size_bytes));
        }
        if !(1..=COUNT_MAX).contains(&self.count) {
            return Err(ArgsError::Count(self.count));
        }
        if !(1..=INFLIGHT_MAX).contains(&self.inflight) {
            return Err(ArgsError::Inflight(self.inflight));
        }
        // put-during-gc holds the fill set and the timed set at once.
        let blobs_held = match self.workload {
            Workload::PutDuringGc => self.count.saturating_mul(2),
            _ => self.count,
        };
        if (blobs_held as u64).saturating_mul(self.size_bytes as u64) > GENERATED_BYTES_MAX {
            return Err(ArgsError::GeneratedBytes {
                count: self.count,
                size_bytes: self.size_bytes,
            });
        }
        match self.workload {
            w if w.uses_input() && self.input.is_none() => Err(ArgsError::InputMissing(w.name())),
            Workload::PutDuringGc if self.count < 2 => Err(ArgsError::GcCount),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> HarnessArgs {
        let mut argv = vec!["h", "--dir", "/tmp/x"];
        argv.extend_from_slice(extra);
        HarnessArgs::try_parse_from(argv).expect("valid arguments")
    }

    #[test]
    fn defaults_follow_the_protocol() {
        let args = parse(&["--workload", "put"]);
        assert_eq!(args.workload, Workload::Put);
        assert_eq!(args.inflight, 64);
        assert_eq!(args.total_bytes, 1 << 30);
        assert_eq!(args.validate(), Ok(()));
    }

    #[test]
    fn workload_names_round_trip_through_clap() {
        for w in Workload::value_variants() {
            let args = parse(&["--workload", w.name()]);
            assert_eq!(args.workload, *w);
        }
    }

    #[test]
    fn large_workloads_need_an_input() {
        let args = parse(&["--workload", "read-large"]);
        assert_eq!(args.validate(), Err(ArgsError::InputMissing("read-large")));
        let args = parse(&["--workload", "read-large", "--input", "/tmp/l.bin"]);
        assert_eq!(args.validate(), Ok(()));
        for name in ["unixfs-add", "car-export"] {
            let args = parse(&["--workload", name]);
            assert_eq!(args.validate(), Err(ArgsError::InputMissing(name)));
            let args = parse(&["--workload", name, "--input", "/tmp/l.bin"]);
            assert_eq!(args.validate(), Ok(()));
            assert_eq!(args.total_bytes, 1 << 30);
        }
    }

    #[test]
    fn ipfs_workloads_have_their_protocol_names() {
        assert_eq!(Workload::UnixfsAdd.name(), "unixfs-add");
        assert_eq!(Workload::CarExport.name(), "car-export");
        let with_input: Vec<&str> = Workload::value_variants()
            .iter()
            .filter(|w| w.uses_input())
            .map(|w| w.name())
            .collect();
        assert_eq!(
            with_input,
            ["add-large", "read-large", "unixfs-add", "car-export"]
        );
    }

    #[test]
    fn out_of_range_values_are_named() {
        let args = parse(&["--workload", "put", "--size-bytes", "4"]);
        assert_eq!(args.validate(), Err(ArgsError::SizeBytes(4)));
        let args = parse(&["--workload", "put", "--inflight", "0"]);
        assert_eq!(args.validate(), Err(ArgsError::Inflight(0)));
        let args = parse(&["--workload", "put", "--count", "0"]);
        assert_eq!(args.validate(), Err(ArgsError::Count(0)));
        let args = parse(&["--workload", "put-during-gc", "--count", "1"]);
        assert_eq!(args.validate(), Err(ArgsError::GcCount));
        let args = parse(&[
            "--workload",
            "get",
            "--count",
            "1000000",
            "--size-bytes",
            "65536",
        ]);
        assert!(matches!(
            args.validate(),
            Err(ArgsError::GeneratedBytes { .. })
        ));
    }

    #[derive(Debug, Parser)]
    struct Extended {
        #[command(flatten)]
        harness: HarnessArgs,
        #[arg(long)]
        http: Option<String>,
    }

    #[test]
    fn harness_args_flatten_into_an_extended_parser() {
        let parsed = Extended::try_parse_from([
            "h",
            "--dir",
            "/tmp/x",
            "--workload",
            "get",
            "--http",
            "http://127.0.0.1:1",
        ])
        .expect("valid arguments");
        assert_eq!(parsed.harness.workload, Workload::Get);
        assert_eq!(parsed.http.as_deref(), Some("http://127.0.0.1:1"));
    }
}
