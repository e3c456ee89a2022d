//! The per-worker signature verifier: connection tasks hand it requests
//! whose signature passed every check but the cryptographic one
//! ([`metanode_httpsig::prepare_request`]); it verifies what has queued up
//! as one batch ([`metanode_httpsig::check_batch`]) and answers each.
//!
//! Why a batch: strict Ed25519 through a key's fixed-base table ends in a
//! point compression (one field inversion, about 4 µs), which a batch
//! shares (Montgomery's trick, exact); and the requests of a batch then go
//! upstream back to back, so the upstream and the client are woken once per
//! batch rather than once per request. Every signature still gets its own
//! exact decision: no random combination, so no fallback is needed, one bad
//! signature cannot fail a good one, and a bad one costs what a good one
//! costs.
//!
//! Latency: the verifier never sleeps on a timer. A batch of one is verified
//! at once; a batch of two or more below [`VERIFY_BATCH_COUNT_MAX`] yields
//! to the runtime once if its oldest request is younger than
//! [`VERIFY_BATCH_WAIT_US_MAX`], so requests that became readable in the
//! same event-loop turn join it.
//!
//! Nonces are not recorded here: the connection task records the nonce
//! ([`metanode_httpsig::CheckedSignature::record_nonce`]) after its
//! signature verified, so only verified requests enter the replay cache,
//! and of two verified requests with one nonce the cache's atomic insert
//! lets exactly one through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metanode_httpsig::{CheckedSignature, PendingSignature, VerifyError, check_batch};
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use crate::limits::{VERIFY_BATCH_COUNT_MAX, VERIFY_BATCH_WAIT_US_MAX};

type Reply = oneshot::Sender<Result<CheckedSignature, VerifyError>>;

struct Job {
    pending: PendingSignature,
    queued_at: Instant,
    reply: Reply,
}

/// Counters of one verifier, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifierStats {
    pub batches: u64,
    pub signatures: u64,
    pub largest_batch: usize,
}

#[derive(Default)]
struct Inner {
    queue: Mutex<Vec<Job>>,
    ready: Notify,
    stats: Mutex<VerifierStats>,
}

/// Handle to a worker's verifier task; cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("queued", &self.inner.queue.lock().len())
            .field("stats", &*self.inner.stats.lock())
            .finish()
    }
}

/// Why the verifier gave no answer (its task is gone: the worker is
/// shutting down).
const GONE: &str = "signature verifier stopped";

impl Verifier {
    /// Spawns the verifier task on the current runtime.
    pub fn spawn() -> Self {
        let v = Verifier {
            inner: Arc::new(Inner::default()),
        };
        tokio::spawn(v.clone().run());
        v
    }

    pub fn stats(&self) -> VerifierStats {
        *self.inner.stats.lock()
    }

