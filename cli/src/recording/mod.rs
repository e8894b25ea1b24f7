//! The record file (`.mtr`, format version 3): what `memtrack record`
//! writes and `report` / `export` read.
//!
//! ```text
//! FileHeader                  256 bytes: magic "MTRECORD", version, clock, ring
//! frame × n                   16-byte header (length, entries, two CRC-32s),
//!                             then entries (`framing`), one frame per batch
//!                             the reader took, written before it commits
//!   ring records                delta-encoded (`codec`), exact
//!   reader blocks               event code >= 0x80, 64 bytes (`blocks`): what
//!                               the reader observed (where the recording
//!                               started and the ring's state then, a process
//!                               died, who a process is, loss totals, the
//!                               process table and the writers' live
//!                               counters at the end)
//!   End block                   code 0x8F, the last entry of a complete file
//! ```
//!
//! Version 3 made records small (7 to 11 bytes instead of 64, see
//! docs/PERFORMANCE.md); versions 1 and 2 stored every block as 64 bytes,
//! and are still read. Version 2 added the start of a recording (a `Start`
//! block, the process table and the writers' live counters when the
//! reader attached, and the ring clock at that moment in the header), so
//! that a recording that begins mid-run starts from the truth. Version 1
//! files are read as recordings that began with the ring.
//!
//! Every block, decoded, carries its event code at byte 58, where a
//! `Record` has it, so a reader tells them apart without context. Nothing
//! in a file is trusted: a wrong magic or version, a damaged or partial
//! frame (or block), a missing end block or an unknown event code is an
//! error naming the file.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use bytemuck::{Pod, Zeroable};
use memtrack::clock::Calibration;
use memtrack::format::RECORD_SIZE;

mod blocks;
pub mod codec;
pub mod framing;

pub use blocks::{Block, CounterBlock, DiedBlock, IdentityBlock, LossBlock, ProcessBlock, StartBlock};

/// `"MTRECORD"`, little-endian.
pub const FILE_MAGIC: u64 = u64::from_le_bytes(*b"MTRECORD");
/// Version of this layout. Version 4 is version 3's layout; its initial
/// identity blocks carry their owner's attach time, not a ring tail (ring
/// format 3's merged tickets say nothing about claim order across rings).
pub const FILE_VERSION: u32 = 4;
/// The oldest version this reader reads.
pub const OLDEST_FILE_VERSION: u32 = 1;
/// Bytes of the file header.
pub const FILE_HEADER_SIZE: usize = 256;
/// Bytes of a block (versions 1 and 2 store every block so; version 3
/// stores reader blocks so, and ring records encoded).
pub const BLOCK_SIZE: usize = RECORD_SIZE;
/// Offset of the event code within every block.
const EVENT_OFFSET: usize = 58;

/// Reader block codes (ring events are below 0x80).
mod code {
    pub const PROCESS_DIED: u8 = 0x80;
    pub const PROCESS: u8 = 0x81;
    pub const LOSS: u8 = 0x82;
    pub const COUNTER: u8 = 0x83;
    pub const IDENTITY: u8 = 0x84;
    pub const START: u8 = 0x85;
    pub const OPENING: u8 = 0x86;
    pub const END: u8 = 0x8F;
}

/// The file header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct FileHeader {
    magic: u64,
    version: u32,
    header_size: u32,
    block_size: u32,
    /// The ring's clock source code (`memtrack::format::CLOCK_*`).
    pub clock_source: u32,
    /// Ring clock calibration: ticks per second, and a (ticks, ns) pair.
    pub ticks_per_second: u64,
    /// Ticks at the calibration instant.
    pub calibration_ticks: u64,
    /// `CLOCK_MONOTONIC` ns at the calibration instant (the ring's creation):
    /// the origin of every `time_ns` in reports.
    pub calibration_ns: u64,
    /// Wall clock at the ring's creation, ns since the Unix epoch.
    pub ring_created_unix_ns: u64,
    /// Wall clock when the recording started, ns since the Unix epoch.
    pub started_unix_ns: u64,
    /// Slots in the ring.
    pub ring_capacity: u64,
    /// Ring clock when the recording started: the origin of every `time_ns`
    /// in reports (0 in version 1 files: the ring's creation).
    pub started_ticks: u64,
    reserved: [u64; 6],
    /// The ring file's path, NUL-padded.
    ring_path: [u8; 128],
}

