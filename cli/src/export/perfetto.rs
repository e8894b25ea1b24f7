//! `memtrack export --format perfetto`: a record file as a Chrome
//! trace-event JSON timeline, for ui.perfetto.dev (and chrome://tracing);
//! `--format perfetto-proto` writes the same timeline through another
//! [`Sink`], [`super::perfetto_proto`].
//!
//! What is in it, and the rules that keep it truthful:
//!
//! * **Time**: every `ts` is wall-clock microseconds since the Unix epoch
//!   (with three decimals: nanoseconds): the ring's creation time
//!   (`created_unix_ns`, taken with the clock calibration) plus the
//!   record's calibrated ring-clock time. So the trace lines up with
//!   other traces of the same machine (Tracy, the tt-metal profiler).
//! * **Usage counters**, one track per device and kind, named `<KIND>
//!   bytes` under a `device N` process (Perfetto names a counter track
//!   "event name + argument key"). Samples are bucketed per microsecond
//!   (`--bucket-us`), but a bucket keeps its highest and lowest value and
//!   its last one, each at its own time: no peak and no trough is lost, and
//!   the last value of every bucket is exact. A `<KIND> capacity bytes` track where a writer
//!   set a capacity.
//! * **Buffer lifetimes** as slices from allocation to free, on lanes
//!   (threads `<KIND> buffers`, `<KIND> buffers 2`, ...) under the device so
//!   that overlapping buffers never overlap on one track. The rule: with
//!   at most [`ALL_SLICES_UP_TO`] buffers in the recording, every one;
//!   with more, every buffer still alive at the end (up to
//!   [`LEAKED_UP_TO`], the largest first) and the [`LARGEST_PER_TRACK`]
//!   largest freed buffers of each device and kind. Buffers alive at the
//!   end run to the end of the trace and are named `leak: ...` (category
//!   `buffer,leak`, argument `leaked: true`); the buffers of a process that
//!   died end at its death (`freed_by: "process died"`).
//! * **Writer processes**: one process track per process as the engine
//!   tells them apart (its table entry and generation, [`ProcessId`]),
//!   never per pid: two containers' workloads are both pid 1, and pids are
//!   reused. Its Perfetto pid is synthetic ([`process_pid`]); its name
//!   says who it is: `w pid 2 (process 0.1, host pid 41234)` (comm, pid
//!   as the writer saw it, process key, pid in the reader's namespace
//!   where the reader found it).
//! * **Phases**: each mark starts a phase that lasts until the same
//!   process's next mark, its end (exit or death) or the end of the trace:
//!   a slice on that process's `phases` thread. Scopes (SCOPE records) are
//!   not drawn yet: `report` and `export --format csv` show them.
//! * Anomalies and process deaths as instant events on the process.
//!
//! `otherData` holds the ring, the clock origin and the slice rule applied.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::Write;

use anyhow::Result;
use memtrack::Event;
use serde_json::{Value, json};

use crate::engine::{BufferKey, Engine, LiveBuffer, ProcState, ProcessId, ProcessStats};
use crate::recording::{Block, RecordReader};
use crate::units::{human_bytes, kind_name};

/// Every buffer lifetime is a slice in recordings with at most this many
/// buffers.
pub const ALL_SLICES_UP_TO: usize = 20_000;

/// In larger recordings: the largest freed buffers kept per device and kind.
pub const LARGEST_PER_TRACK: usize = 200;

/// In larger recordings: buffers alive at the end kept (the largest).
pub const LEAKED_UP_TO: usize = 20_000;

/// Devices are shown as processes with these ids, far above any real pid
/// (pid_max is at most 2^22).
const DEVICE_PID_BASE: u64 = 1 << 30;

/// Writer processes are shown as processes with these ids plus their
/// [`ProcessId`]: unique in the recording where pids are not, and apart
/// from real pids, devices and synthetic tids.
const PROCESS_PID_BASE: u64 = 1 << 29;

/// Synthetic thread ids (lanes, phases) are handed out from here: unique
/// across the trace, as Perfetto keys threads by tid.
const TID_BASE: u64 = 1 << 31;

/// Writes the timeline of `reader` to `out` as trace-event JSON, counters
/// bucketed by `bucket_ns` (at most three samples per bucket and track).
pub fn write_json(reader: &mut RecordReader, out: &mut impl Write, bucket_ns: u64) -> Result<()> {
    let clock = Clock { origin_unix_ns: reader.header().origin_unix_ns() };
    let trace = Trace::start(out, clock)?;
    write_with(reader, trace, bucket_ns)
}

