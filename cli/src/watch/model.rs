//! What the screen shows, sampled from a session once per interval: the
//! engine's usage per device and kind (with a history per device and kind
//! for the sparklines), the process table, the record rate, losses, the latest
//! anomalies and marks. Plain data, so the view can be tested without a
//! ring or a terminal.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use memtrack::{CorruptStop, ProcessState, Snapshot};

use crate::engine::{Anomaly, AnomalyCounts, Engine, Mark, ProcState, ProcessId, ProcessStats, process_key};
use crate::recording::LossBlock;

/// Samples of usage kept per device and kind: more than any terminal is
/// wide.
pub const HISTORY: usize = 512;

/// Anomalies and marks kept for the screen, newest first.
pub const LATEST: usize = 8;

/// Usage of one kind of memory on one device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindRow {
    /// Kind code.
    pub kind: u8,
    /// Live bytes, ALIAS buffers excluded.
    pub live_bytes: u64,
    /// Live buffers.
    pub live_buffers: u64,
    /// Highest live bytes seen since the watch started.
    pub peak_bytes: u64,
    /// Total bytes, where `memtrack_set_capacity` said.
    pub capacity: Option<u64>,
}

impl KindRow {
    /// How full the bar is: used/total where the total is known, else
    /// used/peak. Always within 0..=1.
    pub fn fill(&self) -> f64 {
        let scale = match self.capacity {
            Some(total) if total > 0 => total,
            _ => self.peak_bytes,
        };
        if scale == 0 { 0.0 } else { (self.live_bytes as f64 / scale as f64).clamp(0.0, 1.0) }
    }
}

/// One device: its kinds and their usage over time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Device {
    /// Device id.
    pub device_id: u32,
    /// Kinds seen on it (or given a capacity), in code order.
    pub kinds: Vec<KindRow>,
    /// Per kind: live bytes at each sample, oldest first, at most
    /// [`HISTORY`]. Each kind has its own, so that each sparkline is
    /// scaled to its own kind (L1's megabytes are not lost beside DRAM's
    /// gigabytes).
    pub history: BTreeMap<u8, VecDeque<u64>>,
}

impl Device {
    /// Live bytes of all kinds.
    pub fn live_bytes(&self) -> u64 {
        self.kinds.iter().map(|k| k.live_bytes).sum()
    }

    /// Live buffers of all kinds.
    pub fn live_buffers(&self) -> u64 {
        self.kinds.iter().map(|k| k.live_buffers).sum()
    }

    /// Total bytes, if every kind's total is known.
    pub fn capacity(&self) -> Option<u64> {
        self.kinds.iter().map(|k| k.capacity).sum()
    }
}

/// One writer process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessRow {
    /// Its `process` key (table entry and generation: unique, where pids
    /// are not).
    pub process: String,
    /// Process id, as the writer saw it.
    pub pid: u32,
    /// Name (comm).
    pub name: String,
    /// Running, exited or died.
    pub state: ProcState,
    /// Live bytes as its writers count them (for a process that died: the
    /// bytes it left).
    pub live_bytes: i64,
    /// Live buffers, likewise.
    pub live_buffers: i64,
}

/// Everything on the screen.
#[derive(Clone, Debug)]
pub struct Model {
    /// The ring's path.
    pub ring: String,
    /// The record file being written, if any.
    pub recording: Option<String>,
    /// The watch's own pid: never listed among the processes.
    own_pid: u32,
    /// The watch's PID namespace, where `own_pid` is its pid.
    own_pid_ns: u32,
    /// Devices in id order.
    pub devices: Vec<Device>,
    /// Processes: running first, then by pid.
    pub processes: Vec<ProcessRow>,
    /// Records consumed since the watch started.
    pub records: u64,
    /// Records consumed per second over the last interval.
    pub rate: f64,
    /// Records lost since the watch started.
    pub losses: LossBlock,
    /// Buffer events whose live counter found the ring's counter pool full
    /// (the processes' usage leaves them out).
    pub untracked_events: u64,
    /// The rings whose consumer stops at a corrupt slot (the shared ring
    /// first): the watch's stream gets nothing of them from there on.
    pub corrupt: Vec<CorruptStop>,
    /// Anomaly counts.
    pub anomaly_counts: AnomalyCounts,
    /// The latest anomalies, newest first, at most [`LATEST`].
    pub anomalies: Vec<Anomaly>,
    /// Marks seen.
    pub mark_count: usize,
    /// The latest marks, newest first, at most [`LATEST`].
    pub marks: Vec<Mark>,
    /// Each process's key, by [`ProcessId`]: anomalies and marks name
    /// their process by it (pids repeat across PID namespaces).
    process_keys: Vec<String>,
    /// Records handled since the last sample.
    handled: u64,
    last_sample: Instant,
}

impl Model {
    /// An empty model of `ring`; `own_pid` is left out of the processes.
    pub fn new(ring: String, recording: Option<String>, own_pid: u32, now: Instant) -> Model {
        Model {
            ring,
            recording,
            own_pid,
            own_pid_ns: memtrack::pid_namespace(),
            devices: Vec::new(),
            processes: Vec::new(),
            records: 0,
            rate: 0.0,
            losses: LossBlock::default(),
            untracked_events: 0,
            corrupt: Vec::new(),
            anomaly_counts: AnomalyCounts::default(),
            anomalies: Vec::new(),
            mark_count: 0,
            marks: Vec::new(),
            process_keys: Vec::new(),
            handled: 0,
            last_sample: now,
        }
    }

