//! The state engine: turns a stream of records into live buffers, device
//! usage, per-process state, anomalies and marks. Every command that
//! consumes a ring or reads a record file goes through it.
//!
//! Rules (from the reader issue):
//! * A buffer is keyed by (pid, device, kind, buffer_id), never by address.
//! * ALLOC of a live key is a duplicate: counted, and kept as one more
//!   reference that a later FREE releases.
//! * FREE of an absent key is an unknown free: counted as an anomaly only.
//! * FREE with a nonzero size that differs from its ALLOC is a size
//!   mismatch; the ALLOC's size is what leaves usage.
//! * ALIAS buffers count in buffer numbers, not in bytes.
//! * A process that dies takes its live buffers out of device usage; they
//!   are listed as its remaining buffers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use memtrack::format::FLAG_ALIAS;
use memtrack::{Event, Record};

use crate::recording::{Block, CounterBlock, LossBlock, ProcessBlock, TimeBase};

/// Details kept for at most this many anomalies (counts stay exact).
pub const MAX_ANOMALY_DETAILS: usize = 1000;

/// The latest this many anomalies are kept too, for live views.
pub const RECENT_ANOMALIES: usize = 16;

/// Identity of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferKey {
    /// Writer process.
    pub pid: u32,
    /// Device id.
    pub device_id: u32,
    /// Kind code.
    pub kind: u8,
    /// The runtime's buffer id.
    pub buffer_id: u64,
}

/// A buffer alive at some point of the stream.
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
    /// `FLAG_*` bits.
    pub flags: u8,
    /// When it was allocated, ns since the ring's creation.
    pub time_ns: u64,
    /// Sizes of further references from duplicate ALLOCs, newest last
    /// (boxed: rare, and the map holds a million of these; 8 bytes here
    /// instead of a `Vec`'s 24).
    #[allow(clippy::box_collection)]
    duplicates: Option<Box<Vec<u64>>>,
}

impl LiveBuffer {
    fn is_alias(&self) -> bool {
        self.flags & FLAG_ALIAS != 0
    }

    /// Bytes this buffer counts in usage (0 for ALIAS).
    pub fn counted_bytes(&self) -> u64 {
        if self.is_alias() {
            0
        } else {
            // Wrapping, as every byte sum here: sizes come from files and
            // rings anyone may have written garbage into.
            self.duplicates.iter().flat_map(|d| d.iter()).fold(self.size, |sum, size| sum.wrapping_add(*size))
        }
    }

    /// References held: 1 + duplicate ALLOCs not yet freed.
    pub fn references(&self) -> usize {
        1 + self.duplicates.as_ref().map_or(0, |d| d.len())
    }
}

/// Usage and totals of one (device, kind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Live bytes, ALIAS excluded.
    pub live_bytes: u64,
    /// Live buffer references, ALIAS included.
    pub live_buffers: u64,
    /// Highest `live_bytes` seen.
    pub peak_bytes: u64,
    /// When the peak was first reached.
    pub peak_time_ns: u64,
    /// ALLOC records, duplicates included.
    pub allocs: u64,
    /// FREE records that released a live buffer.
    pub frees: u64,
    /// Total memory, if `memtrack_set_capacity` said.
    pub capacity: Option<u64>,
}

/// `running`, `exited` or `died`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    /// Attached, no exit seen.
    Running,
    /// Shut down cleanly.
    Exited,
    /// Ended without shutting down.
    Died,
}

impl ProcState {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            ProcState::Running => "running",
            ProcState::Exited => "exited",
            ProcState::Died => "died",
        }
    }
}

/// What the engine knows of one writer process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessStats {
    /// Process id.
    pub pid: u32,
    /// Name (comm).
    pub name: String,
    /// State.
    pub state: ProcState,
    /// Whether its start record was seen (so its counts are complete).
    pub seen_start: bool,
    /// ALLOC records.
    pub allocs: u64,
    /// FREE records that released a live buffer.
    pub frees: u64,
    /// Records it dropped (from the process table, at the end).
    pub dropped: u64,
    /// Whether the process table at the end of the recording lists it
    /// (so the writers' live counters there are its own).
    pub in_final_table: bool,
    /// Buffers it left when it died, in key order.
    pub died_with: Vec<LiveBuffer>,
    /// When it ended, ns since the ring's creation.
    pub end_time_ns: Option<u64>,
}

