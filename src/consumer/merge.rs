//! The consumer's merge of several rings into one stream (format 3, issue 14).
//!
//! Since format 3 a record lives in one of several *sources*: the shared
//! ring, or the sub-ring of the writer thread that wrote it. Each source is
//! in order (a sub-ring is one thread's program order, the shared ring is in
//! claim order), but the sources are not ordered against each other, and
//! one buffer's ALLOC and FREE may come from two threads, so two sources.
//! This module decides, from a read-only look at every source
//! (`RingView::peek`), how many tickets to take from each and in which
//! order to hand their records on. It is pure and single-threaded: the
//! consumer does the looking and taking (`consumer::rounds`).
//!
//! **The rule.** Every record is stamped *after* its slot is claimed.
//! So if record x was complete before record y was claimed (which is what
//! "x happens before y" amounts to for a reader: x's FREE cannot be written
//! before the ALLOC it frees was), every record at or after y in y's source
//! is stamped later than x. Give each peeked record the key
//! `key(r) = min(stamp of r and of every later record of its peeked run)`;
//! then x → y implies `key(x) ≤ stamp(x) < key(y)`, and keys never decrease
//! along a source. A record not peeked yet may still come before a peeked
//! one, so each source also has a **bound**, a lower bound of the stamp of
//! any record it may still produce beyond its peeked run:
//!
//! * its frontier slot was seen unclaimed after the consumer read its clock
//!   at `L`: every later record is claimed after that look, so stamped
//!   after `L` — less [`SLACK_NS`], for the writer's clock and the
//!   consumer's not agreeing exactly (two cores' TSCs; a clock read that
//!   the CPU executes a little ahead of the loads before it);
//! * a sub-ring is one thread's (or, after it, its lease's next holder's):
//!   its later records are stamped no earlier than its last peeked one;
//! * its frontier is claimed by a live writer: nothing new is known, and
//!   the source keeps its bound of the round before (still a lower bound:
//!   the claim became visible after the look that produced it);
//! * its frontier holds a state the protocol never writes (a corrupt file):
//!   nothing past it is ever taken, so it bounds nothing (`u64::MAX`), and
//!   one scribbled slot stops only its own ring, as in format 2.
//!
//! The **watermark** `W` is the least bound of all sources: no record not yet
//! peeked anywhere is stamped below it. A round takes from each source the
//! prefix of its run with `key ≤ W` and merges those prefixes by
//! `(key, source index)`, keeping each source's order. If x → y and y is
//! taken, x is taken in the same round or an earlier one (x unpeeked would
//! mean `stamp(x) ≥ W ≥ key(y) > stamp(x)`), and within a round the keys
//! put x first.
//!
//! **The second look.** A bound from an unclaimed frontier costs the slack:
//! records stamped within [`SLACK_NS`] of the look wait for a later round.
//! A ring's evidence can be better than its clock: after the consumer's
//! last look at any ring in a round, it looks again at the ticket where
//! this ring's look ended. If it is still unclaimed, no record z of this
//! ring that the round did not see can have happened before a record y
//! the round saw: z complete before y was claimed means z's claim came
//! before y's Release publish, which the consumer's Acquire load saw
//! before the second look, so the second look would find z's ticket (or
//! an earlier one) claimed. The ring then bounds nothing *in this round*
//! (`u64::MAX`); its kept [`Bound`] stays the clock's, since a later round
//! may find that ticket claimed and see records the second look did not
//! cover. `consumer::sources` takes this look both after the peeks of a
//! merged round and after the take of a lone busy ring (which reads past
//! the watermark, and keeps what it read past it only if every other ring
//! is still quiet). Checked by `ring::loom_models` (the look after the
//! read sees z; the look before it may not) and by the randomized model
//! here (lifting a bound on the first look's word breaks the order).
//!
//! **What is not ordered.** Records of two threads that overlap in time
//! (neither was complete before the other was claimed) come out in stamp
//! order as far as the keys can tell, but nothing more is promised: no
//! reader can tell in which order they happened. A clock that disagrees
//! between cores by more than [`SLACK`] could let a record claimed just
//! after the consumer's look be stamped below `W`; it would then still come
//! out in its source's order, but after records that it happened before.
//!
//! A claim of a dead writer (`None` in a run) carries no record: it is
//! taken as soon as everything before it in its source is.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::ring::Frontier;