const _: () =
    assert!(size_of::<FileHeader>() == FILE_HEADER_SIZE && FILE_HEADER_SIZE.is_multiple_of(BLOCK_SIZE));

impl FileHeader {
    /// A header for a recording of a ring with these properties.
    pub fn new(ring: &memtrack::Ring, started_unix_ns: u64, started_ticks: u64) -> FileHeader {
        let calibration = ring.calibration();
        let mut header = FileHeader {
            magic: FILE_MAGIC,
            version: FILE_VERSION,
            header_size: FILE_HEADER_SIZE as u32,
            block_size: BLOCK_SIZE as u32,
            clock_source: ring.clock_source().code(),
            ticks_per_second: calibration.ticks_per_second,
            calibration_ticks: calibration.ticks,
            calibration_ns: calibration.monotonic_ns,
            ring_created_unix_ns: ring.created_unix_ns(),
            started_unix_ns,
            ring_capacity: ring.capacity(),
            started_ticks,
            ..Zeroable::zeroed()
        };
        let path = ring.path().as_os_str().as_encoded_bytes();
        let n = path.len().min(header.ring_path.len());
        header.ring_path[..n].copy_from_slice(&path[..n]);
        header
    }

    /// The recorded ring's path.
    pub fn ring_path(&self) -> PathBuf {
        let end = self.ring_path.iter().position(|&b| b == 0).unwrap_or(self.ring_path.len());
        PathBuf::from(String::from_utf8_lossy(&self.ring_path[..end]).into_owned())
    }

    /// Turns ring-clock ticks into ns since the recording started (since
    /// the ring's creation for a version 1 file).
    pub fn time_base(&self) -> TimeBase {
        TimeBase::new(&self.calibration()).starting_at(self.started_ticks)
    }

    /// The ring clock's calibration.
    pub fn calibration(&self) -> Calibration {
        Calibration {
            ticks: self.calibration_ticks,
            monotonic_ns: self.calibration_ns,
            ticks_per_second: self.ticks_per_second,
        }
    }

    /// Wall clock at `time_ns` 0 of this recording's reports, ns since the
    /// Unix epoch: when it started (version 2), else the ring's creation.
    pub fn origin_unix_ns(&self) -> u64 {
        if self.version >= 2 { self.started_unix_ns } else { self.ring_created_unix_ns }
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let reason = if self.magic == memtrack::format::MAGIC {
            let ring = crate::units::printable_path(path);
            format!(
                "a ring, not a record file (record it with `memtrack record --ring {ring} -o FILE`; \
                 `memtrack status --ring {ring}` shows it now)"
            )
        } else if self.magic != FILE_MAGIC {
            "not a memtrack record file (bad magic)".to_owned()
        } else if !(OLDEST_FILE_VERSION..=FILE_VERSION).contains(&self.version) {
            format!(
                "record file version {} is not supported (this memtrack reads versions \
                 {OLDEST_FILE_VERSION} to {FILE_VERSION})",
                self.version
            )
        } else if self.header_size as usize != FILE_HEADER_SIZE || self.block_size as usize != BLOCK_SIZE {
            format!("corrupt header (header size {}, block size {})", self.header_size, self.block_size)
        } else if self.ticks_per_second == 0 {
            "corrupt header (clock rate 0)".to_owned()
        } else {
            return Ok(());
        };
        bail!("memtrack: record file {}: {reason}", path.display())
    }
}

/// Converts ring-clock ticks to nanoseconds since an origin: the start of
/// a recording, or the ring's creation.
#[derive(Clone, Copy, Debug)]
pub struct TimeBase {
    /// Ticks at the origin.
    origin_ticks: u64,
    /// Nanoseconds per tick in 64.64 fixed point: multiplies per record
    /// instead of a 128-bit division.
    ns_per_tick_q64: u128,
}

impl TimeBase {
    /// The time base of a live ring.
    pub fn of_ring(ring: &memtrack::Ring) -> TimeBase {
        TimeBase::new(&ring.calibration())
    }

    fn new(calibration: &Calibration) -> TimeBase {
        let ticks_per_second = calibration.ticks_per_second.max(1) as u128;
        TimeBase {
            origin_ticks: calibration.ticks,
            ns_per_tick_q64: (1_000_000_000u128 << 64) / ticks_per_second,
        }
    }

