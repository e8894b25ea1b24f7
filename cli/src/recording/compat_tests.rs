//! Record files of every version read back exactly; damaged ones fail in
//! one line, never with a panic.

use proptest::prelude::*;

use super::framing::FRAME_HEADER_SIZE;
use super::tests::{header, temp};
use super::*;
use memtrack::format::{FLAG_MORE, LABEL_LEN};
use memtrack::{Event, Progress, Record};

struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn read_with(path: &Path, partial: bool) -> Result<(Vec<Block>, bool)> {
    let mut reader = if partial { RecordReader::open_unfinished(path)? } else { RecordReader::open(path)? };
    let mut blocks = Vec::new();
    while let Some(block) = reader.next_block()? {
        blocks.push(block);
    }
    Ok((blocks, reader.finished()))
}

/// Writes `blocks` as a version 3 file, flushing (sealing a frame) after
/// the blocks whose index is in `flush_after`.
fn write_v3(path: &Path, blocks: &[Block], flush_after: &[usize]) {
    let mut writer = RecordWriter::create(path, &header()).unwrap();
    for (i, block) in blocks.iter().enumerate() {
        writer.block(*block);
        if flush_after.contains(&i) {
            writer.flush();
        }
    }
    writer.finish().unwrap();
}

const FIXTURE_V2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v2.mtr");

/// The fixture's blocks as the version 2 writer stored them (the end block
/// left out).
fn fixture_blocks() -> Vec<[u8; BLOCK_SIZE]> {
    let bytes = std::fs::read(FIXTURE_V2).unwrap();
    let body = &bytes[FILE_HEADER_SIZE..bytes.len() - BLOCK_SIZE];
    body.chunks_exact(BLOCK_SIZE).map(|b| b.try_into().unwrap()).collect()
}

#[test]
fn a_version_2_file_reads_back_exactly() {
    // Written by the version 2 writer (commit "a small version 2 record
    // file as a fixture"): 4 opening blocks, 45 ring records of every
    // event, 4 closing blocks.
    let (blocks, finished) = read_with(Path::new(FIXTURE_V2), false).unwrap();
    assert!(finished);
    let expected = fixture_blocks();
    assert_eq!(blocks.len(), 53);
    assert_eq!(blocks.iter().map(Block::to_bytes).collect::<Vec<_>>(), expected);
    let reader = RecordReader::open(Path::new(FIXTURE_V2)).unwrap();
    assert_eq!((reader.header().version, reader.header().started_ticks), (2, 1000));
    let Block::Record(mark) = blocks[45] else { panic!("{:?}", blocks[45]) };
    assert_eq!(
        (mark.event, mark.flags, mark.label()),
        (Event::Mark as u8, FLAG_MORE, &b"a mark whose label goes on and on..."[..])
    );
    let Block::Record(cap) = blocks[47] else { panic!("{:?}", blocks[47]) };
    assert_eq!(cap.size, u64::MAX);

    // The same blocks written as version 3 read back identically.
    let v3 = Removed(temp("from-v2"));
    write_v3(&v3.0, &blocks, &[3, 20]);
    assert_eq!(read_with(&v3.0, false).unwrap(), (blocks, true));
}

#[test]
fn a_version_1_file_reads_back_exactly() {
    // Version 1 had no start of a recording: the fixture without its
    // opening blocks, the header saying version 1.
    let mut bytes = std::fs::read(FIXTURE_V2).unwrap();
    bytes[8] = 1;
    bytes[72..80].fill(0); // no start ticks
    let v1: Vec<u8> = [&bytes[..FILE_HEADER_SIZE], &bytes[FILE_HEADER_SIZE + 4 * BLOCK_SIZE..]].concat();
    let path = Removed(temp("v1"));
    std::fs::write(&path.0, &v1).unwrap();
    let (blocks, finished) = read_with(&path.0, false).unwrap();
    assert!(finished);
    assert_eq!(blocks.iter().map(Block::to_bytes).collect::<Vec<_>>(), fixture_blocks()[4..]);
    let reader = RecordReader::open(&path.0).unwrap();
    assert_eq!(
        reader.header().time_base().ns(1_000_000_500),
        1_000_000_000,
        "times from the ring's creation"
    );
}

