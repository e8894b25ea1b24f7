//! `memtrack export --format perfetto-proto`: the same timeline as
//! [`super::perfetto`], as a native Perfetto trace (protobuf), encoded
//! with `prost`.
//!
//! The messages below are the subset of Perfetto's published trace schema
//! (`protos/perfetto/trace/perfetto_trace.proto`) this exporter writes,
//! with the schema's field numbers: `Trace.packet` (1); `TracePacket`:
//! `timestamp` (8), `trusted_packet_sequence_id` (10), `track_event` (11),
//! `sequence_flags` (13), `track_descriptor` (60); `TrackDescriptor`:
//! `uuid` (1), `name` (2), `process` (3), `parent_uuid` (5), `counter`
//! (8); `ProcessDescriptor`: `pid` (1), `process_name` (6);
//! `CounterDescriptor.unit` (3); `TrackEvent`: `debug_annotations` (4),
//! `type` (9), `track_uuid` (11), `categories` (22), `name` (23),
//! `counter_value` (30); `DebugAnnotation`: `bool_value` (2), `uint_value`
//! (3), `int_value` (4), `double_value` (5), `string_value` (6), `name`
//! (10). `cli/tests/export.rs` decodes the output with the schema itself
//! (the Python classes Perfetto publishes in its `perfetto` package).
//!
//! Layout: one track per device (a process track, pid as in the JSON
//! form), under it a counter track per kind (`DRAM bytes`, unit bytes) and
//! a track per lane of buffer slices; a process track per writer process
//! (per process key, never per pid: the pid and name of the JSON form)
//! with its `phases` track and its instants. Slices are a begin and an end
//! event. Timestamps are wall-clock nanoseconds (the trace's default
//! clock). The trace is a stream of length-delimited `Trace.packet`
//! fields, which is itself a valid `Trace`.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Result;
use prost::Message;
use serde_json::Value;

use super::perfetto::{Sink, Slice, counter_name, device_pid};

/// `Trace.packet`, field 1, wire type 2 (length-delimited).
const PACKET_TAG: u8 = (1 << 3) | 2;

/// The one packet sequence this writer uses.
const SEQUENCE_ID: u32 = 1;

/// `TracePacket.sequence_flags`: SEQ_INCREMENTAL_STATE_CLEARED.
const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;

/// `TrackEvent.Type`.
const TYPE_SLICE_BEGIN: i32 = 1;
const TYPE_SLICE_END: i32 = 2;
const TYPE_INSTANT: i32 = 3;
const TYPE_COUNTER: i32 = 4;

/// `CounterDescriptor.Unit`: UNIT_SIZE_BYTES.
const UNIT_SIZE_BYTES: i32 = 3;

