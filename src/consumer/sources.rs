//! The consumer's rings: the shared ring and every sub-ring (format 3), each
//! with its own cursor, and the rounds that take from all of them at once in
//! merged order (`consumer::merge`).
//!
//! Source 0 is the shared ring, source `i + 1` sub-ring `i`. Every sub-ring
//! is a source whether leased or not: a free one may still hold an exited
//! thread's records. Each source is a plain ring to `RingView`: attach,
//! take, commit, progress and crash repair work on it unchanged, and each
//! keeps its own committed position in its own header, so a restarted
//! consumer resumes every source where it stopped with no new state.
//!
//! **Merged tickets.** A record's `ticket` becomes its position in the
//! merged stream: the sum over sources of the positions committed before
//! its round, plus its index in the round (the round's lost records take
//! their numbers first). Sums of positions are what `progress`,
//! `claimed_end` and the rest report, so tickets, `taken` and `committed`
//! stay in one space.

use std::time::{Duration, Instant};

use super::batching::{BatchPolicy, Batching, Due};
use super::merge::{Bound, Merger, Plan, SLACK_NS, Source, SourceKind};
use crate::format::Record;
use crate::ring::{Cursor, Owner, Progress, RingView};
use crate::shm::Ring;

/// How long a claim may stay unpublished before the consumer asks the
/// kernel whether its writer is alive. A live writer publishes within
/// nanoseconds unless descheduled; this keeps the system call off the
/// common path.
const LIVENESS_GRACE: Duration = Duration::from_millis(2);

/// One source's consumer state.
#[derive(Debug)]
struct SourceState {
    cursor: Cursor,
    /// The claim (ticket, owner) the consumer last found blocking this
    /// source, and since when.
    blocked_on: Option<(u64, Owner, Instant)>,
    /// What the consumer knows of the stamps still to come.
    bound: Bound,
    /// This round's bound (`Bound::after_peek`).
    round_bound: u64,
    /// When this source wants a round (module `batching`).
    batching: Batching,
    /// The last round's peeked run.
    stamps: Vec<Option<u64>>,
    /// The last round's take, when it is merged with other sources'.
    taken: Vec<Record>,
}

/// What one round found: what [`super::Batch`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Round {
    pub(crate) records: usize,
    pub(crate) lost: usize,
    /// Records were peeked but held back by the watermark.
    pub(crate) held: bool,
}

/// The consumer's sources and the merge's scratch space.
#[derive(Debug)]
pub(crate) struct Sources {
    sources: Vec<SourceState>,
    merger: Merger,
    plan: Plan,
    /// [`SLACK_NS`] in ring-clock ticks.
    slack_ticks: u64,
}

/// Ring `s`'s view: the shared ring for 0, else sub-ring `s - 1`.
fn view(ring: &Ring, s: usize) -> RingView<'_> {
    if s == 0 { ring.view() } else { ring.subring_view(s - 1) }
}

fn capacity(ring: &Ring, s: usize) -> u64 {
    if s == 0 { ring.capacity() } else { ring.subring_capacity() }
}

/// A sub-ring's batching policy, from the shared ring's: batches no
/// larger than an eighth of the sub-ring (see `BatchPolicy::for_capacity`).
fn policy_for(ring: &Ring, s: usize, policy: BatchPolicy) -> BatchPolicy {
    let largest = (capacity(ring, s) / 8).max(1);
    BatchPolicy { batch: policy.batch.min(largest), ..policy }
}

/// The sum of every source's progress, as any process sees it: what the
/// snapshot and `status` report.
pub(crate) fn total_progress(ring: &Ring) -> Progress {
    (0..=ring.subring_count()).map(|s| view(ring, s).progress()).fold(Progress::default(), add)
}

fn add(a: Progress, b: Progress) -> Progress {
    // Wrapping: the counts come from a file anyone may have scribbled on.
    Progress {
        taken: a.taken.wrapping_add(b.taken),
        committed: a.committed.wrapping_add(b.committed),
        delivered: a.delivered.wrapping_add(b.delivered),
        lost_writer_died: a.lost_writer_died.wrapping_add(b.lost_writer_died),
        lost_reader_died: a.lost_reader_died.wrapping_add(b.lost_reader_died),
    }
}

impl Sources {
    /// Attaches to every source (the caller holds the consumer lock):
    /// each resumes at its committed position, and counts what a dead
    /// consumer took from it without committing as lost.
    pub(crate) fn attach(ring: &Ring) -> Sources {
        let policy = BatchPolicy::for_capacity(ring.capacity());
        let sources = (0..=ring.subring_count())
            .map(|s| SourceState {
                cursor: view(ring, s).attach_consumer(),
                blocked_on: None,
                bound: Bound::default(),
                round_bound: 0,
                batching: Batching::new(policy_for(ring, s, policy)),
                stamps: Vec::new(),
                taken: Vec::new(),
            })
            .collect();
        let calibration = ring.calibration();
        let slack_ticks = (SLACK_NS as u128 * calibration.ticks_per_second as u128 / 1_000_000_000) as u64;
        Sources { sources, merger: Merger::default(), plan: Plan::default(), slack_ticks }
    }

    /// The shared ring's batching policy.
    pub(crate) fn batch_policy(&self) -> BatchPolicy {
        self.sources[0].batching.policy()
    }

    pub(crate) fn set_batch_policy(&mut self, ring: &Ring, policy: BatchPolicy) {
        for (s, source) in self.sources.iter_mut().enumerate() {
            source.batching = Batching::new(policy_for(ring, s, policy));
        }
    }

    /// The sum of the sources' progress as of the last take or commit.
    pub(crate) fn progress(&self) -> Progress {
        self.sources.iter().map(|s| s.cursor.progress()).fold(Progress::default(), add)
    }

