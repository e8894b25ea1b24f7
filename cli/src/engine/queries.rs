//! The state engine's answers: what the commands read once records are
//! applied.

use std::collections::{BTreeMap, VecDeque};

use super::*;

impl Engine {
    /// Ring records applied.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Latest record time, ns since the ring's creation.
    pub fn last_time_ns(&self) -> u64 {
        self.last_time_ns
    }

    /// Per (device, kind) statistics, in order.
    pub fn devices(&self) -> &BTreeMap<(u32, u8), KindStats> {
        &self.devices
    }

    /// Processes in order of first appearance; a [`ProcessId`] indexes it.
    pub fn processes(&self) -> &[ProcessStats] {
        &self.processes
    }

    /// The process `id`.
    pub fn process(&self, id: ProcessId) -> &ProcessStats {
        self.process_ref(id)
    }

    /// The process of the last record applied (a capacity record, of no
    /// process, leaves it as it was).
    pub fn last_process(&self) -> Option<ProcessId> {
        self.last_process
    }

    /// Anomaly counts.
    pub fn anomaly_counts(&self) -> AnomalyCounts {
        self.anomaly_counts
    }

    /// The first [`MAX_ANOMALY_DETAILS`] anomalies, in stream order.
    pub fn anomalies(&self) -> &[Anomaly] {
        &self.anomalies
    }

    /// The latest [`RECENT_ANOMALIES`] anomalies, in stream order.
    pub fn recent_anomalies(&self) -> &VecDeque<Anomaly> {
        &self.recent_anomalies
    }

    /// Marks, in stream order.
    pub fn marks(&self) -> &[Mark] {
        &self.marks
    }

    /// Loss totals (from the last loss block).
    pub fn losses(&self) -> &LossBlock {
        &self.losses
    }

    /// Scopes, allocation totals and paths.
    pub fn attribution(&self) -> &Attribution {
        &self.attribution
    }

    /// Buffers alive at this point (running processes' buffers plus those
    /// ended processes left), in key order: 8 bytes per buffer.
    pub fn remaining(&self) -> Vec<&LiveBuffer> {
        let mut remaining: Vec<&LiveBuffer> = self.remaining_unordered().collect();
        // In memory order first: see `LiveBuffers::take_process`.
        remaining.sort_unstable_by_key(|b| std::ptr::from_ref(*b) as usize);
        remaining.sort_unstable_by_key(|b| b.key);
        remaining
    }

