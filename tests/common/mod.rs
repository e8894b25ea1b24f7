//! Shared helpers for the integration tests: unique ring paths that clean
//! up after themselves, and draining a consumer to a Vec.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use memtrack::{Consumer, Record};

/// A ring path in /dev/shm, unique to this test process, removed on drop.
pub struct TempRing(pub PathBuf);

impl TempRing {
    pub fn new(tag: &str) -> TempRing {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempRing(memtrack::ring_path(&format!("test-{tag}-{}-{n}", std::process::id())))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempRing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What the consumer can take right now, up to `max` records.
pub fn drain_some(consumer: &mut Consumer, max: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    consumer
        .drain(max, &mut buf, |records| {
            out.extend_from_slice(records);
            Ok::<(), ()>(())
        })
        .unwrap();
    out
}

/// Everything the consumer can take right now.
pub fn drain_all(consumer: &mut Consumer) -> Vec<Record> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    consumer
        .drain(usize::MAX, &mut buf, |records| {
            out.extend_from_slice(records);
            Ok::<(), ()>(())
        })
        .unwrap();
    out
}
