//! The state engine: turns a stream of records into live buffers, device
//! usage, per-process state, anomalies and marks. Every command that
//! consumes a ring or reads a record file goes through it.
//!
//! Rules (from the reader issue):
//! * A process is its process-table entry and that entry's generation
//!   (each new owner of an entry is a new process), never its pid alone:
//!   pids repeat across PID namespaces and are reused. See
//!   [`Engine::owner`] for how the stream says which owner a record is of.
//! * A buffer is keyed by (process, device, kind, buffer_id), never by
//!   address.
//! * ALLOC of a live key is a duplicate: counted, and kept as one more
//!   reference that a later FREE releases.
//! * FREE of an absent key is an unknown free: counted as an anomaly only.
//! * FREE with a nonzero size that differs from its ALLOC is a size
//!   mismatch; the ALLOC's size is what leaves usage.
//! * ALIAS buffers count in buffer numbers, not in bytes.
//! * A process that ends, whether it exits or dies, takes its live buffers
//!   out of device usage; they are listed as its remaining buffers.
//! * Usage is never negative: a free never takes away bytes the stream did
//!   not add.
//!
//! A recording that starts mid-run (version 2 files, live sessions) opens
//! with the writers' live counters: what each process held before its
//! first record here. Those buffers count in usage from the start, though
//! their ids are unknown; a free of an unknown buffer in such a cell
//! releases one of them instead of being an anomaly. The records the ring
//! already held when the reader attached (the backlog) are in those
//! counters already, so the opening is settled only once they are read:
//! opening = counters at attach - what the backlog did.
//!
//! Where records are missing (dropped, lost), the cells (process, device,
//! kind) they may belong to are *uncertain*: their remaining buffers and
//! anomalies may be artefacts of the loss, and reports say so.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use memtrack::{Event, Record};

pub use live::LiveBuffer;
pub use scopes::{Attribution, ScopeKey, ScopeTotals};
pub use stats::*;

use live::LiveBuffers;

use crate::recording::{Block, DiedBlock, IdentityBlock, LossBlock, ProcessBlock, StartBlock, TimeBase};

/// The buffer map's hasher. Runtimes hand out buffer ids sequentially
/// (tt_metal's `unique_id()`), so the low bits of the hash are the key's
/// own bits, combined field by field: consecutive buffers land in
/// neighbouring buckets and a million live buffers stay cache-friendly
/// (a scrambling hash made every insert and remove a cache miss). The top
/// seven bits, which the table uses to filter candidates, are mixed.
#[derive(Default)]
struct SequentialKeyHasher(u64);

impl Hasher for SequentialKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(n as u64);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(23) ^ n;
    }

    fn finish(&self) -> u64 {
        const TOP_SEVEN: u64 = 0xfe00_0000_0000_0000;
        (self.0 & !TOP_SEVEN) | (self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) & TOP_SEVEN)
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<SequentialKeyHasher>>;

/// What a recording that started mid-run knows of the time before it.
#[derive(Default)]
struct Opening {
    /// The start block; `None` for a stream that began with the ring.
    start: Option<StartBlock>,
    /// The writers' live counters when the reader attached.
    at_attach: BTreeMap<Cell, (i64, i64)>,
    /// Whether the backlog has been read and `before` computed.
    settled: bool,
    /// Usage before the first record of the stream: `at_attach` less the
    /// backlog's records, as the writers count them.
    before: BTreeMap<Cell, (i64, i64)>,
    /// Of `before`, the buffers not yet freed: (bytes, buffers), counted in
    /// usage while their process runs.
    unfreed: BTreeMap<Cell, (i64, i64)>,
    /// Unknown frees read in the backlog, held until `before` is known.
    held_frees: Vec<(BufferKey, u64, u64)>,
    /// Frees that released one of `before`'s buffers.
    frees: u64,
    /// Processes the table said had ended when the reader attached, and
    /// how: they end once the backlog is read, after their own records in
    /// it (which are from before their end, so the buffers they leave are
    /// their leaks, never device memory in use).
    ended_at_attach: Vec<(ProcessId, ProcState)>,
}

