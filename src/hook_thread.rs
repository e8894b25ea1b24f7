//! What a hook keeps per thread, in one thread-local: the scope its ALLOC
//! records carry (written by `ffi::scope`), its counter lane, a small
//! cache of the counter cells it uses, and its sub-ring (where it is and
//! the next ticket). One TLS access per hook serves all; a second
//! thread-local, touched only on the cold path, holds the leases of the
//! lane and the sub-ring, whose destructor gives them back when the thread
//! exits.

use std::cell::Cell;

use crate::format::{CounterCell, SHARED_LANE, Slot, SubRingHeader};
use crate::shm::{LaneWord, SubRingWord};
use crate::sync::{AtomicU64, Ordering, compiler_fence};

/// Forks this process has gone through since it started (as counted in
/// the child by [`after_fork_in_child`]): which process a lane lease or a
/// writer belongs to. A pid cannot tell: a child forked into a new PID
/// namespace can have its parent's pid (both pid 1 in containers).
static FORKS: AtomicU64 = AtomicU64::new(0);

/// This process's fork count: equal to the value read at some earlier
/// time in this thread if and only if no fork happened between (in this
/// process's line of descent). Relaxed: only this process's own child
/// handler changes it, before any code of the child runs.
#[inline]
pub(crate) fn fork_count() -> u64 {
    FORKS.load(Ordering::Relaxed)
}

/// Makes the child of a fork count it: registered once per process (the
/// first `Writer::attach`), whether the C ABI or the Rust API attaches.
pub(crate) fn count_forks() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: `after_fork_in_child` is an `extern "C"` function with
        // static lifetime doing only async-signal-safe work.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

/// In a forked child: count the fork, and make the forking thread (the
/// only one here) forget the parent's writer state, so its next hook takes
/// the cold path (which sees the fork) instead of writing the parent's
/// lane cells with plain stores. Async-signal-safe: an atomic add and a
/// store to a thread-local without destructor.
extern "C" fn after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    let _ = HOOK.try_with(|t| {
        t.writer.set(0);
        t.forget_subring();
    });
}

/// Entries of the per-thread cell cache (direct-mapped on device and kind).
pub(crate) const CACHE_WAYS: usize = 16;

/// A lane this thread holds, given back when the thread exits or hooks
/// for another writer.
pub(crate) struct LaneLease {
    pub(crate) word: LaneWord,
    pub(crate) generation: u32,
    pub(crate) lane: u8,
    /// [`fork_count`] when it was taken: a forked child inherits this
    /// thread's state but not its lane (the parent still holds it), and
    /// its fork count differs even where its pid does not.
    pub(crate) forks: u64,
}

impl LaneLease {
    /// Gives the lane back, if this process is the one that took it.
    fn release(self) {
        if self.forks == fork_count() {
            crate::counters::release_lane(self.word.get(), self.generation, self.lane);
        }
    }
}

/// A sub-ring this thread holds the lease of, given back (with the
/// thread's next ticket as the tail hint) when the thread exits or hooks
/// for another writer.
pub(crate) struct SubRingLease {
    pub(crate) header: SubRingWord,
    /// The lease word this thread holds there.
    pub(crate) lease: u64,
    /// [`fork_count`] when it was taken, as for [`LaneLease`].
    pub(crate) forks: u64,
}

impl SubRingLease {
    /// Gives the sub-ring back, if this process is the one that took it.
    fn release(self, next_ticket: u64) {
        if self.forks == fork_count() {
            crate::subrings::give_back(self.header.get(), self.lease, next_ticket);
        }
    }
}

/// Where a thread that took a sub-ring writes: set with its lease.
pub(crate) struct OwnSubRing {
    pub(crate) lease: SubRingLease,
    pub(crate) slots: *const Slot,
    pub(crate) lap_shift: u32,
    pub(crate) next_ticket: u64,
}

/// The leases a thread holds (cold; see [`LEASE`]).
#[derive(Default)]
struct Leases {
    lane: Option<LaneLease>,
    subring: Option<SubRingLease>,
}

