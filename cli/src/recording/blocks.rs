//! The blocks of a record file: ring records and what the reader observed,
//! 64 bytes each with the event code at byte 58 (stored so in versions 1
//! and 2; in version 3 reader blocks are, ring records are encoded).

use bytemuck::{Pod, Zeroable};
use memtrack::{Event, Progress, Record};

use super::{BLOCK_SIZE, EVENT_OFFSET, code};

/// A process-table entry as the reader saw it at the end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ProcessBlock {
    /// Records the process dropped because the ring was full.
    pub dropped: u64,
    /// Start time (clock ticks since boot).
    pub start_time: u64,
    /// Name, NUL-padded.
    pub name: [u8; 32],
    /// Entry generation.
    pub generation: u32,
    /// Process id.
    pub pid: u32,
    /// Table index.
    pub process_slot: u16,
    event: u8,
    /// 0 running, 1 exited, 2 died.
    pub state: u8,
    /// [`ProcessBlock::AT_END`] or [`ProcessBlock::AT_START`].
    pub phase: u8,
    /// 1 when the counter pool had no cell for some of the process's
    /// events (its `untracked` figure): its live counters are not the sum
    /// of its records, so the counter cross-check skips it. 0 in files
    /// written before format 2.
    pub counters_incomplete: u8,
    reserved: [u8; 2],
}

/// Loss totals of this recording.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LossBlock {
    /// Records dropped by writers because the ring was full, while this
    /// recording was attached.
    pub dropped: u64,
    /// Claims of writers that died before publishing.
    pub lost_writer_died: u64,
    /// Records a previous consumer took but did not hand on.
    pub lost_reader_died: u64,
    /// Processes that found the process table full.
    pub untracked_processes: u64,
    /// Records dropped before this recording attached that may belong to
    /// its stream: the ring held records nobody had taken when it attached,
    /// so drops since the last consumer left fall between them.
    pub dropped_before_attach: u64,
    reserved: [u8; 18],
    event: u8,
    reserved2: [u8; 5],
}

/// Where a recording started: written after the process table and the
/// writers' live counters the reader found on attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct StartBlock {
    /// Ring clock when the reader attached.
    pub timestamp: u64,
    /// The first ticket this recording takes (the previous consumer's
    /// `taken`; 0 for a ring nobody consumed before).
    pub first_ticket: u64,
    /// Tickets below this were claimed before the reader attached: the
    /// records the ring held then (the backlog). Their effect is already in
    /// the opening counters. With merged tickets (ring format 3) the
    /// consumer delivers every record claimed before its backlog fence
    /// (`Consumer::fence_backlog`) before any claimed after it, so these
    /// are exactly the fenced records. A hook caught between the reader's
    /// two reads (the fence, then the counters) is counted twice, and the
    /// counter cross-check marks its cell uncertain, as in format 2.
    pub backlog_end: u64,
    /// Records the ring's writers had dropped before the reader attached.
    pub dropped_before: u64,
    reserved: [u8; 26],
    event: u8,
    reserved2: [u8; 5],
}

/// One writer live-counter cell: at the end of a recording (for the
/// cross-check), or when it started (`Block::Opening`: usage from before).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CounterBlock {
    /// Live bytes (ALIAS excluded).
    pub live_bytes: i64,
    /// Live buffers.
    pub live_buffers: i64,
    /// The process's table-entry generation (0 in files written before
    /// it was recorded: the entry's owner with `pid` is meant).
    pub generation: u32,
    reserved: [u8; 28],
    /// Device id.
    pub device_id: u32,
    /// Process id.
    pub pid: u32,
    /// The process's table entry.
    pub process_slot: u16,
    event: u8,
    /// Kind code.
    pub kind: u8,
    reserved3: [u8; 4],
}

/// A process the reader found dead (its table lock released without a
/// clean shutdown), at its place in the stream.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DiedBlock {
    /// Ring clock when the reader noticed.
    pub timestamp: u64,
    reserved: [u32; 10],
    /// Table-entry generation (0 in files written before it was recorded).
    pub generation: u32,
    /// Process id.
    pub pid: u32,
    /// Table index.
    pub process_slot: u16,
    event: u8,
    reserved2: [u8; 5],
}

