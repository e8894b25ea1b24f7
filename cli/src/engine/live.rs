//! The buffers alive in the stream, in memory that grows by about 90
//! bytes per buffer: a recording that leaks 20 million buffers is read in
//! under 2 GB.
//!
//! Each buffer is one fixed-size [`LiveBuffer`] (80 bytes, no heap) in a
//! slab; a hash table of slab indices (4 bytes a bucket plus hashbrown's
//! control byte) finds the live buffer of a key among the running
//! processes' buffers. The key lives once, in the slab entry, and is
//! hashed from there. A `Vec` slab grows by `realloc`, which for large
//! blocks moves pages (`mremap`) instead of copying them, so growing never
//! holds two copies; only the index, small, is rebuilt when it grows.
//!
//! When a process ends, its buffers leave the index but keep their slab
//! entries: they are its remaining buffers ([`super::ProcessStats::ended_with`]
//! holds their indices). Freed entries are reused.
//!
//! Duplicate ALLOCs (a rare anomaly) keep each further reference's size
//! and time in a side table; the entry keeps their count and bytes, so
//! [`LiveBuffer::counted_bytes`] needs nothing else.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};

use hashbrown::HashTable;
use memtrack::format::FLAG_ALIAS;

use super::{BufferKey, ProcessId, SequentialKeyHasher};

/// A buffer alive at some point of the stream: one slab entry.
#[repr(C)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveBuffer {
    /// Its key.
    pub key: BufferKey,
    /// Owner (mesh buffer, program), 0 for none.
    pub parent_id: u64,
    /// Device address.
    pub address: u64,
    /// Bytes of the first reference.
    pub size: u64,
    /// When it was allocated, ns since the ring's creation.
    pub time_ns: u64,
    /// Bytes of the further references (duplicate ALLOCs) not yet freed.
    duplicate_bytes: u64,
    /// Scope node of its process it was allocated in (0: none).
    pub scope: u32,
    /// Further references (duplicate ALLOCs) not yet freed.
    duplicates: u32,
    /// `FLAG_*` bits.
    pub flags: u8,
}

// The whole point of this type: a million of these are 80 MB.
const _: () = assert!(std::mem::size_of::<LiveBuffer>() == 80);
const _: () = assert!(std::mem::size_of::<BufferKey>() == 24);

impl LiveBuffer {
    /// A buffer of one reference.
    pub(super) fn new(
        key: BufferKey,
        parent_id: u64,
        address: u64,
        size: u64,
        flags: u8,
        time_ns: u64,
    ) -> Self {
        LiveBuffer {
            key,
            parent_id,
            address,
            size,
            time_ns,
            duplicate_bytes: 0,
            scope: 0,
            duplicates: 0,
            flags,
        }
    }

    pub(super) fn is_alias(&self) -> bool {
        self.flags & FLAG_ALIAS != 0
    }

    /// Bytes this buffer counts in usage (0 for ALIAS).
    pub fn counted_bytes(&self) -> u64 {
        if self.is_alias() {
            0
        } else {
            // Wrapping, as every byte sum here: sizes come from files and
            // rings anyone may have written garbage into.
            self.size.wrapping_add(self.duplicate_bytes)
        }
    }

    /// References held: 1 + duplicate ALLOCs not yet freed.
    pub fn references(&self) -> usize {
        1 + self.duplicates as usize
    }
}

/// Index of a [`LiveBuffer`] in the slab.
pub(super) type Slot = u32;

/// The live buffers: see the module documentation.
#[derive(Default)]
pub(super) struct LiveBuffers {
    slab: Vec<LiveBuffer>,
    /// Slab entries free for reuse.
    vacant: Vec<Slot>,
    /// The running processes' live buffers, by key.
    index: HashTable<Slot>,
    /// Per slab entry with duplicate references: (size, time) of each,
    /// newest last.
    duplicates: HashMap<Slot, Vec<(u64, u64)>>,
}

fn hash(key: &BufferKey) -> u64 {
    BuildHasherDefault::<SequentialKeyHasher>::default().hash_one(key)
}

impl LiveBuffers {
    /// The slab entry of the live buffer `key` of a running process.
    pub(super) fn find(&self, key: &BufferKey) -> Option<Slot> {
        self.index.find(hash(key), |&slot| self.slab[slot as usize].key == *key).copied()
    }

    pub(super) fn get(&self, slot: Slot) -> &LiveBuffer {
        &self.slab[slot as usize]
    }