/// The state engine.
pub struct Engine {
    time: TimeBase,
    live: LiveBuffers,
    devices: BTreeMap<(u32, u8), KindStats>,
    processes: Vec<ProcessStats>,
    /// The process that owns each process-table entry at this point of the
    /// stream.
    /// Indexed by entry (a vector: it is looked up for every record).
    slot_owner: Vec<Option<ProcessId>>,
    /// The table as a reader attaching to a ring in use found it, per
    /// entry: which owner the stream's first records of that entry are of.
    initial: HashMap<u16, IdentityBlock>,
    /// What the reader learnt of each (entry, generation) from the table:
    /// pid, start time, pid in the reader's namespace.
    identities: HashMap<(u16, u32), IdentityBlock>,
    anomaly_counts: AnomalyCounts,
    anomalies: Vec<Anomaly>,
    recent_anomalies: VecDeque<Anomaly>,
    marks: Vec<Mark>,
    records: u64,
    last_time_ns: u64,
    losses: LossBlock,
    opening: Opening,
    /// The process of the last record applied.
    last_process: Option<ProcessId>,
    writer_counters: BTreeMap<(ProcessId, u32, u8), (i64, i64)>,
    /// What the writers' live counters should read, record by record:
    /// every ALLOC adds and every FREE subtracts its own size and one
    /// buffer, anomalies included, exactly as the hooks count. A difference
    /// at the end means records the stream does not hold.
    /// Bytes exact (a sum of `u64` sizes, which the writers wrap to 64
    /// bits), buffers.
    writer_view: FastMap<(ProcessId, u32, u8), (i128, i64)>,
    attribution: Attribution,
}

impl Engine {
    /// An empty engine whose timestamps go through `time`.
    pub fn new(time: TimeBase) -> Engine {
        Engine {
            time,
            live: LiveBuffers::default(),
            devices: BTreeMap::new(),
            processes: Vec::new(),
            slot_owner: Vec::new(),
            initial: HashMap::new(),
            identities: HashMap::new(),
            anomaly_counts: AnomalyCounts::default(),
            anomalies: Vec::new(),
            recent_anomalies: VecDeque::with_capacity(RECENT_ANOMALIES),
            marks: Vec::new(),
            records: 0,
            last_time_ns: 0,
            losses: LossBlock::default(),
            opening: Opening::default(),
            last_process: None,
            writer_counters: BTreeMap::new(),
            writer_view: FastMap::default(),
            attribution: Attribution::default(),
        }
    }

    /// Applies one block of a record file (or of a live stream).
    pub fn apply_block(&mut self, block: &Block) {
        match block {
            Block::Record(record) => self.apply(record),
            Block::Identity(identity) => self.identity(identity),
            Block::Process(p) if p.phase == ProcessBlock::AT_START => self.process_at_start(p),
            Block::Opening(c) => {
                let id = self.table_process(c.process_slot, c.generation, c.pid);
                let cell = self.opening.at_attach.entry((id, c.device_id, c.kind)).or_default();
                *cell = (cell.0.wrapping_add(c.live_bytes), cell.1.wrapping_add(c.live_buffers));
            }
            Block::Start(start) => {
                // After the opening blocks: with nothing waiting in the ring,
                // they are the usage before the stream.
                self.opening.start = Some(*start);
                if !start.has_backlog() {
                    self.settle_opening();
                }
            }
            _ => {
                // Blocks written after the stream: the backlog, if any, is read.
                self.settle_opening();
                match block {
                    Block::Died(died) => self.died_block(died),
                    Block::Process(p) => self.process_table_entry(p),
                    Block::Loss(loss) => self.losses = *loss,
                    Block::Counter(c) => {
                        let id = self.table_process(c.process_slot, c.generation, c.pid);
                        self.writer_counters
                            .insert((id, c.device_id, c.kind), (c.live_bytes, c.live_buffers));
                    }
                    _ => {}
                }
            }
        }
    }

    /// Applies one ring record.
    pub fn apply(&mut self, record: &Record) {
        let backlog_end = self.opening.start.map(|s| s.backlog_end);
        if !self.opening.settled && backlog_end.is_none_or(|end| record.ticket >= end) {
            self.settle_opening();
        }
        self.apply_record(record);
        if !self.opening.settled && backlog_end == Some(record.ticket.wrapping_add(1)) {
            // The backlog's last record: a live session may wait long for
            // the next one.
            self.settle_opening();
        }
    }

