//! Record file size and codec speed: version 3's delta encoding against a
//! fast general-purpose compressor (lz4_flex, zstd) over the 64-byte
//! records, on two streams:
//!
//! * `demo`: what `memtrack record` writes for `memtrack demo`'s workload
//!   (a mesh of 8 devices, 4 threads, mesh buffers, programs, marks);
//! * `churn`: alloc/free pairs of one writer flat out (sequential buffer
//!   ids, addresses cycling over 4096 pages, 8 devices), as the reader
//!   benchmark's 10 M-record input.
//!
//! For each: bytes per record (file bytes / records for the real
//! recording; encoded frames / records for each codec, frames of 4096
//! records as `record` writes them flat out) and single-thread encode and
//! decode rates (best of 5 rounds). `cargo bench -p memtrack-cli --bench
//! recfile` prints one table; no criterion (the numbers are sizes and one
//! rate per codec, side by side in one run).
#![allow(missing_docs)]

use std::path::PathBuf;
use std::time::Instant;

use memtrack::{Event, Record, Ring, RingOptions, Writer};
use memtrack_cli::recording::codec::{Decoder, Encoder, Entry};
use memtrack_cli::recording::{Block, RecordReader};
use memtrack_cli::session::Session;

const FRAME_RECORDS: usize = 4096;
const ROUNDS: usize = 5;

struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Records `memtrack demo`'s workload into a record file, as `record`
/// would; returns the file's size and its ring records.
fn demo_stream(iterations: u64) -> (u64, Vec<Record>) {
    let ring = Ring::create_unique(
        "bench-recfile",
        RingOptions { capacity: memtrack_cli::demo::ring_capacity(iterations), ..RingOptions::default() },
    )
    .unwrap();
    let ring_path = Temp(ring.path().to_path_buf());
    let file = Temp(std::env::temp_dir().join(format!("memtrack-bench-recfile-{}.mtr", std::process::id())));
    let writer = Writer::attach_named(ring, b"tt-metal-demo").unwrap();
    let mut session = Session::recorder(&ring_path.0, &file.0).unwrap();
    std::thread::scope(|s| {
        let workload = s.spawn(|| memtrack_cli::demo::run_workload(&writer, iterations));
        loop {
            let finished = workload.is_finished();
            let handled = session.poll().unwrap();
            if finished && handled == 0 {
                break;
            }
            session.pause_if_idle(handled);
        }
    });
    writer.shutdown();
    session.poll().unwrap();
    session.finish().unwrap();
    let size = std::fs::metadata(&file.0).unwrap().len();
    let mut reader = RecordReader::open(&file.0).unwrap();
    let mut records = Vec::new();
    while let Some(block) = reader.next_block().unwrap() {
        if let Block::Record(r) = block {
            records.push(r);
        }
    }
    (size, records)
}

fn churn_stream(records: u64) -> Vec<Record> {
    let live = records / 10;
    let mut out = Vec::with_capacity(records as usize);
    let mut ticket = 0;
    for round in 0..5 {
        for event in [Event::Alloc, Event::Free] {
            for i in 0..live {
                out.push(Record {
                    ticket,
                    // ~15 ns a record at 2.5 GHz: a writer flat out.
                    timestamp: 1_000_000 + ticket * 38 + (ticket * 7919) % 13,
                    buffer_id: round * live + i,
                    address: 0x1000 * (i % 4096),
                    size: 4096,
                    device_id: (i % 8) as u32,
                    pid: 4242,
                    process_slot: 1,
                    event: event as u8,
                    ..Default::default()
                });
                ticket += 1;
            }
        }
    }
    out
}

/// A way to store a stream of records in frames.
trait Codec {
    fn name(&self) -> &'static str;
    /// Appends one frame holding `records`.
    fn encode(&mut self, records: &[Record], out: &mut Vec<u8>);
    /// Decodes every frame of `bytes`; returns the records seen.
    fn decode(&mut self, bytes: &[u8], sink: &mut Vec<Record>);
}

/// Version 3: delta entries in CRC'd frames.
struct Delta(Encoder);

impl Codec for Delta {
    fn name(&self) -> &'static str {
        "delta (version 3)"
    }

    fn encode(&mut self, records: &[Record], out: &mut Vec<u8>) {
        let mut payload = Vec::with_capacity(records.len() * 16);
        for r in records {
            self.0.record(r, &mut payload);
        }
        out.extend_from_slice(&memtrack_cli::recording::framing::header_for(&payload, records.len() as u32));
        out.extend_from_slice(&payload);
    }

    fn decode(&mut self, bytes: &[u8], sink: &mut Vec<Record>) {
        use memtrack_cli::recording::framing::{FRAME_HEADER_SIZE, FrameHeader};
        let mut decoder = Decoder::new();
        let mut at = 0;
        while at < bytes.len() {
            let header = FrameHeader::parse(bytes[at..at + FRAME_HEADER_SIZE].try_into().unwrap()).unwrap();
            at += FRAME_HEADER_SIZE;
            let payload = &bytes[at..at + header.length as usize];
            header.check(payload).unwrap();
            let mut offset = 0;
            for _ in 0..header.entries {
                match decoder.entry(payload, &mut offset).unwrap() {
                    Entry::Record(r) => sink.push(r),
                    other => panic!("{other:?}"),
                }
            }
            at += header.length as usize;
        }
    }
}