    /// Strict verification of `pending`, batched with whatever else is
    /// queued: the signature's decision, or `Err` if the verifier task is
    /// gone (the worker is shutting down).
    pub async fn check(
        &self,
        pending: PendingSignature,
    ) -> Result<Result<CheckedSignature, VerifyError>, &'static str> {
        let (reply, answer) = oneshot::channel();
        self.inner.queue.lock().push(Job {
            pending,
            queued_at: Instant::now(),
            reply,
        });
        self.inner.ready.notify_one();
        answer.await.map_err(|_| GONE)
    }

    fn take(&self, batch: &mut Vec<Job>) {
        let mut queue = self.inner.queue.lock();
        let room = VERIFY_BATCH_COUNT_MAX.saturating_sub(batch.len());
        let n = room.min(queue.len());
        batch.extend(queue.drain(..n));
        if !queue.is_empty() {
            // More than one batch queued: come back without waiting.
            self.inner.ready.notify_one();
        }
    }

    async fn run(self) {
        let wait_max = Duration::from_micros(VERIFY_BATCH_WAIT_US_MAX);
        let mut batch: Vec<Job> = Vec::with_capacity(VERIFY_BATCH_COUNT_MAX);
        loop {
            self.inner.ready.notified().await;
            self.take(&mut batch);
            if batch.is_empty() {
                continue;
            }
            if batch.len() >= 2
                && batch.len() < VERIFY_BATCH_COUNT_MAX
                && batch
                    .first()
                    .is_some_and(|j| j.queued_at.elapsed() < wait_max)
            {
                tokio::task::yield_now().await;
                self.take(&mut batch);
            }
            self.verify(&mut batch);
        }
    }

    fn verify(&self, batch: &mut Vec<Job>) {
        let (pending, replies): (Vec<PendingSignature>, Vec<Reply>) =
            batch.drain(..).map(|j| (j.pending, j.reply)).unzip();
        let count = pending.len();
        let results = check_batch(pending);
        assert_eq!(results.len(), count, "one decision per signature");
        for (reply, result) in replies.into_iter().zip(results) {
            // The connection may have gone (timeout, shutdown): nothing to do.
            let _ = reply.send(result);
        }
        let mut stats = self.inner.stats.lock();
        stats.batches += 1;
        stats.signatures += count as u64;
        stats.largest_batch = stats.largest_batch.max(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::request::Parts;
    use metanode_core::keys::SigningKey;
    use metanode_httpsig::{
        KeyDirectory, ReplayCache, SignParams, VerifyPolicy, prepare_request, sign_request,
    };

    const NOW: u64 = 1_700_000_000;

    fn request(key: &SigningKey, nonce: &str) -> Parts {
        let mut p = http::Request::builder()
            .method("GET")
            .uri("/x")
            .header("host", "cage.test")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        sign_request(
            &mut p,
            key,
            &SignParams {
                key_id: "k",
                label: "sig1",
                components: &["@method", "@authority", "@path"],
                created_unix_s: NOW,
                expires_unix_s: None,
                nonce: Some(nonce),
            },
        )
        .unwrap();
        p
    }

    /// Many requests queued in one event-loop turn: one batch, each with
    /// its own decision (a bad signature fails alone), and of two verified
    /// requests with one nonce exactly one passes the replay cache.
    #[test]
    fn one_batch_exact_decisions_and_one_nonce_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let key = SigningKey::from_seed(&[1; 32]);
            let mut keys = KeyDirectory::new();
            keys.insert("k", key.public_key());
            let policy = VerifyPolicy::default();
            let replay = ReplayCache::new(1000, 305);
            let verifier = Verifier::spawn();

            // A first batch while the key has no table yet: its first
            // success builds the table mid-batch; every good one passes.
            let pending: Vec<_> = (0..5)
                .map(|i| {
                    let p = request(&key, &format!("w{i}"));
                    prepare_request(&p, &keys, &policy, &replay, NOW).unwrap()
                })
                .collect();
            assert_eq!(keys.prepared_len(), 0);
            for a in check_concurrently(&verifier, pending).await {
                a.unwrap().unwrap();
            }
            assert_eq!(keys.prepared_len(), 1);
            assert_eq!(verifier.stats().largest_batch, 5);

            let impostor = SigningKey::from_seed(&[2; 32]);
            let mut parts: Vec<Parts> = (0..10).map(|i| request(&key, &format!("n{i}"))).collect();
            // Index 3: signed by another key under our key id.
            parts[3] = request(&impostor, "n3");
            // Index 7 reuses index 6's nonce.
            parts[7] = request(&key, "n6");
            let pending: Vec<_> = parts
                .iter()
                .map(|p| prepare_request(p, &keys, &policy, &replay, NOW).unwrap())
                .collect();
            let before = verifier.stats();
            let answers = check_concurrently(&verifier, pending).await;
            let after = verifier.stats();
            assert_eq!(after.batches - before.batches, 1, "{after:?}");
            assert_eq!(after.largest_batch, 10);

            let mut codes = Vec::new();
            for a in answers {
                let r = a.unwrap().and_then(|c| c.record_nonce(&replay, NOW));
                codes.push(r.map(|v| v.nonce.unwrap()).map_err(|e| e.code()));
            }
            for (i, c) in codes.iter().enumerate() {
                match i {
                    3 => assert_eq!(c, &Err("bad_signature")),
                    7 => assert_eq!(c, &Err("replayed_nonce")),
                    _ => assert_eq!(c, &Ok(format!("n{i}"))),
                }
            }
        });
    }

    /// All checks concurrently on this task, so they queue in one turn.
    async fn check_concurrently(
        verifier: &Verifier,
        pending: Vec<PendingSignature>,
    ) -> Vec<Result<Result<CheckedSignature, VerifyError>, &'static str>> {
        let mut set = tokio::task::JoinSet::new();
        for (i, p) in pending.into_iter().enumerate() {
            let v = verifier.clone();
            set.spawn(async move { (i, v.check(p).await) });
        }
        let mut out: Vec<_> = set.join_all().await;
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, r)| r).collect()
    }
}