#[derive(Clone, PartialEq, Message)]
struct TracePacket {
    #[prost(uint64, optional, tag = "8")]
    timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "10")]
    trusted_packet_sequence_id: Option<u32>,
    #[prost(message, optional, tag = "11")]
    track_event: Option<TrackEvent>,
    #[prost(uint32, optional, tag = "13")]
    sequence_flags: Option<u32>,
    #[prost(message, optional, tag = "60")]
    track_descriptor: Option<TrackDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct TrackDescriptor {
    #[prost(uint64, optional, tag = "1")]
    uuid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    name: Option<String>,
    #[prost(message, optional, tag = "3")]
    process: Option<ProcessDescriptor>,
    #[prost(uint64, optional, tag = "5")]
    parent_uuid: Option<u64>,
    #[prost(message, optional, tag = "8")]
    counter: Option<CounterDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct ProcessDescriptor {
    #[prost(int32, optional, tag = "1")]
    pid: Option<i32>,
    #[prost(string, optional, tag = "6")]
    process_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct CounterDescriptor {
    #[prost(int32, optional, tag = "3")]
    unit: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct TrackEvent {
    #[prost(message, repeated, tag = "4")]
    debug_annotations: Vec<DebugAnnotation>,
    #[prost(int32, optional, tag = "9")]
    r#type: Option<i32>,
    #[prost(uint64, optional, tag = "11")]
    track_uuid: Option<u64>,
    #[prost(string, repeated, tag = "22")]
    categories: Vec<String>,
    #[prost(string, optional, tag = "23")]
    name: Option<String>,
    #[prost(int64, optional, tag = "30")]
    counter_value: Option<i64>,
}

#[derive(Clone, PartialEq, Message)]
struct DebugAnnotation {
    #[prost(bool, optional, tag = "2")]
    bool_value: Option<bool>,
    #[prost(uint64, optional, tag = "3")]
    uint_value: Option<u64>,
    #[prost(int64, optional, tag = "4")]
    int_value: Option<i64>,
    #[prost(double, optional, tag = "5")]
    double_value: Option<f64>,
    #[prost(string, optional, tag = "6")]
    string_value: Option<String>,
    #[prost(string, optional, tag = "10")]
    name: Option<String>,
}

/// Track uuids: a process track by its (synthetic, unique) pid, other
/// tracks numbered.
fn process_uuid(pid: u64) -> u64 {
    (1 << 62) | pid
}

/// The protobuf form of the timeline.
pub struct ProtoTrace<'a, W: Write> {
    out: &'a mut W,
    origin_unix_ns: u64,
    first: bool,
    buffer: Vec<u8>,
    /// Process tracks written (a pid gets one even without a name).
    processes: HashMap<u64, ()>,
    /// (pid, tid) -> track uuid of a thread-like track (lanes, phases).
    threads: HashMap<(u64, u64), u64>,
    /// Counter tracks by name and device.
    counters: HashMap<(u32, String), u64>,
    next_uuid: u64,
}

impl<'a, W: Write> ProtoTrace<'a, W> {
    /// A trace whose times count from `origin_unix_ns`.
    pub fn new(out: &'a mut W, origin_unix_ns: u64) -> Self {
        ProtoTrace {
            out,
            origin_unix_ns,
            first: true,
            buffer: Vec::with_capacity(256),
            processes: HashMap::new(),
            threads: HashMap::new(),
            counters: HashMap::new(),
            next_uuid: 1,
        }
    }

    fn packet(&mut self, mut packet: TracePacket) -> Result<()> {
        packet.trusted_packet_sequence_id = Some(SEQUENCE_ID);
        if self.first {
            packet.sequence_flags = Some(SEQ_INCREMENTAL_STATE_CLEARED);
            self.first = false;
        }
        self.buffer.clear();
        self.buffer.push(PACKET_TAG);
        packet.encode_length_delimited(&mut self.buffer)?;
        self.out.write_all(&self.buffer)?;
        Ok(())
    }

    fn descriptor(&mut self, descriptor: TrackDescriptor) -> Result<()> {
        self.packet(TracePacket { track_descriptor: Some(descriptor), ..Default::default() })
    }

    fn event(&mut self, t: u64, event: TrackEvent) -> Result<()> {
        let timestamp = Some(self.origin_unix_ns.saturating_add(t));
        self.packet(TracePacket { timestamp, track_event: Some(event), ..Default::default() })
    }

    /// The track of process `pid`, described on first use.
    fn process(&mut self, pid: u64, name: Option<String>) -> Result<u64> {
        let uuid = process_uuid(pid);
        if name.is_some() || !self.processes.contains_key(&pid) {
            self.processes.insert(pid, ());
            let process = ProcessDescriptor { pid: Some(pid as i32), process_name: name };
            self.descriptor(TrackDescriptor {
                uuid: Some(uuid),
                process: Some(process),
                ..Default::default()
            })?;
        }
        Ok(uuid)
    }

    fn new_uuid(&mut self) -> u64 {
        self.next_uuid += 1;
        self.next_uuid
    }

    /// The track of (pid, tid), named `name` (described again when named).
    fn thread(&mut self, pid: u64, tid: u64, name: Option<String>) -> Result<u64> {
        let parent = self.process(pid, None)?;
        let uuid = match self.threads.get(&(pid, tid)) {
            Some(&uuid) if name.is_none() => return Ok(uuid),
            Some(&uuid) => uuid,
            None => {
                let uuid = self.new_uuid();
                self.threads.insert((pid, tid), uuid);
                uuid
            }
        };
        let descriptor =
            TrackDescriptor { uuid: Some(uuid), name, parent_uuid: Some(parent), ..Default::default() };
        self.descriptor(descriptor)?;
        Ok(uuid)
    }
}

/// JSON arguments as debug annotations (nested values as JSON text).
fn annotations(args: &Value) -> Vec<DebugAnnotation> {
    let Some(args) = args.as_object() else { return Vec::new() };
    args.iter()
        .map(|(name, value)| {
            let mut a = DebugAnnotation { name: Some(name.clone()), ..Default::default() };
            match value {
                Value::Bool(b) => a.bool_value = Some(*b),
                Value::Number(n) if n.is_u64() => a.uint_value = n.as_u64(),
                Value::Number(n) if n.is_i64() => a.int_value = n.as_i64(),
                Value::Number(n) => a.double_value = n.as_f64(),
                Value::String(s) => a.string_value = Some(s.clone()),
                other => a.string_value = Some(other.to_string()),
            }
            a
        })
        .collect()
}

fn categories(cat: &str) -> Vec<String> {
    cat.split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect()
}

impl<W: Write> Sink for ProtoTrace<'_, W> {
    fn metadata(&mut self, name: &str, pid: u64, tid: Option<u64>, args: Value) -> Result<()> {
        let label = args["name"].as_str().map(str::to_owned);
        match (name, tid) {
            ("process_name", _) => self.process(pid, label).map(drop),
            ("thread_name", Some(tid)) => self.thread(pid, tid, label).map(drop),
            // Sort indices have no counterpart here: tracks keep their order.
            _ => Ok(()),
        }
    }

    fn counter(&mut self, (device, kind): (u32, u8), what: &str, t: u64, bytes: u64) -> Result<()> {
        let name = format!("{} bytes", counter_name(kind, what));
        let uuid = match self.counters.get(&(device, name.clone())) {
            Some(&uuid) => uuid,
            None => {
                let parent = self.process(device_pid(device), None)?;
                let uuid = self.new_uuid();
                self.counters.insert((device, name.clone()), uuid);
                self.descriptor(TrackDescriptor {
                    uuid: Some(uuid),
                    name: Some(name),
                    parent_uuid: Some(parent),
                    counter: Some(CounterDescriptor { unit: Some(UNIT_SIZE_BYTES) }),
                    ..Default::default()
                })?;
                uuid
            }
        };
        let value = i64::try_from(bytes).unwrap_or(i64::MAX);
        let event = TrackEvent {
            r#type: Some(TYPE_COUNTER),
            track_uuid: Some(uuid),
            counter_value: Some(value),
            ..Default::default()
        };
        self.event(t, event)
    }

    fn slice(&mut self, s: &Slice, args: Value) -> Result<()> {
        let uuid = self.thread(s.pid, s.tid, None)?;
        let begin = TrackEvent {
            r#type: Some(TYPE_SLICE_BEGIN),
            track_uuid: Some(uuid),
            name: Some(s.name.to_owned()),
            categories: categories(s.cat),
            debug_annotations: annotations(&args),
            ..Default::default()
        };
        self.event(s.start, begin)?;
        let end = TrackEvent { r#type: Some(TYPE_SLICE_END), track_uuid: Some(uuid), ..Default::default() };
        self.event(s.end.max(s.start), end)
    }

    fn instant(&mut self, name: &str, cat: &str, pid: u64, t: u64, args: Value) -> Result<()> {
        let uuid = self.process(pid, None)?;
        let event = TrackEvent {
            r#type: Some(TYPE_INSTANT),
            track_uuid: Some(uuid),
            name: Some(name.to_owned()),
            categories: categories(cat),
            debug_annotations: annotations(&args),
            ..Default::default()
        };
        self.event(t, event)
    }

    fn finish(self, _other: &Value) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}