/// Which rule a record broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnomalyKind {
    /// FREE of a buffer that is not live.
    UnknownFree,
    /// ALLOC of a buffer that is already live.
    DuplicateAlloc,
    /// FREE whose size differs from the ALLOC's.
    SizeMismatch,
}

impl AnomalyKind {
    /// The name used in reports (and as a JSON key, plural).
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::UnknownFree => "unknown_free",
            AnomalyKind::DuplicateAlloc => "duplicate_alloc",
            AnomalyKind::SizeMismatch => "size_mismatch",
        }
    }
}

/// One anomaly, with the record that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anomaly {
    /// The rule.
    pub kind: AnomalyKind,
    /// The buffer.
    pub key: BufferKey,
    /// When, ns since the ring's creation.
    pub time_ns: u64,
    /// The record's size.
    pub size: u64,
    /// The size the ALLOC had (size mismatches), else 0.
    pub expected_size: u64,
}

/// Anomaly counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnomalyCounts {
    /// FREEs of buffers that were not live.
    pub unknown_frees: u64,
    /// ALLOCs of buffers that were live.
    pub duplicate_allocs: u64,
    /// FREEs whose size differed from the ALLOC's.
    pub size_mismatches: u64,
}

/// A phase marker with the usage at that moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The label.
    pub label: String,
    /// Who marked.
    pub pid: u32,
    /// When, ns since the ring's creation.
    pub time_ns: u64,
    /// Nonzero usage per (device, kind): (live bytes, live buffers).
    pub usage: Vec<((u32, u8), (u64, u64))>,
}

/// Writers' and reader's view of one (pid, device, kind) that disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterMismatch {
    /// Process id.
    pub pid: u32,
    /// Device id.
    pub device_id: u32,
    /// Kind code.
    pub kind: u8,
    /// (bytes, buffers) from the records.
    pub reader: (i64, i64),
    /// (bytes, buffers) from the writers' live counters.
    pub writers: (i64, i64),
}

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

/// The state engine.
pub struct Engine {
    time: TimeBase,
    live: FastMap<BufferKey, LiveBuffer>,
    devices: BTreeMap<(u32, u8), KindStats>,
    processes: BTreeMap<u32, ProcessStats>,
    /// Which pid holds each process-table index, by ProcessStart records.
    slot_owner: HashMap<u16, u32>,
    anomaly_counts: AnomalyCounts,
    anomalies: Vec<Anomaly>,
    recent_anomalies: VecDeque<Anomaly>,
    marks: Vec<Mark>,
    records: u64,
    last_time_ns: u64,
    losses: LossBlock,
    writer_counters: Vec<CounterBlock>,
    /// What the writers' live counters should read, record by record:
    /// every ALLOC adds and every FREE subtracts its own size and one
    /// buffer, anomalies included, exactly as the hooks count. A difference
    /// at the end means records the stream does not hold.
    writer_view: FastMap<(u32, u32, u8), (i64, i64)>,
}

impl Engine {
    /// An empty engine whose timestamps go through `time`.
    pub fn new(time: TimeBase) -> Engine {
        Engine {
            time,
            live: FastMap::default(),
            devices: BTreeMap::new(),
            processes: BTreeMap::new(),
            slot_owner: HashMap::new(),
            anomaly_counts: AnomalyCounts::default(),
            anomalies: Vec::new(),
            recent_anomalies: VecDeque::with_capacity(RECENT_ANOMALIES),
            marks: Vec::new(),
            records: 0,
            last_time_ns: 0,
            losses: LossBlock::default(),
            writer_counters: Vec::new(),
            writer_view: FastMap::default(),
        }
    }

    /// Applies one block of a record file (or of a live stream).
    pub fn apply_block(&mut self, block: &Block) {
        match block {
            Block::Record(record) => self.apply(record),
            Block::Died(died) => self.process_died(died.pid, self.time.ns(died.timestamp)),
            Block::Process(p) => self.process_table_entry(p),
            Block::Loss(loss) => self.losses = *loss,
            Block::Counter(c) => self.writer_counters.push(*c),
        }
    }