/// As [`write_json`], as a Perfetto protobuf trace ([`super::perfetto_proto`]).
pub fn write_proto(reader: &mut RecordReader, out: &mut impl Write, bucket_ns: u64) -> Result<()> {
    let origin = reader.header().origin_unix_ns();
    write_with(reader, super::perfetto_proto::ProtoTrace::new(out, origin), bucket_ns)
}

fn write_with(reader: &mut RecordReader, mut trace: impl Sink, bucket_ns: u64) -> Result<()> {
    let header = *reader.header();
    let time = header.time_base();
    let mut engine = Engine::new(time);
    let mut timeline = Timeline { bucket_ns: bucket_ns.max(1), ..Timeline::default() };
    let mut failed = Ok(());
    while let Some(block) = reader.next_block_or_left_out(|b| {
        // A record a filter left out can end a process: its entry's next
        // owner's (`Engine::follow_owner`), then a new process.
        let processes = engine.processes().len();
        engine.follow_owner(b);
        if engine.processes().len() != processes && failed.is_ok() {
            failed = timeline.after_deaths(&mut trace, &engine);
        }
    })? {
        std::mem::replace(&mut failed, Ok(()))?;
        let anomalies_before = engine.anomalies().len();
        let marks_before = engine.marks().len();
        let ended_before = ended_count(&engine);
        // The reference a FREE releases, asked of the engine before it
        // applies the record (the engine holds every live buffer; the
        // export keeps none of its own).
        let released = match &block {
            Block::Record(r) if r.event() == Some(Event::Free) => engine
                .released_by(r)
                .map(|(buffer, size, start_ns)| (buffer.key, Open::of(buffer, size, start_ns))),
            _ => None,
        };
        engine.apply_block(&block);
        if let Block::Record(record) = &block {
            let t = time.ns(record.timestamp);
            match record.event() {
                Some(Event::Alloc) => {
                    timeline.sample(&mut trace, &engine, (record.device_id, record.kind), t)?;
                }
                Some(Event::Free) => {
                    if let Some((key, open)) = released {
                        timeline.lifetimes.add(Lifetime { key, open, end_ns: t, end: End::Freed });
                        timeline.sample(&mut trace, &engine, (record.device_id, record.kind), t)?;
                    }
                }
                Some(Event::Capacity) => {
                    let track = (record.device_id, record.kind);
                    timeline.name_device(&mut trace, record.device_id)?;
                    trace.counter(track, "capacity", t, record.size)?;
                    timeline.capacities.insert(track, record.size);
                }
                Some(Event::ProcessStart) => {
                    if let Some(id) = engine.last_process() {
                        timeline.name_process(&mut trace, &engine, id)?;
                    }
                }
                _ => {}
            }
        }
        if ended_count(&engine) != ended_before {
            timeline.after_deaths(&mut trace, &engine)?;
        }
        for mark in &engine.marks()[marks_before..] {
            timeline.mark(&mut trace, &engine, mark.process, &mark.label, mark.time_ns)?;
        }
        for a in &engine.anomalies()[anomalies_before..] {
            let name = format!("{} {} buffer {}", a.kind.name(), kind_name(a.key.kind), a.key.buffer_id);
            let args = json!({
                "process": engine.process(a.key.process).key(), "pid": a.key.pid,
                "device_id": a.key.device_id, "kind": kind_name(a.key.kind), "buffer_id": a.key.buffer_id,
                "size": a.size, "expected_size": a.expected_size,
            });
            let pid = timeline.name_process(&mut trace, &engine, a.key.process)?;
            trace.instant(&name, "anomaly", pid, a.time_ns, args)?;
        }
    }
    failed?;
    let (rule, buffers) = timeline.finish(&mut trace, &engine)?;
    let other = json!({
        "memtrack": {
            "ring": header.ring_path(),
            "ring_created_unix_ns": header.ring_created_unix_ns,
            "recording_started_unix_ns": header.started_unix_ns,
            "timestamps": "wall clock: microseconds since the Unix epoch",
            "buffer_slices": rule,
            "buffers": buffers,
        }
    });
    trace.finish(&other)
}