    /// The live stream's reader has taken every record of the backlog,
    /// lost ones included: the opening settles now even if the backlog's
    /// last record never arrives (see `Session::note_backlog_read`).
    pub fn backlog_read(&mut self) {
        self.settle_opening();
    }

    /// Follows a record as far as who wrote it: resolves its owner as
    /// [`Engine::apply`] would (a new owner of its table entry, the
    /// previous one ended, at the record's time, which is the stream's
    /// latest as after `apply`), counts nothing of it, and returns that owner
    /// (`None` for a block that is no process's record). For a record an
    /// export's filter left out (`Filter::blocks`): it may be the one sign
    /// that its entry changed owner, and without it every later owner of
    /// the entry would get another key than the unfiltered stream gives it.
    pub fn follow_owner(&mut self, block: &Block) -> Option<ProcessId> {
        let Block::Record(record) = block else { return None };
        if matches!(record.event(), None | Some(Event::Capacity)) {
            return None;
        }
        let backlog_end = self.opening.start.map(|s| s.backlog_end);
        if !self.opening.settled && backlog_end.is_none_or(|end| record.ticket >= end) {
            self.settle_opening();
        }
        let time_ns = self.time.ns(record.timestamp);
        self.last_time_ns = self.last_time_ns.max(time_ns);
        let owner = self.owner(record, time_ns);
        if !self.opening.settled && backlog_end == Some(record.ticket.wrapping_add(1)) {
            self.settle_opening();
        }
        Some(owner)
    }

    fn apply_record(&mut self, record: &Record) {
        self.records += 1;
        let time_ns = self.time.ns(record.timestamp);
        self.last_time_ns = self.last_time_ns.max(time_ns);
        let event = match record.event() {
            // The record file parser refuses unknown events; a live ring
            // may carry one from a newer writer: ignore it.
            None => return,
            // Capacities belong to devices, not to processes.
            Some(Event::Capacity) => {
                self.devices.entry((record.device_id, record.kind)).or_default().capacity = Some(record.size);
                return;
            }
            Some(event) => event,
        };
        let process = self.owner(record, time_ns);
        self.last_process = Some(process);
        match event {
            Event::Alloc => self.alloc(process, record, time_ns),
            Event::Free => self.free(process, record, time_ns),
            Event::Mark => self.mark(process, record, time_ns),
            Event::ProcessStart => {
                let name = String::from_utf8_lossy(record.label()).into_owned();
                let p = self.process_mut(process);
                p.name = name;
                p.seen_start = true;
            }
            Event::ProcessExit => self.process_ended(process, ProcState::Exited, time_ns),
            Event::Scope => self.attribution.define(process, record),
            Event::Text => self.attribution.text(process, record, &mut self.marks),
            Event::Capacity => {} // handled above
        }
    }

    /// The process a record is of. Records carry the writer's table entry
    /// and pid, not the entry's generation, so the stream tells owners
    /// apart: within one entry, every record of an owner comes after its
    /// start record and before the next owner's (the next owner can take
    /// the entry only once the kernel has released the previous one's
    /// lock, at its exit), so
    /// * a PROCESS_START is a new owner, the next generation;
    /// * a record with another pid than the entry's owner is a new owner
    ///   whose start record the stream lacks (dropped, or consumed before
    ///   this reader attached);
    /// * the previous owner, if it never said it exited, died.
    ///
    /// The first owner of an entry in the stream is generation 1, as in a
    /// fresh table, unless the reader attached to a ring in use: then the
    /// table it found ([`IdentityBlock::initial`]) says which generation
    /// owned the entry, and records of another pid are of an earlier owner
    /// if stamped before that owner attached, else of a later one
    /// ([`IdentityBlock::is_before_owner`]).
    /// A start record a full ring dropped, of an owner with the pid of the
    /// previous one, is the one case that merges two owners.
    fn owner(&mut self, record: &Record, time_ns: u64) -> ProcessId {
        let (slot, pid) = (record.process_slot, record.pid);
        let start = record.event == Event::ProcessStart as u8;
        if let Some(id) = self.owner_of_slot(slot) {
            let current = self.process_ref(id);
            if !start && current.pid == pid {
                return id;
            }
            let generation = current.generation.wrapping_add(1);
            self.process_died(id, time_ns); // a no-op unless it was running
            return self.new_process(slot, generation, pid);
        }
        let generation = match self.initial.get(&slot) {
            None => 1,
            Some(first) if first.pid == pid => first.generation,
            Some(first) if first.is_before_owner(record) => first.generation.wrapping_sub(1),
            Some(first) => first.generation.wrapping_add(1),
        };
        self.new_process(slot, generation, pid)
    }