/// How far below the consumer's clock reading a record claimed after it
/// may be stamped, in nanoseconds (see the module doc). With clocks that
/// agree exactly no slack is needed (`tests`: the randomized model): a
/// record x that happened before y was complete before y's claim, so
/// either the consumer saw x or x was published after its look, and then
/// y was stamped after `L`. What the slack covers is disagreement between
/// the consumer's clock and a writer's: invariant TSCs of two cores of one
/// machine (synchronised by firmware, checked by Linux at boot to within a
/// few hundred cycles), an `rdtsc` executed ahead of the loads before it
/// (the out-of-order window, well under a microsecond), a VM's virtual TSCs.
/// 10 µs leaves a wide margin over those; a claim store still in its
/// writer's store buffer when the consumer looks needs none (its publish
/// comes later). The price: a record waits at least this long before it is
/// handed on, so a thread's sub-ring must hold what the thread writes in
/// that time, or its writer waits for the reader: 10 µs at 15 ns a record
/// is ~670 records of the default 8192 (50 µs, tried first, was ~3300 of
/// the 2048 then the default, and a writer flat out then lived in the
/// shared ring, where a full sub-ring spilled before it waited).
pub(crate) const SLACK_NS: u64 = 10_000;

/// Which kind of ring a source is: its bound's rules differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SourceKind {
    /// The ring every writer may claim in (in claim order).
    Shared,
    /// One writer thread's ring (in that thread's order).
    SubRing,
}

/// What the consumer knows of a source's records beyond its peeked run:
/// none at or after ticket `end` is stamped below `value`. Kept between
/// rounds, because a source whose frontier is a live claim gives no new
/// evidence (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bound {
    value: u64,
    end: u64,
}

impl Bound {
    /// The source's bound for this round, after a look at it from ticket
    /// `start` found `stamps` and `frontier`; `seen_after` is the consumer's
    /// clock at the round's start less [`SLACK_NS`] (in ticks).
    ///
    /// The evidence of an earlier round holds only beyond the run that
    /// round peeked: a sub-ring's look may stop at one batch, short of
    /// records an earlier look saw, and those may be stamped below it.
    pub(crate) fn after_peek(
        &mut self,
        kind: SourceKind,
        start: u64,
        seen_after: u64,
        stamps: &[Option<u64>],
        frontier: Frontier,
    ) -> u64 {
        let end = start.wrapping_add(stamps.len() as u64);
        let mut bound = 0;
        if frontier == Frontier::Unclaimed {
            bound = seen_after;
        }
        if frontier == Frontier::Corrupt {
            // Nothing past a state the protocol never writes is ever taken
            // (`take` stops there): the ring has no record still to come to
            // order the others against, and bounding them by it would stop
            // every ring's delivery, not only this one's.
            bound = u64::MAX;
        }
        if kind == SourceKind::SubRing
            && let Some(last) = stamps.iter().rev().find_map(|s| *s)
        {
            // One thread's ring (its lease passes on only when it exits).
            bound = bound.max(last);
        }
        // (Wrapping: tickets come from a file anyone may have scribbled on.)
        let reaches_earlier_end = end.wrapping_sub(self.end) as i64 >= 0;
        if reaches_earlier_end {
            bound = bound.max(self.value);
            *self = Bound { value: bound, end };
        }
        bound
    }
}