/// A record whose fields move the way the strategy says: small steps,
/// jumps, backwards, extremes.
fn field(previous: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(previous),
        4 => (0u64..64).prop_map(move |d| previous.wrapping_add(d)),
        2 => (0u64..64).prop_map(move |d| previous.wrapping_sub(d)),
        1 => Just(u64::MAX),
        1 => Just(0u64),
        1 => any::<u64>(),
    ]
}

fn ring_record() -> impl Strategy<Value = Record> {
    (
        (any::<u64>(), field(1000), field(50), field(0), field(0x10_0000), field(4096)),
        (prop_oneof![Just(0u32), Just(7), any::<u32>()], prop_oneof![Just(4242u32), any::<u32>()], 0u16..4),
        (1u8..=8, 0u8..8, prop_oneof![Just(0u8), Just(FLAG_MORE), any::<u8>()], any::<[u8; 3]>()),
        proptest::option::weighted(0.2, any::<[u8; LABEL_LEN]>()),
    )
        .prop_map(
            |(
                (ticket, timestamp, buffer_id, parent_id, address, size),
                (device_id, pid, process_slot),
                (event, kind, flags, reserved),
                label,
            )| {
                let mut record = Record {
                    ticket,
                    timestamp,
                    buffer_id,
                    parent_id,
                    address,
                    size,
                    device_id,
                    pid,
                    process_slot,
                    event,
                    kind,
                    flags,
                    reserved,
                };
                if let Some(label) = label {
                    // Text, scope and mark records carry bytes, not numbers.
                    bytemuck::bytes_of_mut(&mut record)[16..16 + LABEL_LEN].copy_from_slice(&label);
                }
                record
            },
        )
}

/// A stream: mostly ring records with tickets that mostly follow on, and
/// now and then a reader block.
fn stream() -> impl Strategy<Value = Vec<Block>> {
    let entry = prop_oneof![
        20 => (ring_record(), prop_oneof![8 => Just(None), 1 => Just(Some(0u64)), 1 => any::<u64>().prop_map(Some)])
            .prop_map(|(r, ticket)| (Some(r), ticket, None)),
        1 => any::<(u64, u64, u64, u64)>().prop_map(|(a, b, c, d)| (None, None, Some(Block::Start(StartBlock::new(a, b, c, d))))),
        1 => any::<(u64, u64)>().prop_map(|(d, w)| {
            let progress = Progress { lost_writer_died: w, ..Default::default() };
            (None, None, Some(Block::Loss(LossBlock::new(d, &progress, 3))))
        }),
    ];
    proptest::collection::vec(entry, 0..300).prop_map(|entries| {
        let mut ticket = 0u64;
        entries
            .into_iter()
            .map(|(record, jump, block)| match (record, block) {
                (Some(mut r), _) => {
                    ticket = jump.unwrap_or(ticket.wrapping_add(1));
                    r.ticket = ticket;
                    Block::Record(r)
                }
                (None, Some(b)) => b,
                (None, None) => unreachable!(),
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 8 } else { 256 }, ..ProptestConfig::default() })]

    /// Any stream, flushed anywhere, reads back as written.
    #[test]
    fn streams_round_trip(blocks in stream(), flushes in proptest::collection::vec(0usize..300, 0..10)) {
        let path = Removed(temp("prop"));
        write_v3(&path.0, &blocks, &flushes);
        let (read, finished) = read_with(&path.0, false).unwrap();
        prop_assert!(finished);
        prop_assert_eq!(read, blocks);
    }

    /// The decoder never panics on arbitrary bytes (a file with a forged
    /// but valid checksum reaches it).
    #[test]
    fn the_decoder_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut decoder = codec::Decoder::new();
        let mut at = 0;
        while at < bytes.len() {
            if decoder.entry(&bytes, &mut at).is_err() {
                break;
            }
        }
    }
}

