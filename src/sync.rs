//! The one switch point between `std` atomics and loom's model-checked ones.
//!
//! Every atomic and every shared cell of the ring protocol comes from here, so
//! that `RUSTFLAGS="--cfg loom"` puts the whole protocol under loom's
//! exhaustive scheduler without touching the protocol code.
//!
//! The payload of a slot is the one place where the two worlds differ on
//! purpose: under loom it is an `UnsafeCell`, so loom *proves* that a reader
//! never touches a payload while a writer may be filling it; in production it
//! is seven relaxed `AtomicU64` words, so that even a hostile process writing
//! the shared file at random can never make our reads a data race (UB).
//! Relaxed stores and loads of aligned words compile to plain moves.

#[cfg(loom)]
// Under loom only the protocol is built: no AtomicPtr (the C ABI state) or
// AtomicBool users.
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
// Loom has no compiler fence; it orders nothing loom models (it only
// keeps the compiler from moving a clock read), so the std one serves.
pub(crate) use std::sync::atomic::compiler_fence;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering, fence};

/// Number of 64-bit words in a slot's payload (56 bytes).
pub(crate) const PAYLOAD_WORDS: usize = 7;

/// One slot's payload: written by the writer that claimed the slot, read by
/// the reader after the writer published it.
#[cfg(not(loom))]
#[repr(C)]
pub(crate) struct PayloadCell([AtomicU64; PAYLOAD_WORDS]);

#[cfg(not(loom))]
impl PayloadCell {
    #[cfg(test)]
    pub(crate) const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; PAYLOAD_WORDS])
    }

    /// Fills the payload. Only the slot's claimant calls this; the state
    /// word's Release store that follows orders these stores before it.
    #[inline(always)]
    pub(crate) fn store(&self, words: &[u64; PAYLOAD_WORDS]) {
        for (cell, word) in self.0.iter().zip(words) {
            cell.store(*word, Ordering::Relaxed);
        }
    }

    /// Copies the payload out. The reader calls this after an Acquire load
    /// of the state word saw the slot published.
    #[inline(always)]
    pub(crate) fn load(&self) -> [u64; PAYLOAD_WORDS] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }

    /// The payload's first word (a record's timestamp), under the same
    /// condition as [`PayloadCell::load`].
    #[inline(always)]
    pub(crate) fn first_word(&self) -> u64 {
        self.0[0].load(Ordering::Relaxed)
    }
}

#[cfg(loom)]
pub(crate) struct PayloadCell(loom::cell::UnsafeCell<[u64; PAYLOAD_WORDS]>);

#[cfg(loom)]
impl PayloadCell {
    pub(crate) fn new() -> Self {
        Self(loom::cell::UnsafeCell::new([0; PAYLOAD_WORDS]))
    }

    pub(crate) fn store(&self, words: &[u64; PAYLOAD_WORDS]) {
        // SAFETY: loom checks the claim: only the claimant writes, and the
        // reader reads only after the Release store that publishes the slot.
        self.0.with_mut(|p| unsafe { *p = *words });
    }

    pub(crate) fn load(&self) -> [u64; PAYLOAD_WORDS] {
        // SAFETY: as in `store`; loom reports any access that is not ordered.
        self.0.with(|p| unsafe { *p })
    }

    pub(crate) fn first_word(&self) -> u64 {
        // SAFETY: as in `store`; loom reports any access that is not ordered.
        self.0.with(|p| unsafe { (*p)[0] })
    }
}

/// Tells the scheduler that this thread is waiting for another one.
///
/// Under loom this is a yield point, without which a spin loop would make
/// the model run forever.
#[inline]
pub(crate) fn wait_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Asks the CPU to start fetching the cache line at `address`, so a loop
/// over slots another core just wrote overlaps its misses instead of
/// paying them one after another. Only a hint: it never faults and has no
/// effect on memory; a no-op under loom and off x86-64.
#[inline(always)]
pub(crate) fn prefetch<T>(address: *const T) {
    #[cfg(all(not(loom), target_arch = "x86_64"))]
    // SAFETY: PREFETCHT0 reads nothing architecturally and cannot fault,
    // whatever the address; SSE is part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch(address as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(any(loom, not(target_arch = "x86_64")))]
    let _ = address;
}

