//! Turns a run into a signed witness record (metanode-witness): the header fixes what went in
//! (seed, environment, inputs, logical time), the roots what came out, the decision what the cage
//! enforced and what the workload tried.

use std::path::Path;

use metanode_core::hash::Hash32;
use metanode_core::keys::SigningKey;
use metanode_witness::{
    ExitKind, InputRef, OutputAction, OutputsManifest, PolicyDecision, Record, RunHeader,
    SignedRecord, TraceRoots, Verdict, ViolationKind, ViolationRecord, namespaces,
};

use metanode_confine::LandlockDenial;

use crate::cage::{CageExit, OutputViolation, OutputViolationKind, RunOptions, RunOutcome};
use crate::spec::{CageSpec, Namespaces};

/// Why a record could not be built or signed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("environment: {0}")]
    Env(#[from] metanode_witness::EnvError),
    #[error("inputs: {0}")]
    Inputs(#[from] metanode_witness::InputsError),
    #[error("outputs: {0}")]
    Outputs(#[from] metanode_witness::OutputsError),
    #[error("events: {0}")]
    Events(#[from] metanode_witness::EventsError),
    #[error("signing: {0}")]
    Sign(#[from] metanode_witness::SignError),
}

/// The launcher's namespace bits → the witness record's (two independent registries).
pub fn witness_namespaces(ns: Namespaces) -> u16 {
    [
        (Namespaces::USER, namespaces::USER),
        (Namespaces::MOUNT, namespaces::MOUNT),
        (Namespaces::PID, namespaces::PID),
        (Namespaces::IPC, namespaces::IPC),
        (Namespaces::UTS, namespaces::UTS),
        (Namespaces::NET, namespaces::NET),
        (Namespaces::CGROUP, namespaces::CGROUP),
        (Namespaces::TIME, namespaces::TIME),
    ]
    .iter()
    .filter(|(ours, _)| ns.contains(*ours))
    .fold(0, |acc, (_, bit)| acc | bit)
}

/// The outputs manifest of a run (empty directory root when there is no /out).
pub fn outputs(out_dir: Option<&Path>) -> Result<Option<OutputsManifest>, RecordError> {
    Ok(match out_dir {
        Some(dir) => Some(metanode_witness::outputs_root(dir)?),
        None => None,
    })
}

/// Builds and signs the record of one run.
pub fn sign_run(
    spec: &CageSpec,
    opts: &RunOptions,
    outcome: &RunOutcome,
    service: &str,
    inputs: &[InputRef],
    key: &SigningKey,
) -> Result<SignedRecord, RecordError> {
    let manifest = outputs(opts.out_dir.as_deref())?;
    let exit = match outcome.exit {
        CageExit::Exited(code) => ExitKind::Exited(code.clamp(0, 255) as u8),
        CageExit::Signaled(signal) => ExitKind::Signaled(signal.clamp(0, 255) as u8),
    };
    let mut decision = PolicyDecision {
        seccomp_digest: outcome.seccomp_digest,
        landlock_status: outcome.landlock.status.code(),
        landlock_abi: outcome.landlock.abi,
        cgroup_mode: outcome.cgroup_mode.code(),
        namespaces: witness_namespaces(outcome.namespaces),
        exit,
        violations: Vec::new(),
        violations_dropped_count: 0,
        verdict: Verdict::Completed,
    };
    for v in &outcome.violations {
        decision.push_violation(ViolationRecord {
            kind: ViolationKind::Syscall {
                nr: v.syscall_nr,
                name: v.syscall_name.to_string(),
            },
            detail: format!("{} refused with EPERM", v.syscall_name),
        });
    }
    // Refusals the launcher counted but did not keep are still part of what the workload tried.
    decision.violations_dropped_count = decision
        .violations_dropped_count
        .saturating_add(outcome.violations_dropped_count);
    // Then what Landlock refused, in audit serial order (see ViolationKind).
    for d in &outcome.landlock_denials {
        decision.push_violation(landlock_violation_record(d));
    }
    decision.violations_dropped_count = decision
        .violations_dropped_count
        .saturating_add(outcome.landlock_denials_dropped_count);
    // After the syscalls and denials, in this order (see ViolationKind): limits known from the
    // cgroup.
    if outcome.usage.oom_kills > 0 {
        decision.push_violation(ViolationRecord {
            kind: ViolationKind::OomKill,
            detail: "memory limit reached; the kernel OOM-killed a cage process".into(),
        });
    }
    if outcome.usage.pids_max_hits > 0 {
        decision.push_violation(ViolationRecord {
            kind: ViolationKind::PidsLimit,
            detail: "pids limit reached; fork/clone refused".into(),
        });
    }
    if outcome.timed_out {
        decision.push_violation(ViolationRecord {
            kind: ViolationKind::WallTimeout,
            detail: "wall timeout expired; the launcher killed the cage".into(),
        });
    }
    // Last: what the post-run scan of /out found and neutralised, in the scan's deterministic
    // order (sorted names, depth first). The outputs root below is over the neutralised tree.
    for v in &outcome.output_violations {
        decision.push_violation(output_violation_record(v));
    }
    decision.violations_dropped_count = decision
        .violations_dropped_count
        .saturating_add(outcome.output_violations_dropped_count);
    decision.verdict = decision.expected_verdict();
    let events_root = decision.events_root()?;
    let record = Record {
        header: RunHeader {
            node: key.public_key().to_bytes(),
            service: service.to_string(),
            agreement: spec.config_digest,
            input_root: *metanode_witness::input_root(inputs)?.as_bytes(),
            rng_seed: opts.rng_seed,
            env_root: *metanode_witness::env_root(&spec.process.env)?.as_bytes(),
            logical_time_ns: opts.logical_time_ns,
        },
        roots: TraceRoots {
            events_root: *events_root.as_bytes(),
            outputs_root: match &manifest {
                Some(m) => *m.root().as_bytes(),
                None => *metanode_core::merkle::empty_root().as_bytes(),
            },
            state_delta_root: *metanode_core::merkle::empty_root().as_bytes(),
        },
        decision,
    };
    Ok(record.sign(key)?)
}

/// The record of one Landlock denial: the refused rights and the path or address as text,
/// shortened deterministically to the record's bound.
pub fn landlock_violation_record(d: &LandlockDenial) -> ViolationRecord {
    let max = metanode_witness::limits::LANDLOCK_ACCESS_LEN_BYTES_MAX as usize;
    ViolationRecord {
        kind: ViolationKind::Landlock {
            access: metanode_confine::landlock_audit::bounded_text(&d.access(), max),
        },
        detail: metanode_confine::landlock_audit::bounded_text(
            &format!("landlock refused {}", d.blockers),
            metanode_witness::limits::VIOLATION_DETAIL_LEN_BYTES_MAX as usize,
        ),
    }
}

/// The record of one output violation. The path is relative to /out, as text (a non-UTF-8 name
/// is shown lossily, the same on every replay); a path longer than the record's bound keeps its
/// start and says how long it was, so the record still names where to look.
pub fn output_violation_record(v: &OutputViolation) -> ViolationRecord {
    let (action, mode, detail) = match v.kind {
        OutputViolationKind::SetidBitsStripped { mode } => (
            OutputAction::SetidBitsStripped,
            mode,
            "setuid/setgid bits stripped from a file in /out",
        ),
        OutputViolationKind::DeviceNodeRemoved { mode } => (
            OutputAction::DeviceNodeRemoved,
            mode,
            "device node in /out removed",
        ),
    };
    ViolationRecord {
        kind: ViolationKind::Output {
            action,
            mode,
            path: bounded_path(&v.path.to_string_lossy()),
        },
        detail: detail.into(),
    }
}

fn bounded_path(path: &str) -> String {
    let max = metanode_witness::limits::OUTPUT_VIOLATION_PATH_LEN_BYTES_MAX as usize;
    if path.len() <= max {
        return path.to_string();
    }
    let suffix = format!("...[{} bytes]", path.len());
    let mut end = max - suffix.len();
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &path[..end])
}

/// Keeps Hash32 in the public signature stable for callers that compare roots.
pub fn root_hex(root: &[u8; 32]) -> String {
    Hash32(*root).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn landlock_denials_become_bounded_landlock_records() {
        let denial = LandlockDenial {
            blockers: "net.connect_tcp".into(),
            object: "10.0.0.1:80".into(),
        };
        let record = landlock_violation_record(&denial);
        assert_eq!(
            record.kind,
            ViolationKind::Landlock {
                access: "net.connect_tcp 10.0.0.1:80".into()
            }
        );
        assert_eq!(record.detail, "landlock refused net.connect_tcp");

        let long = LandlockDenial {
            blockers: "fs.write_file".into(),
            object: format!("/{}", "a".repeat(400)),
        };
        let ViolationKind::Landlock { access } = landlock_violation_record(&long).kind else {
            panic!("not a landlock violation");
        };
        let max = metanode_witness::limits::LANDLOCK_ACCESS_LEN_BYTES_MAX as usize;
        assert_eq!(access.len(), max);
        assert!(access.starts_with("fs.write_file /aaa"), "{access}");
        assert!(access.ends_with("...[415 bytes]"), "{access}");
    }

    #[test]
    fn output_violations_become_output_records() {
        let setid = OutputViolation {
            path: PathBuf::from("bin/tool"),
            kind: OutputViolationKind::SetidBitsStripped { mode: 0o4755 },
        };
        assert_eq!(
            output_violation_record(&setid).kind,
            ViolationKind::Output {
                action: OutputAction::SetidBitsStripped,
                mode: 0o4755,
                path: "bin/tool".into()
            }
        );
        let max = metanode_witness::limits::OUTPUT_VIOLATION_PATH_LEN_BYTES_MAX as usize;
        let long = format!("{}/é{}", "d".repeat(300), "f".repeat(400));
        let node = OutputViolation {
            path: PathBuf::from(&long),
            kind: OutputViolationKind::DeviceNodeRemoved { mode: 0o020666 },
        };
        let ViolationKind::Output { action, mode, path } = output_violation_record(&node).kind
        else {
            panic!("not an output violation");
        };
        assert_eq!((action, mode), (OutputAction::DeviceNodeRemoved, 0o020666));
        assert!(path.len() <= max, "{}", path.len());
        assert!(path.starts_with(&"d".repeat(300)));
        assert!(
            path.ends_with(&format!("...[{} bytes]", long.len())),
            "{path}"
        );
        assert_eq!(bounded_path("short"), "short");
    }
}