/// Processes that ended (exited or died): each one's usage left the devices.
fn ended_count(engine: &Engine) -> usize {
    engine.processes().iter().filter(|p| p.state != ProcState::Running).count()
}

/// Turns ns since the ring's creation into trace timestamps.
struct Clock {
    origin_unix_ns: u64,
}

impl Clock {
    /// Wall-clock microseconds with nanosecond decimals, as JSON number text.
    fn ts(&self, ns: u64) -> String {
        micros(self.origin_unix_ns.saturating_add(ns))
    }
}

/// `ns` as microseconds with three decimals: `1234.567`.
fn micros(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// A buffer reference not yet freed.
#[derive(Clone, Copy, Debug)]
struct Open {
    start_ns: u64,
    size: u64,
    parent_id: u64,
    address: u64,
    flags: u8,
}

impl Open {
    /// The reference of `buffer` allocated at `start_ns` with `size` bytes.
    fn of(buffer: &LiveBuffer, size: u64, start_ns: u64) -> Open {
        Open { start_ns, size, parent_id: buffer.parent_id, address: buffer.address, flags: buffer.flags }
    }
}

/// How a lifetime ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Freed,
    /// Alive at the end of the recording.
    Leaked,
    /// Its process died.
    Died,
}

#[derive(Clone, Copy, Debug)]
struct Lifetime {
    key: BufferKey,
    open: Open,
    end_ns: u64,
    end: End,
}

impl Lifetime {
    /// Larger first; among equals, the earlier.
    fn rank(&self) -> (u64, Reverse<u64>, Reverse<BufferKey>) {
        (self.open.size, Reverse(self.open.start_ns), Reverse(self.key))
    }
}

/// A lifetime ordered by [`Lifetime::rank`], for the heaps.
struct Ranked(Lifetime);

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.0.rank() == other.0.rank()
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.rank().cmp(&other.0.rank())
    }
}

/// The freed lifetimes kept: all of them while there are few, then the
/// largest per (device, kind).
#[derive(Default)]
struct Lifetimes {
    /// Buffer lifetimes seen (freed, leaked and died).
    seen: u64,
    /// Every freed lifetime, until there are more than [`ALL_SLICES_UP_TO`].
    all: Vec<Lifetime>,
    /// Past that: per (device, kind), a min-heap of the largest.
    largest: Option<Largest>,
}

impl Lifetimes {
    fn add(&mut self, lifetime: Lifetime) {
        self.seen += 1;
        match &mut self.largest {
            None if self.all.len() < ALL_SLICES_UP_TO => self.all.push(lifetime),
            None => {
                let mut largest = BTreeMap::new();
                for l in std::mem::take(&mut self.all).into_iter().chain([lifetime]) {
                    keep_largest(&mut largest, l);
                }
                self.largest = Some(largest);
            }
            Some(largest) => keep_largest(largest, lifetime),
        }
    }

    /// Whether every lifetime is kept (the recording has few buffers).
    fn keeps_all(&self, still_open: usize) -> bool {
        self.largest.is_none() && self.all.len() + still_open <= ALL_SLICES_UP_TO
    }

    /// The slice rule applied, in words.
    fn rule(&self, keeps_all: bool) -> String {
        if keeps_all {
            format!("all {} buffers (recordings of at most {ALL_SLICES_UP_TO} show them all)", self.seen)
        } else {
            format!(
                "{} buffers, more than {ALL_SLICES_UP_TO}: every buffer alive at the end (the {LEAKED_UP_TO} \
                 largest) and the {LARGEST_PER_TRACK} largest freed buffers of each device and kind",
                self.seen
            )
        }
    }

    /// The freed lifetimes kept.
    fn freed(self) -> Vec<Lifetime> {
        match self.largest {
            None => self.all,
            Some(largest) => largest.into_values().flat_map(|heap| heap.into_iter().map(|r| r.0.0)).collect(),
        }
    }
}

/// Per (device, kind): a min-heap of the largest freed lifetimes.
type Largest = BTreeMap<(u32, u8), BinaryHeap<Reverse<Ranked>>>;

fn keep_largest(largest: &mut Largest, lifetime: Lifetime) {
    let heap = largest.entry((lifetime.key.device_id, lifetime.key.kind)).or_default();
    push_bounded(heap, lifetime, LARGEST_PER_TRACK);
}