    /// Applies one ring record.
    pub fn apply(&mut self, record: &Record) {
        self.records += 1;
        let time_ns = self.time.ns(record.timestamp);
        self.last_time_ns = self.last_time_ns.max(time_ns);
        match record.event() {
            Some(Event::Alloc) => self.alloc(record, time_ns),
            Some(Event::Free) => self.free(record, time_ns),
            Some(Event::Mark) => self.mark(record, time_ns),
            Some(Event::Capacity) => {
                self.devices.entry((record.device_id, record.kind)).or_default().capacity = Some(record.size)
            }
            Some(Event::ProcessStart) => self.process_start(record),
            Some(Event::ProcessExit) => {
                let process = self.process(record.pid);
                if process.state == ProcState::Running {
                    process.state = ProcState::Exited;
                    process.end_time_ns = Some(time_ns);
                }
            }
            // The record file parser refuses unknown events; a live ring
            // may carry one from a newer writer: ignore it.
            None => {}
        }
    }

    fn key(record: &Record) -> BufferKey {
        BufferKey {
            pid: record.pid,
            device_id: record.device_id,
            kind: record.kind,
            buffer_id: record.buffer_id,
        }
    }

    /// Follows a buffer record as the writer's counter cell did.
    fn count_as_writers_do(&mut self, record: &Record, sign: i64) {
        let bytes = if record.is_alias() { 0 } else { record.size as i64 };
        let cell = self.writer_view.entry((record.pid, record.device_id, record.kind)).or_default();
        cell.0 = cell.0.wrapping_add(sign.wrapping_mul(bytes));
        cell.1 += sign;
    }

    fn alloc(&mut self, record: &Record, time_ns: u64) {
        self.count_as_writers_do(record, 1);
        let key = Engine::key(record);
        let alias = record.is_alias();
        self.process(record.pid).allocs += 1;
        let mut duplicate = false;
        self.live
            .entry(key)
            .and_modify(|live| {
                duplicate = true;
                live.duplicates.get_or_insert_default().push(record.size);
            })
            .or_insert_with(|| LiveBuffer {
                key,
                parent_id: record.parent_id,
                address: record.address,
                size: record.size,
                flags: record.flags,
                time_ns,
                duplicates: None,
            });
        if duplicate {
            self.anomaly(AnomalyKind::DuplicateAlloc, key, time_ns, record.size, 0);
        }
        let stats = self.devices.entry((record.device_id, record.kind)).or_default();
        stats.allocs += 1;
        stats.live_buffers += 1;
        if !alias {
            stats.live_bytes = stats.live_bytes.wrapping_add(record.size);
            if stats.live_bytes > stats.peak_bytes {
                stats.peak_bytes = stats.live_bytes;
                stats.peak_time_ns = time_ns;
            }
        }
    }

    fn free(&mut self, record: &Record, time_ns: u64) {
        self.count_as_writers_do(record, -1);
        let key = Engine::key(record);
        let Some(live) = self.live.get_mut(&key) else {
            self.anomaly(AnomalyKind::UnknownFree, key, time_ns, record.size, 0);
            return;
        };
        // The newest reference goes first.
        let (released, last) = match live.duplicates.as_mut().and_then(|d| d.pop()) {
            Some(size) => (size, false),
            None => (live.size, true),
        };
        let alias = live.is_alias();
        if last {
            self.live.remove(&key);
        }
        if record.size != 0 && record.size != released {
            self.anomaly(AnomalyKind::SizeMismatch, key, time_ns, record.size, released);
        }
        self.process(record.pid).frees += 1;
        let stats = self.devices.entry((record.device_id, record.kind)).or_default();
        stats.frees += 1;
        stats.live_buffers -= 1;
        if !alias {
            stats.live_bytes = stats.live_bytes.wrapping_sub(released);
        }
    }

    fn mark(&mut self, record: &Record, time_ns: u64) {
        let usage = self
            .devices
            .iter()
            .filter(|(_, s)| s.live_bytes != 0 || s.live_buffers != 0)
            .map(|(&k, s)| (k, (s.live_bytes, s.live_buffers)))
            .collect();
        self.marks.push(Mark {
            label: String::from_utf8_lossy(record.label()).into_owned(),
            pid: record.pid,
            time_ns,
            usage,
        });
    }

    fn process_start(&mut self, record: &Record) {
        // A new process in a table entry whose previous owner never said
        // goodbye: the previous owner died (the table reuses only entries
        // whose lock the kernel released).
        if let Some(previous) = self.slot_owner.insert(record.process_slot, record.pid)
            && previous != record.pid
            && self.processes.get(&previous).is_some_and(|p| p.state == ProcState::Running)
        {
            self.process_died(previous, self.time.ns(record.timestamp));
        }
        let name = String::from_utf8_lossy(record.label()).into_owned();
        let process = self.process(record.pid);
        process.name = name;
        process.seen_start = true;
        process.state = ProcState::Running;
    }