fn sample_file() -> (Removed, Vec<Block>) {
    let blocks: Vec<Block> = fixture_blocks().iter().map(|b| Block::parse(b).unwrap()).collect();
    let path = Removed(temp("sample"));
    write_v3(&path.0, &blocks, &[3, 10, 30]);
    (path, blocks)
}

#[test]
fn every_flipped_byte_after_the_header_is_an_error_in_one_line() {
    let (path, _) = sample_file();
    let good = std::fs::read(&path.0).unwrap();
    let damaged = Removed(temp("flipped"));
    for at in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut bytes = good.clone();
            bytes[at] ^= flip;
            std::fs::write(&damaged.0, &bytes).unwrap();
            for partial in [false, true] {
                let read = read_with(&damaged.0, partial);
                if at < FILE_HEADER_SIZE {
                    // Header bytes: refused, or read (times and the ring
                    // path are free values); never a panic.
                    continue;
                }
                let error = format!("{:#}", read.expect_err("a flipped byte is found"));
                assert!(error.contains(damaged.0.to_str().unwrap()) && !error.contains('\n'), "{error}");
            }
        }
    }
}

#[test]
fn a_file_cut_anywhere_reads_up_to_its_last_complete_frame() {
    let (path, blocks) = sample_file();
    let good = std::fs::read(&path.0).unwrap();
    // The frame ends, from the frames' own headers.
    let mut ends = vec![];
    let mut at = FILE_HEADER_SIZE;
    while at < good.len() {
        let length = u32::from_le_bytes(good[at..at + 4].try_into().unwrap()) as usize;
        at += FRAME_HEADER_SIZE + length;
        ends.push(at);
    }
    assert_eq!(ends.len(), 4, "one frame per flush, the last holding the end");
    let cut = Removed(temp("cut"));
    for length in FILE_HEADER_SIZE..good.len() {
        std::fs::write(&cut.0, &good[..length]).unwrap();
        let error = format!("{:#}", read_with(&cut.0, false).unwrap_err());
        assert!(error.contains("--partial"), "{error}");
        let (read, finished) = read_with(&cut.0, true).unwrap();
        assert!(!finished);
        // Everything in the frames that are complete, nothing else.
        let expected = match ends.iter().rposition(|&end| end <= length) {
            None => 0,
            Some(0) => 4,
            Some(1) => 11,
            Some(2) => 31,
            Some(_) => unreachable!("the last frame ends the file"),
        };
        assert_eq!(read, blocks[..expected], "cut at {length}");
    }
}

#[test]
fn the_documented_python_decoder_reads_what_this_reader_reads() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/mtr-blocks.py");
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        eprintln!("no python3: skipped");
        return;
    }
    let extremes = [
        Record {
            ticket: 5,
            timestamp: u64::MAX,
            size: u64::MAX,
            process_slot: 9,
            event: 1,
            ..Default::default()
        },
        Record {
            ticket: 2,
            timestamp: 0,
            buffer_id: u64::MAX,
            process_slot: 9,
            event: 2,
            reserved: [0xFF; 3],
            ..Default::default()
        },
        Record {
            ticket: 3,
            timestamp: 0,
            device_id: u32::MAX,
            pid: 1,
            process_slot: u16::MAX,
            event: 8,
            kind: 3,
            flags: FLAG_MORE,
            ..Default::default()
        },
    ];
    let (sample, mut blocks) = sample_file();
    blocks.extend(extremes.map(Block::Record));
    let v3 = Removed(temp("python"));
    write_v3(&v3.0, &blocks, &[5, 40]);
    for (path, expected) in [
        (&sample.0, &blocks[..blocks.len() - 3]),
        (&v3.0, &blocks[..]),
        (&PathBuf::from(FIXTURE_V2), &blocks[..blocks.len() - 3]),
    ] {
        let out = std::process::Command::new("python3").arg(script).arg(path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
        let hex = |b: &Block| b.to_bytes().iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(lines, expected.iter().map(hex).collect::<Vec<_>>(), "{}", path.display());
    }
}
