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
//! its round, plus its index in the round, where a dead writer's claim
//! (a lost record) takes the number just before the next record of its
//! source. Sums of positions are what `progress`,
//! `claimed_end` and the rest report, so tickets, `taken` and `committed`
//! stay in one space.

use std::time::{Duration, Instant};

use super::batching::{BatchPolicy, Batching, Due};
use super::merge::{Bound, Merger, Plan, SLACK_NS, Source, SourceKind, extend_keys};
use crate::format::Record;
use crate::ring::{Cursor, Frontier, Owner, Progress, RingView, Taken};
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
    /// The claims of this source the consumer found blocking it and then
    /// dead (`is_dead`).
    liveness: Liveness,
    /// What the consumer knows of the stamps still to come.
    bound: Bound,
    /// This round's bound (`Bound::after_peek`).
    round_bound: u64,
    /// When this source wants a round (module `batching`).
    batching: Batching,
    /// What the consumer peeked and has not taken yet: `stamps[head..]`,
    /// from the cursor's next ticket on (kept between rounds: the slots
    /// stay as they were until taken, so each is peeked once).
    stamps: Vec<Option<u64>>,
    /// The merge's keys of `stamps` (`merge::extend_keys`), index for index.
    keys: Vec<u64>,
    head: usize,
    /// What this round's first look at the source found ([`Frontier::Limit`]
    /// when it did not look, or found a record or a dead claim).
    frontier: Frontier,
    /// Where this round's look ended, when it ended at a ticket no writer
    /// had claimed ([`Frontier::Unclaimed`]): what the second look checks
    /// (module `merge`, "The second look").
    unclaimed_at: Option<u64>,
    /// This round's tickets of this source below its backlog fence
    /// ([`Sources::fence_backlog`]), from its cursor on; `None`: no fence.
    fence_left: Option<usize>,
}

impl SourceState {
    /// How much of the peeked run this round may take: all of it, or under
    /// a fence what lies below it.
    fn visible(&self) -> usize {
        (self.stamps.len() - self.head).min(self.fence_left.unwrap_or(usize::MAX))
    }

    /// Whether this round's look reaches the source's fence: nothing the
    /// source may still produce before the fence lifts is unpeeked, so its
    /// bound holds back none of the fenced records (see
    /// [`Sources::fence_backlog`]).
    fn peeked_to_fence(&self) -> bool {
        self.fence_left.is_some_and(|left| self.stamps.len() - self.head >= left)
    }
}

/// How far a merged round of [`Sources::round`] (the reader beside running
/// writers) looks into a busy sub-ring, in tickets, counting what it peeked
/// before and has not taken. A look that runs to the frontier, thousands of
/// slots ahead of what one round takes, reads slots that have left the
/// reader's cache by the time the round reads their records; a look a few
/// rounds' worth short of that keeps the peek and the take of a slot close.
/// Measured with two writer threads flat out, each in its sub-ring
/// (`chrt -r 1 memtrack bench --threads 2`, AMD EPYC 2 vCPUs, interleaved;
/// reader CPU per record): unbounded 15.8–16.7 ns, 2048: 15.3–15.9, 1024:
/// 14.3–15.3, 768: 13.2–13.6, **512: 12.6–13.8**, 384: 14.7–14.8, 256:
/// 16.7–18.0 (each round's fixed cost, a look at every source, then weighs
/// more). The shared ring is not bounded: its bound comes only from its
/// frontier (claim order is not stamp order), and a drain to the end
/// ([`Sources::round_all`]) is not either: a bounded look holds records
/// back, which that caller waits out.
const MERGED_LOOK: usize = 512;

/// How many tickets of one source [`Sources::take_planned`] reads before it
/// frees their slots at the end of a run (it frees the rest after the
/// source's last run): one progress update and one fence per this many
/// records at most, however finely two sources interleave.
const RELEASE_EVERY: usize = 64;

/// Where [`Sources::take_planned`] is in one source's peeked run.
#[derive(Debug, Default)]
struct Reading {
    /// The next position to read.
    next: usize,
    /// The positions below this are freed (the cursor's next ticket).
    freed: usize,
    /// Records read since `freed`.
    records: usize,
}

impl Reading {
    /// Frees the slots from `freed` up to position `end` (records read,
    /// and dead claims): returns the dead claims among them.
    fn free(&mut self, view: &RingView<'_>, cursor: &mut Cursor, end: usize) -> usize {
        let tickets = end - self.freed;
        let taken = Taken { records: self.records, lost: tickets - self.records };
        view.release_taken(cursor, tickets as u64, taken);
        self.freed = end;
        self.records = 0;
        taken.lost
    }
}