/// Keeps the `keep` largest lifetimes in a min-heap. Once the heap is full,
/// most lifetimes rank below its smallest and need no push and pop (a
/// recording that leaves 20 M buffers pushed and popped each of them).
fn push_bounded(heap: &mut BinaryHeap<Reverse<Ranked>>, lifetime: Lifetime, keep: usize) {
    let lifetime = Ranked(lifetime);
    if heap.len() >= keep && heap.peek().is_some_and(|Reverse(smallest)| lifetime < *smallest) {
        return;
    }
    heap.push(Reverse(lifetime));
    if heap.len() > keep {
        heap.pop(); // The smallest.
    }
}

/// One counter track's current bucket: its highest, lowest and last
/// (time, value).
#[derive(Clone, Copy, Debug)]
struct Bucket {
    index: u64,
    high: (u64, u64),
    low: (u64, u64),
    last: (u64, u64),
}

impl Bucket {
    fn new(index: u64, t: u64, value: u64) -> Bucket {
        Bucket { index, high: (t, value), low: (t, value), last: (t, value) }
    }

    fn add(&mut self, t: u64, value: u64) {
        if value > self.high.1 {
            self.high = (t, value);
        }
        if value < self.low.1 {
            self.low = (t, value);
        }
        self.last = (t, value);
    }

    /// The samples to write, in time order, one per distinct time.
    fn samples(&self) -> Vec<(u64, u64)> {
        let mut samples = vec![self.high, self.low, self.last];
        samples.sort_by_key(|&(t, _)| t);
        // Several at one time: the last one written there is the value.
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(3);
        for (t, v) in samples {
            match out.last_mut() {
                Some(previous) if previous.0 == t => {
                    *previous = if t == self.last.0 { self.last } else { (t, v) }
                }
                _ => out.push((t, v)),
            }
        }
        out
    }
}

/// What the export tracks besides the engine.
#[derive(Default)]
struct Timeline {
    /// Counter bucket width.
    bucket_ns: u64,
    /// Per process: whether its buffers' lifetimes ended at its death.
    deaths_done: Vec<bool>,
    lifetimes: Lifetimes,
    /// Per (device, kind): the counter bucket being filled.
    buckets: BTreeMap<(u32, u8), Bucket>,
    /// The last live bytes written or buffered per track.
    values: BTreeMap<(u32, u8), u64>,
    capacities: BTreeMap<(u32, u8), u64>,
    named_devices: std::collections::BTreeSet<u32>,
    /// Per process: the name its track was given last.
    process_names: BTreeMap<ProcessId, String>,
    /// Per process: its current phase (label, start).
    phases: BTreeMap<ProcessId, (String, u64)>,
    /// Per process: the tid of its phases track.
    phase_tids: BTreeMap<ProcessId, u64>,
    next_tid: u64,
}

impl Timeline {
    fn tid(&mut self) -> u64 {
        self.next_tid += 1;
        TID_BASE + self.next_tid
    }

    fn name_device(&mut self, trace: &mut impl Sink, device: u32) -> Result<()> {
        if self.named_devices.insert(device) {
            let pid = device_pid(device);
            trace.metadata("process_name", pid, None, json!({ "name": format!("device {device}") }))?;
            trace.metadata("process_sort_index", pid, None, json!({ "sort_index": device }))?;
        }
        Ok(())
    }

    /// Names the track of process `id` as the engine knows it now (again
    /// when that changed: its host pid is often found after its first
    /// record); its Perfetto pid.
    fn name_process(&mut self, trace: &mut impl Sink, engine: &Engine, id: ProcessId) -> Result<u64> {
        let pid = process_pid(id);
        let name = process_name(engine.process(id));
        if self.process_names.get(&id) != Some(&name) {
            trace.metadata("process_name", pid, None, json!({ "name": name }))?;
            if self.process_names.insert(id, name).is_none() {
                // Writers in order of appearance, above the devices.
                let sort = json!({ "sort_index": -(1 << 20) + i64::from(id.0) });
                trace.metadata("process_sort_index", pid, None, sort)?;
            }
        }
        Ok(pid)
    }

