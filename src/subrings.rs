//! Sub-ring leases: which writer thread may write which sub-ring.
//!
//! A sub-ring (format 3, issue 14) is a ring with one writer at a time,
//! so its writer claims slots with plain stores (`RingView::claim_own`):
//! no locked instruction, no line shared with other writers. The lease
//! word in its [`SubRingHeader`] says who that writer is:
//!
//! * **free → held**: a thread's first hook for a writer CASes a free
//!   word (0) to [`subring_lease`](crate::format::subring_lease)`(entry, generation)` of its process
//!   (Acquire; partner: the Release give-back of the previous holder), then
//!   goes on from the first ticket not yet claimed
//!   (`RingView::own_next_ticket`, probing from the tail hint).
//! * **held → free**: at thread exit (or when it hooks for another
//!   writer) the holder stores its next ticket as the tail hint (Relaxed)
//!   and CASes its own lease word back to 0 (Release; partner: the next
//!   holder's CAS). A CAS rather than a store: if the lease was taken from
//!   it as stale meanwhile (its process detached), the word is left alone;
//!   the stray tail store is then behind the new holder's (never ahead), a
//!   hint the next holder probes forward from.
//! * **stale → held**: a lease whose process entry has another generation
//!   now, or whose entry's OFD lock nobody holds (the process died or
//!   detached), is taken by CAS from the stale value seen. Cold path only,
//!   one `fcntl` per candidate at most. A claim the dead holder left in
//!   the sub-ring is the consumer's to count lost; the new holder goes on
//!   after it.
//!
//! A thread whose sub-ring is full waits for the consumer there when one
//! is attached (`Writer::wait_own`), else writes the shared ring. A thread
//! that finds no sub-ring writes the shared ring, as every thread did in
//! format 2, and looks again after [`RETRY_HOOKS`] of its hooks,
//! then after twice as many each time it finds none, up to
//! [`MAX_RETRY_HOOKS`].

use crate::format::{SubRingHeader, WaitLine, subring_lease_parts};
use crate::sync::Ordering;

/// Hooks a thread without a sub-ring makes (on the shared ring) before it
/// looks for one again: threads that started while every sub-ring was
/// held get one once others exit. A look costs a load per sub-ring and, if
/// none is free, one `fcntl` per other live process holding one (about
/// 0.3 µs each): with 32 sub-rings held by 32 other processes, ~2 ns per
/// hook at this interval, hence the doubling up to [`MAX_RETRY_HOOKS`].
pub(crate) const RETRY_HOOKS: u32 = 4096;
/// The longest interval between two looks: 2^20 hooks.
pub(crate) const MAX_RETRY_HOOKS: u32 = 1 << 20;

/// Takes the lease of `header` from `seen` (0: free; else a stale holder's
/// word) for `lease`. Whether it got it.
pub(crate) fn take_lease(header: &SubRingHeader, seen: u64, lease: u64) -> bool {
    // Acquire: pairs with the Release CAS in `give_back` of the previous
    // holder, so its slot stores and tail hint are visible to our probe
    // (`own_next_ticket`) and claims. (No Release: nothing we wrote before
    // this needs publishing. A holder that died gave nothing back: its
    // death, seen through the kernel's lock, orders its last stores.)
    header.lease.compare_exchange(seen, lease, Ordering::Acquire, Ordering::Relaxed).is_ok()
}

/// Takes back the wait registration a dead holder may have left in the
/// sub-ring it held: killed while it slept for space, it never ran the
/// `fetch_sub` of `RingView::wait_for_space`, and a `waiters` count stuck
/// at 1 makes the consumer issue a FUTEX_WAKE (a system call) every time
/// it frees slots there, for as long as the file lives. Only a sub-ring's
/// holder waits on it, and we hold it now: no live writer is registered.
/// (A shared ring's stale count stays: any writer may wait there.)
pub(crate) fn clear_dead_holders_wait(wait: &WaitLine) {
    // Relaxed: `waiters` is read as a hint (`wake_writers`,
    // `writer_waits_on`); our own registrations, if we wait later, come
    // after this store in program order.
    wait.waiters.store(0, Ordering::Relaxed);
}