/// What one round found: what [`super::Batch`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Round {
    pub(crate) records: usize,
    pub(crate) lost: usize,
}

/// The consumer's sources and the merge's scratch space.
#[derive(Debug)]
pub(crate) struct Sources {
    sources: Vec<SourceState>,
    merger: Merger,
    plan: Plan,
    /// Scratch: per source, how far a round looks.
    limits: Vec<usize>,
    /// Scratch: per source, where `take_planned` is in its peeked run.
    reading: Vec<Reading>,
    /// Scratch: per source, the index of its last run in the plan.
    last_run: Vec<usize>,
    /// [`SLACK_NS`] in ring-clock ticks.
    slack_ticks: u64,
    /// Per source, the end of the backlog ([`Sources::fence_backlog`]):
    /// empty when no fence holds.
    fence: Vec<u64>,
    /// Scratch: a round's limits under the fence.
    fenced_limits: Vec<usize>,
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
                liveness: Liveness::default(),
                bound: Bound::default(),
                round_bound: 0,
                batching: Batching::new(policy_for(ring, s, policy)),
                stamps: Vec::new(),
                keys: Vec::new(),
                head: 0,
                frontier: Frontier::Limit,
                unclaimed_at: None,
                fence_left: None,
            })
            .collect();
        let calibration = ring.calibration();
        let slack_ticks = (SLACK_NS as u128 * calibration.ticks_per_second as u128 / 1_000_000_000) as u64;
        Sources {
            sources,
            merger: Merger::default(),
            plan: Plan::default(),
            limits: Vec::new(),
            reading: Vec::new(),
            last_run: Vec::new(),
            slack_ticks,
            fence: Vec::new(),
            fenced_limits: Vec::new(),
        }
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

    /// Whether a writer waits for space in a source this consumer has
    /// records to take from (`RingView::writer_waits_on`).
    pub(crate) fn writer_waits(&self, ring: &Ring) -> bool {
        self.sources.iter().enumerate().any(|(s, source)| view(ring, s).writer_waits_on(&source.cursor))
    }

    /// The sum of the sources' first unclaimed positions.
    pub(crate) fn claimed_end(&self, ring: &Ring) -> u64 {
        let ends =
            self.sources.iter().enumerate().map(|(s, source)| view(ring, s).claimed_end(&source.cursor));
        ends.fold(0, u64::wrapping_add)
    }

    /// Reads each source's claimed end now, and fences the backlog: from
    /// now on every record below those ends is taken before any record at
    /// or above them. Returns the sum of the ends (what
    /// [`Sources::claimed_end`] returns): the merged tickets below it are
    /// exactly the fenced records and claims.
    ///
    /// Why the merge's order survives the fence: a record claimed after
    /// the fence was read cannot happen before one claimed before it
    /// (happening before means being complete before the other's claim).
    /// So among fenced records the merge orders as ever, and a source
    /// taken up to its fence holds none of them back (its next records,
    /// all above the fence, precede none of them). The ends are read one
    /// source after another, not at one instant: a hand-over that starts
    /// and ends between the reads of two sources (the time of a probe,
    /// microseconds) can still leave a record above the fence that
    /// happened before one below it.
    pub(crate) fn fence_backlog(&mut self, ring: &Ring) -> u64 {
        self.fence.clear();
        let ends =
            self.sources.iter().enumerate().map(|(s, source)| view(ring, s).claimed_end(&source.cursor));
        self.fence.extend(ends);
        self.fence.iter().fold(0, |sum, &end| sum.wrapping_add(end))
    }

    /// Sets each source's `fence_left` for a round, lifting the fence once
    /// every source has taken up to it (records and dead claims alike).
    /// Returns whether a fence holds.
    fn update_fence(&mut self) -> bool {
        let fence = &self.fence;
        let mut below = false;
        for (s, source) in self.sources.iter_mut().enumerate() {
            source.fence_left = fence.get(s).map(|&end| {
                // (Wrapping: tickets come from a file anyone may have
                // scribbled on; a source past its fence has nothing left.)
                let left = end.wrapping_sub(source.cursor.progress().taken) as i64;
                left.max(0) as usize
            });
            below |= source.fence_left.is_some_and(|left| left > 0);
        }
        if !below && !self.fence.is_empty() {
            self.fence.clear();
            for source in &mut self.sources {
                source.fence_left = None;
            }
        }
        below
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
    pub(crate) fn round(
        &mut self,
        ring: &Ring,
        max: usize,
        out: &mut Vec<Record>,
        everything: bool,
    ) -> Round {
        // Per source, how far to look: a sub-ring with whole batches
        // published, exactly those batches (not the lines its writer is
        // filling); else to the frontier (a full lap ends there).
        let mut due_any = false;
        let mut limits = std::mem::take(&mut self.limits);
        limits.clear();
        for (s, source) in self.sources.iter_mut().enumerate() {
            let (view, cap) = (view(ring, s), capacity(ring, s));
            let next = source.cursor.progress().taken;
            let due = source.batching.due(&view, next, cap, everything);
            due_any |= due != Due::Nothing;
            limits.push(match due {
                Due::Batch(batch) if s != 0 => {
                    // One load per further batch (at most capacity / batch).
                    let mut end = batch;
                    while end + batch <= cap && view.published(next.wrapping_add(end + batch - 1)) {
                        end += batch;
                    }
                    end as usize
                }
                _ => cap as usize + 1,
            });
        }
        let round = if due_any {
            self.round_within(ring, max, &limits, MERGED_LOOK, out).0
        } else {
            Round::default()
        };
        self.limits = limits;
        round
    }

    /// As [`Sources::round`] with everything due, but when the watermark
    /// held back records it found (stamped within the last [`SLACK_NS`] or
    /// so, or behind a live claim), waits that long once and takes again
    /// (both takes go into one commit): for a caller that drains to the
    /// end.
    pub(crate) fn round_all(&mut self, ring: &Ring, max: usize, out: &mut Vec<Record>) -> Round {
        let mut limits = std::mem::take(&mut self.limits);
        limits.clear();
        limits.extend((0..self.sources.len()).map(|s| capacity(ring, s) as usize + 1));
        let (mut round, held) = self.round_within(ring, max, &limits, usize::MAX, out);
        if held && round.records < max {
            std::thread::sleep(Duration::from_nanos(SLACK_NS));
            let (more, _) = self.round_within(ring, max - round.records, &limits, usize::MAX, out);
            round.records += more.records;
            round.lost += more.lost;
        }
        self.limits = limits;
        round
    }

    /// Looks at every source (up to `limits[s]` tickets, and a sub-ring in a
    /// merged round up to `look` tickets peeked and not taken) and takes
    /// what the watermark lets through, up to `max` records. Also returns
    /// whether the watermark held back a record there was room for.
    ///
    /// First one load per source with nothing peeked: whether its next
    /// slot holds anything. When only one source does (one busy thread,
    /// the common case), that source is taken straight into `out`
    /// ([`Sources::take_single`]); else every source is peeked and merged.
    fn round_within(
        &mut self,
        ring: &Ring,
        max: usize,
        limits: &[usize],
        look: usize,
        out: &mut Vec<Record>,
    ) -> (Round, bool) {
        if !self.update_fence() {
            return self.round_limited(ring, max, limits, look, out);
        }
        // Under the fence: no source looks past it.
        let mut fenced = std::mem::take(&mut self.fenced_limits);
        fenced.clear();
        fenced.extend(
            self.sources
                .iter()
                .zip(limits)
                .map(|(source, &limit)| limit.min(source.fence_left.unwrap_or(usize::MAX))),
        );
        let result = self.round_limited(ring, max, &fenced, look, out);
        self.fenced_limits = fenced;
        result
    }

    /// [`Sources::round_within`] once the limits respect the fence.
    fn round_limited(
        &mut self,
        ring: &Ring,
        max: usize,
        limits: &[usize],
        look: usize,
        out: &mut Vec<Record>,
    ) -> (Round, bool) {
        // The clock before any slot load (module `merge`: every record
        // claimed after a look at its slot is stamped after this).
        let seen_after = ring.clock_source().now_ordered().saturating_sub(self.slack_ticks);
        let mut busy = None;
        let mut busy_count = 0;
        for (s, source) in self.sources.iter_mut().enumerate() {
            let known = source.stamps.len() - source.head;
            source.frontier = if known == 0 && limits[s] > 0 {
                let liveness = &mut source.liveness;
                let from = source.cursor.progress().taken;
                let frontier = view(ring, s)
                    .peek(from, 1, &mut source.stamps, |ticket, owner| liveness.is_dead(ring, ticket, owner));
                extend_keys(&source.stamps, &mut source.keys, source.head);
                frontier
            } else {
                Frontier::Limit
            };
            if source.visible() > 0 {
                busy = Some(s);
                busy_count += 1;
            }
        }
        match (busy_count, busy) {
            (0, _) => {
                // Nothing to take; the bounds still learn from the look.
                for (s, source) in self.sources.iter_mut().enumerate() {
                    let start = source.cursor.progress().taken;
                    source.bound.after_peek(kind(s), start, seen_after, &[], source.frontier);
                }
                (Round::default(), false)
            }
            (1, Some(busy)) => self.take_single(ring, busy, seen_after, max.min(limits[busy]), out),
            _ => {
                let held = self.look(ring, max, limits, look, seen_after);
                (self.take_planned(ring, out), held)
            }
        }
    }

    /// The round when only source `busy` has records (every other source
    /// was found with nothing peeked and its next slot unclaimed, or
    /// claimed by a live writer): takes from it straight into `out`, in
    /// its own order, every record up to the first stamped above the least
    /// bound `w` of the *other* sources, with no peek, no keys, no copy.
    ///
    /// Why this is the merge's answer: a record x of `busy` taken here and
    /// a record z of another source that happened before it (z complete
    /// before x was claimed) have `stamp(z) < stamp(x) ≤ w`, and z is not
    /// peeked (the other sources have no peeked run), so the bound says
    /// `stamp(z) ≥ w`: no such z exists, now or later. Within `busy` the
    /// order is its own. Stopping early (at the first record above `w`,
    /// or at `max`) leaves a suffix of `busy` for a later round, and no
    /// record of another source comes out in this one, so no record can
    /// pass one that happened before it. Under a backlog fence, another
    /// source peeked up to its fence (all it peeked lies above it) holds
    /// nothing back: see [`Sources::fence_backlog`]. (`busy`'s own bound matters only
    /// to the records of other sources, so it is not computed; its kept
    /// bound stays a valid lower bound.) What `busy` peeked before is
    /// dropped: it is only a cache of slots that stay as they were until
    /// taken; the dead-claim verdicts stay in `liveness`.
    ///
    /// When `w` cut the take and every other source that bounds it ended
    /// its look at an unclaimed ticket, the take reads on past `w` and then
    /// looks at those tickets again (module `merge`, "The second look"):
    /// still unclaimed, what it read past `w` goes out too (else it is
    /// dropped from `out`, its slots untouched, for a later round).
    fn take_single(
        &mut self,
        ring: &Ring,
        busy: usize,
        seen_after: u64,
        max: usize,
        out: &mut Vec<Record>,
    ) -> (Round, bool) {
        let mut watermark = u64::MAX;
        // Whether every other source that bounds the take ended its look
        // at an unclaimed ticket: then a second look can lift the
        // watermark (below).
        let mut quiet = true;
        for (s, source) in self.sources.iter_mut().enumerate() {
            if s != busy {
                let start = source.cursor.progress().taken;
                let bound = source.bound.after_peek(kind(s), start, seen_after, &[], source.frontier);
                if !source.peeked_to_fence() {
                    watermark = watermark.min(bound);
                    quiet &= source.frontier == Frontier::Unclaimed;
                }
            }
        }
        let base = self.progress().taken;
        let source = &mut self.sources[busy];
        source.stamps.clear();
        source.keys.clear();
        source.head = 0;
        let liveness = &mut source.liveness;
        let view_busy = view(ring, busy);
        let start = source.cursor.progress().taken;
        let mut is_dead = |ticket, owner| liveness.is_dead(ring, ticket, owner);
        let mut run = view_busy.read_run(start, max, watermark, base, out, &mut is_dead);
        if run.stamp_ended && quiet {
            // The watermark cut the run. Read on past it, then look again
            // at every other source's next ticket: if none was claimed
            // meanwhile, no record of theirs can have happened before any
            // record read here (module `merge`, "The second look"), and
            // the whole run goes out now rather than after the slack.
            let first = out.len();
            let more = view_busy.read_run(
                start.wrapping_add(run.tickets),
                max - run.tickets as usize,
                u64::MAX,
                base.wrapping_add(run.tickets),
                out,
                &mut is_dead,
            );
            let still_quiet = self.sources.iter().enumerate().all(|(s, other)| {
                s == busy || other.peeked_to_fence() || view(ring, s).caught_up(&other.cursor)
            });
            if still_quiet {
                run.tickets += more.tickets;
                run.taken.records += more.taken.records;
                run.taken.lost += more.taken.lost;
                run.stamp_ended = more.stamp_ended;
            } else {
                // Their slots stay as they are: read again next round.
                out.truncate(first);
            }
        }
        let source = &mut self.sources[busy];
        view_busy.release_taken(&mut source.cursor, run.tickets, run.taken);
        source.liveness.forget_below(source.cursor.progress().taken);
        let taken = run.taken;
        (Round { records: taken.records, lost: taken.lost }, run.stamp_ended && taken.records < max)
    }

    /// Peeks every source (up to `limits[s]` tickets, a sub-ring up to
    /// `look` tickets peeked and not taken) and plans the round into
    /// `self.plan`. Returns whether the watermark held back a record the
    /// plan would otherwise have room for.
    ///
    /// A sub-ring's look cut short by `look` ends at [`Frontier::Limit`]
    /// and bounds the round by its last peeked stamp (`Bound::after_peek`:
    /// one thread's ring, whose later records are stamped no earlier), as a
    /// look cut at whole batches does: no new read of the ring, so nothing
    /// for a loom model to check beyond what the merge's models check.
    fn look(&mut self, ring: &Ring, max: usize, limits: &[usize], look: usize, seen_after: u64) -> bool {
        for (s, source) in self.sources.iter_mut().enumerate() {
            // Look on from where the last look ended (or, for a source
            // whose first slot `round_within` looked at and found its
            // frontier, not again: what it found stands for this look).
            let known = source.stamps.len() - source.head;
            let start = source.cursor.progress().taken;
            let limit = if kind(s) == SourceKind::SubRing { limits[s].min(look) } else { limits[s] };
            let frontier = if source.frontier != Frontier::Limit {
                source.frontier
            } else if known < limit {
                let liveness = &mut source.liveness;
                let from = start.wrapping_add(known as u64);
                let frontier =
                    view(ring, s).peek(from, limit - known, &mut source.stamps, |ticket, owner| {
                        liveness.is_dead(ring, ticket, owner)
                    });
                extend_keys(&source.stamps, &mut source.keys, source.head);
                frontier
            } else {
                Frontier::Limit
            };
            let run = &source.stamps[source.head..];
            source.unclaimed_at =
                (frontier == Frontier::Unclaimed).then(|| start.wrapping_add(run.len() as u64));
            source.round_bound = source.bound.after_peek(kind(s), start, seen_after, run, frontier);
            if source.peeked_to_fence() {
                source.round_bound = u64::MAX;
            }
        }
        // The second look, after the last look at any source: a source
        // whose next ticket is still unclaimed holds back nothing peeked
        // (module `merge`, "The second look"). Only this round's bound: a
        // later round may find that ticket claimed, and its own looks
        // later than the records it has not seen yet.
        for (s, source) in self.sources.iter_mut().enumerate() {
            if let Some(ticket) = source.unclaimed_at
                && view(ring, s).unclaimed(ticket)
            {
                source.round_bound = u64::MAX;
            }
        }
        let round: Vec<Source<'_>> = self
            .sources
            .iter()
            .map(|s| {
                let end = s.head + s.visible();
                Source { stamps: &s.stamps[s.head..end], keys: &s.keys[s.head..end], bound: s.round_bound }
            })
            .collect();
        self.merger.plan(&round, max, &mut self.plan);
        // Records left behind, and not because the plan is full.
        let held = round.iter().zip(&self.plan.prefix).any(|(source, &n)| n < source.stamps.len());
        held && self.plan.records() < max
    }

    /// Takes what `self.plan` says from each source and appends the records
    /// to `out` in merged order, numbered with merged tickets. Each record
    /// is read once, from its slot straight into `out` (no second state
    /// load: the peek saw it Full, see `RingView::read_published`), and a
    /// source's slots are freed at the end of each of its runs that leaves
    /// [`RELEASE_EVERY`] or more of its tickets read, and after its last
    /// run in the plan: freeing only at the end of
    /// the round kept each sub-ring's slots from its writer longer, and
    /// two writers flat out then spilled into the shared ring (`memtrack
    /// bench`, 2 threads: ~75 ns/event against ~40 freeing source by
    /// source).
    fn take_planned(&mut self, ring: &Ring, out: &mut Vec<Record>) -> Round {
        let base = self.progress().taken;
        let first = out.len();
        // Merged tickets. A dead writer's claim takes the number just before
        // the next record of its source (trailing ones, the round's last
        // numbers): with one busy ring, merged tickets are its own.
        let mut number = base;
        let mut lost = 0;
        let mut reading = std::mem::take(&mut self.reading);
        reading.clear();
        reading.extend(self.sources.iter().map(|s| Reading { next: s.head, freed: s.head, records: 0 }));
        let mut last_run = std::mem::take(&mut self.last_run);
        last_run.clear();
        last_run.resize(self.sources.len(), usize::MAX);
        for (i, &(s, _)) in self.plan.runs.iter().enumerate() {
            last_run[s] = i;
        }
        for (i, &(s, n)) in self.plan.runs.iter().enumerate() {
            let source = &mut self.sources[s];
            let view = view(ring, s);
            let at = &mut reading[s];
            for _ in 0..n {
                while source.stamps[at.next].is_none() {
                    at.next += 1;
                    number = number.wrapping_add(1);
                }
                // The slot's ticket: the cursor stands at `freed`.
                let ticket = source.cursor.progress().taken.wrapping_add((at.next - at.freed) as u64);
                // Peeked Full and not taken yet (`RingView::read_published`).
                out.push(view.read_published(ticket, number));
                at.records += 1;
                at.next += 1;
                number = number.wrapping_add(1);
            }
            if at.next - at.freed >= RELEASE_EVERY || last_run[s] == i {
                lost += at.free(&view, &mut source.cursor, at.next);
            }
        }
        // What is left of each prefix: the dead claims after a source's last
        // record, or a prefix of dead claims only.
        for (s, source) in self.sources.iter_mut().enumerate() {
            let end = source.head + self.plan.prefix[s];
            let at = &mut reading[s];
            if at.freed < end {
                lost += at.free(&view(ring, s), &mut source.cursor, end);
            }
            source.liveness.forget_below(source.cursor.progress().taken);
        }
        self.reading = reading;
        self.last_run = last_run;
        for (source, &n) in self.sources.iter_mut().zip(&self.plan.prefix) {
            source.head += n;
            // Drop what was taken: at once when nothing is left (no copy),
            // else now and then, when what is kept is no longer than what
            // goes (so each peeked ticket is moved at most once on average).
            if source.head == source.stamps.len() {
                source.stamps.clear();
                source.keys.clear();
                source.head = 0;
            } else if source.head * 2 >= source.stamps.len() {
                source.stamps.drain(..source.head);
                source.keys.drain(..source.head);
                source.head = 0;
            }
        }
        Round { records: out.len() - first, lost }
    }
}