    fn new_process(&mut self, slot: u16, generation: u32, pid: u32) -> ProcessId {
        // The start table's process of this entry, at its first record.
        let awaited = self
            .processes
            .iter()
            .position(|p| p.awaiting_records && (p.slot, p.generation, p.pid) == (slot, generation, pid));
        if let Some(index) = awaited {
            let id = ProcessId(index as u32);
            self.process_mut(id).awaiting_records = false;
            self.set_owner_of_slot(slot, Some(id));
            return id;
        }
        let id = ProcessId(self.processes.len() as u32);
        let known = self.identities.get(&(slot, generation)).filter(|i| i.pid == pid);
        let variant = self.processes.iter().filter(|p| (p.slot, p.generation) == (slot, generation)).count();
        self.processes.push(ProcessStats {
            slot,
            generation,
            variant: variant as u32,
            pid,
            host_pid: known.and_then(|i| i.host_pid()),
            start_time: known.map(|i| i.start_time),
            name: known.map(|i| i.name()).unwrap_or_default(),
            state: ProcState::Running,
            seen_start: false,
            allocs: 0,
            frees: 0,
            dropped: 0,
            dropped_at_start: 0,
            in_start_table: false,
            awaiting_records: false,
            in_final_table: false,
            counters_incomplete: false,
            ended_with: Vec::new(),
            end_time_ns: None,
        });
        self.set_owner_of_slot(slot, Some(id));
        id
    }

    fn owner_of_slot(&self, slot: u16) -> Option<ProcessId> {
        self.slot_owner.get(slot as usize).copied().flatten()
    }

    fn set_owner_of_slot(&mut self, slot: u16, owner: Option<ProcessId>) {
        let index = slot as usize;
        if index >= self.slot_owner.len() {
            self.slot_owner.resize(index + 1, None);
        }
        self.slot_owner[index] = owner;
    }

    fn process_ref(&self, id: ProcessId) -> &ProcessStats {
        &self.processes[id.0 as usize]
    }

    fn process_mut(&mut self, id: ProcessId) -> &mut ProcessStats {
        &mut self.processes[id.0 as usize]
    }

    /// The process the table (or the reader, watching it) names by entry,
    /// generation and pid: the one of the stream with that entry and
    /// generation; else (a file from before generations were recorded, 0,
    /// or a generation the stream guessed wrong) the entry's latest owner
    /// if it has that pid; else a process the stream holds no record of.
    fn table_process(&mut self, slot: u16, generation: u32, pid: u32) -> ProcessId {
        let exact =
            self.processes.iter().rposition(|p| p.slot == slot && p.generation == generation && p.pid == pid);
        if let Some(index) = exact {
            return ProcessId(index as u32);
        }
        match self.owner_of_slot(slot) {
            Some(id) if self.process_ref(id).pid == pid => id,
            previous => {
                let id = self.new_process(slot, generation, pid);
                // Not the entry's owner in the stream's order: keep the
                // owner its records name.
                self.set_owner_of_slot(slot, previous);
                id
            }
        }
    }

    fn identity(&mut self, identity: &IdentityBlock) {
        let key = (identity.process_slot, identity.generation);
        if identity.initial() {
            self.initial.insert(identity.process_slot, *identity);
        }
        self.identities.insert(key, *identity);
        for p in self
            .processes
            .iter_mut()
            .filter(|p| (p.slot, p.generation, p.pid) == (key.0, key.1, identity.pid))
        {
            p.start_time = Some(identity.start_time);
            p.host_pid = identity.host_pid().or(p.host_pid);
            if p.name.is_empty() {
                p.name = identity.name();
            }
        }
    }