    /// Adds a buffer that is not live (see [`LiveBuffers::find`]).
    pub(super) fn insert(&mut self, buffer: LiveBuffer) {
        let key = buffer.key;
        let slot = match self.vacant.pop() {
            Some(slot) => {
                self.slab[slot as usize] = buffer;
                slot
            }
            None => {
                // The index holds u32 slots: past 4 G live buffers the
                // reader would need 320 GB anyway.
                let slot = Slot::try_from(self.slab.len()).expect("fewer than 2^32 live buffers");
                self.slab.push(buffer);
                slot
            }
        };
        let slab = &self.slab;
        self.index.insert_unique(hash(&key), slot, |&s| hash(&slab[s as usize].key));
    }

    /// One more reference of live buffer `slot`, of `size` bytes at `time_ns`.
    pub(super) fn add_reference(&mut self, slot: Slot, size: u64, time_ns: u64) {
        let buffer = &mut self.slab[slot as usize];
        buffer.duplicates += 1;
        buffer.duplicate_bytes = buffer.duplicate_bytes.wrapping_add(size);
        self.duplicates.entry(slot).or_default().push((size, time_ns));
    }

    /// Releases the newest reference of live buffer `slot`; returns its
    /// size and whether it was the last (the buffer is then gone).
    pub(super) fn release(&mut self, slot: Slot) -> (u64, bool) {
        let buffer = &mut self.slab[slot as usize];
        if buffer.duplicates > 0 {
            let stack = self.duplicates.get_mut(&slot).expect("a duplicate reference has its entry");
            let (size, _) = stack.pop().expect("as many entries as duplicates");
            if stack.is_empty() {
                self.duplicates.remove(&slot);
            }
            buffer.duplicates -= 1;
            buffer.duplicate_bytes = buffer.duplicate_bytes.wrapping_sub(size);
            return (size, false);
        }
        let (size, key) = (buffer.size, buffer.key);
        let Ok(found) = self.index.find_entry(hash(&key), |&s| s == slot) else {
            unreachable!("a live buffer is indexed")
        };
        found.remove();
        self.vacant.push(slot);
        (size, true)
    }

    /// The newest reference of live buffer `slot`: (size, time).
    pub(super) fn newest_reference(&self, slot: Slot) -> (u64, u64) {
        match self.duplicates.get(&slot).and_then(|stack| stack.last()) {
            Some(&newest) => newest,
            None => (self.slab[slot as usize].size, self.slab[slot as usize].time_ns),
        }
    }

    /// Every reference of buffer `slot`, oldest first: (size, time).
    pub(super) fn references(&self, slot: Slot) -> impl Iterator<Item = (u64, u64)> + '_ {
        let buffer = &self.slab[slot as usize];
        let duplicates = self.duplicates.get(&slot).map(Vec::as_slice).unwrap_or_default();
        std::iter::once((buffer.size, buffer.time_ns)).chain(duplicates.iter().copied())
    }

    /// Takes the buffers of `process` out of the index (they stay in the
    /// slab, as its remaining buffers); returns their slots in slab order.
    pub(super) fn take_process(&mut self, process: ProcessId) -> Vec<Slot> {
        let mut taken = Vec::new();
        let slab = &self.slab;
        self.index.retain(|&mut slot| {
            let ours = slab[slot as usize].key.process == process;
            if ours {
                taken.push(slot);
            }
            !ours
        });
        // A process that ends holding most buffers leaves the index nearly
        // empty and as large as it was (160 MB at 20 M buffers), which the
        // report would then hold beside what it sorts: give that back.
        if self.index.len() < self.index.capacity() / 4 {
            self.index.shrink_to_fit(|&s| hash(&slab[s as usize].key));
        }
        // The index hands slots out in hash order; slab order is as
        // deterministic and costs no memory access to sort by (by key, each
        // comparison would miss the cache: minutes at 20 M buffers).
        in_slab_order(&mut taken, self.slab.len());
        taken
    }

    /// The running processes' live buffers, in no order.
    pub(super) fn running(&self) -> impl Iterator<Item = &LiveBuffer> + '_ {
        self.index.iter().map(|&slot| &self.slab[slot as usize])
    }

    /// The running processes' live buffers' slab entries, in no order.
    pub(super) fn running_slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.index.iter().copied()
    }
}