    /// The track's usage changed at `t`: into its bucket, writing the
    /// previous bucket out when `t` starts a new one.
    fn sample(&mut self, trace: &mut impl Sink, engine: &Engine, track: (u32, u8), t: u64) -> Result<()> {
        let Some(stats) = engine.devices().get(&track) else { return Ok(()) };
        self.name_device(trace, track.0)?;
        let value = stats.live_bytes;
        self.values.insert(track, value);
        match self.buckets.get_mut(&track) {
            Some(bucket) if bucket.index == t / self.bucket_ns => bucket.add(t, value),
            Some(bucket) => {
                for (t, v) in bucket.samples() {
                    trace.counter(track, "", t, v)?;
                }
                *bucket = Bucket::new(t / self.bucket_ns, t, value);
            }
            None => {
                self.buckets.insert(track, Bucket::new(t / self.bucket_ns, t, value));
            }
        }
        Ok(())
    }

    /// A process ended: its usage left the devices (sample the tracks that
    /// changed); if it died, its open buffers end now (an exited one's run
    /// to the end of the trace, as leaks).
    fn after_deaths(&mut self, trace: &mut impl Sink, engine: &Engine) -> Result<()> {
        let changed: Vec<(u32, u8)> = engine
            .devices()
            .iter()
            .filter(|(track, s)| self.values.get(track).is_some_and(|&v| v != s.live_bytes))
            .map(|(&track, _)| track)
            .collect();
        let t = engine.last_time_ns();
        for track in changed {
            self.sample(trace, engine, track, t)?;
        }
        // An ended process's phase ends with it.
        let ended: Vec<ProcessId> = self
            .phases
            .keys()
            .copied()
            .filter(|&id| engine.process(id).state != ProcState::Running)
            .collect();
        for id in ended {
            let (label, start) = self.phases.remove(&id).expect("an open phase");
            let end = engine.process(id).end_time_ns.unwrap_or(t).max(start);
            self.phase(trace, engine, id, &label, start, end)?;
        }
        for (id, p) in engine.processes().iter().enumerate() {
            if self.deaths_done.len() <= id {
                self.deaths_done.resize(id + 1, false);
            }
            if p.state != ProcState::Died || self.deaths_done[id] {
                continue;
            }
            self.deaths_done[id] = true;
            let end_ns = p.end_time_ns.unwrap_or(t);
            for (buffer, size, start_ns) in engine.ended_references(ProcessId(id as u32)) {
                let open = Open::of(buffer, size, start_ns);
                self.lifetimes.add(Lifetime { key: buffer.key, open, end_ns, end: End::Died });
            }
        }
        Ok(())
    }

    /// A mark of process `id`: its previous phase ends, a new one starts.
    fn mark(
        &mut self,
        trace: &mut impl Sink,
        engine: &Engine,
        id: ProcessId,
        label: &str,
        t: u64,
    ) -> Result<()> {
        if let Some((previous, start)) = self.phases.insert(id, (label.to_owned(), t)) {
            self.phase(trace, engine, id, &previous, start, t)?;
        }
        Ok(())
    }

    fn phase(
        &mut self,
        trace: &mut impl Sink,
        engine: &Engine,
        id: ProcessId,
        label: &str,
        start: u64,
        end: u64,
    ) -> Result<()> {
        let pid = self.name_process(trace, engine, id)?;
        let tid = match self.phase_tids.get(&id) {
            Some(&tid) => tid,
            None => {
                let tid = self.tid();
                self.phase_tids.insert(id, tid);
                trace.metadata("thread_name", pid, Some(tid), json!({ "name": "phases" }))?;
                tid
            }
        };
        let p = engine.process(id);
        let slice = Slice { name: label, cat: "phase", pid, tid, start, end };
        trace.slice(&slice, json!({ "mark": label, "process": p.key(), "pid": p.pid }))
    }

