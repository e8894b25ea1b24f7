//! Heap-backed rings for the protocol's unit tests and loom models.

#[cfg(loom)]
use crate::format::DoorbellLine;
use crate::format::{LossLine, ProgressCopy, ReaderLine, RingControl, Slot, TailLine, WaitLine};
use crate::sync::{AtomicU32, AtomicU64, FutexWord};

use super::RingView;

/// A control block and slots on the heap, as a fresh file would hold them.
pub(crate) struct HeapRing {
    pub(crate) control: RingControl,
    pub(crate) slots: Vec<Slot>,
}

fn progress_copy() -> ProgressCopy {
    ProgressCopy {
        taken: AtomicU64::new(0),
        committed: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        lost_writer_died: AtomicU64::new(0),
        lost_reader_died: AtomicU64::new(0),
    }
}

/// A control block as a fresh file holds it (all zero).
pub(crate) fn control() -> RingControl {
    RingControl {
        tail: TailLine { tail: AtomicU64::new(0) },
        loss: LossLine {
            dropped: AtomicU64::new(0),
            untracked_processes: AtomicU64::new(0),
            untracked_capacities: AtomicU64::new(0),
        },
        reader: ReaderLine {
            reader_pid: AtomicU32::new(0),
            reader_pid_ns: AtomicU32::new(0),
            progress_epoch: AtomicU64::new(0),
            progress: [progress_copy(), progress_copy()],
        },
        wait: WaitLine { waiters: AtomicU32::new(0), wake: FutexWord::new(0) },
    }
}

/// A doorbell line as a fresh file holds it (all zero). For the loom
/// models (its one user).
#[cfg(loom)]
pub(crate) fn doorbell() -> DoorbellLine {
    DoorbellLine { sleeping: AtomicU32::new(0), bell: FutexWord::new(0) }
}

impl HeapRing {
    pub(crate) fn new(capacity: usize) -> HeapRing {
        HeapRing { control: control(), slots: (0..capacity).map(|_| Slot::new()).collect() }
    }

    pub(crate) fn view(&self) -> RingView<'_> {
        RingView::new(&self.control, &self.slots)
    }
}

/// A payload whose words all say `value`, so a test can tell records apart.
pub(crate) fn payload(value: u64) -> [u64; crate::sync::PAYLOAD_WORDS] {
    [value; crate::sync::PAYLOAD_WORDS]
}

/// What a consumer killed inside [`RingView::release_taken`] leaves behind:
/// `taken` published `n` tickets past `cursor`'s next one (nothing
/// committed), and only the first `freed` of those slots freed. The
/// caller must have read those tickets as a take does (Full, or a dead
/// writer's claim).
#[cfg(loom)]
pub(crate) fn release_and_die(view: RingView<'_>, cursor: &super::Cursor, n: u64, freed: u64) {
    let mut progress = cursor.progress;
    let start = progress.taken;
    progress.taken = start.wrapping_add(n);
    view.publish_progress(&progress);
    for t in (0..freed).map(|i| start.wrapping_add(i)) {
        let next_lap = super::SlotState::empty(view.lap(t).wrapping_add(1));
        // Release: as in `release_taken`; pairs with the writers' Acquire
        // load in `claim` / `claim_own`.
        view.slot(t).state.store(next_lap.encode(), crate::sync::Ordering::Release);
    }
}
