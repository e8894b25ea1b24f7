//! The consumer: the one process that drains a ring.

mod batching;
mod merge;

pub use batching::BatchPolicy;
use batching::{Batching, Due};

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};
use crate::format::{READER_LOCK_OFFSET, Record};
use crate::process::pid_namespace;
use crate::ring::{Cursor, Owner, Progress};
use crate::shm::Ring;
use crate::sync::Ordering;

/// How long a claim may stay unpublished before the consumer asks the
/// kernel whether its writer is alive. A live writer publishes within
/// nanoseconds unless descheduled; this keeps the system call off the
/// common path.
const LIVENESS_GRACE: Duration = Duration::from_millis(2);

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
    cursor: Cursor,
    /// The claim (ticket, owner) the consumer last found blocking it, and
    /// since when.
    blocked_on: Option<(u64, Owner, Instant)>,
    /// The next idle pause (see [`Consumer::pause_if_idle`]).
    idle_pause: Duration,
    /// When [`Consumer::take_due`] takes records (module `batching`).
    batching: Batching,
}

impl Consumer {
    /// Attaches as the consumer of the ring at `path`, resuming after the
    /// last record the previous consumer committed.
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
        let cursor = ring.view().attach_consumer();
        let batching = Batching::new(BatchPolicy::for_capacity(ring.capacity()));
        Ok(Consumer { ring, cursor, blocked_on: None, idle_pause: Duration::ZERO, batching })
    }

    /// The ring being consumed.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Takes up to `max` records, in ticket order, appending them to `out`.
    /// Call [`Consumer::commit`] once they are handed on; a consumer killed
    /// before that loses them, and its successor counts them lost.
    ///
    /// Never waits: a slot a live writer is still filling ends the batch.
    pub fn take(&mut self, max: usize, out: &mut Vec<Record>) -> Batch {
        let (ring, blocked_on) = (&self.ring, &mut self.blocked_on);
        let taken = ring.view().take(&mut self.cursor, max, out, |ticket, owner| match *blocked_on {
            Some((t, o, since)) if (t, o) == (ticket, owner) => {
                since.elapsed() >= LIVENESS_GRACE && ring.is_owner_dead(owner)
            }
            _ => {
                *blocked_on = Some((ticket, owner, Instant::now()));
                false
            }
        });
        Batch { records: taken.records, lost: taken.lost }
    }

    /// As [`Consumer::take`], but only what the batching policy says is
    /// due ([`BatchPolicy`]): nothing while fewer than a batch are published
    /// and the oldest has not waited its bound, one whole batch when one is
    /// published, everything when writers wait for space. The readers that
    /// run beside a workload take records this way; `take` and
    /// [`Consumer::drain`] take everything, for the end of a recording.
    pub fn take_due(&mut self, max: usize, out: &mut Vec<Record>) -> Batch {
        let next = self.cursor.progress().taken;
        match self.batching.due(&self.ring.view(), next, self.ring.capacity(), false) {
            Due::Nothing => Batch::default(),
            Due::Batch(batch) => self.take(max.min(usize::try_from(batch).unwrap_or(usize::MAX)), out),
            Due::Everything => self.take(max, out),
        }
    }

    /// The batching policy of [`Consumer::take_due`].
    pub fn batch_policy(&self) -> BatchPolicy {
        self.batching.policy()
    }

    /// Replaces the batching policy ([`BatchPolicy::eager`]: none).
    pub fn set_batch_policy(&mut self, policy: BatchPolicy) {
        self.batching = Batching::new(policy);
    }

    /// Declares the records of the last [`Consumer::take`] handed on.
    pub fn commit(&mut self) {
        self.ring.view().commit(&mut self.cursor);
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

    /// Whether every record claimed so far has been taken. A writer that
    /// stopped (or died) before this returns true has nothing left in the
    /// ring; the reader uses it to place a death after the dead process's
    /// last record.
    pub fn caught_up(&self) -> bool {
        self.ring.view().caught_up(&self.cursor)
    }

    /// The first ticket no writer has claimed yet: the records between
    /// [`Consumer::progress`]'s `taken` and this are in the ring, waiting.
    pub fn claimed_end(&self) -> u64 {
        self.ring.view().claimed_end(&self.cursor)
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
    /// 10 µs); each further idle pause doubles, up to the time writers at
    /// full speed (≥ 16 ns a record) take to fill the ring from empty, and
    /// at most 1 ms (64 Ki slots). Writers that fill the ring meanwhile
    /// sleep until the next take wakes them (`RingView::wake_writers`), so
    /// pacing alone never makes a writer drop.
    pub fn pause_if_idle(&mut self, handled: usize) {
        let capacity = self.ring.capacity();
        let shortest = Duration::from_nanos((capacity * 3 / 2).clamp(10_000, 1_000_000));
        if handled as u64 >= (capacity / 64).max(1) {
            self.idle_pause = shortest;
            return;
        }
        let longest = Duration::from_nanos(capacity * 16).clamp(shortest, LONGEST_IDLE_PAUSE);
        let pause = self.idle_pause.clamp(shortest, longest);
        std::thread::sleep(pause);
        self.idle_pause = pause * 2;
    }

    /// The consumer progress as of the last take or commit.
    pub fn progress(&self) -> Progress {
        self.cursor.progress()
    }
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
        // Writers sleeping for space look at `reader_pid` when they wake,
        // and drop instead of waiting out their timeout.
        self.ring.view().wake_writers();
        self.ring.unlock(READER_LOCK_OFFSET);
    }
}
