//! A non-consuming view of a ring: what `memtrack status` and the
//! Prometheus exporter show, read from the writers' live counters.

use crate::format::{MAX_DEVICES, MAX_KINDS, MAX_PROCESSES};
use crate::process::ProcessInfo;
use crate::ring::Progress;
use crate::shm::Ring;
use crate::sync::Ordering;

/// Live usage of one (process, device, kind) cell, as its writers keep it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveCounter {
    /// Process-table index.
    pub process_slot: u16,
    /// Device id.
    pub device_id: u32,
    /// Kind code.
    pub kind: u8,
    /// Live bytes, ALIAS buffers excluded (negative if frees of buffers
    /// allocated before tracking began outnumber allocations).
    pub live_bytes: i64,
    /// Live buffers, ALIAS buffers included.
    pub live_buffers: i64,
}

/// A capacity set with `memtrack_set_capacity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Device id.
    pub device_id: u32,
    /// Kind code.
    pub kind: u8,
    /// Total bytes.
    pub bytes: u64,
}

/// Everything a monitor shows, read at one moment without consuming.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Used process-table entries.
    pub processes: Vec<ProcessInfo>,
    /// Nonzero live-counter cells of used entries.
    pub counters: Vec<LiveCounter>,
    /// Capacities that were set.
    pub capacities: Vec<Capacity>,
    /// Consumer progress: delivered and lost counts.
    pub progress: Progress,
    /// Records dropped by writers because the ring was full.
    pub dropped: u64,
    /// Processes that found the table full and ran untracked.
    pub untracked_processes: u64,
    /// Pid of the attached consumer, if any.
    pub reader_pid: Option<u32>,
    /// Tickets claimed so far (approximately: the writers' tail hint).
    pub tail: u64,
}

impl Ring {
    /// Reads a snapshot of the ring's tables and counters.
    pub fn snapshot(&self) -> Snapshot {
        let processes = self.processes();
        let cells = self.counters();
        let counters = processes
            .iter()
            .flat_map(|p| {
                let slot = p.slot as usize;
                debug_assert!(slot < MAX_PROCESSES);
                (0..MAX_DEVICES * MAX_KINDS).filter_map(move |i| {
                    let cell = &cells[slot * MAX_DEVICES * MAX_KINDS + i];
                    let (live_bytes, live_buffers) = cell.load();
                    (live_bytes != 0 || live_buffers != 0).then_some(LiveCounter {
                        process_slot: slot as u16,
                        device_id: (i / MAX_KINDS) as u32,
                        kind: (i % MAX_KINDS) as u8,
                        live_bytes,
                        live_buffers,
                    })
                })
            })
            .collect();
        let capacities = self
            .capacities()
            .iter()
            .enumerate()
            .filter_map(|(i, cell)| {
                let bytes = cell.load(Ordering::Relaxed);
                (bytes != 0).then_some(Capacity {
                    device_id: (i / MAX_KINDS) as u32,
                    kind: (i % MAX_KINDS) as u8,
                    bytes,
                })
            })
            .collect();
        let header = self.header();
        let reader_pid = header.control.reader.reader_pid.load(Ordering::Relaxed);
        Snapshot {
            processes,
            counters,
            capacities,
            progress: self.view().progress(),
            dropped: self.view().dropped(),
            untracked_processes: header.control.loss.untracked_processes.load(Ordering::Relaxed),
            reader_pid: (reader_pid != 0).then_some(reader_pid),
            tail: header.control.tail.tail.load(Ordering::Relaxed),
        }
    }
}
