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

impl Snapshot {
    /// Live (bytes, buffers) per (device, kind), summed over the processes
    /// that are running or exited. A process that died no longer holds
    /// device memory (its driver state went with it); its counters stay in
    /// `counters`, under its own entry, until a new process takes it.
    pub fn device_usage(&self) -> std::collections::BTreeMap<(u32, u8), (i64, i64)> {
        let died = |slot: u16| {
            self.processes.iter().any(|p| p.slot == slot && p.state == crate::process::ProcessState::Died)
        };
        let mut usage = std::collections::BTreeMap::new();
        for c in self.counters.iter().filter(|c| !died(c.process_slot)) {
            let entry: &mut (i64, i64) = usage.entry((c.device_id, c.kind)).or_default();
            entry.0 = entry.0.wrapping_add(c.live_bytes);
            entry.1 = entry.1.wrapping_add(c.live_buffers);
        }
        usage
    }
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::process::ProcessState;

    fn process(slot: u16, state: ProcessState) -> ProcessInfo {
        ProcessInfo {
            slot,
            pid: 100 + slot as u32,
            name: String::new(),
            state,
            start_time: 0,
            generation: 1,
            dropped: 0,
            pid_ns: 0,
            attach_ticks: 0,
        }
    }

    #[test]
    fn device_usage_leaves_out_processes_that_died() {
        let counter = |process_slot, device_id, live_bytes| LiveCounter {
            process_slot,
            device_id,
            kind: 0,
            live_bytes,
            live_buffers: 1,
        };
        let snapshot = Snapshot {
            processes: vec![
                process(0, ProcessState::Running),
                process(1, ProcessState::Died),
                process(2, ProcessState::Exited),
            ],
            counters: vec![counter(0, 0, 100), counter(1, 0, 1000), counter(2, 0, 10), counter(1, 3, 5)],
            capacities: Vec::new(),
            progress: Progress::default(),
            dropped: 0,
            untracked_processes: 0,
            reader_pid: None,
            tail: 0,
        };
        let usage: Vec<_> = snapshot.device_usage().into_iter().collect();
        assert_eq!(usage, [((0, 0), (110, 2))]);
    }
}
