//! A writer whose ring is full: it waits for the consumer while the
//! consumer makes progress (asleep on the ring's futex, see `ring`), gives
//! up on a consumer that stalled, and drops and counts a record only when
//! no consumer is attached or the wait gave up (module doc of `writer`).

use std::time::{Duration, Instant};

use super::Writer;
use crate::error::{Error, ErrorKind};
use crate::format::{READER_LOCK_OFFSET, Record};
use crate::hook_thread::HookThread;
use crate::ring::{Claim, Full, RingView};
use crate::sync::Ordering;

/// Default time a hook that found the ring full waits for an attached
/// consumer that makes *no progress* before it drops the record
/// (`MEMTRACK_WAIT_US` overrides it; 0 never waits). While the consumer
/// keeps taking records the hook keeps waiting, up to [`MAX_FULL_WAIT`].
/// 100 ms: waiting writers sleep, so a longer wait costs no CPU, and on a
/// 2-core machine shared with compiles (load 5–10) a reader often got no
/// CPU for tens of ms: `scripts/lossless.sh` (2–16 writer threads) lost
/// records in 10 of 12 runs with 3 ms, in 4 of 18 with 20 ms, in none of 20
/// with 200 ms (see docs/PERFORMANCE.md). A stopped reader costs the
/// workload about [`STALL_WAITS`] such waits, then nothing.
pub const DEFAULT_FULL_WAIT: Duration = Duration::from_millis(100);

/// The longest a hook waits for space in all, even while the consumer
/// makes progress: a bound for a writer that keeps losing the slots the
/// consumer frees to other writers. Never reached in the measurements of
/// docs/PERFORMANCE.md. A larger `MEMTRACK_WAIT_US` raises it to that.
pub const MAX_FULL_WAIT: Duration = Duration::from_millis(1000);

/// The longest one futex sleep lasts before the writer looks at the
/// consumer's progress itself: a consumer built before the wait line
/// existed makes progress but never wakes anyone.
const WAIT_SLICE: Duration = Duration::from_micros(500);

/// How many waits' time a consumer may go without taking a record before
/// full-ring hooks stop waiting for it. Not one: a consumer starved of CPU
/// for a moment (more runnable threads than cores) would then cost every
/// record until its next take -- measured with a 3 ms wait, 545 000
/// dropped instead of 16 in `cargo bench --bench hook`; a stopped one
/// (Ctrl-Z on `memtrack watch`) costs the workload at most this many waits
/// (300 ms by default), then nothing.
pub(super) const STALL_WAITS: u32 = 3;