/// A 32-bit word threads of *different processes* can sleep on: the
/// writers' wait for space in a full ring (see `ring`, "waiting for space").
///
/// In production it is a plain `AtomicU32` in the shared file (same size
/// and layout) used as a shared (not `FUTEX_PRIVATE`) Linux futex, so a
/// `FUTEX_WAKE` by the consumer reaches writers in other processes that map
/// the same file. Under loom it is a mutex and condition variable that
/// behave as a futex does: `wait` checks the value and goes to sleep
/// atomically with respect to `wake_all`, so loom can prove that no wake-up
/// is lost. (Loom has no time: an untimed wait that nobody wakes deadlocks
/// the model, which is how the models catch a lost wake-up; a timed one may
/// end at any moment.)
#[cfg(not(loom))]
#[repr(transparent)]
pub struct FutexWord(AtomicU32);

#[cfg(not(loom))]
impl FutexWord {
    #[cfg(test)]
    pub(crate) const fn new(value: u32) -> Self {
        Self(AtomicU32::new(value))
    }

    /// The current value.
    #[inline]
    pub(crate) fn load(&self, order: Ordering) -> u32 {
        self.0.load(order)
    }

    /// Changes the value, so that sleepers that have not yet slept don't.
    #[inline]
    pub(crate) fn bump(&self, order: Ordering) {
        self.0.fetch_add(1, order);
    }

    /// Sleeps while the word holds `expected`, until `wake_all`, `timeout`
    /// or a signal, whichever comes first. Returns at once if the word no
    /// longer holds `expected` (the kernel compares and sleeps atomically).
    pub(crate) fn wait(&self, expected: u32, timeout: std::time::Duration) {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: the word is a live, aligned u32 for the whole call (we
        // hold `&self`); FUTEX_WAIT only reads it. Not FUTEX_PRIVATE: the
        // waker may be another process mapping the same file. Errors
        // (EAGAIN: value changed; ETIMEDOUT; EINTR) all mean "look again",
        // which every caller does.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.0.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                &timeout as *const libc::timespec,
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }

    /// Wakes every thread sleeping in [`FutexWord::wait`] on this word, in
    /// any process.
    pub(crate) fn wake_all(&self) {
        // SAFETY: as in `wait`; FUTEX_WAKE does not access the word.
        unsafe {
            libc::syscall(libc::SYS_futex, self.0.as_ptr(), libc::FUTEX_WAKE, i32::MAX, 0usize, 0usize, 0u32);
        }
    }
}

/// The loom twin of the production futex word; see there.
#[cfg(loom)]
pub struct FutexWord {
    value: AtomicU32,
    sleepers: loom::sync::Mutex<()>,
    wakeups: loom::sync::Condvar,
}

#[cfg(loom)]
impl FutexWord {
    pub(crate) fn new(value: u32) -> Self {
        Self {
            value: AtomicU32::new(value),
            sleepers: loom::sync::Mutex::new(()),
            wakeups: loom::sync::Condvar::new(),
        }
    }

    pub(crate) fn load(&self, order: Ordering) -> u32 {
        self.value.load(order)
    }

    pub(crate) fn bump(&self, order: Ordering) {
        self.value.fetch_add(1, order);
    }

    /// With `timeout == Duration::MAX` sleeps until woken (so a lost
    /// wake-up deadlocks the model); with any other timeout, returns after
    /// a yield, as a timed wait may at any moment: what the models of
    /// consumers that die (and wake no one) rely on.
    pub(crate) fn wait(&self, expected: u32, timeout: std::time::Duration) {
        if timeout != std::time::Duration::MAX {
            loom::thread::yield_now();
            return;
        }
        // The kernel compares under its hash-bucket lock, which `wake_all`
        // also takes: a bump before the wake is seen here, or the wake
        // finds us asleep.
        let sleepers = self.sleepers.lock().unwrap();
        if self.value.load(Ordering::Relaxed) == expected {
            drop(self.wakeups.wait(sleepers).unwrap());
        }
    }

    pub(crate) fn wake_all(&self) {
        let _sleepers = self.sleepers.lock().unwrap();
        self.wakeups.notify_all();
    }
}
