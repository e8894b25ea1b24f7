//! What a hook keeps per thread, in one thread-local: the scope its ALLOC
//! records carry (written by `ffi::scope`), its counter lane, and a small
//! cache of the counter cells it uses. One TLS access per hook serves all;
//! a second thread-local, touched only on the cold path, holds the lane's
//! lease, whose destructor gives the lane back when the thread exits.

use std::cell::Cell;

use crate::format::{CounterCell, SHARED_LANE};
use crate::shm::LaneWord;
use crate::sync::{AtomicU64, Ordering};

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
    let _ = HOOK.try_with(|t| t.writer.set(0));
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

/// One thread's hook state. Only `Cell`s, no destructor: reaching it
/// costs no "is it still alive?" check, and it stays usable while the
/// thread is torn down (the lane, which needs giving back, is in [`LEASE`]).
pub(crate) struct HookThread {
    /// (scope epoch, innermost scope node) for the ALLOC hook; `ffi::scope`
    /// keeps it.
    pub(crate) scope: Cell<(usize, u32)>,
    /// `Writer::serial` of the writer the fields below are of (0: none).
    pub(crate) writer: Cell<u64>,
    /// This thread's lane of that writer's process entry, or [`SHARED_LANE`].
    pub(crate) lane: Cell<u8>,
    /// (tag, cell) of recently used (device, kind) pairs of that writer;
    /// tag 0 is empty. The cells lie in the writer's mapping, which lives
    /// as long as the writer: only a caller holding the writer whose serial
    /// is `writer` dereferences them.
    pub(crate) cache: [Cell<(u64, *const CounterCell)>; CACHE_WAYS],
}

impl HookThread {
    /// Makes this thread's state that of the writer `serial`: gives back
    /// the lane of the previous writer, forgets its cells, and takes a lane
    /// with `take` -- unless the thread is exiting (its lease already
    /// gone), when it uses the shared lane.
    pub(crate) fn switch_writer(&self, serial: u64, take: impl FnOnce() -> Option<LaneLease>) {
        let lane = LEASE
            .try_with(|slot| {
                if let Some(old) = slot.0.take() {
                    old.release();
                }
                let lease = take();
                let lane = lease.as_ref().map_or(SHARED_LANE, |l| l.lane);
                slot.0.set(lease);
                lane
            })
            .unwrap_or(SHARED_LANE);
        for way in &self.cache {
            way.set((0, std::ptr::null()));
        }
        self.lane.set(lane);
        self.writer.set(serial);
    }
}

/// The lane a thread holds, given back by its destructor at thread exit.
struct LeaseSlot(Cell<Option<LaneLease>>);

impl Drop for LeaseSlot {
    fn drop(&mut self) {
        if let Some(lease) = self.0.take() {
            lease.release();
            // Hooks later in this thread's teardown (another library's
            // thread-local destructor freeing a buffer) must not write the
            // lane any more: make them adopt the writer anew, which gives
            // them the shared lane.
            let _ = HOOK.try_with(|t| t.writer.set(0));
        }
    }
}

/// Cache entry of (device, kind): its way and its tag (never 0).
#[inline(always)]
pub(crate) fn cache_way(device: u32, kind: u8) -> (usize, u64) {
    let way = (device as usize).wrapping_mul(7).wrapping_add(kind as usize) & (CACHE_WAYS - 1);
    (way, 1 << 40 | (device as u64) << 8 | kind as u64)
}

thread_local! {
    static HOOK: HookThread = const {
        HookThread {
            scope: Cell::new((0, 0)),
            writer: Cell::new(0),
            lane: Cell::new(SHARED_LANE),
            cache: [const { Cell::new((0, std::ptr::null())) }; CACHE_WAYS],
        }
    };
    /// Touched only when a thread takes or gives back a lane (cold).
    static LEASE: LeaseSlot = const { LeaseSlot(Cell::new(None)) };
}

/// Runs `f` with this thread's state, or with `None` while the thread is
/// being torn down (its thread-locals destroyed).
#[inline(always)]
pub(crate) fn with<R>(f: impl FnOnce(Option<&HookThread>) -> R) -> R {
    let mut f = Some(f);
    match HOOK.try_with(|t| (f.take().expect("called once"))(Some(t))) {
        Ok(r) => r,
        Err(_) => (f.take().expect("not called"))(None),
    }
}
