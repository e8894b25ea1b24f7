//! Hand-written record streams, for the tests of the engine and of what
//! reads it (the watch model).

use bytemuck::Zeroable;
use memtrack::{Event, Record};

use super::{Engine, ProcessId};
use crate::recording::{FileHeader, TimeBase};

/// A time base where one tick is one nanosecond.
pub(crate) fn nanosecond_ticks() -> TimeBase {
    let mut header = FileHeader::zeroed();
    header.ticks_per_second = 1_000_000_000;
    header.time_base()
}

/// A buffer record of `pid` (no parent, flags 0, address 0x1000).
pub(crate) fn buffer_record(event: Event, pid: u32, device: u32, kind: u8, id: u64, size: u64) -> Record {
    Record {
        pid,
        device_id: device,
        kind,
        buffer_id: id,
        size,
        address: 0x1000,
        event: event as u8,
        ..Default::default()
    }
}

/// Records fed to an engine, each `step` nanoseconds after the last.
pub(crate) struct Stream {
    pub(crate) engine: Engine,
    pub(crate) now: u64,
    step: u64,
    /// The table entry of each pid's latest start record: the entry its
    /// other records carry.
    slots: std::collections::HashMap<u32, u16>,
}

impl Stream {
    pub(crate) fn new(step: u64) -> Stream {
        Stream { engine: Engine::new(nanosecond_ticks()), now: 0, step, slots: Default::default() }
    }

    /// The latest process with `pid`.
    pub(crate) fn id(&self, pid: u32) -> ProcessId {
        let index =
            self.engine.processes().iter().rposition(|p| p.pid == pid).expect("a process with that pid");
        ProcessId(index as u32)
    }

    /// The latest process with `pid` died now.
    pub(crate) fn died(&mut self, pid: u32) {
        let id = self.id(pid);
        self.engine.process_died(id, self.now);
    }

    /// Applies `r`, stamped `step` after the previous record, from the
    /// table entry of its pid's start (unless it names one).
    pub(crate) fn push(&mut self, mut r: Record) {
        self.now += self.step;
        r.timestamp = self.now;
        if r.process_slot == 0 {
            r.process_slot = self.slots.get(&r.pid).copied().unwrap_or(0);
        }
        self.engine.apply(&r);
    }

    /// A `ProcessStart` or `Mark` record with `label`; a start puts `pid`
    /// in table entry `slot`.
    pub(crate) fn labelled(&mut self, event: Event, pid: u32, slot: u16, label: &str) {
        if event == Event::ProcessStart {
            self.slots.insert(pid, slot);
        }
        let mut r = Record { pid, process_slot: slot, event: event as u8, ..Default::default() };
        r.set_label(label.as_bytes());
        self.push(r);
    }

    pub(crate) fn buffer(&mut self, event: Event, pid: u32, device: u32, kind: u8, id: u64, size: u64) {
        self.push(buffer_record(event, pid, device, kind, id, size));
    }

    pub(crate) fn capacity(&mut self, device: u32, kind: u8, bytes: u64) {
        let event = Event::Capacity as u8;
        self.push(Record { device_id: device, kind, size: bytes, event, ..Default::default() });
    }
}
