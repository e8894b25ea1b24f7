//! The record-file parser and the state engine on arbitrary bytes: any
//! input is either refused with an error or read to the end; never a
//! panic, an overflow or an out-of-bounds read.
#![no_main]

// The reader's own modules, compiled into this target unchanged.
#[allow(dead_code)]
#[path = "../../cli/src/engine.rs"]
mod engine;
#[allow(dead_code)]
#[path = "../../cli/src/recording/mod.rs"]
mod recording;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("memtrack-fuzz-record-{}.mtr", std::process::id()));
    std::fs::write(&path, data).unwrap();
    if let Ok(mut reader) = recording::RecordReader::open(&path) {
        let mut engine = engine::Engine::new(reader.header().time_base());
        let _ = reader.header().ring_path();
        while let Ok(Some(block)) = reader.next_block() {
            engine.apply_block(&block);
        }
        // What `report` computes from the engine.
        for buffer in engine.remaining() {
            let _ = (buffer.counted_bytes(), buffer.references());
        }
        let _ = engine.remaining_by_process();
        let _ = engine.counter_mismatches();
        let _ = (engine.losses().total(), engine.cross_checked(), engine.marks().len());
    }
    let _ = std::fs::remove_file(&path);
});
