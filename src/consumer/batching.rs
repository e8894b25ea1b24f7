//! When the consumer takes records: its batching policy (issue 14).
//!
//! Why: a consumer that takes every record as soon as it is published ends
//! each take at the writers' frontier, reading the very slot lines they are
//! filling; each such read pulls a line away from a writer, which must
//! fetch it back. Taking only whole batches keeps the consumer a batch
//! behind the writers. Measured on the 2-vCPU AMD EPYC of
//! docs/PERFORMANCE.md ("issue 14"), one writer thread and a reader in
//! another process: the enabled hook went from 27–41 ns to about 15 ns.
//!
//! The policy is the consumer's alone: no writer change, no format change.
//! It decides only *when* to call `RingView::take` and how many tickets to
//! ask for; `take` reads every slot's state again, so every guarantee of the
//! protocol (crash repair, exact accounting, reader restart) is unchanged.
//! The price is delivery latency, which [`BatchPolicy::latency`] bounds.

use std::time::{Duration, Instant};

use crate::ring::RingView;

/// The largest batch: 4096 records (256 KiB of slots) is what the
/// measurement used; larger batches gained nothing there.
const LARGEST_BATCH: u64 = 4096;

/// How long the oldest record waits at most before the consumer takes what
/// is there (plus the idle pauses, ≤ 1 ms each, around the looks). Chosen
/// by measurement (docs/PERFORMANCE.md, "Choosing T"): a lone record then
/// reaches `record`'s file in ~2.6 ms (p50; 1 ms: 1.7, 5 ms: 5.8), well
/// inside a 16 ms screen frame for `watch`; 1 ms gave back most of the
/// hook's gain at 0.3–1 M records/s (partial batches taken every
/// millisecond, near the writer), 5 ms gained nothing clear over 2 ms.
const LATENCY_BOUND: Duration = Duration::from_millis(2);

/// When the consumer takes records. Records are taken when any of these
/// holds (checked in this order, each at the cost of one load at most):
///
/// 1. the caller drains everything (end of a recording, shutdown);
/// 2. a whole batch is published: the slot `batch - 1` after the consumer's
///    next ticket holds its record (claims have no holes, so the slots before
///    it are claimed, and almost always published); then exactly one batch
///    is taken, so the consumer never reads past a line it knows is done;
/// 3. writers wait for space (`waiters` > 0) or the ring is more than half
///    full: everything is taken at once, so a lossless writer is served
///    without waiting out a batch;
/// 4. the oldest untaken record (published, or claimed by a writer that may
///    have died) was first seen more than `latency` ago: everything is
///    taken, so a lone record is delivered, and a dead writer's claim is
///    found and reclaimed, within the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Records a whole batch holds (≥ 1; 1 takes every record at once, as
    /// the consumer did before this policy).
    pub batch: u64,
    /// How long the oldest waiting record may wait before a partial batch
    /// is taken.
    pub latency: Duration,
}

impl BatchPolicy {
    /// The default for a ring of `capacity` slots: batches of
    /// min(4096, capacity / 8), so that a full batch never holds writers
    /// near a full ring, and the 2 ms latency bound.
    pub fn for_capacity(capacity: u64) -> BatchPolicy {
        BatchPolicy { batch: (capacity / 8).clamp(1, LARGEST_BATCH), latency: LATENCY_BOUND }
    }

    /// Takes every record as soon as it is published (no batching).
    pub fn eager() -> BatchPolicy {
        BatchPolicy { batch: 1, latency: Duration::ZERO }
    }
}

/// What the policy says to take now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing yet: fewer than a batch, and none waited long enough.
    Nothing,
    /// One whole batch of this many tickets.
    Batch(u64),
    /// Everything there is.
    Everything,
}

/// The policy and what it remembers between looks: the oldest waiting
/// ticket and when it was first seen waiting.
#[derive(Debug)]
pub(crate) struct Batching {
    policy: BatchPolicy,
    oldest_seen: Option<(u64, Instant)>,
}

impl Batching {
    pub(crate) fn new(policy: BatchPolicy) -> Batching {
        Batching { policy: BatchPolicy { batch: policy.batch.max(1), ..policy }, oldest_seen: None }
    }

    pub(crate) fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// What to take now, for a consumer whose next ticket is `next`, of a
    /// ring of `capacity` slots; `everything`: the caller drains all.
    pub(crate) fn due(&mut self, view: &RingView<'_>, next: u64, capacity: u64, everything: bool) -> Due {
        let batch = self.policy.batch;
        if everything || batch == 1 {
            return Due::Everything;
        }
        // First whether anything waits at all: one load for each idle ring
        // (most of a consumer's rings, most of the time) rather than four.
        // Claims have no holes, so with `next` unclaimed no later ticket of
        // its lap is claimed either: no batch is published, the ring is not
        // half full, and no live writer waits for space in it (a writer
        // waits only in a full ring; a registration left by one that died
        // has nothing to be served).
        if !view.claimed(next) {
            self.oldest_seen = None; // Nothing waits.
            return Due::Nothing;
        }
        if view.published(next.wrapping_add(batch - 1)) {
            return Due::Batch(batch);
        }
        if view.writers_waiting() || view.claimed(next.wrapping_add(capacity / 2)) {
            return Due::Everything;
        }
        match self.oldest_seen {
            Some((ticket, since)) if ticket == next => {
                if since.elapsed() >= self.policy.latency {
                    Due::Everything
                } else {
                    Due::Nothing
                }
            }
            _ => {
                self.oldest_seen = Some((next, Instant::now()));
                if self.policy.latency.is_zero() { Due::Everything } else { Due::Nothing }
            }
        }
    }
}