    fn process(&mut self, pid: u32) -> &mut ProcessStats {
        self.processes.entry(pid).or_insert_with(|| ProcessStats {
            pid,
            name: String::new(),
            state: ProcState::Running,
            seen_start: false,
            allocs: 0,
            frees: 0,
            dropped: 0,
            in_final_table: false,
            died_with: Vec::new(),
            end_time_ns: None,
        })
    }

    /// Process `pid` ended without shutting down: its live buffers leave
    /// device usage and become its remaining buffers.
    pub fn process_died(&mut self, pid: u32, time_ns: u64) {
        let process = self.process(pid);
        if process.state != ProcState::Running {
            return;
        }
        process.state = ProcState::Died;
        process.end_time_ns = Some(time_ns);
        let mut orphans: Vec<LiveBuffer> = Vec::new();
        self.live.retain(|key, live| {
            if key.pid != pid {
                return true;
            }
            orphans.push(live.clone());
            false
        });
        orphans.sort_by_key(|b| b.key);
        for buffer in &orphans {
            let stats = self.devices.entry((buffer.key.device_id, buffer.key.kind)).or_default();
            stats.live_buffers -= buffer.references() as u64;
            stats.live_bytes = stats.live_bytes.wrapping_sub(buffer.counted_bytes());
        }
        self.processes.get_mut(&pid).expect("inserted above").died_with = orphans;
    }

    fn process_table_entry(&mut self, entry: &ProcessBlock) {
        let name = entry.name();
        let process = self.process(entry.pid);
        process.dropped = entry.dropped;
        process.in_final_table = true;
        if process.name.is_empty() {
            process.name = name;
        }
        if entry.state == 1 && process.state == ProcState::Running {
            process.state = ProcState::Exited;
        }
        if entry.state == 2 {
            let end = self.last_time_ns;
            self.process_died(entry.pid, end);
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

    // ---- what the commands read ----------------------------------------

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

    /// Processes by pid.
    pub fn processes(&self) -> &BTreeMap<u32, ProcessStats> {
        &self.processes
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

    /// Buffers alive at this point (live processes' buffers plus those
    /// dead processes left), in key order.
    pub fn remaining(&self) -> Vec<&LiveBuffer> {
        let mut remaining: Vec<&LiveBuffer> = self.live.values().collect();
        remaining.extend(self.processes.values().flat_map(|p| &p.died_with));
        remaining.sort_unstable_by_key(|b| b.key);
        remaining
    }

    /// Live buffers indexed by process, for the remaining-buffer totals of
    /// every process at once.
    pub fn remaining_by_process(&self) -> BTreeMap<u32, (u64, u64)> {
        let mut totals: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for b in self.remaining() {
            let entry = totals.entry(b.key.pid).or_default();
            entry.0 += b.references() as u64;
            entry.1 = entry.1.wrapping_add(b.counted_bytes());
        }
        totals
    }

    /// Where the writers' live counters (from the end of a recording)
    /// disagree with what the records say they should read, for processes
    /// whose start this stream holds: records dropped, lost, or never
    /// written. Empty when they agree or when nothing can be compared.
    pub fn counter_mismatches(&self) -> Vec<CounterMismatch> {
        let reader = &self.writer_view;
        let mut writers: BTreeMap<(u32, u32, u8), (i64, i64)> = BTreeMap::new();
        for c in &self.writer_counters {
            writers.insert((c.pid, c.device_id, c.kind), (c.live_bytes, c.live_buffers));
        }
        let comparable =
            |pid: u32| self.processes.get(&pid).is_some_and(|p| p.seen_start && p.in_final_table);
        let nonzero = |k: &&(u32, u32, u8)| reader.get(*k).is_some_and(|&v| v != (0, 0));
        let mut keys: Vec<_> = reader.keys().filter(nonzero).chain(writers.keys()).copied().collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
            .filter(|k| comparable(k.0) && k.1 < memtrack::format::MAX_DEVICES as u32)
            .filter(|k| (k.2 as usize) < memtrack::format::MAX_KINDS)
            .filter_map(|k| {
                let (r, w) = (
                    reader.get(&k).copied().unwrap_or_default(),
                    writers.get(&k).copied().unwrap_or_default(),
                );
                (r != w).then_some(CounterMismatch {
                    pid: k.0,
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
        self.processes.values().any(|p| p.in_final_table)
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