/// One thread's hook state. Only `Cell`s, no destructor: reaching it
/// costs no "is it still alive?" check, and it stays usable while the
/// thread is torn down (the lane and the sub-ring, which need giving back,
/// are in [`LEASE`]).
///
/// On lines of its own (`align(128)`, as the file's lines): every hook
/// writes it. A library loaded with `dlopen` (tt_metal under Python) has
/// its thread-locals in a block `malloc`ed per thread, and once threads
/// outnumber glibc's arenas (8 per core) those blocks come from one
/// arena, a few hundred bytes apart (measured: 1344 bytes, 32 threads on
/// 2 cores): without the alignment the state's first line could be
/// shared with whatever another thread's allocation put before it.
#[repr(align(128))]
pub(crate) struct HookThread {
    /// (scope epoch, innermost scope node) for the ALLOC hook; `ffi::scope`
    /// keeps it.
    pub(crate) scope: Cell<(usize, u32)>,
    /// Whether this thread is inside a hook (see [`with`]).
    pub(crate) in_hook: Cell<bool>,
    /// `Writer::serial` of the writer the fields below are of (0: none).
    pub(crate) writer: Cell<u64>,
    /// This thread's lane of that writer's process entry, or [`SHARED_LANE`].
    pub(crate) lane: Cell<u8>,
    /// (tag, cell) of recently used (device, kind) pairs of that writer;
    /// tag 0 is empty. The cells lie in the writer's mapping, which lives
    /// as long as the writer: only a caller holding the writer whose serial
    /// is `writer` dereferences them.
    pub(crate) cache: [Cell<(u64, *const CounterCell)>; CACHE_WAYS],
    /// The header of the sub-ring this thread holds for that writer (null:
    /// none; it writes the shared ring). Like `cache`, in the writer's
    /// mapping: only a caller holding that writer dereferences it.
    pub(crate) subring: Cell<*const SubRingHeader>,
    /// That sub-ring's slots, and log2 of their number.
    pub(crate) subring_slots: Cell<*const Slot>,
    pub(crate) subring_shift: Cell<u32>,
    /// The next ticket this thread claims in its sub-ring.
    pub(crate) subring_ticket: Cell<u64>,
    /// The consumer's `taken` in that sub-ring when this thread's last
    /// wait there gave up without the consumer taking anything there
    /// (`u64::MAX`: none): while it stays there, a full sub-ring spills at
    /// once (`Writer::wait_own`).
    pub(crate) subring_stuck_at: Cell<u64>,
    /// Hooks left before a thread without a sub-ring looks for one again,
    /// and the interval after that (see `subrings::RETRY_HOOKS`).
    pub(crate) subring_retry: Cell<u32>,
    pub(crate) subring_retry_interval: Cell<u32>,
}

impl HookThread {
    /// Makes this thread's state that of the writer `serial`: gives back
    /// the lane and sub-ring of the previous writer, forgets its cells, and
    /// takes a lane with `take_lane` and a sub-ring with `take_subring` --
    /// unless the thread is exiting (its leases already gone), when it uses
    /// the shared lane and the shared ring.
    pub(crate) fn switch_writer(
        &self,
        serial: u64,
        take_lane: impl FnOnce() -> Option<LaneLease>,
        take_subring: impl FnOnce() -> Option<OwnSubRing>,
    ) {
        self.forget_subring();
        let lane = LEASE
            .try_with(|slot| {
                let old = slot.0.take();
                if let Some(lane) = old.lane {
                    lane.release();
                }
                if let Some(subring) = old.subring {
                    subring.release(self.subring_ticket.get());
                }
                let lane = take_lane();
                let lane_byte = lane.as_ref().map_or(SHARED_LANE, |l| l.lane);
                let subring = take_subring().map(|own| self.adopt_subring(own));
                slot.0.set(Leases { lane, subring });
                lane_byte
            })
            .unwrap_or(SHARED_LANE);
        for way in &self.cache {
            way.set((0, std::ptr::null()));
        }
        self.subring_retry.set(crate::subrings::RETRY_HOOKS);
        self.subring_retry_interval.set(crate::subrings::RETRY_HOOKS);
        self.lane.set(lane);
        self.writer.set(serial);
    }

    /// A thread of the current writer without a sub-ring looks for one
    /// again (see `subrings::RETRY_HOOKS`): `take` is asked unless the
    /// thread is exiting or holds one.
    pub(crate) fn retry_subring(&self, take: impl FnOnce() -> Option<OwnSubRing>) {
        let interval = (self.subring_retry_interval.get().saturating_mul(2))
            .clamp(crate::subrings::RETRY_HOOKS, crate::subrings::MAX_RETRY_HOOKS);
        self.subring_retry_interval.set(interval);
        self.subring_retry.set(interval);
        let _ = LEASE.try_with(|slot| {
            let mut leases = slot.0.take();
            if leases.subring.is_none() && self.subring.get().is_null() {
                leases.subring = take().map(|own| self.adopt_subring(own));
            }
            slot.0.set(leases);
        });
    }

    fn adopt_subring(&self, own: OwnSubRing) -> SubRingLease {
        self.subring.set(std::ptr::from_ref(own.lease.header.get()));
        self.subring_slots.set(own.slots);
        self.subring_shift.set(own.lap_shift);
        self.subring_ticket.set(own.next_ticket);
        self.subring_stuck_at.set(u64::MAX);
        own.lease
    }

    fn forget_subring(&self) {
        self.subring.set(std::ptr::null());
        self.subring_slots.set(std::ptr::null());
    }
}

/// The leases a thread holds, given back by its destructor at thread exit.
struct LeaseSlot(Cell<Leases>);

