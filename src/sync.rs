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