    /// Whether every source has been taken up to its frontier.
    pub(crate) fn caught_up(&self, ring: &Ring) -> bool {
        self.sources.iter().enumerate().all(|(s, source)| view(ring, s).caught_up(&source.cursor))
    }

    /// The sum of the sources' first unclaimed positions.
    pub(crate) fn claimed_end(&self, ring: &Ring) -> u64 {
        let ends = self.sources.iter().enumerate().map(|(s, source)| view(ring, s).claimed_end(&source.cursor));
        ends.fold(0, u64::wrapping_add)
    }

    /// The smallest source: the capacity the consumer's pacing must keep
    /// up with (a full sub-ring sends its writer to the shared ring).
    pub(crate) fn smallest_capacity(&self, ring: &Ring) -> u64 {
        (0..self.sources.len()).map(|s| capacity(ring, s)).min().unwrap_or(ring.capacity())
    }

    /// Declares every source's last take handed on.
    pub(crate) fn commit(&mut self, ring: &Ring) {
        for (s, source) in self.sources.iter_mut().enumerate() {
            view(ring, s).commit(&mut source.cursor);
        }
    }

    /// One round, if `everything` or the batching policy of any source says
    /// one is due: up to `max` records in merged order into `out`.
    pub(crate) fn round(&mut self, ring: &Ring, max: usize, out: &mut Vec<Record>, everything: bool) -> Round {
        // Per source, how far to look: a sub-ring with a whole batch
        // published, exactly that batch (not the lines its writer is
        // filling); else to the frontier (a full lap ends there).
        let mut due_any = false;
        let mut limits = Vec::with_capacity(self.sources.len());
        for (s, source) in self.sources.iter_mut().enumerate() {
            let (view, cap) = (view(ring, s), capacity(ring, s));
            let due = source.batching.due(&view, source.cursor.progress().taken, cap, everything);
            due_any |= due != Due::Nothing;
            limits.push(match due {
                Due::Batch(batch) if s != 0 => batch as usize,
                _ => cap as usize + 1,
            });
        }
        if !due_any {
            return Round::default();
        }
        self.round_with(ring, max, out, &limits)
    }

    fn round_with(&mut self, ring: &Ring, max: usize, out: &mut Vec<Record>, limits: &[usize]) -> Round {
        // The clock before any slot load (module `merge`: every record
        // claimed after a look at its slot is stamped after this).
        let seen_after = ring.clock_source().now_ordered().saturating_sub(self.slack_ticks);
        let mut peeked = false;
        for (s, source) in self.sources.iter_mut().enumerate() {
            source.stamps.clear();
            let blocked_on = &mut source.blocked_on;
            let frontier = view(ring, s).peek(&source.cursor, limits[s], &mut source.stamps, |ticket, owner| {
                is_dead(ring, blocked_on, ticket, owner)
            });
            let kind = if s == 0 { SourceKind::Shared } else { SourceKind::SubRing };
            let start = source.cursor.progress().taken;
            source.round_bound = source.bound.after_peek(kind, start, seen_after, &source.stamps, frontier);
            peeked |= !source.stamps.is_empty();
        }
        let round: Vec<Source<'_>> =
            self.sources.iter().map(|s| Source { stamps: &s.stamps, bound: s.round_bound }).collect();
        self.merger.plan(&round, &mut self.plan);
        self.plan.truncate(max, &round);
        drop(round);
        let base = self.progress().taken;
        let first = out.len();
        let mut lost = 0;
        let single = self.plan.runs.len() <= 1;
        for (s, source) in self.sources.iter_mut().enumerate() {
            let n = self.plan.prefix[s];
            if n == 0 {
                continue;
            }
            // Every claim among the peeked tickets was found dead by the
            // peek (a live one ends it), and a take finds the same slots.
            let into = if single { &mut *out } else { &mut source.taken };
            let taken = view(ring, s).take(&mut source.cursor, n, into, |_, _| true);
            debug_assert_eq!(taken.records + taken.lost, n, "a take finds what the peek found");
            lost += taken.lost;
        }
        if !single {
            for &(s, n) in &self.plan.runs {
                out.extend(self.sources[s].taken.drain(..n));
            }
            for source in &mut self.sources {
                source.taken.clear();
            }
        }
        // Merged tickets: lost records take the round's first numbers.
        let numbered = base.wrapping_add(lost as u64);
        for (i, record) in out[first..].iter_mut().enumerate() {
            record.ticket = numbered.wrapping_add(i as u64);
        }
        let records = out.len() - first;
        Round { records, lost, held: peeked && records + lost == 0 }
    }

    /// As [`Sources::round`] with everything due, but when records were
    /// peeked and all held back by the watermark (stamped within the last
    /// [`SLACK_NS`] or so), waits that long once and looks again: for a
    /// caller that drains to the end.
    pub(crate) fn round_all(&mut self, ring: &Ring, max: usize, out: &mut Vec<Record>) -> Round {
        let round = self.round(ring, max, out, true);
        if !round.held {
            return round;
        }
        std::thread::sleep(Duration::from_nanos(SLACK_NS));
        self.round(ring, max, out, true)
    }
}

/// Whether the writer holding (`ticket`, `owner`) died: asked only about the
/// claim a source is blocked on, and only once it blocked it for
/// [`LIVENESS_GRACE`] (one system call then).
fn is_dead(ring: &Ring, blocked_on: &mut Option<(u64, Owner, Instant)>, ticket: u64, owner: Owner) -> bool {
    match *blocked_on {
        Some((t, o, since)) if (t, o) == (ticket, owner) => {
            since.elapsed() >= LIVENESS_GRACE && ring.is_owner_dead(owner)
        }
        _ => {
            *blocked_on = Some((ticket, owner, Instant::now()));
            false
        }
    }
}