    /// Writes what is left: the last counter buckets, the capacities to the
    /// end, the buffer lifetimes on lanes, the open phases, deaths. Returns
    /// the slice rule applied and the number of buffer lifetimes.
    fn finish(mut self, trace: &mut impl Sink, engine: &Engine) -> Result<(String, u64)> {
        let end = engine.last_time_ns();
        for (&track, bucket) in &self.buckets {
            for (t, v) in bucket.samples() {
                trace.counter(track, "", t, v)?;
            }
        }
        for (&track, &bytes) in &self.capacities {
            trace.counter(track, "capacity", end, bytes)?;
        }
        for (id, (label, start)) in std::mem::take(&mut self.phases) {
            self.phase(trace, engine, id, &label, start, end)?;
        }
        for (id, p) in engine.processes().iter().enumerate() {
            // Every writer named, with what the end of the recording knows.
            let pid = self.name_process(trace, engine, ProcessId(id as u32))?;
            if p.state == ProcState::Died {
                let name = format!("process {} died", p.pid);
                let args = json!({ "process": p.key(), "pid": p.pid, "buffers_left": p.ended_with.len() });
                trace.instant(&name, "process", pid, p.end_time_ns.unwrap_or(end), args)?;
            }
        }

        // Lifetimes: alive at the end (leaked), then the freed ones kept.
        // Every reference still open: the running processes' and those
        // exited ones left (a dead one's ended at its death).
        let leaked_now = || {
            let exited = engine.processes().iter().enumerate().filter(|(_, p)| p.state == ProcState::Exited);
            let left = exited.flat_map(|(id, _)| engine.ended_references(ProcessId(id as u32)));
            engine.running_references().chain(left).map(|(buffer, size, start_ns)| Lifetime {
                key: buffer.key,
                open: Open::of(buffer, size, start_ns),
                end_ns: end,
                end: End::Leaked,
            })
        };
        let still_open = leaked_now().count();
        let keeps_all = self.lifetimes.keeps_all(still_open);
        // The largest LEAKED_UP_TO, in a bounded min-heap: a recording may
        // leave millions.
        let keep = if keeps_all { usize::MAX } else { LEAKED_UP_TO };
        let mut largest: BinaryHeap<Reverse<Ranked>> = BinaryHeap::new();
        for lifetime in leaked_now() {
            push_bounded(&mut largest, lifetime, keep);
        }
        let leaked: Vec<Lifetime> = largest.into_sorted_vec().into_iter().map(|r| r.0.0).collect();
        self.lifetimes.seen += still_open as u64;
        let lifetimes = std::mem::take(&mut self.lifetimes);
        let (rule, seen) = (lifetimes.rule(keeps_all), lifetimes.seen);
        let mut all = lifetimes.freed();
        all.extend(leaked);
        let keys: Vec<String> = engine.processes().iter().map(ProcessStats::key).collect();
        self.lanes(trace, all, &keys)?;
        Ok((rule, seen))
    }

    /// Puts lifetimes on lanes, per device and kind, so that none overlap
    /// on one lane, and writes them; `keys` are the processes' keys.
    fn lanes(&mut self, trace: &mut impl Sink, mut all: Vec<Lifetime>, keys: &[String]) -> Result<()> {
        all.sort_by_key(|l| (l.key.device_id, l.key.kind, l.open.start_ns, l.end_ns));
        let mut i = 0;
        while i < all.len() {
            let track = (all[i].key.device_id, all[i].key.kind);
            let j = i + all[i..].iter().take_while(|l| (l.key.device_id, l.key.kind) == track).count();
            self.name_device(trace, track.0)?;
            // Lanes by (free from, lane index): the earliest free lane first.
            let mut free: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
            let mut tids: Vec<u64> = Vec::new();
            for l in &all[i..j] {
                let lane = match free.peek() {
                    Some(&Reverse((from, lane))) if from <= l.open.start_ns => {
                        free.pop();
                        lane
                    }
                    _ => {
                        let lane = tids.len();
                        let tid = self.tid();
                        tids.push(tid);
                        let pid = device_pid(track.0);
                        let kind = kind_name(track.1);
                        let name = if lane == 0 {
                            format!("{kind} buffers")
                        } else {
                            format!("{kind} buffers {}", lane + 1)
                        };
                        trace.metadata("thread_name", pid, Some(tid), json!({ "name": name }))?;
                        let sort = u64::from(track.1) * 100_000 + lane as u64;
                        trace.metadata("thread_sort_index", pid, Some(tid), json!({ "sort_index": sort }))?;
                        lane
                    }
                };
                free.push(Reverse((l.end_ns, lane)));
                self.buffer_slice(trace, l, tids[lane], &keys[l.key.process.0 as usize])?;
            }
            i = j;
        }
        Ok(())
    }

