//! What the state engine knows, as the commands read it: per (device,
//! kind) statistics, processes, anomalies, marks, how the recording
//! started, and where loss makes an answer uncertain.

use super::live;

/// Details kept for at most this many anomalies (counts stay exact).
pub const MAX_ANOMALY_DETAILS: usize = 1000;

/// The latest this many anomalies are kept too, for live views.
pub const RECENT_ANOMALIES: usize = 16;

/// A writer process as the engine tells them apart: its index in
/// [`Engine::processes`], in order of first appearance in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId(pub u32);

/// The `process` key of reports, `status` and metric labels:
/// `<table entry>.<generation>`, unique for the ring's life (each new owner
/// of an entry bumps its generation), where pids are not.
pub fn process_key(slot: u16, generation: u32) -> String {
    format!("{slot}.{generation}")
}

/// Where a remaining buffer is in the engine's store: see
/// [`Engine::remaining_places`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BufferPlace(pub(super) live::Slot);

#[cfg(test)]
impl BufferPlace {
    /// Place `index`, for tests of what sorts places.
    pub(crate) fn for_tests(index: u32) -> BufferPlace {
        BufferPlace(index)
    }

    /// The index of [`BufferPlace::for_tests`].
    pub(crate) fn for_tests_index(self) -> u32 {
        self.0
    }
}

/// Identity of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferKey {
    /// Writer process.
    pub process: ProcessId,
    /// Its pid, as the writer saw it (in its own PID namespace).
    pub pid: u32,
    /// Device id.
    pub device_id: u32,
    /// Kind code.
    pub kind: u8,
    /// The runtime's buffer id.
    pub buffer_id: u64,
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

impl KindStats {
    /// Records `live_bytes` as the peak if it is one; whether it was.
    pub(super) fn note_peak(&mut self, time_ns: u64) -> bool {
        let peak = self.live_bytes > self.peak_bytes;
        if peak {
            self.peak_bytes = self.live_bytes;
            self.peak_time_ns = time_ns;
        }
        peak
    }
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
    /// Process-table entry.
    pub slot: u16,
    /// Owner generation of the entry (see [`Engine::owner`]).
    pub generation: u32,
    /// 0, or n > 0 for the n-th other process the engine was told has this
    /// entry and generation (a table that contradicts a guess of the
    /// stream's): keeps `key` unique.
    pub(super) variant: u32,
    /// Process id, as the writer saw it (in its own PID namespace).
    pub pid: u32,
    /// Its pid in the reader's PID namespace, where the reader found it.
    pub host_pid: Option<u32>,
    /// Start time (clock ticks since boot), from the process table.
    pub start_time: Option<u64>,
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
    /// Records it dropped while this recording could have held them (from
    /// the process table at the end, less what it had dropped before a
    /// recording with nothing waiting in the ring began).
    pub dropped: u64,
    /// Records it had dropped when the recording started.
    pub(super) dropped_at_start: u64,
    /// Whether the process table at the start of the recording lists it
    /// (so its usage before the recording is in the opening).
    pub in_start_table: bool,
    /// Listed in the start table, its records not met yet: the stream's
    /// first owner of its entry with its generation and pid is this one.
    pub(super) awaiting_records: bool,
    /// Whether the process table at the end of the recording lists it
    /// (so the writers' live counters there are its own).
    pub in_final_table: bool,
    /// The counter pool had no cell for some of its events (a process
    /// block said so): its live counters are not the sum of its records.
    pub(super) counters_incomplete: bool,
    /// Buffers it left when it ended (exited or died), in the order of
    /// their entries in the engine's live buffers ([`Engine::ended_with`]).
    pub ended_with: Vec<u32>,
    /// When it ended, ns since the ring's creation.
    pub end_time_ns: Option<u64>,
}

impl ProcessStats {
    /// The `process` key: see [`process_key`]; unique within the stream
    /// (`<entry>.<generation>.<n>` for the rare process whose entry and
    /// generation another already has).
    pub fn key(&self) -> String {
        match self.variant {
            0 => process_key(self.slot, self.generation),
            n => format!("{}.{n}", process_key(self.slot, self.generation)),
        }
    }
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
    pub process: ProcessId,
    /// Its pid, as the writer saw it.
    pub pid: u32,
    /// When, ns since the ring's creation.
    pub time_ns: u64,
    /// Nonzero usage per (device, kind): (live bytes, live buffers).
    pub usage: Vec<((u32, u8), (u64, u64))>,
}

/// One (process, device, kind): the unit of live counters and of
/// uncertainty.
pub type Cell = (ProcessId, u32, u8);

/// Why a cell's remaining buffers and anomalies may be wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Uncertainty {
    /// Its process dropped records (ring full).
    Dropped,
    /// A writer died holding a claim, and its process died.
    WriterDied,
    /// A consumer died holding records, of any process.
    ReaderDied,
    /// The writers' live counters at the end disagree with the records.
    CountersDisagree,
}

impl Uncertainty {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Uncertainty::Dropped => "dropped",
            Uncertainty::WriterDied => "writer_died",
            Uncertainty::ReaderDied => "reader_died",
            Uncertainty::CountersDisagree => "counters_disagree",
        }
    }
}

/// Where the stream started (version 2 files and live sessions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartInfo {
    /// Whether writers were at work before the stream began: buffers live
    /// before it, or records a previous consumer took.
    pub mid_run: bool,
    /// The first ticket of the stream.
    pub first_ticket: u64,
    /// Records the ring held, untaken, when the reader attached.
    pub backlog_records: u64,
    /// Buffers live before the recording, by the opening.
    pub opening_buffers: i64,
    /// Bytes of those.
    pub opening_bytes: i64,
    /// Frees, during the recording, of buffers allocated before it.
    pub opening_frees: u64,
}

/// Writers' and reader's view of one (process, device, kind) that disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterMismatch {
    /// The process.
    pub process: ProcessId,
    /// Its pid, as the writer saw it.
    pub pid: u32,
    /// Device id.
    pub device_id: u32,
    /// Kind code.
    pub kind: u8,
    /// (bytes, buffers) from the records: exact.
    pub reader: (i128, i64),
    /// (bytes, buffers) from the writers' live counters. Their bytes are
    /// a 64-bit sum that wraps; shown as the value nearest `reader`'s of
    /// those they may stand for (exact unless the two differ by 2^63 or
    /// more).
    pub writers: (i128, i64),
}