    /// The same clock with its origin at `ticks` (kept if `ticks` is 0 or
    /// earlier than the current origin).
    pub fn starting_at(self, ticks: u64) -> TimeBase {
        TimeBase { origin_ticks: self.origin_ticks.max(ticks), ..self }
    }

    /// Nanoseconds since the origin (0 for earlier stamps).
    #[inline]
    pub fn ns(&self, ticks: u64) -> u64 {
        // elapsed × rate >> 64, in two halves so no product overflows
        // (each half < 2^32 × 2^94).
        let elapsed = ticks.saturating_sub(self.origin_ticks);
        let (high, low) = ((elapsed >> 32) as u128, (elapsed & 0xffff_ffff) as u128);
        let ns = ((high * self.ns_per_tick_q64) >> 32) + ((low * self.ns_per_tick_q64) >> 64);
        ns.min(u64::MAX as u128) as u64
    }
}

mod reader;
mod writer;

pub use reader::{BlockFilter, RecordReader};
pub use writer::{OutputFailure, RecordWriter};

#[cfg(test)]
mod compat_tests;

#[cfg(test)]
mod tests {
    use memtrack::{Event, Progress, Record};

    use super::framing::FRAME_HEADER_SIZE;
    use super::*;

    /// A version-3 header with a 1 GHz clock (the unit tests' files).
    pub(super) fn header() -> FileHeader {
        FileHeader {
            magic: FILE_MAGIC,
            version: FILE_VERSION,
            header_size: FILE_HEADER_SIZE as u32,
            block_size: BLOCK_SIZE as u32,
            ticks_per_second: 1_000_000_000,
            ..Zeroable::zeroed()
        }
    }

    /// A fresh temporary path (unique within this process).
    pub(super) fn temp(name: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::env::temp_dir().join(format!("memtrack-recording-{name}-{}-{n}.mtr", std::process::id()))
    }

    fn write(path: &Path, blocks: &[Block]) {
        let mut w = RecordWriter::create(path, &header()).unwrap();
        for b in blocks {
            w.block(*b);
        }
        w.finish().unwrap();
    }

    fn read_all(path: &Path) -> Result<Vec<Block>> {
        let mut r = RecordReader::open(path)?;
        let mut out = Vec::new();
        while let Some(b) = r.next_block()? {
            out.push(b);
        }
        Ok(out)
    }

