//! The consumer: the one process that drains a ring — the shared ring and
//! every sub-ring, merged into one stream (`sources`, `merge`).

mod batching;
mod merge;
mod sources;

pub use batching::BatchPolicy;
pub(crate) use sources::total_progress;

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::format::{READER_LOCK_OFFSET, Record};
use crate::process::pid_namespace;
use crate::ring::Progress;
use crate::shm::Ring;
use crate::sync::Ordering;
use sources::Sources;

/// The longest sleep of an idle consumer.
const LONGEST_IDLE_PAUSE: Duration = Duration::from_millis(1);

/// What one [`Consumer::take`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Records appended to the output.
    pub records: usize,
    /// Claims of dead writers skipped (counted as lost).
    pub lost: usize,
}

/// The attached consumer of one ring. Holds the ring's consumer lock until
/// dropped; a second consumer gets `ErrorKind::ReaderBusy`.
pub struct Consumer {
    ring: Ring,
    /// The shared ring and the sub-rings, each with its cursor.
    sources: Sources,
    /// The next idle pause (see [`Consumer::pause_if_idle`]).
    idle_pause: Duration,
    /// Every idle pause, instead of the computed ones (tests:
    /// [`Consumer::set_idle_pause`]).
    fixed_pause: Option<Duration>,
}

impl Consumer {
    /// Attaches as the consumer of the ring at `path`, resuming every
    /// source (the shared ring, each sub-ring) after the last record the
    /// previous consumer committed there.
    ///
    /// # Errors
    /// As [`Ring::open`]; `ReaderBusy` (with the consumer's pid) if another
    /// consumer is attached.
    pub fn attach(path: &Path) -> Result<Consumer, Error> {
        // Our own open file description: our lock probes must not see our
        // own process's writer locks as "ours".
        let ring = Ring::open(path)?;
        let reader = &ring.header().control.reader;
        let own_namespace = pid_namespace();
        if !ring.try_lock(READER_LOCK_OFFSET)? {
            let pid = reader.reader_pid.load(Ordering::Relaxed);
            let namespace = reader.reader_pid_ns.load(Ordering::Relaxed);
            // 0: a consumer that did not say (or could not tell).
            let other_namespace = namespace != 0 && own_namespace != 0 && namespace != own_namespace;
            return Err(Error::new(path, ErrorKind::ReaderBusy { pid, other_namespace }));
        }
        reader.reader_pid.store(std::process::id(), Ordering::Relaxed);
        reader.reader_pid_ns.store(own_namespace, Ordering::Relaxed);
        let sources = Sources::attach(&ring);
        Ok(Consumer { ring, sources, idle_pause: Duration::ZERO, fixed_pause: None })
    }

    /// The ring being consumed.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Takes up to `max` records, in merged order, appending them to `out`;
    /// each record's `ticket` is its position in the merged stream. Call
    /// [`Consumer::commit`] once they are handed on; a consumer killed
    /// before that loses them, and its successor counts them lost.
    ///
    /// The order: the rings' records merged by timestamp behind a
    /// watermark (`consumer::merge`): a record that was complete before
    /// another was claimed comes first, and each ring's own order is kept.
    /// Records stamped within the last 10 µs may wait for the next take
    /// when a writer of another ring claimed a slot during this one (else
    /// the second look, `consumer::merge`, lets them out now).
    ///
    /// Never waits for a writer: a slot a live writer is still filling ends
    /// its ring's part of the batch (and holds back later records of the
    /// other rings). Waits at most 10 µs, once, when every record it found
    /// is that recent.
    pub fn take(&mut self, max: usize, out: &mut Vec<Record>) -> Batch {
        let round = self.sources.round_all(&self.ring, max, out);
        Batch { records: round.records, lost: round.lost }
    }

    /// As [`Consumer::take`], but only when the batching policy says a
    /// take is due ([`BatchPolicy`]), for any ring: a whole batch published,
    /// writers waiting for space, or a record that waited its bound. The
    /// readers that run beside a workload take records this way; `take` and
    /// [`Consumer::drain`] take everything, for the end of a recording.
    pub fn take_due(&mut self, max: usize, out: &mut Vec<Record>) -> Batch {
        let round = self.sources.round(&self.ring, max, out, false);
        Batch { records: round.records, lost: round.lost }
    }

    /// The batching policy of [`Consumer::take_due`].
    pub fn batch_policy(&self) -> BatchPolicy {
        self.sources.batch_policy()
    }

    /// Replaces the batching policy ([`BatchPolicy::eager`]: none); a
    /// sub-ring's batches stay no larger than an eighth of it.
    pub fn set_batch_policy(&mut self, policy: BatchPolicy) {
        self.sources.set_batch_policy(&self.ring, policy);
    }

    /// Declares the records of the last [`Consumer::take`] handed on.
    pub fn commit(&mut self) {
        self.sources.commit(&self.ring);
    }

