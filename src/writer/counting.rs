//! A writer's live counters: each hook adds to its thread's cell of
//! (device, kind), found through the thread's cache (module `counters`).

use super::Writer;
use crate::counters::{add_own, add_shared};
use crate::format::{SHARED_LANE, counter_key};
use crate::hook_thread::{HookThread, cache_way};
use crate::sync::Ordering;

impl Writer {
    /// Adds (bytes, buffers) to the calling thread's cell of (device,
    /// kind), for a thread whose state is this writer's (the caller checked
    /// its serial): on the hot path, the cell cached in the thread's state,
    /// updated with plain stores (its lane has no other writer).
    #[inline(always)]
    pub(super) fn count_current(&self, t: &HookThread, device: u32, kind: u8, bytes: i64, buffers: i64) {
        let (way, tag) = cache_way(device, kind);
        let (cached, cell) = t.cache[way].get();
        if cached == tag {
            // SAFETY: cached by this writer (its serial matches) from its
            // own pool, which lies in its mapping, alive while `self` is.
            let cell = unsafe { &*cell };
            if t.lane.get() == SHARED_LANE {
                add_shared(cell, bytes, buffers);
            } else {
                add_own(cell, bytes, buffers);
            }
            return;
        }
        self.count_cold(Some(t), device, kind, bytes, buffers);
    }

    /// A thread's first event for this writer, or a (device, kind) not in
    /// its cache: take a lane, find or claim the cell, cache it; with no
    /// cell to be had, count the event as untracked.
    #[cold]
    #[inline(never)]
    pub(super) fn count_cold(
        &self,
        thread: Option<&HookThread>,
        device: u32,
        kind: u8,
        bytes: i64,
        buffers: i64,
    ) {
        let lane = match thread {
            Some(t) => {
                if t.writer.get() != self.serial {
                    self.adopt(t);
                }
                t.lane.get()
            }
            None => SHARED_LANE, // The thread is exiting: no state to keep.
        };
        let pool = self.ring.counters();
        match pool.find_or_claim(self.cell_owner, counter_key(device, kind, lane)) {
            Some(index) => {
                if let Some(t) = thread {
                    let (way, tag) = cache_way(device, kind);
                    t.cache[way].set((tag, std::ptr::from_ref(pool.cell(index))));
                }
                if lane == SHARED_LANE {
                    add_shared(pool.cell(index), bytes, buffers);
                } else {
                    add_own(pool.cell(index), bytes, buffers);
                }
            }
            None => {
                // No cell of our own lane: the process's shared-lane cell of
                // (device, kind), if it has or can claim one, keeps the count
                // exact per device (an atomic add: other threads share it).
                // Not cached: this thread's hot path uses plain stores.
                if lane != SHARED_LANE
                    && let Some(index) =
                        pool.find_or_claim(self.cell_owner, counter_key(device, kind, SHARED_LANE))
                {
                    return add_shared(pool.cell(index), bytes, buffers);
                }
                // Full pool: visible, never silent (status shows it).
                let entry = self.ring.process_entry(self.registration.index);
                entry.untracked_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                entry.untracked_buffers.fetch_add(buffers as u64, Ordering::Relaxed);
                entry.untracked_events.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