/// Sorts `slots`, distinct entries of a slab of `slab_len`. When they are
/// a sizeable part of it (a process that ends holding millions of
/// buffers), through a bitmap of the slab, one bit per entry: one pass
/// over `slots` and one over the bitmap, where sorting 20 M slots took a
/// second.
fn in_slab_order(slots: &mut [Slot], slab_len: usize) {
    let words = slab_len.div_ceil(64);
    if slots.len() < 1024 || slots.len() < words {
        slots.sort_unstable();
        return;
    }
    let mut bitmap = vec![0u64; words];
    for &slot in slots.iter() {
        bitmap[slot as usize / 64] |= 1 << (slot % 64);
    }
    let mut next = 0;
    for (word_index, &word) in bitmap.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            slots[next] = (word_index * 64) as Slot + bits.trailing_zeros();
            next += 1;
            bits &= bits - 1;
        }
    }
    debug_assert_eq!(next, slots.len(), "the slots are distinct");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_process_that_held_most_buffers_gives_the_index_back() {
        let mut live = LiveBuffers::default();
        for id in 0..10_000 {
            live.insert(buffer(1, id, 8));
        }
        for id in 0..100 {
            live.insert(buffer(2, id, 8));
        }
        let before = live.index.capacity();
        assert_eq!(live.take_process(ProcessId(1)).len(), 10_000);
        assert!(live.index.capacity() < before / 8, "{} of {before}", live.index.capacity());
        for id in 0..100 {
            assert!(live.find(&key(2, id)).is_some(), "still found after the shrink");
        }
        assert_eq!(live.find(&key(1, 5)), None);
    }

    #[test]
    fn slots_come_out_in_slab_order_by_sort_or_by_bitmap() {
        // Few of a large slab (sorted), most of it (the bitmap), all of it.
        for (count, slab_len) in [(500, 1 << 20), (5000, 6000), (70_000, 70_000)] {
            let mut slots: Vec<Slot> = (0..count as u32).map(|i| (i * 7919) % slab_len as u32).collect();
            slots.sort_unstable();
            slots.dedup();
            let want = slots.clone();
            // A fixed shuffle: hash order, as the index hands them out.
            slots.sort_unstable_by_key(|&s| s.wrapping_mul(2_654_435_761).rotate_left(13));
            assert_ne!(slots, want);
            in_slab_order(&mut slots, slab_len);
            assert_eq!(slots, want, "{count} of {slab_len}");
        }
    }

    fn key(process: u32, buffer_id: u64) -> BufferKey {
        BufferKey { process: ProcessId(process), pid: 7, device_id: 1, kind: 0, buffer_id }
    }

    fn buffer(process: u32, buffer_id: u64, size: u64) -> LiveBuffer {
        LiveBuffer::new(key(process, buffer_id), 0, 0x1000, size, 0, buffer_id * 10)
    }

    #[test]
    fn freed_entries_are_reused_and_found_by_key() {
        let mut live = LiveBuffers::default();
        for id in 0..100 {
            live.insert(buffer(0, id, id + 1));
        }
        for id in (0..100).step_by(2) {
            let slot = live.find(&key(0, id)).unwrap();
            assert_eq!(live.release(slot), (id + 1, true));
            assert_eq!(live.find(&key(0, id)), None);
        }
        for id in 100..150 {
            live.insert(buffer(0, id, id + 1));
        }
        assert_eq!(live.slab.len(), 100, "the 50 freed entries held the 50 new buffers");
        for id in (1..100).step_by(2).chain(100..150) {
            assert_eq!(live.get(live.find(&key(0, id)).unwrap()).size, id + 1);
        }
        assert_eq!(live.running().count(), 100);
    }

    #[test]
    fn duplicate_references_go_newest_first_and_count_in_the_entry() {
        let mut live = LiveBuffers::default();
        live.insert(buffer(0, 5, 100));
        let slot = live.find(&key(0, 5)).unwrap();
        live.add_reference(slot, 30, 60);
        live.add_reference(slot, 20, 70);
        let b = live.get(slot);
        assert_eq!((b.references(), b.counted_bytes()), (3, 150));
        assert_eq!(live.references(slot).collect::<Vec<_>>(), [(100, 50), (30, 60), (20, 70)]);
        assert_eq!(live.newest_reference(slot), (20, 70));
        assert_eq!(live.release(slot), (20, false));
        assert_eq!(live.release(slot), (30, false));
        assert_eq!(live.get(slot).counted_bytes(), 100);
        assert_eq!(live.release(slot), (100, true));
        assert!(live.duplicates.is_empty());
    }

    #[test]
    fn an_ended_process_keeps_its_entries() {
        let mut live = LiveBuffers::default();
        for id in [9, 3, 7, 1] {
            live.insert(buffer(1, id, 8));
            live.insert(buffer(2, id, 8));
        }
        let taken = live.take_process(ProcessId(1));
        let ids: Vec<u64> = taken.iter().map(|&s| live.get(s).key.buffer_id).collect();
        assert_eq!(ids, [9, 3, 7, 1], "in the order they were allocated");
        assert_eq!(live.find(&key(1, 3)), None, "out of the index");
        assert!(live.running().all(|b| b.key.process == ProcessId(2)));
        live.insert(buffer(2, 100, 8));
        assert!(taken.iter().all(|&s| live.get(s).key.process == ProcessId(1)), "entries not reused");
    }
}