    fn key(process: ProcessId, record: &Record) -> BufferKey {
        BufferKey {
            process,
            pid: record.pid,
            device_id: record.device_id,
            kind: record.kind,
            buffer_id: record.buffer_id,
        }
    }

    /// Follows a buffer record as the writer's counter cell did.
    fn count_as_writers_do(&mut self, process: ProcessId, record: &Record, sign: i64) {
        let bytes = if record.is_alias() { 0 } else { i128::from(record.size) };
        let cell = self.writer_view.entry((process, record.device_id, record.kind)).or_default();
        cell.0 += i128::from(sign) * bytes;
        cell.1 += sign;
    }

    fn alloc(&mut self, process: ProcessId, record: &Record, time_ns: u64) {
        self.count_as_writers_do(process, record, 1);
        let key = Engine::key(process, record);
        let alias = record.is_alias();
        self.process_mut(process).allocs += 1;
        let mut scope = record.scope();
        let duplicate = match self.live.find(&key) {
            Some(slot) => {
                // Its bytes leave with the buffer's scope: count them there.
                scope = self.live.get(slot).scope;
                self.live.add_reference(slot, record.size, time_ns);
                true
            }
            None => {
                let mut buffer = LiveBuffer::new(
                    key,
                    record.parent_id,
                    record.address,
                    record.size,
                    record.flags,
                    time_ns,
                );
                buffer.scope = scope;
                self.live.insert(buffer);
                false
            }
        };
        if duplicate {
            self.anomaly(AnomalyKind::DuplicateAlloc, key, time_ns, record.size, 0);
        }
        let stats = self.devices.entry((record.device_id, record.kind)).or_default();
        stats.allocs += 1;
        stats.live_buffers += 1;
        let mut peaked = false;
        if !alias {
            stats.live_bytes = stats.live_bytes.wrapping_add(record.size);
            peaked = stats.note_peak(time_ns);
        }
        let bytes = if alias { 0 } else { record.size };
        self.attribution.alloc((process, scope), (record.device_id, record.kind), bytes, peaked);
    }

    fn free(&mut self, process: ProcessId, record: &Record, time_ns: u64) {
        self.count_as_writers_do(process, record, -1);
        let key = Engine::key(process, record);
        let Some(slot) = self.live.find(&key) else {
            self.unknown_free(key, time_ns, record.size);
            return;
        };
        let (alias, scope) = (self.live.get(slot).is_alias(), (process, self.live.get(slot).scope));
        // The newest reference goes first.
        let (released, _) = self.live.release(slot);
        if record.size != 0 && record.size != released {
            self.anomaly(AnomalyKind::SizeMismatch, key, time_ns, record.size, released);
        }
        self.process_mut(process).frees += 1;
        self.attribution.free(scope);
        if !alias {
            self.attribution.release(scope, (record.device_id, record.kind), released);
        }
        let stats = self.devices.entry((record.device_id, record.kind)).or_default();
        stats.frees += 1;
        stats.live_buffers -= 1;
        if !alias {
            stats.live_bytes = stats.live_bytes.wrapping_sub(released);
        }
    }

    /// A free of a buffer the stream never allocated: one allocated before
    /// the recording, if the opening says the cell had such buffers left,
    /// else an anomaly.
    fn unknown_free(&mut self, key: BufferKey, time_ns: u64, size: u64) {
        let cell = (key.process, key.device_id, key.kind);
        if !self.opening.settled {
            // In the backlog: whether it was one of the opening's buffers
            // is known once the backlog is read.
            self.opening.held_frees.push((key, time_ns, size));
        } else if self.opening.unfreed.get(&cell).is_some_and(|u| u.1 > 0) {
            self.release_opening_buffer(cell, size);
        } else {
            self.anomaly(AnomalyKind::UnknownFree, key, time_ns, size, 0);
        }
    }