impl Drop for LeaseSlot {
    fn drop(&mut self) {
        let Leases { lane, subring } = self.0.take();
        if lane.is_none() && subring.is_none() {
            return;
        }
        // First forget them: hooks later in this thread's teardown
        // (another library's thread-local destructor freeing a buffer), or
        // a signal handler hooking while we give them back, must not write
        // the lane or the sub-ring any more -- another thread may hold them
        // the moment they are given back. They adopt the writer anew, which
        // gives them the shared lane and the shared ring. (The thread's
        // state has no destructor: it outlives this one.)
        let next_ticket = HOOK
            .try_with(|t| {
                t.forget_subring();
                t.writer.set(0);
                t.subring_ticket.get()
            })
            .unwrap_or(0);
        compiler_fence(Ordering::SeqCst);
        if let Some(lane) = lane {
            lane.release();
        }
        if let Some(subring) = subring {
            subring.release(next_ticket);
        }
    }
}

/// Cache entry of (device, kind): its way and its tag (never 0).
#[inline(always)]
pub(crate) fn cache_way(device: u32, kind: u8) -> (usize, u64) {
    let way = (device as usize).wrapping_mul(7).wrapping_add(kind as usize) & (CACHE_WAYS - 1);
    (way, 1 << 40 | (device as u64) << 8 | kind as u64)
}

// Whole lines: no other data, of this thread or another, on them.
const _: () = assert!(std::mem::align_of::<HookThread>() == 128);
const _: () = assert!(std::mem::size_of::<HookThread>().is_multiple_of(128));

thread_local! {
    static HOOK: HookThread = const {
        HookThread {
            scope: Cell::new((0, 0)),
            in_hook: Cell::new(false),
            writer: Cell::new(0),
            lane: Cell::new(SHARED_LANE),
            cache: [const { Cell::new((0, std::ptr::null())) }; CACHE_WAYS],
            subring: Cell::new(std::ptr::null()),
            subring_slots: Cell::new(std::ptr::null()),
            subring_shift: Cell::new(0),
            subring_ticket: Cell::new(0),
            subring_stuck_at: Cell::new(u64::MAX),
            subring_retry: Cell::new(0),
            subring_retry_interval: Cell::new(0),
        }
    };
    /// Touched only when a thread takes or gives back a lease (cold).
    static LEASE: LeaseSlot = const { LeaseSlot(Cell::new(Leases { lane: None, subring: None })) };
}

/// Runs `f` with this thread's state; with `None` while the thread is
/// being torn down (its thread-locals destroyed), and inside a hook this
/// thread is already running: a signal handler that hooks while the
/// interrupted code is mid-hook. The thread's plain-store paths (its
/// sub-ring's claim, its lane's counter cells, its lease slots) belong to
/// the interrupted hook, which would overwrite what the nested one wrote;
/// with `None` the nested hook takes the paths any thread may take at any
/// moment: the shared lane's atomic adds and the shared ring's CAS claim.
#[inline(always)]
pub(crate) fn with<R>(f: impl FnOnce(Option<&HookThread>) -> R) -> R {
    // Not `LocalKey::with` around `f`: a closure run inside it was
    // compiled out of line, with its captures on the stack.
    // SAFETY: `t` is used on this thread, within this call.
    let Some(t) = (unsafe { current() }) else { return f(None) };
    if t.in_hook.get() {
        return f(None);
    }
    t.in_hook.set(true);
    // Compiler fences: a signal handler runs on this thread, so only
    // the compiler could move the flag's stores past the hook's own.
    compiler_fence(Ordering::SeqCst);
    let result = f(Some(t));
    compiler_fence(Ordering::SeqCst);
    t.in_hook.set(false);
    result
}

/// This thread's state, or `None` while the thread is being torn down.
/// `HOOK` is const-initialised and has no destructor, so reaching it
/// never fails today.
///
/// # Safety
/// The caller uses the reference on this thread only, and not after the
/// call that got it returns (it must not outlive the thread's storage).
#[inline(always)]
pub(crate) unsafe fn current<'a>() -> Option<&'a HookThread> {
    // SAFETY: the pointer is this thread's own `HOOK`, whose storage lives
    // until the thread exits (no destructor runs on it); `HookThread` is
    // all `Cell`s (not `Sync`: the reference cannot leave the thread), and
    // the caller keeps it no longer than its call.
    HOOK.try_with(std::ptr::from_ref).ok().map(|t| unsafe { &*t })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_threads_hook_state_starts_a_line_of_its_own() {
        let address = || {
            // SAFETY: used on this thread, within this call.
            unsafe { current() }.map(|t| std::ptr::from_ref(t).addr()).unwrap()
        };
        let mut addresses = vec![address()];
        addresses.extend((0..4).map(|_| std::thread::spawn(address).join().unwrap()));
        for a in &addresses {
            assert_eq!(a % 128, 0, "{addresses:x?}");
        }
    }
}