/// Who a writer process is, as the reader read it from the process table:
/// written when the reader first sees an entry's owner, and for every
/// entry of the table a reader attaching to a ring in use finds there
/// (`initial`), which tells the engine whose the first records of each
/// entry are (see `Engine::owner`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IdentityBlock {
    /// Start time (clock ticks since boot, `/proc/PID/stat` field 22).
    pub start_time: u64,
    /// With `initial`: in files of version 4 on (flag
    /// [`IdentityBlock::owner_attached_at`]), the ring clock when this owner
    /// attached to its entry; in older files, tickets claimed before the
    /// reader read the table (the ring's tail, read first). 0 otherwise.
    pub tail: u64,
    /// Name, NUL-padded.
    pub name: [u8; 32],
    /// Table-entry generation.
    pub generation: u32,
    /// Pid, as the writer saw it (in its own PID namespace).
    pub pid: u32,
    /// Table entry.
    pub process_slot: u16,
    event: u8,
    flags: u8,
    /// Its pid in the reader's PID namespace, 0 if the reader did not find it.
    host_pid: u32,
}

/// `IdentityBlock::flags`: the table as the reader found it on attaching.
const IDENTITY_INITIAL: u8 = 1;
/// `IdentityBlock::flags` (files of version 4 on): `tail` holds the owner's
/// attach time (ring clock), not a ticket. Merged tickets (ring format 3)
/// do not say which records were claimed before the table was read.
const IDENTITY_ATTACH_TICKS: u8 = 2;

const _: () = {
    assert!(size_of::<StartBlock>() == BLOCK_SIZE);
    assert!(std::mem::offset_of!(StartBlock, event) == EVENT_OFFSET);
    assert!(std::mem::offset_of!(LossBlock, dropped_before_attach) == 32);
    assert!(std::mem::offset_of!(ProcessBlock, phase) == 60);
    assert!(size_of::<IdentityBlock>() == BLOCK_SIZE);
    assert!(std::mem::offset_of!(IdentityBlock, event) == EVENT_OFFSET);
    assert!(std::mem::offset_of!(IdentityBlock, generation) == 48);
    assert!(std::mem::offset_of!(CounterBlock, process_slot) == 56);
    assert!(std::mem::offset_of!(DiedBlock, generation) == 48);
    assert!(size_of::<ProcessBlock>() == BLOCK_SIZE);
    assert!(size_of::<LossBlock>() == BLOCK_SIZE);
    assert!(size_of::<CounterBlock>() == BLOCK_SIZE);
    assert!(size_of::<DiedBlock>() == BLOCK_SIZE);
    assert!(std::mem::offset_of!(Record, event) == EVENT_OFFSET);
    assert!(std::mem::offset_of!(ProcessBlock, event) == EVENT_OFFSET);
    assert!(std::mem::offset_of!(LossBlock, event) == EVENT_OFFSET);
    assert!(std::mem::offset_of!(CounterBlock, event) == EVENT_OFFSET);
    assert!(std::mem::offset_of!(DiedBlock, event) == EVENT_OFFSET);
};

impl LossBlock {
    /// Totals from a ring's counters.
    pub fn new(dropped: u64, progress: &Progress, untracked_processes: u64) -> LossBlock {
        LossBlock {
            dropped,
            lost_writer_died: progress.lost_writer_died,
            lost_reader_died: progress.lost_reader_died,
            untracked_processes,
            event: code::LOSS,
            ..Zeroable::zeroed()
        }
    }

    /// What was lost after `baseline` was taken (the ring's counters only
    /// grow; a baseline from a reset ring counts as zero).
    pub fn since(&self, baseline: &LossBlock) -> LossBlock {
        LossBlock {
            dropped: self.dropped.saturating_sub(baseline.dropped),
            lost_writer_died: self.lost_writer_died.saturating_sub(baseline.lost_writer_died),
            lost_reader_died: self.lost_reader_died.saturating_sub(baseline.lost_reader_died),
            untracked_processes: self.untracked_processes.saturating_sub(baseline.untracked_processes),
            ..*self
        }
    }

    /// Records dropped by writers, before the recording attached or after.
    pub fn all_dropped(&self) -> u64 {
        self.dropped.wrapping_add(self.dropped_before_attach)
    }