    /// The slice of lifetime `l`, of the process whose key is `process`.
    fn buffer_slice(&self, trace: &mut impl Sink, l: &Lifetime, tid: u64, process: &str) -> Result<()> {
        let what =
            format!("{} buffer {} ({})", kind_name(l.key.kind), l.key.buffer_id, human_bytes(l.open.size));
        let (name, cat) = match l.end {
            End::Leaked => (format!("leak: {what}"), "buffer,leak"),
            End::Died | End::Freed => (what, "buffer"),
        };
        let freed_by = match l.end {
            End::Freed => "free",
            End::Leaked => "never freed (alive at the end of the recording)",
            End::Died => "process died",
        };
        let args = json!({
            "process": process, "pid": l.key.pid, "device_id": l.key.device_id, "kind": kind_name(l.key.kind),
            "buffer_id": l.key.buffer_id, "size": l.open.size, "parent_id": l.open.parent_id,
            "address": format!("{:#x}", l.open.address), "flags": l.open.flags,
            "leaked": l.end == End::Leaked, "freed_by": freed_by,
        });
        let pid = device_pid(l.key.device_id);
        let slice = Slice { name: &name, cat, pid, tid, start: l.open.start_ns, end: l.end_ns };
        trace.slice(&slice, args)
    }
}

/// A complete event: a slice from `start` to `end`.
pub(super) struct Slice<'a> {
    pub name: &'a str,
    /// Comma-separated categories.
    pub cat: &'a str,
    pub pid: u64,
    pub tid: u64,
    /// ns since the ring's creation.
    pub start: u64,
    pub end: u64,
}

/// Where the timeline goes: trace-event JSON ([`Trace`]) or a Perfetto
/// protobuf trace. Times are ns since the ring's creation; pids and tids
/// as in the JSON form (devices and lanes are synthetic ids).
pub(super) trait Sink {
    /// A `process_name`, `process_sort_index`, `thread_name` or
    /// `thread_sort_index` metadata event.
    fn metadata(&mut self, name: &str, pid: u64, tid: Option<u64>, args: Value) -> Result<()>;
    /// A usage sample of track `<KIND> bytes` (or `<KIND> <what> bytes`).
    fn counter(&mut self, track: (u32, u8), what: &str, t: u64, bytes: u64) -> Result<()>;
    fn slice(&mut self, slice: &Slice, args: Value) -> Result<()>;
    /// A process-scoped instant event.
    fn instant(&mut self, name: &str, cat: &str, pid: u64, t: u64, args: Value) -> Result<()>;
    /// Ends the trace; `other` says how it was made.
    fn finish(self, other: &Value) -> Result<()>;
}

/// `{"displayTimeUnit":"ns","traceEvents":[...],"otherData":{...}}`,
/// written one event at a time (timestamps as exact decimal text, which
/// serde_json's f64 would round).
struct Trace<'a, W: Write> {
    out: &'a mut W,
    first: bool,
    clock: Clock,
}

impl<'a, W: Write> Trace<'a, W> {
    fn start(out: &'a mut W, clock: Clock) -> Result<Self> {
        out.write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")?;
        Ok(Trace { out, first: true, clock })
    }

    fn separator(&mut self) -> Result<()> {
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        Ok(())
    }
}

/// `text` as a JSON string.
fn json_string(text: &str) -> String {
    Value::from(text).to_string()
}

/// The track name of a usage counter: `DRAM`, `DRAM capacity`.
pub(super) fn counter_name(kind: u8, what: &str) -> String {
    if what.is_empty() { kind_name(kind) } else { format!("{} {what}", kind_name(kind)) }
}

/// The pid under which writer process `id` is shown.
fn process_pid(id: ProcessId) -> u64 {
    PROCESS_PID_BASE + u64::from(id.0)
}

/// The name of a writer process's track: `w pid 2 (process 0.1, host pid
/// 41234)`; the comm and the host pid where known.
fn process_name(p: &ProcessStats) -> String {
    let comm = if p.name.is_empty() { String::new() } else { format!("{} ", p.name) };
    let host = p.host_pid.map_or_else(String::new, |host| format!(", host pid {host}"));
    format!("{comm}pid {} (process {}{host})", p.pid, p.key())
}

/// The pid under which device `device` is shown.
pub(super) fn device_pid(device: u32) -> u64 {
    DEVICE_PID_BASE + device as u64
}