    /// The key of process `id` (`?` for one the engine has not shown yet).
    pub fn process_key(&self, id: ProcessId) -> &str {
        self.process_keys.get(id.0 as usize).map_or("?", String::as_str)
    }

    /// Counts records handled by one poll, for the rate.
    pub fn count(&mut self, handled: usize) {
        self.handled += handled as u64;
    }

    /// Takes a sample: the engine's state, the losses and the ring's
    /// process table and capacities (`snapshot`) at `now`.
    pub fn sample(&mut self, engine: &Engine, losses: LossBlock, snapshot: &Snapshot, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_sample).as_secs_f64();
        if elapsed > 0.0 {
            self.rate = self.handled as f64 / elapsed;
            self.handled = 0;
            self.last_sample = now;
        }
        self.records = engine.records();
        self.losses = losses;
        self.untracked_events = snapshot.untracked_usage().2;
        self.corrupt = snapshot.corrupt.clone();
        self.anomaly_counts = engine.anomaly_counts();
        self.anomalies = engine.recent_anomalies().iter().rev().take(LATEST).copied().collect();
        self.mark_count = engine.marks().len();
        self.marks = engine.marks().iter().rev().take(LATEST).cloned().collect();
        // A process's key never changes: only the new ones.
        let known = self.process_keys.len();
        self.process_keys.extend(engine.processes()[known..].iter().map(ProcessStats::key));
        self.sample_devices(engine, snapshot);
        self.sample_processes(engine, snapshot);
    }

    fn sample_devices(&mut self, engine: &Engine, snapshot: &Snapshot) {
        let mut rows: Vec<(u32, KindRow)> = engine
            .devices()
            .iter()
            .map(|(&(device_id, kind), s)| {
                let row = KindRow {
                    kind,
                    live_bytes: s.live_bytes,
                    live_buffers: s.live_buffers,
                    peak_bytes: s.peak_bytes,
                    capacity: s.capacity,
                };
                (device_id, row)
            })
            .collect();
        // A capacity set before the watch started is in the ring's table,
        // not in the stream.
        for c in &snapshot.capacities {
            match rows.iter_mut().find(|(d, r)| *d == c.device_id && r.kind == c.kind) {
                Some((_, row)) => {
                    row.capacity.get_or_insert(c.bytes);
                }
                None => rows.push((
                    c.device_id,
                    KindRow { kind: c.kind, capacity: Some(c.bytes), ..Default::default() },
                )),
            }
        }
        rows.sort_by_key(|&(d, r)| (d, r.kind));

        let mut old = std::mem::take(&mut self.devices).into_iter().peekable();
        for (device_id, row) in rows {
            if self.devices.last().is_none_or(|d| d.device_id != device_id) {
                // Carry the history over from the previous sample.
                while old.next_if(|d| d.device_id < device_id).is_some() {}
                let history =
                    old.next_if(|d| d.device_id == device_id).map(|d| d.history).unwrap_or_default();
                self.devices.push(Device { device_id, kinds: Vec::new(), history });
            }
            self.devices.last_mut().expect("pushed above").kinds.push(row);
        }
        for device in &mut self.devices {
            for row in &device.kinds {
                let history = device.history.entry(row.kind).or_default();
                if history.len() == HISTORY {
                    history.pop_front();
                }
                history.push_back(row.live_bytes);
            }
        }
    }

    /// The ring's process table (live states and the writers' counters),
    /// plus processes the stream showed that have left the table.
    fn sample_processes(&mut self, engine: &Engine, snapshot: &Snapshot) {
        let mut rows: Vec<ProcessRow> = snapshot
            .processes
            .iter()
            // Our pid in our namespace (a writer in a container may have
            // the same number).
            .filter(|p| !(p.pid == self.own_pid && (p.pid_ns == 0 || p.pid_ns == self.own_pid_ns)))
            .map(|p| {
                let (live_bytes, live_buffers) = snapshot.process_usage(p.slot);
                let (live_bytes, live_buffers) = (live_bytes as i64, live_buffers as i64);
                let state = match p.state {
                    ProcessState::Running => ProcState::Running,
                    ProcessState::Exited => ProcState::Exited,
                    ProcessState::Died => ProcState::Died,
                };
                ProcessRow {
                    process: process_key(p.slot, p.generation),
                    pid: p.pid,
                    name: p.name.clone(),
                    state,
                    live_bytes,
                    live_buffers,
                }
            })
            .collect();
        for (id, p) in engine.processes().iter().enumerate() {
            let process = p.key();
            // Ourselves, unless our pid in this namespace says it is another
            // process's (a writer in a container with the same number).
            let ours = p.pid == self.own_pid && p.host_pid.is_none_or(|host| host == self.own_pid);
            if ours || rows.iter().any(|r| r.process == process) {
                continue;
            }
            let left = |f: fn(&crate::engine::LiveBuffer) -> u64| {
                engine.ended_with(crate::engine::ProcessId(id as u32)).map(f).sum::<u64>() as i64
            };
            rows.push(ProcessRow {
                process,
                pid: p.pid,
                name: p.name.clone(),
                state: p.state,
                live_bytes: left(|b| b.counted_bytes()),
                live_buffers: left(|b| b.references() as u64),
            });
        }
        let rank = |s: ProcState| match s {
            ProcState::Running => 0,
            ProcState::Died => 1,
            ProcState::Exited => 2,
        };
        rows.sort_by(|a, b| (rank(a.state), a.pid, &a.process).cmp(&(rank(b.state), b.pid, &b.process)));
        self.processes = rows;
    }
}