impl Writer {
    /// `thread`'s sub-ring is full. With a consumer attached (the shared
    /// header says so) and not stalled, wait for it to take records there
    /// ([`Writer::wait_for_space`], claiming at the thread's next ticket);
    /// `None` when there is none, or the wait gives up: the caller then
    /// writes the shared ring, which itself waits or drops.
    ///
    /// Why wait rather than spill at once: a thread that spills makes the
    /// consumer merge two busy rings (peek, keys, merge: its slow path), so
    /// it falls further behind and the spill feeds itself (`memtrack bench`,
    /// 1 thread, 2048-slot sub-rings: 1.71 M of 2.07 M records spilled).
    /// Waiting keeps the thread's records in its sub-ring, in order, and
    /// the consumer on its fast path (`Sources::take_single`).
    ///
    /// Nor does it wait while the consumer has taken nothing from this
    /// sub-ring since the thread's last wait there gave up without it
    /// taking anything there (`HookThread::subring_stuck_at`): a consumer
    /// that takes from other rings and never from this one (stopped at a
    /// corrupt slot here) keeps the stall clock, which sums every ring,
    /// from ever stopping the waits, and the thread would otherwise wait
    /// out `full_wait` at every hook, for good.
    #[cold]
    #[inline(never)]
    pub(super) fn wait_own(&self, thread: &HookThread) -> Option<Claim<'_>> {
        let view = self.own_view(thread)?;
        if self.full_wait.is_zero() || !self.ring.view().consumer_attached() || self.consumer_stalled() {
            return None;
        }
        let taken = view.progress().taken;
        if thread.subring_stuck_at.get() == taken {
            return None;
        }
        // No spin before sleeping: a bounded spin (2 or 8 µs of looks at
        // the slot) won nothing with one thread (the wait is rare with
        // 8192-slot sub-rings) and cost CPU with two threads beside the
        // reader on 2 cores, where the sleep hands the core to the reader
        // (docs/PERFORMANCE.md, "A full sub-ring waits").
        let claim = self.wait_for_space(view, || self.claim_own(thread).ok_or(Full));
        if claim.is_none() && view.progress().taken == taken {
            thread.subring_stuck_at.set(taken);
        }
        claim
    }

    /// The shared ring was full. With a consumer attached and not stalled,
    /// wait for it to free a slot (see [`Writer::wait_for_space`]); with
    /// none, or when the wait gives up, drop and count.
    #[cold]
    #[inline(never)]
    pub(super) fn push_full(&self, record: &Record) {
        let view = self.ring.view();
        if view.consumer_attached()
            && !self.consumer_stalled()
            && let Some(claim) = self.wait_for_space(view, || view.claim(self.registration.owner))
        {
            return self.stamp_and_publish(claim, record);
        }
        view.count_drop();
        self.ring.process_entry(self.registration.index).dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits for a free slot in `view` (the shared ring, or the calling
    /// thread's sub-ring), taken with `claim` (`RingView::claim`, or
    /// `claim_own` at the thread's next ticket), asleep on the ring's futex
    /// (woken by the consumer after each batch it takes there; the
    /// consumer's doorbell is rung first if it sleeps), for as long as the
    /// consumer makes progress in `view`: gives up after `full_wait`
    /// without progress (a consumer stopped or starved of CPU), at once
    /// when the consumer is found detached or dead, and after
    /// [`MAX_FULL_WAIT`] in all (this writer kept losing the freed slots to
    /// others).
    fn wait_for_space<'w>(
        &'w self,
        view: RingView<'w>,
        mut claim: impl FnMut() -> Result<Claim<'w>, Full>,
    ) -> Option<Claim<'w>> {
        let shared = self.ring.view();
        let consumer = shared.consumer_lines(Some(&self.ring.header().doorbell));
        let started = Instant::now();
        let mut taken = view.progress().taken;
        let mut progressed = started;
        let limit = MAX_FULL_WAIT.max(self.full_wait);
        loop {
            let now = Instant::now();
            let budget =
                self.full_wait.saturating_sub(now - progressed).min(limit.saturating_sub(now - started));
            if budget.is_zero() {
                break;
            }
            if let Ok(claim) = view.wait_for_space(consumer, budget.min(WAIT_SLICE), &mut claim) {
                return Some(claim);
            }
            if !shared.consumer_attached() {
                return None; // Detached: it woke us on its way out.
            }
            let now_taken = view.progress().taken;
            if now_taken != taken {
                (taken, progressed) = (now_taken, Instant::now());
            } else if !self.ring.is_locked(READER_LOCK_OFFSET) {
                // A slice without progress: if the consumer is dead (the
                // kernel dropped its lock), say so, so that no writer waits
                // for it. One system call, and only on this slow path.
                let reader_pid = &self.ring.header().control.reader.reader_pid;
                let pid = reader_pid.load(Ordering::Relaxed);
                let _ = reader_pid.compare_exchange(pid, 0, Ordering::Relaxed, Ordering::Relaxed);
                return None;
            }
        }
        if progressed.elapsed() >= self.full_wait {
            // No progress for `full_wait`: start (or continue) the stall clock.
            let taken = self.consumer_taken();
            if self.written.stall_taken.swap(taken, Ordering::Relaxed) != taken {
                self.written.stall_since.store(self.clock.now(), Ordering::Relaxed);
            }
        }
        None
    }

    /// Whether the consumer has taken nothing, in any ring, for
    /// [`STALL_WAITS`] waits' time since a wait timed out.
    ///
    /// The stall clock is the consumer's, not a ring's: it compares the
    /// sum of every ring's `taken` ([`Writer::consumer_taken`]), never one
    /// ring's with another's (a wait on a sub-ring and one on the shared
    /// ring feed the same clock). A consumer taking from any ring is not
    /// stalled; one that takes from none is stalled for every thread,
    /// whichever ring it waits in, so a stopped consumer costs the
    /// workload [`STALL_WAITS`] waits in all, as before sub-rings.
    ///
    /// Cheap unless the clock runs: no ring is read while no wait has
    /// timed out since the consumer last made progress, nor before the
    /// stall time has passed. Relaxed throughout: a heuristic that decides
    /// only whether to wait; a stale pair of values costs at most one wait
    /// more or less.
    fn consumer_stalled(&self) -> bool {
        let stalled_at = self.written.stall_taken.load(Ordering::Relaxed);
        if stalled_at == u64::MAX
            || self.clock.now().wrapping_sub(self.written.stall_since.load(Ordering::Relaxed))
                < self.stall_ticks
        {
            return false;
        }
        if self.consumer_taken() == stalled_at {
            return true;
        }
        // It took records since: stop the clock (until a wait times out).
        let _ = self.written.stall_taken.compare_exchange(
            stalled_at,
            u64::MAX,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        false
    }

    /// Records the consumer has taken from every ring: one progress read
    /// per ring (the stall clock's cold path only).
    fn consumer_taken(&self) -> u64 {
        crate::consumer::total_progress(&self.ring).taken
    }
}

/// `duration` in ticks of the ring clock.
pub(super) fn ticks_for(calibration: &crate::clock::Calibration, duration: Duration) -> u64 {
    (duration.as_nanos() * calibration.ticks_per_second as u128 / 1_000_000_000).min(u64::MAX as u128) as u64
}

pub(super) fn full_wait_from_env(path: &std::path::Path) -> Result<Duration, Error> {
    let Some(value) = std::env::var_os("MEMTRACK_WAIT_US") else { return Ok(DEFAULT_FULL_WAIT) };
    let text = value.to_string_lossy();
    match text.trim().parse::<u64>() {
        Ok(us) if us <= 1_000_000 => Ok(Duration::from_micros(us)),
        _ => Err(Error::new(
            path,
            ErrorKind::Config(format!(
                "MEMTRACK_WAIT_US={text:?} is not a number of microseconds up to 1000000"
            )),
        )),
    }
}