impl<W: Write> Sink for Trace<'_, W> {
    fn metadata(&mut self, name: &str, pid: u64, tid: Option<u64>, args: Value) -> Result<()> {
        self.separator()?;
        let tid = tid.map_or_else(String::new, |t| format!(",\"tid\":{t}"));
        write!(self.out, "{{\"ph\":\"M\",\"name\":\"{name}\",\"pid\":{pid}{tid},\"args\":{args}}}")?;
        Ok(())
    }

    fn counter(&mut self, (device, kind): (u32, u8), what: &str, t: u64, bytes: u64) -> Result<()> {
        self.separator()?;
        write!(
            self.out,
            "{{\"ph\":\"C\",\"name\":{},\"pid\":{},\"ts\":{},\"args\":{{\"bytes\":{bytes}}}}}",
            json_string(&counter_name(kind, what)),
            device_pid(device),
            self.clock.ts(t)
        )?;
        Ok(())
    }

    fn slice(&mut self, s: &Slice, args: Value) -> Result<()> {
        self.separator()?;
        write!(
            self.out,
            "{{\"ph\":\"X\",\"name\":{},\"cat\":\"{}\",\"pid\":{},\"tid\":{},\"ts\":{},\"dur\":{},\"args\":{args}}}",
            json_string(s.name),
            s.cat,
            s.pid,
            s.tid,
            self.clock.ts(s.start),
            micros(s.end.saturating_sub(s.start))
        )?;
        Ok(())
    }

    fn instant(&mut self, name: &str, cat: &str, pid: u64, t: u64, args: Value) -> Result<()> {
        self.separator()?;
        write!(
            self.out,
            "{{\"ph\":\"i\",\"s\":\"p\",\"name\":{},\"cat\":\"{cat}\",\"pid\":{pid},\"tid\":{pid},\"ts\":{},\"args\":{args}}}",
            json_string(name),
            self.clock.ts(t)
        )?;
        Ok(())
    }

    fn finish(self, other: &Value) -> Result<()> {
        write!(self.out, "\n],\"otherData\":{other}}}\n")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_keeps_its_peak_its_trough_and_its_last_value() {
        let mut b = Bucket::new(1, 1000, 10);
        b.add(1100, 8192); // A short peak...
        b.add(1200, 0); // ...gone within the microsecond.
        b.add(1300, 5);
        assert_eq!(b.samples(), [(1100, 8192), (1200, 0), (1300, 5)]);
        let b = Bucket::new(0, 7, 3);
        assert_eq!(b.samples(), [(7, 3)]);
    }

    #[test]
    fn timestamps_are_exact_decimal_microseconds() {
        let clock = Clock { origin_unix_ns: 1_764_473_000_123_456_789 };
        assert_eq!(clock.ts(0), "1764473000123456.789");
        assert_eq!(clock.ts(211), "1764473000123457.000");
        assert_eq!(micros(5), "0.005");
    }

    #[test]
    fn two_processes_with_one_pid_get_two_pids_and_names_that_tell_them_apart() {
        use crate::engine::testing::Stream;
        // Two writers that are both pid 7 (two containers), in entries 1 and 2.
        let mut s = Stream::new(1_000);
        s.labelled(Event::ProcessStart, 7, 1, "model");
        s.labelled(Event::ProcessStart, 7, 2, "");
        let names: Vec<String> = s.engine.processes().iter().map(process_name).collect();
        assert_eq!(names, ["model pid 7 (process 1.1)", "pid 7 (process 2.1)"]);
        let pids = [process_pid(ProcessId(0)), process_pid(ProcessId(1))];
        assert_ne!(pids[0], pids[1]);
        assert!(pids.iter().all(|&p| p > 1 << 22 && p < DEVICE_PID_BASE && p < TID_BASE), "{pids:?}");
    }

    #[test]
    fn many_lifetimes_keep_the_largest_per_track() {
        let mut lifetimes = Lifetimes::default();
        let key = |id| BufferKey { process: ProcessId(0), pid: 1, device_id: 0, kind: 0, buffer_id: id };
        let open = |size| Open { start_ns: 0, size, parent_id: 0, address: 0, flags: 0 };
        for id in 0..(ALL_SLICES_UP_TO as u64 + 500) {
            lifetimes.add(Lifetime { key: key(id), open: open(id), end_ns: 1, end: End::Freed });
        }
        assert!(!lifetimes.keeps_all(0));
        let kept = lifetimes.freed();
        assert_eq!(kept.len(), LARGEST_PER_TRACK);
        let smallest = kept.iter().map(|l| l.open.size).min().unwrap();
        assert_eq!(smallest, ALL_SLICES_UP_TO as u64 + 500 - LARGEST_PER_TRACK as u64);
    }
}