/// Gives the lease `lease` of `header` back, telling the next holder to go
/// on at `next_ticket`. A no-op if `lease` is not the holder any more.
pub(crate) fn give_back(header: &SubRingHeader, lease: u64, next_ticket: u64) {
    if header.lease.load(Ordering::Relaxed) != lease {
        return; // Taken from us as stale: not ours to write.
    }
    crate::ring::RingView::store_own_tail_of(&header.control, next_ticket);
    // Release: our slot stores and the tail above happen before the next
    // holder's loads; pairs with the Acquire CAS in `take_lease`.
    let _ = header.lease.compare_exchange(lease, 0, Ordering::Release, Ordering::Relaxed);
}

/// The holder a lease word names, `None` for a free word (or one the
/// protocol never writes, which a reclaimer may take as stale).
pub(crate) fn holder(lease: u64) -> Option<(usize, u32)> {
    subring_lease_parts(lease)
}

/// Whether a writer's threads take sub-rings unless told otherwise
/// (`Writer::use_subrings`, which tests of the shared ring's own paths use
/// to turn it off). On: the consumer reads every sub-ring (`consumer`).
pub(crate) const WRITES_BY_DEFAULT: bool = true;

#[cfg(not(loom))]
mod lease_in_a_ring {
    use super::*;
    use crate::format::{MAX_PROCESSES, subring_lease};
    use crate::process::{Registration, lock_offset};
    use crate::shm::Ring;

    /// A sub-ring a thread took: which, its lease word, and the ticket to
    /// go on at.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct Leased {
        pub(crate) index: usize,
        pub(crate) lease: u64,
        pub(crate) next_ticket: u64,
    }

    impl Ring {
        /// Takes a sub-ring for a thread of the process `own`: a free one
        /// first (from `start`, so threads spread their first CAS), else a
        /// stale one. `None` when every sub-ring is held by a live process.
        pub(crate) fn lease_subring(&self, own: Registration, start: usize) -> Option<Leased> {
            let n = self.subring_count();
            if n == 0 {
                return None;
            }
            let lease = subring_lease(own.index, own.generation);
            let order = (0..n).map(|k| (start + k) % n);
            for i in order.clone() {
                let header = self.subring_header(i);
                if header.lease.load(Ordering::Relaxed) == 0
                    && take_lease(header, 0, lease)
                    && let Some(leased) = self.resume(i, lease)
                {
                    return Some(leased);
                }
            }
            // Many sub-rings are often held by one process: ask about each
            // holder once per look.
            let mut verdicts = [(0u64, false); 16];
            let mut is_stale = |seen: u64| {
                let memo = &mut verdicts[(seen as usize >> 1) % 16];
                if memo.0 != seen {
                    *memo = (seen, self.is_stale(seen, own));
                }
                memo.1
            };
            for i in order {
                let header = self.subring_header(i);
                let seen = header.lease.load(Ordering::Relaxed);
                if seen != 0 && is_stale(seen) && take_lease(header, seen, lease) {
                    clear_dead_holders_wait(&header.control.wait);
                    if let Some(leased) = self.resume(i, lease) {
                        return Some(leased);
                    }
                }
            }
            None
        }

        /// Finds where the new holder of sub-ring `i` goes on; a sub-ring
        /// whose slots are corrupt is given back (with its hint unchanged)
        /// and not used.
        fn resume(&self, i: usize, lease: u64) -> Option<Leased> {
            let view = self.subring_view(i);
            match view.own_next_ticket() {
                Some(next_ticket) => Some(Leased { index: i, lease, next_ticket }),
                None => {
                    let header = self.subring_header(i);
                    let hint = header.control.tail.tail.load(Ordering::Relaxed);
                    give_back(header, lease, hint);
                    None
                }
            }
        }

        /// Whether lease word `seen` names a holder that can no longer
        /// write: its entry has a new generation or nobody holds its lock.
        /// A thread of our own registration is alive (it is running in this
        /// process; and our own lock would read as free through our own
        /// open file description).
        fn is_stale(&self, seen: u64, own: Registration) -> bool {
            let Some((entry, generation)) = holder(seen) else { return true };
            if (entry, generation) == (own.index, own.generation) {
                return false;
            }
            if entry >= MAX_PROCESSES {
                return true; // No such process: nobody writes under it.
            }
            // Acquire keeps this load before the lock probe: a process
            // that takes the entry after the probe has a new generation,
            // which the lease never matches. (No Release partner: only the
            // entry's lock holder writes the generation.)
            self.process_entry(entry).generation.load(Ordering::Acquire) != generation
                || !self.is_locked(lock_offset(entry))
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models;

#[cfg(all(test, not(loom)))]
mod tests;