    /// Takes, hands to `f` and commits, until the ring is momentarily empty
    /// or `max` records were handled. Returns the records handled.
    ///
    /// # Errors
    /// The first error of `f`; that batch stays uncommitted.
    pub fn drain<E>(
        &mut self,
        max: usize,
        buf: &mut Vec<Record>,
        f: impl FnMut(&[Record]) -> Result<(), E>,
    ) -> Result<usize, E> {
        self.drain_with(max, buf, f, Consumer::take)
    }

    /// As [`Consumer::drain`], but taking only what the batching policy
    /// says is due (see [`Consumer::take_due`]): for a reader that polls
    /// beside running writers.
    ///
    /// # Errors
    /// The first error of `f`; that batch stays uncommitted.
    pub fn drain_due<E>(
        &mut self,
        max: usize,
        buf: &mut Vec<Record>,
        f: impl FnMut(&[Record]) -> Result<(), E>,
    ) -> Result<usize, E> {
        self.drain_with(max, buf, f, Consumer::take_due)
    }

    /// Takes, hands to `f` and commits every record claimed before this
    /// call, in every ring, and stops there (give or take the rest of its
    /// last batch): for a caller that wants "everything so far" while
    /// writers keep writing. [`Consumer::drain`] would chase them for as
    /// long as they write flat out, since each take frees slots that the
    /// writers waiting for space refill at once. Fences the backlog
    /// ([`Consumer::fence_backlog`]), so the records claimed before the
    /// call come out before any claimed after it. Returns the records
    /// handled.
    ///
    /// # Errors
    /// The first error of `f`; that batch stays uncommitted.
    pub fn drain_claimed<E>(
        &mut self,
        buf: &mut Vec<Record>,
        mut f: impl FnMut(&[Record]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let end = self.fence_backlog();
        let mut handled = 0;
        // Wrapping: positions come from a file anyone may have scribbled on.
        while (end.wrapping_sub(self.progress().taken) as i64) > 0 {
            buf.clear();
            let batch = self.take(4096, buf);
            if batch.records == 0 && batch.lost == 0 {
                break; // Behind a live writer's claim, or nothing left.
            }
            f(buf)?;
            self.commit();
            handled += batch.records;
        }
        Ok(handled)
    }

    fn drain_with<E>(
        &mut self,
        max: usize,
        buf: &mut Vec<Record>,
        mut f: impl FnMut(&[Record]) -> Result<(), E>,
        take: fn(&mut Consumer, usize, &mut Vec<Record>) -> Batch,
    ) -> Result<usize, E> {
        let mut handled = 0;
        while handled < max {
            buf.clear();
            let batch = take(self, (max - handled).min(4096), buf);
            if batch.records == 0 && batch.lost == 0 {
                break;
            }
            f(buf)?;
            self.commit();
            handled += batch.records;
        }
        Ok(handled)
    }

    /// Whether every record claimed so far, in every ring, has been taken.
    /// A writer that stopped (or died) before this returns true has nothing
    /// left in the ring; the reader uses it to place a death after the dead
    /// process's last record.
    pub fn caught_up(&self) -> bool {
        self.sources.caught_up(&self.ring)
    }

    /// [`Consumer::progress`]'s `taken` plus the records claimed so far and
    /// not yet taken, in every ring: the merged stream's position that the
    /// records claimed before this call end below. (Claimed before does not
    /// mean merged before: a record claimed later in another ring may be
    /// stamped earlier and come out among them.)
    pub fn claimed_end(&self) -> u64 {
        self.sources.claimed_end(&self.ring)
    }

    /// Reads every ring's claimed end now and returns their sum (what
    /// [`Consumer::claimed_end`] returns), and fences the backlog: every
    /// record claimed below those ends comes out before any claimed at or
    /// above them, so the records whose merged tickets lie below the
    /// returned position are exactly those claimed before this call. A
    /// session calls it once it attaches, before it reads the writers'
    /// live counters (the counters then include the backlog's effects).
    ///
    /// Why this keeps the merge's order: a record claimed after the fence
    /// was read cannot happen before one claimed before it. (The rings are
    /// read one after another: a hand-over that begins and ends between the
    /// reads of two rings, within microseconds, is the exception; see
    /// `Sources::fence_backlog`.) The fence lifts once every ring has been
    /// taken up to it, dead writers' claims included.
    pub fn fence_backlog(&mut self) -> u64 {
        self.sources.fence_backlog(&self.ring)
    }

    /// Sleeps when the last drain found the ring nearly empty, so the
    /// consumer stays well behind the writers instead of polling the slot
    /// a writer is about to fill, and costs next to nothing when idle.
    ///
    /// Why: a consumer that reads the frontier slot pulls its cache line
    /// away from the writer, which must then fetch it back to claim and
    /// fill it. Measured with `cargo bench --bench hook` on a 2-core VM,
    /// one writer thread: 138 ns/event with a consumer that only yields,
    /// 21 ns/event with this pacing.
    ///
    /// The first pause after activity is short enough that writers running
    /// flat out cannot fill the ring meanwhile (capacity × 1.5 ns, at least
    /// 10 µs); each further idle pause doubles, up to 1 ms. A writer that
    /// fills its ring during a pause rings the doorbell (below) before it
    /// sleeps, which ends the pause, and then sleeps until the take wakes
    /// it (`RingView::wake_writers`), so pacing alone never makes a writer
    /// drop, and the longest pause need not be shorter than a writer takes
    /// to fill its ring. (It was, before the doorbell: capacity × 16 ns,
    /// 131 µs with 8192-slot sub-rings, so an idle `memtrack record` woke
    /// 6000 times a second and used 13–16 % of a CPU doing nothing on the
    /// 2-vCPU VMs of docs/PERFORMANCE.md; at 1 ms, 1000 times.)
    ///
    /// With sub-rings the smallest ring sets these figures: a writer whose
    /// sub-ring fills waits for the consumer.
    ///
    /// The pause is a sleep on the ring's doorbell (`ring::doorbell`), not
    /// `thread::sleep`: a writer that finds its ring full and is about to
    /// wait for space rings it, so the consumer takes at once instead of
    /// waiting out the pause (and, outside a real-time class, the timer
    /// slack on top, 50 µs by default). A writer built before the doorbell
    /// never rings: the pause then ends at its timeout, as it did.
    ///
    /// The calling thread's timer slack is set to 1 µs (once per thread,
    /// `PR_SET_TIMERSLACK`): the default 50 µs made every pause up to 50 µs
    /// longer than asked, in which a writer at 11 ns a record fills ~4500
    /// slots of its sub-ring and then has to wait. Measured under CFS
    /// (`memtrack bench`, one thread): 15.5–20.5 ns a record without,
    /// 10.5–11.0 with (docs/PERFORMANCE.md). It only makes this thread's
    /// timed sleeps end closer to when they were asked to.
    pub fn pause_if_idle(&mut self, handled: usize) {
        let capacity = self.sources.smallest_capacity(&self.ring);
        let shortest = Duration::from_nanos((capacity * 3 / 2).clamp(10_000, 1_000_000));
        if handled as u64 >= (capacity / 64).max(1) {
            self.idle_pause = shortest;
            return;
        }
        let pause = self.fixed_pause.unwrap_or(self.idle_pause.clamp(shortest, LONGEST_IDLE_PAUSE));
        self.idle_sleep(pause);
        self.idle_pause = pause * 2;
    }

    /// The idle pause itself: sleeps on the doorbell for up to `pause`
    /// unless a writer waits for space in a ring this consumer has records
    /// to take from (`Sources::writer_waits`). Returns whether it slept.
    pub(crate) fn idle_sleep(&self, pause: Duration) -> bool {
        let (ring, sources) = (&self.ring, &self.sources);
        precise_timer_slack();
        crate::ring::doorbell::sleep(&ring.header().doorbell, || sources.writer_waits(ring), pause)
    }

    /// Makes every idle pause of [`Consumer::pause_if_idle`] last `pause`
    /// (`None`: the computed pauses again). For tests of the doorbell: a
    /// consumer paused for seconds is woken only by a writer's ring.
    #[doc(hidden)]
    pub fn set_idle_pause(&mut self, pause: Option<Duration>) {
        self.fixed_pause = pause;
    }

    /// The consumer progress as of the last take or commit, summed over
    /// the rings (`taken` and `committed` are positions in the merged
    /// stream).
    pub fn progress(&self) -> Progress {
        self.sources.progress()
    }
}

/// Sets the calling thread's timer slack to 1 µs, once per thread (see
/// [`Consumer::pause_if_idle`]).
fn precise_timer_slack() {
    thread_local!(static SET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if SET.get() {
        return;
    }
    SET.set(true);
    // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only the
    // calling thread's timer slack; no memory is passed. A failure (an
    // old kernel) leaves the default slack, which is only slower.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("ring", &self.ring).field("progress", &self.progress()).finish()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.ring.header().control.reader.reader_pid.store(0, Ordering::Relaxed);
        self.ring.header().control.reader.reader_pid_ns.store(0, Ordering::Relaxed);
        // Writers sleeping for space, in the shared ring or in their
        // sub-rings, look at `reader_pid` when they wake, and write the
        // shared ring (which then drops) instead of waiting out their
        // timeout.
        self.ring.view().wake_writers();
        for i in 0..self.ring.subring_count() {
            self.ring.subring_view(i).wake_writers();
        }
        self.ring.unlock(READER_LOCK_OFFSET);
    }
}

#[cfg(test)]
mod tests;
