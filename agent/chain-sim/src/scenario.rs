//! What one seed simulates: the fault plan drawn from the seed.
//!
//! A run has two phases. Until `heal_at_ms` anything in the plan may happen
//! (loss, duplication, reordering by delay, partitions, crashes, disk faults,
//! Byzantine behaviour, clock skew). From `heal_at_ms` the network is clean
//! and every crashed node is restarted; the run then continues for
//! `liveness_window_ms` and the liveness checker demands progress. Byzantine
//! validators keep misbehaving after the heal: the protocol must make
//! progress despite them, not only when they stop.

use std::fmt;

use crate::rng::SimRng;

/// Misbehaviour of one Byzantine validator.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Byzantine {
    /// A second honest replica runs with the same key (Twins): the pair
    /// equivocates whenever their views differ.
    Twins,
    /// Proposes blocks whose state root is wrong (re-signed, so only
    /// execution can tell).
    InvalidProposals,
    /// Never sends its proposals.
    WithholdProposals,
    /// Re-sends old messages it has seen, at random later times.
    Replayer,
    /// Sends round changes for far rounds with forged prepared certificates,
    /// and prepares and commits for blocks that do not exist.
    Forger,
}

impl Byzantine {
    pub const ALL: [Byzantine; 5] = [
        Byzantine::Twins,
        Byzantine::InvalidProposals,
        Byzantine::WithholdProposals,
        Byzantine::Replayer,
        Byzantine::Forger,
    ];
}

/// A timed fault in the first phase.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum FaultEvent {
    /// Split validators into two groups that cannot talk; healed at `until_ms`.
    Partition {
        at_ms: u64,
        until_ms: u64,
        side_a: Vec<usize>,
    },
    /// Power loss: unsynced disk writes are lost or torn. Restarted at
    /// `restart_ms` (always before the heal).
    Crash {
        at_ms: u64,
        node: usize,
        restart_ms: u64,
    },
    /// The node's next fsync fails (EIO); the node must stop rather than
    /// carry on with a write it cannot trust, and is restarted later.
    FsyncError { at_ms: u64, node: usize },
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub validators_count: usize,
    /// Validators (indices) that misbehave, with how. At most f.
    pub byzantine: Vec<(usize, Byzantine)>,
    /// Per-message probabilities (percent) in the first phase.
    pub loss_percent: u64,
    pub duplicate_percent: u64,
    /// One-way delay range (ms); reordering follows from the spread.
    pub delay_ms_min: u64,
    pub delay_ms_max: u64,
    /// Local clock offset of each node from simulated time.
    pub clock_skew_ms: Vec<i64>,
    pub faults: Vec<FaultEvent>,
    /// Client transactions per simulated second.
    pub tx_per_s: u64,
    pub heal_at_ms: u64,
    pub liveness_window_ms: u64,
}

impl Scenario {
    /// The fault plan of `seed`. Every choice comes from the seed alone.
    pub fn from_seed(seed: u64) -> Scenario {
        let mut rng = SimRng::new(seed);
        // Mostly 4 validators (f = 1); every eighth seed 7 (f = 2) so quorum
        // arithmetic beyond the minimal set is exercised too.
        let validators_count = if rng.chance(12) { 7 } else { 4 };
        let f = (validators_count - 1) / 3;
        let mut byzantine = Vec::new();
        let byz_count = rng.range(0, f as u64) as usize;
        let mut candidates: Vec<usize> = (0..validators_count).collect();
        for _ in 0..byz_count {
            let i = rng.range(0, candidates.len() as u64 - 1) as usize;
            let node = candidates.remove(i);
            byzantine.push((node, *rng.pick(&Byzantine::ALL)));
        }
        let heal_at_ms = rng.range(3_000, 8_000);
        let delay_ms_min = rng.range(1, 20);
        let delay_ms_max = delay_ms_min + rng.range(0, 200);
        let clock_skew_ms = (0..validators_count)
            .map(|_| rng.range(0, 600) as i64 - 300)
            .collect();
        let mut faults = Vec::new();
        let faults_count = rng.range(0, 4);
        for _ in 0..faults_count {
            let at_ms = rng.range(200, heal_at_ms - 100);
            match rng.range(0, 2) {
                0 => {
                    let until_ms = rng.range(at_ms + 1, heal_at_ms);
                    let mut side_a: Vec<usize> =
                        (0..validators_count).filter(|_| rng.chance(50)).collect();
                    if side_a.is_empty() {
                        side_a.push(0);
                    }
                    faults.push(FaultEvent::Partition {
                        at_ms,
                        until_ms,
                        side_a,
                    });
                }
                1 => {
                    let node = rng.range(0, validators_count as u64 - 1) as usize;
                    let restart_ms = rng.range(at_ms + 1, heal_at_ms);
                    faults.push(FaultEvent::Crash {
                        at_ms,
                        node,
                        restart_ms,
                    });
                }
                _ => {
                    let node = rng.range(0, validators_count as u64 - 1) as usize;
                    faults.push(FaultEvent::FsyncError { at_ms, node });
                }
            }
        }
        let liveness_window_ms = 12_000 + 8_000 * byzantine.len() as u64;
        Scenario {
            seed,
            validators_count,
            byzantine,
            loss_percent: rng.range(0, 20),
            duplicate_percent: rng.range(0, 10),
            delay_ms_min,
            delay_ms_max,
            clock_skew_ms,
            faults,
            tx_per_s: rng.range(0, 40),
            heal_at_ms,
            // Long enough for the heights after the heal to decide even
            // when Byzantine proposers hold consecutive rounds: each such
            // round costs a full timeout (capped at 8 s in the simulator,
            // see `world::node_config`), plus a few clean heights.
            liveness_window_ms,
        }
    }

    pub fn is_byzantine(&self, node: usize) -> Option<Byzantine> {
        self.byzantine
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, b)| *b)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} validators, byzantine {:?}, loss {}%, dup {}%, delay {}..{} ms, \
             {} faults before heal at {} ms, {} tx/s",
            self.seed,
            self.validators_count,
            self.byzantine,
            self.loss_percent,
            self.duplicate_percent,
            self.delay_ms_min,
            self.delay_ms_max,
            self.faults.len(),
            self.heal_at_ms,
            self.tx_per_s
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_a_function_of_the_seed() {
        for seed in 0..200 {
            assert_eq!(Scenario::from_seed(seed), Scenario::from_seed(seed));
        }
    }

    #[test]
    fn byzantine_never_exceeds_f_and_faults_end_before_heal() {
        let mut seen_kinds = std::collections::BTreeSet::new();
        for seed in 0..2_000 {
            let s = Scenario::from_seed(seed);
            let f = (s.validators_count - 1) / 3;
            assert!(s.byzantine.len() <= f, "{s}");
            for (_, b) in &s.byzantine {
                seen_kinds.insert(format!("{b:?}"));
            }
            for fault in &s.faults {
                match fault {
                    FaultEvent::Partition { until_ms, .. } => assert!(*until_ms <= s.heal_at_ms),
                    FaultEvent::Crash { restart_ms, .. } => assert!(*restart_ms <= s.heal_at_ms),
                    FaultEvent::FsyncError { at_ms, .. } => assert!(*at_ms < s.heal_at_ms),
                }
            }
        }
        // Over 2000 seeds every kind of Byzantine behaviour is drawn.
        assert_eq!(seen_kinds.len(), Byzantine::ALL.len());
    }
}