/// One source's part in a round: its peeked run and its bound.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Source<'a> {
    /// Per peeked ticket: the record's stamp, or `None` for a dead writer's
    /// claim.
    pub(crate) stamps: &'a [Option<u64>],
    /// Per peeked ticket, the least stamp of the records from it to the
    /// run's end (`u64::MAX` if none): kept up to date by [`extend_keys`]
    /// as the run grows, so a round costs no pass over the whole run.
    /// Never decreasing along the run.
    pub(crate) keys: &'a [u64],
    /// See [`Bound::after_peek`].
    pub(crate) bound: u64,
}

/// What a round takes, and in which order it hands records on.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The least bound of all sources.
    pub(crate) watermark: u64,
    /// Per source, how many of its peeked tickets to take (records and
    /// dead claims).
    pub(crate) prefix: Vec<usize>,
    /// The merged order of the taken records (dead claims are not in it):
    /// runs of `(source index, records)`, each taking that many records
    /// from that source, in its order.
    pub(crate) runs: Vec<(usize, usize)>,
}

impl Plan {
    /// Records the plan hands on.
    pub(crate) fn records(&self) -> usize {
        self.runs.iter().map(|&(_, n)| n).sum()
    }

    /// Cuts the plan to its first `max` records in merged order (a prefix
    /// of the merged stream is as ordered as the whole), and each source's
    /// prefix to the records its runs hand on; `sources` are those it was
    /// planned over.
    pub(crate) fn truncate(&mut self, max: usize, sources: &[Source<'_>]) {
        let mut per_source = vec![0; sources.len()];
        let mut left = max;
        let mut kept = 0;
        for run in self.runs.iter_mut() {
            if left == 0 {
                break;
            }
            run.1 = run.1.min(left);
            left -= run.1;
            per_source[run.0] += run.1;
            kept += 1;
        }
        self.runs.truncate(kept);
        for (s, source) in sources.iter().enumerate() {
            let run = &source.stamps[..self.prefix[s]];
            self.prefix[s] = tickets_before_record(run, per_source[s]);
        }
    }
}

/// The merge's scratch space, kept between rounds so a round allocates
/// nothing once the consumer is warm.
#[derive(Debug, Default)]
pub(crate) struct Merger {
    /// Per source, one past its last record stamped at or below the
    /// watermark.
    ends: Vec<usize>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    /// The sources with records to take this round.
    with_records: Vec<usize>,
    /// Per source, its next position in its run during the merge.
    next: Vec<usize>,
}

impl Merger {
    /// Plans one round over `sources` into `plan` (see the module doc),
    /// cut to its first `max` records in merged order.
    ///
    /// The work is in what is taken, not in what was peeked: a record's key
    /// is at or below the watermark exactly when some record at or after it
    /// in its run is stamped at or below it, so a source's prefix ends at
    /// its last such record (found from the run's end, where the newest
    /// records are, by a binary search on the keys); and the merge walks
    /// the sources' keys only up to the `max`th record it hands on.
    pub(crate) fn plan(&mut self, sources: &[Source<'_>], max: usize, plan: &mut Plan) {
        let watermark = sources.iter().map(|s| s.bound).min().unwrap_or(u64::MAX);
        plan.watermark = watermark;
        plan.prefix.clear();
        plan.runs.clear();
        self.ends.clear();
        let mut with_records = std::mem::take(&mut self.with_records);
        with_records.clear();
        for (s, source) in sources.iter().enumerate() {
            let stamps = source.stamps;
            // One past the last record stamped at or below the watermark:
            // the keys up to it are at or below it, the later ones above
            // (a dead claim's key is its next record's), and keys never
            // decrease along the run: a binary search.
            let end = source.keys.partition_point(|&k| k <= watermark);
            // With the dead claims after it, up to the next record.
            let dead_after = stamps[end..].iter().take_while(|t| t.is_none()).count();
            plan.prefix.push(end + dead_after);
            self.ends.push(end);
            if end > 0 {
                with_records.push(s);
            }
        }
        match with_records[..] {
            [] => {}
            // The common case (one busy thread): no merge to do.
            [only] => plan.runs.push((only, count_records(&sources[only].stamps[..self.ends[only]], max))),
            _ => self.merge(sources, &with_records, max, plan),
        }
        self.with_records = with_records;
        // Fewer than `max` records: nothing was cut, and each prefix is
        // already the tickets its runs hand on.
        if plan.records() >= max {
            plan.truncate(max, sources);
        }
    }

    /// The k-way merge of the prefixes' keys, by (key, source index), up
    /// to `max` records: walks each source's keys where they are (a dead
    /// claim's key is its next record's, so it goes with that record), and
    /// hands runs on whole, so sources that do not overlap in time cost a
    /// comparison per record and a heap operation per run.
    fn merge(&mut self, sources: &[Source<'_>], with_records: &[usize], max: usize, plan: &mut Plan) {
        let mut next = std::mem::take(&mut self.next);
        next.clear();
        next.resize(sources.len(), 0);
        self.heap.clear();
        for &i in with_records {
            self.heap.push(Reverse((sources[i].keys[0], i)));
        }
        let mut left = max;
        while let Some(Reverse((_, i))) = self.heap.pop() {
            // Take from source i every record whose key stays below the
            // next source's head, in one run.
            let Source { stamps, keys, .. } = sources[i];
            let end = self.ends[i];
            let limit = self.heap.peek().map(|Reverse(head)| *head);
            let mut n = 0;
            let at = &mut next[i];
            while *at < end && n < left && limit.is_none_or(|head| (keys[*at], i) < head) {
                n += usize::from(stamps[*at].is_some());
                *at += 1;
            }
            left -= n;
            match plan.runs.last_mut() {
                Some((last, count)) if *last == i => *count += n,
                _ if n == 0 => {}
                _ => plan.runs.push((i, n)),
            }
            if left == 0 {
                break;
            }
            if *at < end {
                self.heap.push(Reverse((keys[*at], i)));
            }
        }
        self.next = next;
    }
}

/// Records in `stamps`, counting no further than `limit`.
fn count_records(stamps: &[Option<u64>], limit: usize) -> usize {
    stamps.iter().filter(|t| t.is_some()).take(limit).count()
}

/// Brings `keys` (see [`Source::keys`]) up to date with `stamps` after a
/// peek appended to `stamps` (`keys` covers its first `keys.len()`
/// tickets; those before `from` are taken and need no update): the new
/// tickets' keys from the back, then the older keys that the new records
/// lower, from the back until one is no greater (keys never decrease, so
/// the earlier ones are no greater either). Each append costs its own
/// tickets plus the older keys it lowers: a run whose stamps mostly
/// increase costs a pass over what is new.
pub(crate) fn extend_keys(stamps: &[Option<u64>], keys: &mut Vec<u64>, from: usize) {
    let old = keys.len();
    let mut least = u64::MAX;
    keys.resize(stamps.len(), u64::MAX);
    for (key, stamp) in keys[old..].iter_mut().zip(&stamps[old..]).rev() {
        if let Some(t) = *stamp {
            least = least.min(t);
        }
        *key = least;
    }
    for key in keys[from.min(old)..old].iter_mut().rev() {
        if *key <= least {
            break;
        }
        *key = least;
    }
}

/// The tickets of `stamps` before its record number `n` (from 0): its
/// first `n` records and the dead claims among and after them; all of
/// `stamps` if it holds no more than `n` records.
fn tickets_before_record(stamps: &[Option<u64>], n: usize) -> usize {
    let mut seen = 0;
    stamps
        .iter()
        .position(|s| {
            if s.is_some() {
                seen += 1;
            }
            seen > n
        })
        .unwrap_or(stamps.len())
}

#[cfg(test)]
mod tests;