    /// Everything this recording lost.
    pub fn total(&self) -> u64 {
        // Wrapping: a damaged file may hold any totals.
        self.all_dropped().wrapping_add(self.lost_writer_died).wrapping_add(self.lost_reader_died)
    }
}

impl CounterBlock {
    /// One writer cell of process `p`.
    pub fn new(
        p: &memtrack::ProcessInfo,
        device_id: u32,
        kind: u8,
        live_bytes: i64,
        live_buffers: i64,
    ) -> CounterBlock {
        CounterBlock {
            live_bytes,
            live_buffers,
            generation: p.generation,
            device_id,
            pid: p.pid,
            process_slot: p.slot,
            kind,
            event: code::COUNTER,
            ..Zeroable::zeroed()
        }
    }
}

impl StartBlock {
    /// A recording that attached at ring-clock `timestamp`.
    pub fn new(timestamp: u64, first_ticket: u64, backlog_end: u64, dropped_before: u64) -> StartBlock {
        StartBlock {
            timestamp,
            first_ticket,
            backlog_end,
            dropped_before,
            event: code::START,
            ..Zeroable::zeroed()
        }
    }

    /// Whether the ring held records nobody had taken when the recording
    /// attached.
    pub fn has_backlog(&self) -> bool {
        self.backlog_end != self.first_ticket
    }
}

impl DiedBlock {
    /// Process `p` found dead at `timestamp`.
    pub fn new(p: &memtrack::ProcessInfo, timestamp: u64) -> DiedBlock {
        DiedBlock {
            timestamp,
            generation: p.generation,
            pid: p.pid,
            process_slot: p.slot,
            event: code::PROCESS_DIED,
            ..Zeroable::zeroed()
        }
    }
}

impl IdentityBlock {
    /// Process `p`, found at `host_pid` in the reader's namespace (if it
    /// was); `initial` for an entry of the table a reader attaching to a
    /// ring in use found (it then carries the owner's attach time).
    pub fn new(p: &memtrack::ProcessInfo, host_pid: Option<u32>, initial: bool) -> IdentityBlock {
        let mut block = IdentityBlock::version_3(p, host_pid, initial.then_some(p.attach_ticks));
        if initial {
            block.flags |= IDENTITY_ATTACH_TICKS;
        }
        block
    }

    /// As a reader writing record files of versions 1 to 3 made it:
    /// `initial_tail`, for an entry of the table a reader attaching to a
    /// ring in use found, is the ring tail it read before.
    pub fn version_3(
        p: &memtrack::ProcessInfo,
        host_pid: Option<u32>,
        initial_tail: Option<u64>,
    ) -> IdentityBlock {
        let mut block = IdentityBlock {
            start_time: p.start_time,
            tail: initial_tail.unwrap_or(0),
            generation: p.generation,
            pid: p.pid,
            process_slot: p.slot,
            event: code::IDENTITY,
            flags: if initial_tail.is_some() { IDENTITY_INITIAL } else { 0 },
            host_pid: host_pid.unwrap_or(0),
            ..Zeroable::zeroed()
        };
        let n = p.name.len().min(block.name.len());
        block.name[..n].copy_from_slice(&p.name.as_bytes()[..n]);
        block
    }

    /// With `initial`: the ring clock when this owner attached to its
    /// entry, if the block says (files of version 4 on).
    pub fn owner_attached_at(&self) -> Option<u64> {
        (self.flags & IDENTITY_ATTACH_TICKS != 0).then_some(self.tail)
    }

    /// With `initial`: whether `record`, of this entry but of another pid,
    /// is of an owner before this one (else of one after it). A record
    /// stamped before this owner attached is of an earlier one: the entry
    /// passes on only once its owner is gone, and every record is stamped
    /// by its writer's clock, the clock of `owner_attached_at`. Older files
    /// carry the ring's tail instead: a record claimed below it is earlier.
    pub fn is_before_owner(&self, record: &Record) -> bool {
        match self.owner_attached_at() {
            Some(attached) => record.timestamp < attached,
            None => record.ticket < self.tail,
        }
    }

    /// Whether it is of the table as the reader found it on attaching.
    pub fn initial(&self) -> bool {
        self.flags & IDENTITY_INITIAL != 0
    }

    /// Its pid in the reader's namespace, if the reader found it.
    pub fn host_pid(&self) -> Option<u32> {
        (self.host_pid != 0).then_some(self.host_pid)
    }