    #[test]
    fn a_failing_output_counts_the_records_it_could_not_keep() {
        let mut w = RecordWriter::create(Path::new("/dev/full"), &header()).unwrap();
        let record = |ticket| Record { ticket, event: Event::Alloc as u8, ..Zeroable::zeroed() };
        w.records(&[record(1), record(2)]);
        w.block(Block::Start(StartBlock::new(1, 0, 0, 0)));
        w.flush();
        let failure = w.failure().unwrap();
        assert_eq!(failure.error.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(failure.records_not_kept, 2, "the header and the reader block are not records");
        w.records(&[record(3)]);
        w.flush();
        let error = w.finish().unwrap_err();
        assert!(format!("{error:#}").contains("3 records not kept"), "{error:#}");
    }

    #[test]
    fn ticks_become_nanoseconds_since_the_ring_began() {
        let tsc =
            TimeBase::new(&Calibration { ticks: 1000, monotonic_ns: 5, ticks_per_second: 2_500_000_000 });
        assert_eq!(tsc.ns(999), 0);
        let near = |a: u64, b: u64| a.abs_diff(b) <= 1;
        assert!(near(tsc.ns(1000 + 2_500_000_000), 1_000_000_000));
        assert!(near(tsc.ns(1000 + 25 * 3600 * 2_500_000_000), 25 * 3600 * 1_000_000_000));
        assert!(near(tsc.ns(1000 + 7), 2));
        let monotonic =
            TimeBase::new(&Calibration { ticks: 0, monotonic_ns: 0, ticks_per_second: 1_000_000_000 });
        assert_eq!(monotonic.ns(123_456_789), 123_456_789);
    }

    #[test]
    fn losses_since_a_baseline_count_only_what_came_after() {
        let at = |dropped, writer, reader, untracked| {
            let progress =
                Progress { lost_writer_died: writer, lost_reader_died: reader, ..Default::default() };
            LossBlock::new(dropped, &progress, untracked)
        };
        let since = at(10, 5, 7, 2).since(&at(4, 5, 1, 0));
        assert_eq!(since, at(6, 0, 6, 2));
        assert_eq!(since.total(), 12);
        // A baseline above the counters (a ring created anew) counts as zero.
        assert_eq!(at(1, 0, 0, 0).since(&at(9, 9, 9, 9)), at(0, 0, 0, 0));
    }

    #[test]
    fn blocks_round_trip() {
        let path = temp("round-trip");
        let record = Record { ticket: 7, event: Event::Alloc as u8, size: 4096, ..Default::default() };
        let victim = memtrack::ProcessInfo {
            slot: 3,
            pid: 42,
            name: "victim".into(),
            state: memtrack::ProcessState::Died,
            start_time: 1,
            generation: 2,
            dropped: 3,
            pid_ns: 0,
            attach_ticks: 4,
        };
        let blocks = [
            Block::Record(record),
            Block::Identity(IdentityBlock::version_3(&victim, Some(4242), Some(17))),
            Block::Identity(IdentityBlock::new(&victim, None, false)),
            Block::Died(DiedBlock::new(&victim, 99)),
            Block::Loss(LossBlock::new(5, &Progress { lost_writer_died: 1, ..Default::default() }, 0)),
            Block::Counter(CounterBlock::new(&victim, 1, 0, -5, 2)),
            Block::Process(ProcessBlock::from(&victim)),
            Block::Start(StartBlock::new(5, 6, 7, 8)),
            Block::opening(CounterBlock::new(&victim, 1, 0, 4096, 1)),
        ];
        write(&path, &blocks);
        let read = read_all(&path).unwrap();
        assert_eq!(read, blocks);
        let Block::Identity(identity) = read[1] else { panic!("{read:?}") };
        assert_eq!((identity.initial(), identity.host_pid(), identity.tail), (true, Some(4242), 17));
        assert_eq!((identity.process_slot, identity.generation, identity.pid), (3, 2, 42));
        let Block::Identity(identity) = read[2] else { panic!("{read:?}") };
        assert_eq!(
            (identity.initial(), identity.host_pid(), identity.name()),
            (false, None, "victim".into())
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_partial_read_ends_at_a_frame_cut_short_and_stays_ended() {
        let path = temp("cut-frame");
        let records: Vec<Block> = (0..100)
            .map(|ticket| Block::Record(Record { ticket, event: Event::Alloc as u8, ..Default::default() }))
            .collect();
        write(&path, &records);
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        let mut reader = RecordReader::open_unfinished(&path).unwrap();
        assert_eq!(reader.next_block().unwrap(), None, "the only frame is cut short");
        for _ in 0..3 {
            assert_eq!(reader.next_block().unwrap(), None, "and nothing follows it");
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let path = temp("damaged");
        write(&path, &[Block::Record(Record { event: Event::Free as u8, ..Default::default() })]);
        let good = std::fs::read(&path).unwrap();
        // A frame with a valid checksum around a reader block of unknown code.
        let forged = {
            let mut payload = vec![0x8E];
            payload.extend_from_slice(&[0u8; 64]);
            payload[1 + EVENT_OFFSET] = 0x8E;
            [&good[..256], &framing::header_for(&payload, 1), &payload].concat()
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..100].to_vec(), "too short"),
            ([b"NOTMEMTR".as_slice(), &good[8..]].concat(), "bad magic"),
            ([&good[..8], &[9, 0, 0, 0], &good[12..]].concat(), "version 9"),
            // A recorder killed inside a frame's `write`, or between frames:
            // both say the recording did not finish (cli/tests/crash.rs).
            (good[..good.len() - 1].to_vec(), "cut short"),
            (good[..good.len() - 1].to_vec(), "did not finish"),
            (good[..256 + 5].to_vec(), "cut short"),
            (good[..256].to_vec(), "no end block"),
            (good[..256].to_vec(), "did not finish"),
            ([good.as_slice(), &good[256..]].concat(), "after the end block"),
            (
                {
                    let mut bad = good.clone();
                    bad[256 + FRAME_HEADER_SIZE] ^= 0x20;
                    bad
                },
                "checksum mismatch",
            ),
            (forged, "unknown event code 0x8e"),
        ];
        for (bytes, reason) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let error = format!("{:#}", read_all(&path).unwrap_err());
            assert!(error.contains(reason), "{error:?} should say {reason:?}");
            assert!(error.contains(path.to_str().unwrap()), "{error:?} should name the file");
            assert!(!error.contains('\n'), "one line: {error:?}");
        }
        let _ = std::fs::remove_file(&path);
    }
}