fn kind(s: usize) -> SourceKind {
    if s == 0 { SourceKind::Shared } else { SourceKind::SubRing }
}

/// Which claims of one source block it, and which were found dead.
///
/// A peek asks about every claim in its run each round (a take used to
/// consume a dead claim as soon as it was found; a peek may find it again
/// and again while the watermark holds its source back), so a verdict of
/// "dead" is kept until the claim is taken.
#[derive(Debug, Default)]
struct Liveness {
    /// The claim (ticket, owner) last found blocking the source, and since
    /// when.
    blocked_on: Option<(u64, Owner, Instant)>,
    /// Claims found dead and not yet taken.
    dead: Vec<(u64, Owner)>,
}

impl Liveness {
    /// Whether the writer holding (`ticket`, `owner`) died: asked of the
    /// kernel only once the claim blocked the source for
    /// [`LIVENESS_GRACE`] (one system call then).
    fn is_dead(&mut self, ring: &Ring, ticket: u64, owner: Owner) -> bool {
        if self.dead.contains(&(ticket, owner)) {
            return true;
        }
        match self.blocked_on {
            Some((t, o, since)) if (t, o) == (ticket, owner) => {
                let dead = since.elapsed() >= LIVENESS_GRACE && ring.is_owner_dead(owner);
                if dead {
                    self.dead.push((ticket, owner));
                    self.blocked_on = None;
                }
                dead
            }
            _ => {
                self.blocked_on = Some((ticket, owner, Instant::now()));
                false
            }
        }
    }

    /// Drops the verdicts on claims below `taken` (taken, counted lost).
    fn forget_below(&mut self, taken: u64) {
        self.dead.retain(|&(ticket, _)| ticket.wrapping_sub(taken) as i64 >= 0);
    }
}
