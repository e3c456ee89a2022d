//! Replay: re-run a workload under perturbations that must not change a deterministic result
//! (CPU pinning, ASLR off/on, umask when the spec fixes none, environment order, timing noise
//! before exec) with the same seed and logical time, and compare the outputs and the exit. A
//! nondeterministic workload is flagged with the first output that differs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use metanode_witness::{Difference, OutputsManifest};

use crate::cage::{CageExit, RunError, RunOptions, RunOutcome, run};
use crate::spec::CageSpec;

/// Why a replay could not be carried out (a disagreement is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{runs} replay runs asked for; at most {max} are allowed", max = crate::limits::REPLAY_RUNS_COUNT_MAX)]
    TooManyRuns { runs: usize },
    #[error("run {run}: {source}")]
    Run {
        run: usize,
        #[source]
        source: RunError,
    },
    #[error("run {run}: outputs: {source}")]
    Outputs {
        run: usize,
        #[source]
        source: metanode_witness::OutputsError,
    },
    #[error("run {run}: prepare {}: {source}", path.display())]
    Prepare {
        run: usize,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One perturbed run's result.
#[derive(Debug)]
pub struct ReplayRun {
    pub perturbation: String,
    pub outcome: RunOutcome,
    pub outputs: OutputsManifest,
}

/// The first disagreement with run 0, if any.
#[derive(Debug)]
pub enum Disagreement {
    Exit {
        run: usize,
        first: CageExit,
        this: CageExit,
    },
    Output {
        run: usize,
        difference: Difference,
    },
}

#[derive(Debug)]
pub struct ReplayReport {
    pub runs: Vec<ReplayRun>,
    pub disagreement: Option<Disagreement>,
}

/// The perturbation of run `i` (run 0 is the reference: no perturbation).
pub fn perturb(base: &RunOptions, i: usize, cpus: usize) -> (RunOptions, String) {
    let mut opts = base.clone();
    if i == 0 {
        return (opts, "reference".into());
    }
    opts.cpu = Some(i % cpus.max(1));
    opts.no_aslr = !i.is_multiple_of(2);
    opts.umask = Some(if i.is_multiple_of(2) { 0o077 } else { 0o002 });
    opts.env_shuffle_seed = Some(i as u64);
    opts.pre_exec_delay = Some(Duration::from_millis((i as u64 * 7) % 23));
    let text = format!(
        "cpu {} aslr {} umask {:03o} env shuffled ({}) delay {} ms",
        opts.cpu.unwrap_or(0),
        if opts.no_aslr { "off" } else { "on" },
        opts.umask.unwrap_or(0),
        i,
        opts.pre_exec_delay.map_or(0, |d| d.as_millis())
    );
    (opts, text)
}

/// Runs `spec` `runs` times (≥ 2); each run writes to its own `<work>/run-<i>/out`.
pub fn replay(
    spec: &CageSpec,
    base: &RunOptions,
    runs: usize,
    work: &Path,
) -> Result<ReplayReport, ReplayError> {
    if runs > crate::limits::REPLAY_RUNS_COUNT_MAX as usize {
        return Err(ReplayError::TooManyRuns { runs });
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut results: Vec<ReplayRun> = Vec::new();
    let mut disagreement = None;
    for i in 0..runs.max(2) {
        let (mut opts, perturbation) = perturb(base, i, cpus);
        let out = work.join(format!("run-{i}")).join("out");
        std::fs::create_dir_all(&out).map_err(|source| ReplayError::Prepare {
            run: i,
            path: out.clone(),
            source,
        })?;
        opts.out_dir = Some(out.clone());
        opts.cage_id = format!("{}-r{i}", base.cage_id);
        let outcome = run(spec, &opts).map_err(|source| ReplayError::Run { run: i, source })?;
        let outputs = metanode_witness::outputs_root(&out)
            .map_err(|source| ReplayError::Outputs { run: i, source })?;
        if disagreement.is_none()
            && let Some(first) = results.first()
        {
            if first.outcome.exit != outcome.exit {
                disagreement = Some(Disagreement::Exit {
                    run: i,
                    first: first.outcome.exit,
                    this: outcome.exit,
                });
            } else if let Some(difference) = first.outputs.first_difference(&outputs) {
                disagreement = Some(Disagreement::Output { run: i, difference });
            }
        }
        results.push(ReplayRun {
            perturbation,
            outcome,
            outputs,
        });
    }
    Ok(ReplayReport {
        runs: results,
        disagreement,
    })
}