    /// Computes the usage before the stream, once the backlog (the records
    /// the ring held when the reader attached) is read, and puts it into
    /// device usage. Runs once: at the backlog's last record, at the first
    /// record after it, or at the first block after the stream.
    fn settle_opening(&mut self) {
        if self.opening.settled {
            return;
        }
        self.opening.settled = true;
        // First: the processes that had ended hold none of the usage
        // before the stream (`set_unfreed` counts only running ones).
        let time_ns = self.last_time_ns;
        for (id, state) in std::mem::take(&mut self.opening.ended_at_attach) {
            self.process_ended(id, state, time_ns);
        }
        let at_attach = std::mem::take(&mut self.opening.at_attach);
        for (&cell, &(bytes, buffers)) in &at_attach {
            let backlog = self.writer_view.get(&cell).copied().unwrap_or_default();
            // `as i64`: modulo 2^64, as the writers counted the backlog.
            let before = (bytes.wrapping_sub(backlog.0 as i64), buffers.wrapping_sub(backlog.1));
            self.opening.before.insert(cell, before);
            self.set_unfreed(cell, before);
        }
        self.opening.at_attach = at_attach;
        for (key, time_ns, size) in std::mem::take(&mut self.opening.held_frees) {
            self.unknown_free(key, time_ns, size);
        }
    }

    fn release_opening_buffer(&mut self, cell: Cell, size: u64) {
        let (bytes, buffers) = self.opening.unfreed.get(&cell).copied().unwrap_or_default();
        self.opening.frees += 1;
        self.process_mut(cell.0).frees += 1;
        self.devices.entry((cell.1, cell.2)).or_default().frees += 1;
        // A FREE may carry size 0 (legal: only a nonzero size is compared):
        // it then takes the average share; the last one takes what is left.
        let freed = match (buffers, size) {
            (..=1, _) => bytes,
            (_, 0) => bytes / buffers,
            (_, size) => size as i64,
        };
        self.set_unfreed(cell, (bytes.wrapping_sub(freed).max(0), buffers - 1));
    }

    /// Sets the opening buffers of `cell` not yet freed, moving device
    /// usage by the change while the cell's process runs (a negative count,
    /// from records lost before the recording, counts as none).
    fn set_unfreed(&mut self, cell: Cell, unfreed: (i64, i64)) {
        let old = self.opening.unfreed.insert(cell, unfreed).unwrap_or_default();
        if self.process_ref(cell.0).state != ProcState::Running {
            return;
        }
        let time_ns = self.last_time_ns;
        let held = |v: i64| v.max(0) as u64;
        if held(unfreed.0) < held(old.0) {
            self.attribution.before_fall((cell.1, cell.2));
        }
        let stats = self.devices.entry((cell.1, cell.2)).or_default();
        stats.live_bytes = stats.live_bytes.wrapping_sub(held(old.0)).wrapping_add(held(unfreed.0));
        stats.live_buffers = stats.live_buffers.wrapping_sub(held(old.1)).wrapping_add(held(unfreed.1));
        if stats.note_peak(time_ns) {
            self.attribution.peaked((cell.1, cell.2));
        }
    }

    fn mark(&mut self, process: ProcessId, record: &Record, time_ns: u64) {
        let usage = self
            .devices
            .iter()
            .filter(|(_, s)| s.live_bytes != 0 || s.live_buffers != 0)
            .map(|(&k, s)| (k, (s.live_bytes, s.live_buffers)))
            .collect();
        self.attribution.mark(process, record, self.marks.len());
        self.marks.push(Mark {
            label: String::from_utf8_lossy(record.label()).into_owned(),
            process,
            pid: record.pid,
            time_ns,
            usage,
        });
    }

    /// Process `id` ended without shutting down at `time_ns`: see
    /// [`Engine::process_ended`].
    pub fn process_died(&mut self, id: ProcessId, time_ns: u64) {
        self.process_ended(id, ProcState::Died, time_ns);
    }

