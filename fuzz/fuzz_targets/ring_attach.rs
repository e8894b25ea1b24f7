//! Ring attach/validation on arbitrary files, and on whatever attaches: a
//! snapshot, a consumer taking everything it can (bounded), a writer
//! writing a few records. Never a panic, a hang or a read outside the
//! mapping. Inputs shorter than the header are padded from a valid empty
//! ring's header bytes half the time, so that the fuzzer gets past the
//! magic and the length checks.
#![no_main]

use std::os::unix::fs::PermissionsExt;

use libfuzzer_sys::fuzz_target;
use memtrack::format::{DEFAULT_COUNTER_CELLS, MIN_SUBRING_CAPACITY, slots_offset};
use memtrack::{Consumer, MemtrackBuffer, Ring, Writer};

/// The file length of the fuzzed rings: 16 shared slots, one sub-ring of
/// the smallest size.
fn file_size() -> u64 {
    memtrack::format::file_size(16, DEFAULT_COUNTER_CELLS, 1, MIN_SUBRING_CAPACITY)
}

fn valid_header() -> Vec<u8> {
    let mut h = vec![0u8; slots_offset(DEFAULT_COUNTER_CELLS, 1, MIN_SUBRING_CAPACITY)];
    h[0..8].copy_from_slice(b"MEMTRACK");
    h[8..12].copy_from_slice(&memtrack::format::FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&64u32.to_le_bytes());
    h[16..24].copy_from_slice(&16u64.to_le_bytes());
    h[24..32].copy_from_slice(&file_size().to_le_bytes());
    h[32..36].copy_from_slice(&(memtrack::format::MAX_PROCESSES as u32).to_le_bytes());
    h[36..40].copy_from_slice(&memtrack::format::DEFAULT_COUNTER_CELLS.to_le_bytes());
    h[40..44].copy_from_slice(&(memtrack::format::CAPACITY_ENTRIES as u32).to_le_bytes());
    h[60..64].copy_from_slice(&memtrack::format::COUNTER_LANES.to_le_bytes());
    h[64..68].copy_from_slice(&1u32.to_le_bytes()); // One sub-ring.
    h[68..72].copy_from_slice(&MIN_SUBRING_CAPACITY.to_le_bytes());
    h[144..152].copy_from_slice(&1_000_000_000u64.to_le_bytes());
    h
}

fuzz_target!(|data: &[u8]| {
    let bytes = match data.split_first() {
        // A valid header and slots of 16, with the input laid over them
        // from an offset the input chooses.
        Some((&mode, rest)) if mode & 1 == 1 => {
            let mut file = valid_header();
            file.resize(file_size() as usize, 0);
            let at = (mode as usize >> 1) * 2048 % file.len();
            let n = rest.len().min(file.len() - at);
            file[at..at + n].copy_from_slice(&rest[..n]);
            file
        }
        _ => data.to_vec(),
    };
    let path = std::env::temp_dir().join(format!("memtrack-fuzz-ring-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, &bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    if let Ok(ring) = Ring::open(&path) {
        let _ = ring.snapshot();
        if let Ok(mut consumer) = Consumer::attach(&path) {
            let mut out = Vec::new();
            for _ in 0..64 {
                let batch = consumer.take(8, &mut out);
                consumer.commit();
                if batch.records + batch.lost == 0 {
                    break;
                }
            }
        }
        if let Ok(writer) = Ring::open(&path).and_then(Writer::attach) {
            for id in 0..20 {
                writer.alloc(&MemtrackBuffer { buffer_id: id, size: 1, ..Default::default() });
            }
            writer.shutdown();
        }
    }
    let _ = std::fs::remove_file(&path);
});
