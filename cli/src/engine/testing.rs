//! Hand-written record streams, for the tests of the engine and of what
//! reads it (the watch model).

use bytemuck::Zeroable;
use memtrack::{Event, Record};

use super::Engine;
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
}

impl Stream {
    pub(crate) fn new(step: u64) -> Stream {
        Stream { engine: Engine::new(nanosecond_ticks()), now: 0, step }
    }

    /// Applies `r`, stamped `step` after the previous record.
    pub(crate) fn push(&mut self, mut r: Record) {
        self.now += self.step;
        r.timestamp = self.now;
        self.engine.apply(&r);
    }

    /// A `ProcessStart` or `Mark` record with `label`.
    pub(crate) fn labelled(&mut self, event: Event, pid: u32, slot: u16, label: &str) {
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