/// A block compressor over the raw 64-byte records of each frame, with
/// the same 16-byte frame header (length, raw length, CRC of the payload).
struct Compressed {
    name: &'static str,
    compress: fn(&[u8]) -> Vec<u8>,
    decompress: fn(&[u8], usize) -> Vec<u8>,
}

impl Codec for Compressed {
    fn name(&self) -> &'static str {
        self.name
    }

    fn encode(&mut self, records: &[Record], out: &mut Vec<u8>) {
        let raw: &[u8] = bytemuck::cast_slice(records);
        let packed = (self.compress)(raw);
        out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&packed).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&packed);
    }

    fn decode(&mut self, bytes: &[u8], sink: &mut Vec<Record>) {
        let mut at = 0;
        while at < bytes.len() {
            let word = |i: usize| u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().unwrap()) as usize;
            let (packed, raw) = (word(0), word(4));
            let payload = &bytes[at + 16..at + 16 + packed];
            assert_eq!(crc32fast::hash(payload), word(8) as u32);
            let raw = (self.decompress)(payload, raw);
            sink.extend_from_slice(bytemuck::cast_slice(&raw));
            at += 16 + packed;
        }
    }
}

fn measure(codec: &mut dyn Codec, make: &dyn Fn() -> Box<dyn Codec>, records: &[Record]) -> (f64, f64, f64) {
    let mut best_encode = f64::MAX;
    let mut best_decode = f64::MAX;
    let mut size = 0;
    for _ in 0..ROUNDS {
        let mut fresh = make();
        let mut bytes = Vec::with_capacity(records.len() * 24);
        let start = Instant::now();
        for frame in records.chunks(FRAME_RECORDS) {
            fresh.encode(frame, &mut bytes);
        }
        best_encode = best_encode.min(start.elapsed().as_secs_f64());
        size = bytes.len();
        let mut decoded = Vec::with_capacity(records.len());
        let start = Instant::now();
        codec.decode(&bytes, &mut decoded);
        best_decode = best_decode.min(start.elapsed().as_secs_f64());
        assert!(decoded == records, "{} round-trips", codec.name());
    }
    let n = records.len() as f64;
    (size as f64 / n, n / best_encode / 1e6, n / best_decode / 1e6)
}

fn main() {
    // `cargo bench` passes `--bench`; `-- --test` (CI) and `cargo test
    // --benches` run it once, small.
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let (demo_iterations, churn_records) = if quick { (20, 100_000) } else { (500, 2_000_000) };
    let (demo_file, demo) = demo_stream(demo_iterations);
    let churn = churn_stream(churn_records);
    println!(
        "memtrack demo recorded: {} records, file {} bytes: {:.2} bytes/record (header, frames and reader blocks \
         included)",
        demo.len(),
        demo_file,
        demo_file as f64 / demo.len() as f64
    );
    type Make = Box<dyn Fn() -> Box<dyn Codec>>;
    let codecs: Vec<Make> = vec![
        Box::new(|| Box::new(Delta(Encoder::new()))),
        Box::new(|| {
            Box::new(Compressed {
                name: "lz4_flex block",
                compress: lz4_flex::block::compress,
                decompress: |b, n| lz4_flex::block::decompress(b, n).unwrap(),
            })
        }),
        Box::new(|| {
            Box::new(Compressed {
                name: "zstd level 1",
                compress: |b| zstd::bulk::compress(b, 1).unwrap(),
                decompress: |b, n| zstd::bulk::decompress(b, n).unwrap(),
            })
        }),
        Box::new(|| {
            Box::new(Compressed {
                name: "zstd level -5",
                compress: |b| zstd::bulk::compress(b, -5).unwrap(),
                decompress: |b, n| zstd::bulk::decompress(b, n).unwrap(),
            })
        }),
    ];
    println!("| stream | codec | bytes/record | encode M records/s | decode M records/s |");
    println!("|---|---|---:|---:|---:|");
    for (stream, records) in [("demo", &demo), ("churn", &churn)] {
        for make in &codecs {
            let mut codec = make();
            let (bytes, encode, decode) = measure(codec.as_mut(), make.as_ref(), records);
            println!("| {stream} | {} | {bytes:.2} | {encode:.1} | {decode:.1} |", codec.name());
        }
    }
}