    /// The [`Engine::remaining`] buffers in no order, without allocating.
    pub fn remaining_unordered(&self) -> impl Iterator<Item = &LiveBuffer> + '_ {
        let ended = self.processes.iter().flat_map(|p| &p.ended_with).map(|&slot| self.live.get(slot));
        self.live.running().chain(ended)
    }

    /// The [`Engine::remaining`] buffers in no order, each with its place
    /// in the engine's store ([`Engine::remaining_at`]): 4 bytes where a
    /// reference takes 8, for a sort of millions of them. Places are in the
    /// store's memory order, so they also break ties as addresses would.
    pub fn remaining_places(&self) -> impl Iterator<Item = (BufferPlace, &LiveBuffer)> + '_ {
        let ended = self.processes.iter().flat_map(|p| &p.ended_with).copied();
        self.live.running_slots().chain(ended).map(|slot| (BufferPlace(slot), self.live.get(slot)))
    }

    /// The buffer at `place`, from [`Engine::remaining_places`] of this
    /// engine (unchanged since).
    pub fn remaining_at(&self, place: BufferPlace) -> &LiveBuffer {
        self.live.get(place.0)
    }

    /// The buffers process `id` left when it ended (in no meaningful order).
    pub fn ended_with(&self, id: ProcessId) -> impl Iterator<Item = &LiveBuffer> + '_ {
        self.process_ref(id).ended_with.iter().map(|&slot| self.live.get(slot))
    }

    /// The live buffer `key` of a running process.
    pub fn live_buffer(&self, key: &BufferKey) -> Option<&LiveBuffer> {
        self.live.find(key).map(|slot| self.live.get(slot))
    }

    /// The reference of live buffer `key` a FREE of it would release (the
    /// newest): (size, allocation time).
    pub fn newest_reference(&self, key: &BufferKey) -> Option<(u64, u64)> {
        self.live.find(key).map(|slot| self.live.newest_reference(slot))
    }

    /// The live buffer a FREE record would release, asked before the
    /// engine applies it: the buffer and the reference released (the
    /// newest): (buffer, size, allocation time). `None` when the FREE will
    /// release nothing (an unknown buffer, or a record of a process the
    /// stream has not met).
    pub fn released_by(&self, record: &Record) -> Option<(&LiveBuffer, u64, u64)> {
        let process = self.owner_of_slot(record.process_slot)?;
        if self.process_ref(process).pid != record.pid {
            return None;
        }
        let key = Engine::key(process, record);
        let slot = self.live.find(&key)?;
        let (size, time_ns) = self.live.newest_reference(slot);
        Some((self.live.get(slot), size, time_ns))
    }

    /// Every reference of the buffers process `id` left when it ended,
    /// each buffer's oldest first: (buffer, size, allocation time).
    pub fn ended_references(&self, id: ProcessId) -> impl Iterator<Item = (&LiveBuffer, u64, u64)> + '_ {
        self.process_ref(id).ended_with.iter().flat_map(move |&slot| {
            self.live.references(slot).map(move |(size, time)| (self.live.get(slot), size, time))
        })
    }

    /// Every reference of the running processes' live buffers, in no
    /// order: (buffer, size, allocation time).
    pub fn running_references(&self) -> impl Iterator<Item = (&LiveBuffer, u64, u64)> + '_ {
        self.live.running().flat_map(move |b| {
            let slot = self.live.find(&b.key).expect("a running buffer is indexed");
            self.live.references(slot).map(move |(size, time)| (b, size, time))
        })
    }

    /// Buffers allocated before the recording started and not freed in it,
    /// per cell: (bytes, buffers), their ids unknown. Empty for a recording
    /// that began with the ring.
    pub fn unidentified_remaining(&self) -> Vec<(Cell, (u64, u64))> {
        self.opening
            .unfreed
            .iter()
            .filter(|(_, u)| u.1 > 0)
            .map(|(&cell, &(bytes, buffers))| (cell, (bytes.max(0) as u64, buffers as u64)))
            .collect()
    }

    /// Where the recording started (`None` for a version 1 file).
    pub fn start(&self) -> Option<StartInfo> {
        let start = self.opening.start?;
        let (opening_bytes, opening_buffers) = self
            .opening
            .before
            .values()
            .fold((0i64, 0i64), |(b, n), v| (b.wrapping_add(v.0.max(0)), n.wrapping_add(v.1.max(0))));
        Some(StartInfo {
            mid_run: start.first_ticket != 0 || self.opening.before.values().any(|&v| v != (0, 0)),
            first_ticket: start.first_ticket,
            backlog_records: start.backlog_end.wrapping_sub(start.first_ticket),
            opening_buffers,
            opening_bytes,
            opening_frees: self.opening.frees,
        })
    }

    /// Remaining buffers and bytes per process: its [`Engine::remaining`]
    /// buffers and its [`Engine::unidentified_remaining`] ones.
    pub fn remaining_by_process(&self) -> BTreeMap<ProcessId, (u64, u64)> {
        let mut totals: BTreeMap<ProcessId, (u64, u64)> = BTreeMap::new();
        for b in self.remaining_unordered() {
            let entry = totals.entry(b.key.process).or_default();
            entry.0 += b.references() as u64;
            entry.1 = entry.1.wrapping_add(b.counted_bytes());
        }
        for ((process, _, _), (bytes, buffers)) in self.unidentified_remaining() {
            let entry = totals.entry(process).or_default();
            entry.0 += buffers;
            entry.1 = entry.1.wrapping_add(bytes);
        }
        totals
    }

    /// The cells whose remaining buffers and anomalies may be artefacts of
    /// missing records, with the reason.
    pub fn uncertain_cells(&self) -> BTreeMap<Cell, Uncertainty> {
        let mut cells: BTreeMap<Cell, Uncertainty> = BTreeMap::new();
        let known_cells = self
            .writer_view
            .keys()
            .chain(self.opening.at_attach.keys())
            .chain(self.writer_counters.keys())
            .copied();
        let losses = &self.losses;
        for cell in known_cells {
            let process = self.process_ref(cell.0);
            let reason = if process.dropped > 0 {
                Uncertainty::Dropped
            } else if losses.lost_writer_died > 0 && process.state == ProcState::Died {
                Uncertainty::WriterDied
            } else if losses.lost_reader_died > 0 {
                Uncertainty::ReaderDied
            } else {
                continue;
            };
            cells.insert(cell, reason);
        }
        for m in self.counter_mismatches() {
            cells.entry((m.process, m.device_id, m.kind)).or_insert(Uncertainty::CountersDisagree);
        }
        cells
    }

    /// Where the writers' live counters (from the end of a recording)
    /// disagree with what the records say they should read, for processes
    /// whose start this stream holds: records dropped, lost, or never
    /// written. Empty when they agree or when nothing can be compared.
    pub fn counter_mismatches(&self) -> Vec<CounterMismatch> {
        // What the writers' counters should read: the usage before the
        // stream plus what the stream's records did.
        let mut reader: BTreeMap<Cell, (i128, i64)> =
            self.writer_view.iter().map(|(&k, &v)| (k, v)).collect();
        for (&cell, &(bytes, buffers)) in &self.opening.before {
            let entry = reader.entry(cell).or_default();
            *entry = (entry.0 + i128::from(bytes), entry.1.wrapping_add(buffers));
        }
        let (reader, writers) = (&reader, &self.writer_counters);
        let comparable = |id: ProcessId| {
            let p = self.process_ref(id);
            (p.seen_start || p.in_start_table) && p.in_final_table && !p.counters_incomplete
        };
        let nonzero = |k: &&(ProcessId, u32, u8)| reader.get(*k).is_some_and(|&v| v != (0, 0));
        let mut keys: Vec<_> = reader.keys().filter(nonzero).chain(writers.keys()).copied().collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
            .filter(|k| comparable(k.0))
            .filter_map(|k| {
                let r = reader.get(&k).copied().unwrap_or_default();
                let (w_bytes, w_buffers) = writers.get(&k).copied().unwrap_or_default();
                // The writers' 64 bits stand for every value congruent to
                // them modulo 2^64: compare there, show the one nearest ours.
                let w = (r.0 + i128::from(w_bytes.wrapping_sub(r.0 as i64)), w_buffers);
                (r != w).then_some(CounterMismatch {
                    process: k.0,
                    pid: self.process_ref(k.0).pid,
                    device_id: k.1,
                    kind: k.2,
                    reader: r,
                    writers: w,
                })
            })
            .collect()
    }

    /// Whether the stream ended with the process table (a finished
    /// recording), so the counter cross-check ran.
    pub fn cross_checked(&self) -> bool {
        self.processes.iter().any(|p| p.in_final_table)
    }
}