    /// The process's name.
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

impl ProcessBlock {
    /// `phase`: the process table when the recording ended.
    pub const AT_END: u8 = 0;
    /// `phase`: the process table when the recording started.
    pub const AT_START: u8 = 1;

    /// The process's name.
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

impl From<&memtrack::ProcessInfo> for ProcessBlock {
    fn from(p: &memtrack::ProcessInfo) -> ProcessBlock {
        let mut block = ProcessBlock {
            dropped: p.dropped,
            start_time: p.start_time,
            generation: p.generation,
            pid: p.pid,
            process_slot: p.slot,
            state: match p.state {
                memtrack::ProcessState::Running => 0,
                memtrack::ProcessState::Exited => 1,
                memtrack::ProcessState::Died => 2,
            },
            event: code::PROCESS,
            ..Zeroable::zeroed()
        };
        let n = p.name.len().min(block.name.len());
        block.name[..n].copy_from_slice(&p.name.as_bytes()[..n]);
        block
    }
}

/// One block of a record file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// A record from the ring.
    Record(Record),
    /// The reader found a process dead.
    Died(DiedBlock),
    /// A process-table entry at the end.
    Process(ProcessBlock),
    /// Loss totals.
    Loss(LossBlock),
    /// A writer live-counter cell at the end.
    Counter(CounterBlock),
    /// Who a process is.
    Identity(IdentityBlock),
    /// Where the recording started.
    Start(StartBlock),
    /// A writer live-counter cell when the recording started.
    Opening(CounterBlock),
}

impl Block {
    /// A writer live-counter cell as the recording found it on attaching.
    pub fn opening(mut cell: CounterBlock) -> Block {
        cell.event = code::OPENING;
        Block::Opening(cell)
    }

    /// The block as 64 bytes, its code at byte 58: as a version 1 or 2
    /// file stores it, and as a version 3 file stores a reader block.
    pub fn to_bytes(&self) -> [u8; BLOCK_SIZE] {
        let mut bytes = [0u8; BLOCK_SIZE];
        bytes.copy_from_slice(self.bytes());
        bytes[EVENT_OFFSET] = self.code();
        bytes
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Block::Record(r) => bytemuck::bytes_of(r),
            Block::Died(b) => bytemuck::bytes_of(b),
            Block::Process(b) => bytemuck::bytes_of(b),
            Block::Loss(b) => bytemuck::bytes_of(b),
            Block::Counter(b) | Block::Opening(b) => bytemuck::bytes_of(b),
            Block::Identity(b) => bytemuck::bytes_of(b),
            Block::Start(b) => bytemuck::bytes_of(b),
        }
    }

    pub(super) fn code(&self) -> u8 {
        match self {
            Block::Record(r) => r.event,
            Block::Died(_) => code::PROCESS_DIED,
            Block::Process(_) => code::PROCESS,
            Block::Loss(_) => code::LOSS,
            Block::Counter(_) => code::COUNTER,
            Block::Identity(_) => code::IDENTITY,
            Block::Start(_) => code::START,
            Block::Opening(_) => code::OPENING,
        }
    }

    /// Decodes a block; `None` for an unknown event code.
    pub(super) fn parse(bytes: &[u8; BLOCK_SIZE]) -> Option<Block> {
        Some(match bytes[EVENT_OFFSET] {
            c if c < 0x80 => {
                let record: Record = bytemuck::pod_read_unaligned(bytes);
                Event::from_code(record.event)?;
                Block::Record(record)
            }
            code::PROCESS_DIED => Block::Died(bytemuck::pod_read_unaligned(bytes)),
            code::PROCESS => Block::Process(bytemuck::pod_read_unaligned(bytes)),
            code::LOSS => Block::Loss(bytemuck::pod_read_unaligned(bytes)),
            code::COUNTER => Block::Counter(bytemuck::pod_read_unaligned(bytes)),
            code::IDENTITY => Block::Identity(bytemuck::pod_read_unaligned(bytes)),
            code::START => Block::Start(bytemuck::pod_read_unaligned(bytes)),
            code::OPENING => Block::Opening(bytemuck::pod_read_unaligned(bytes)),
            _ => return None,
        })
    }
}