    /// Process `id` ended, exiting or dying: its device memory went with
    /// it, so its live buffers leave device usage and become its remaining
    /// buffers (its leaks), and so do its opening buffers not yet freed. A
    /// no-op for a process that is no longer running.
    fn process_ended(&mut self, id: ProcessId, state: ProcState, time_ns: u64) {
        if self.process_ref(id).state != ProcState::Running {
            return;
        }
        let cells: Vec<(Cell, (i64, i64))> =
            self.opening.unfreed.iter().filter(|(c, _)| c.0 == id).map(|(&c, &v)| (c, v)).collect();
        for (cell, unfreed) in cells {
            // Out of usage while the process still counts as running.
            self.set_unfreed(cell, (0, 0));
            self.opening.unfreed.insert(cell, unfreed);
        }
        let process = self.process_mut(id);
        process.state = state;
        process.end_time_ns = Some(time_ns);
        let orphans = self.live.take_process(id);
        for &slot in &orphans {
            let buffer = self.live.get(slot);
            let (cell, bytes, references) =
                ((buffer.key.device_id, buffer.key.kind), buffer.counted_bytes(), buffer.references() as u64);
            self.attribution.release((id, buffer.scope), cell, bytes);
            let stats = self.devices.entry(cell).or_default();
            stats.live_buffers -= references;
            stats.live_bytes = stats.live_bytes.wrapping_sub(bytes);
        }
        self.process_mut(id).ended_with = orphans;
    }

    /// A process in the table when the recording started: it began before
    /// the stream, and its first records there are its own (see
    /// [`Engine::new_process`]).
    fn process_at_start(&mut self, entry: &ProcessBlock) {
        let name = entry.name();
        let id = self.table_process(entry.process_slot, entry.generation, entry.pid);
        let process = self.process_mut(id);
        process.in_start_table = true;
        process.awaiting_records = true;
        process.counters_incomplete |= entry.counters_incomplete != 0;
        process.dropped_at_start = entry.dropped;
        process.start_time.get_or_insert(entry.start_time);
        if process.name.is_empty() {
            process.name = name;
        }
        let state = match entry.state {
            1 => ProcState::Exited,
            2 => ProcState::Died,
            _ => return,
        };
        if self.opening.settled {
            self.process_ended(id, state, self.last_time_ns);
        } else {
            self.opening.ended_at_attach.push((id, state));
        }
    }

    fn died_block(&mut self, died: &DiedBlock) {
        let id = self.table_process(died.process_slot, died.generation, died.pid);
        self.process_died(id, self.time.ns(died.timestamp));
    }

    fn process_table_entry(&mut self, entry: &ProcessBlock) {
        let name = entry.name();
        let id = self.table_process(entry.process_slot, entry.generation, entry.pid);
        // Drops before the recording attached fall into its stream only if
        // the ring held records nobody had taken (see `LossBlock`).
        let backlog = self.opening.start.is_some_and(|s| s.has_backlog());
        let process = self.process_mut(id);
        let before = if backlog { 0 } else { process.dropped_at_start };
        process.dropped = entry.dropped.saturating_sub(before);
        process.in_final_table = true;
        process.counters_incomplete |= entry.counters_incomplete != 0;
        process.start_time.get_or_insert(entry.start_time);
        if process.name.is_empty() {
            process.name = name;
        }
        let end = self.last_time_ns;
        match entry.state {
            1 => self.process_ended(id, ProcState::Exited, end),
            2 => self.process_ended(id, ProcState::Died, end),
            _ => {}
        }
    }

    fn anomaly(&mut self, kind: AnomalyKind, key: BufferKey, time_ns: u64, size: u64, expected_size: u64) {
        let counts = &mut self.anomaly_counts;
        match kind {
            AnomalyKind::UnknownFree => counts.unknown_frees += 1,
            AnomalyKind::DuplicateAlloc => counts.duplicate_allocs += 1,
            AnomalyKind::SizeMismatch => counts.size_mismatches += 1,
        }
        let anomaly = Anomaly { kind, key, time_ns, size, expected_size };
        if self.anomalies.len() < MAX_ANOMALY_DETAILS {
            self.anomalies.push(anomaly);
        }
        if self.recent_anomalies.len() == RECENT_ANOMALIES {
            self.recent_anomalies.pop_front();
        }
        self.recent_anomalies.push_back(anomaly);
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;

mod live;
mod queries;
mod scopes;
mod stats;
