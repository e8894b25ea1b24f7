//! A non-consuming view of a ring: what `memtrack status` and the
//! Prometheus exporter show, read from the writers' live counters.

use std::collections::BTreeMap;

use crate::format::{MAX_PROCESSES, capacity_key_parts, counter_key_parts};
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

impl LiveCounter {
    /// (bytes, buffers) this cell holds on the device: the counts, with a
    /// negative one read as 0. A cell goes negative only through frees of
    /// buffers its records never allocated (allocated before tracking
    /// began, or a runtime bug): those are anomalies, and a negative byte
    /// count in a usage sum would hide real usage of other processes.
    pub fn held(&self) -> (u64, u64) {
        (self.live_bytes.max(0) as u64, self.live_buffers.max(0) as u64)
    }
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

/// What one process counted outside the counter pool because it found no
/// cell (the pool was full where its key would go): its records are in the
/// ring as ever, only not in [`Snapshot::counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Untracked {
    /// Process-table index.
    pub process_slot: u16,
    /// Live bytes (negative if more was freed than allocated there).
    pub bytes: i64,
    /// Live buffers.
    pub buffers: i64,
    /// Events counted here.
    pub events: u64,
}

/// One sub-ring as a snapshot saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubRingStatus {
    /// (process-table index, generation) of the process whose thread holds
    /// it, `None` when free. A holder that died holds it until another
    /// thread reclaims it.
    pub holder: Option<(u16, u32)>,
    /// Records written to it that no consumer has taken yet.
    pub waiting: u64,
}

/// A ring whose consumer stops at a slot holding a state the protocol
/// never writes (a damaged or hostile file): it takes nothing at or past
/// that ticket, ever, and that ring bounds no other ring's delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CorruptStop {
    /// The sub-ring's index, `None` for the shared ring.
    pub subring: Option<usize>,
    /// The ring's own ticket (its slot is `ticket % capacity`) where the
    /// consumer stops: every record of that ring below it can be
    /// delivered, none from it on.
    pub ticket: u64,
    /// Tickets claimed behind it (as far as one lap shows): records that
    /// will not be delivered.
    pub behind: u64,
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
    /// Processes with events the counter pool had no cell for (nonzero only).
    pub untracked: Vec<Untracked>,
    /// `set_capacity` calls that found the capacity table full.
    pub untracked_capacities: u64,
    /// Consumer progress: delivered and lost counts.
    pub progress: Progress,
    /// Records dropped by writers because the ring was full.
    pub dropped: u64,
    /// Processes that found the table full and ran untracked.
    pub untracked_processes: u64,
    /// Pid of the attached consumer, if any.
    pub reader_pid: Option<u32>,
    /// Tickets claimed so far, in the merged stream's ticket space, as
    /// `progress` is (so `progress.committed >= tail` says everything
    /// claimed before the snapshot was handed on): the shared ring's tail
    /// (approximately: the writers' tail hint) plus each sub-ring's claimed
    /// end (its consumer's `taken` plus the records claimed and not taken).
    pub tail: u64,
    /// The sub-rings, by index (none in a ring made without).
    pub subrings: Vec<SubRingStatus>,
    /// Slots per sub-ring.
    pub subring_capacity: u64,
    /// The rings whose consumer stops at a corrupt slot: the shared ring
    /// first, then sub-rings by index (empty in a sound file).
    pub corrupt: Vec<CorruptStop>,
}

impl Snapshot {
    /// Device memory held per (device, kind): the [`Snapshot::held`] bytes
    /// and buffers of the processes still running, summed. A process that
    /// has ended, whether it exited or died, holds no device memory any
    /// more (the driver released it with the process); what it never freed
    /// stays in `counters`, under its own entry, as its leak, until a new
    /// process takes the entry.
    pub fn device_usage(&self) -> BTreeMap<(u32, u8), (u64, u64)> {
        let mut usage = BTreeMap::new();
        for (c, held, _) in self.held().into_iter().filter(|(c, ..)| self.is_running(c.process_slot)) {
            let entry: &mut (u64, u64) = usage.entry((c.device_id, c.kind)).or_default();
            entry.0 = entry.0.saturating_add(held.0);
            entry.1 = entry.1.saturating_add(held.1);
        }
        usage
    }

    /// The (device, kind) pairs of [`Snapshot::device_usage`] whose figures
    /// are approximate: a running process's untracked frees were taken from
    /// them (see [`Snapshot::held`]).
    pub fn approximate_usage(&self) -> std::collections::BTreeSet<(u32, u8)> {
        self.held()
            .into_iter()
            .filter(|(c, _, approximate)| *approximate && self.is_running(c.process_slot))
            .map(|(c, ..)| (c.device_id, c.kind))
            .collect()
    }

    /// (bytes, buffers, events) the running processes counted as untracked
    /// (counter pool full) and still hold: each process's positive
    /// untracked figures (a negative one is taken from its per-device
    /// figures instead, see [`Snapshot::held`]); and events of every
    /// process. With [`Snapshot::device_usage`] it adds up to what the
    /// running processes hold in all.
    pub fn untracked_usage(&self) -> (u64, u64, u64) {
        self.untracked.iter().fold((0, 0, 0), |(bytes, buffers, events), u| {
            let running = self.is_running(u.process_slot);
            let (b, n) = if running { (u.bytes.max(0) as u64, u.buffers.max(0) as u64) } else { (0, 0) };
            (bytes.saturating_add(b), buffers.saturating_add(n), events.saturating_add(u.events))
        })
    }

    /// Each counter with the (bytes, buffers) it holds, and whether that
    /// figure is approximate.
    ///
    /// A counter's figure is its [`LiveCounter::held`], less its process's
    /// untracked deficit: a process whose untracked figure is negative
    /// freed, through events that found the pool full, buffers it had
    /// counted in cells (an alloc counted in one thread's cell, its free on
    /// a thread that found no cell). Those frees have no device in the
    /// counters, so the deficit is taken from the process's largest figures
    /// first, and the figures it touched are marked approximate: the
    /// process's total stays exact, how it splits by device does not.
    pub fn held(&self) -> Vec<(LiveCounter, (u64, u64), bool)> {
        let mut held: Vec<(LiveCounter, (u64, u64), bool)> =
            self.counters.iter().map(|c| (*c, c.held(), false)).collect();
        for u in &self.untracked {
            let mine: Vec<usize> =
                (0..held.len()).filter(|&i| held[i].0.process_slot == u.process_slot).collect();
            let mut take = |deficit: i64, field: fn(&mut (u64, u64)) -> &mut u64| {
                let mut deficit = deficit.min(0).unsigned_abs();
                let mut order = mine.clone();
                order.sort_by_key(|&i| std::cmp::Reverse(*field(&mut held[i].1)));
                for i in order {
                    let figure = field(&mut held[i].1);
                    let taken = deficit.min(*figure);
                    if taken > 0 {
                        *figure -= taken;
                        deficit -= taken;
                        held[i].2 = true;
                    }
                }
            };
            take(u.bytes, |h| &mut h.0);
            take(u.buffers, |h| &mut h.1);
        }
        held
    }

    /// Sub-rings held by a thread of a process that has not died (exited
    /// processes hold theirs until they end).
    pub fn subrings_in_use(&self) -> usize {
        let alive = |(slot, generation): (u16, u32)| {
            self.processes.iter().any(|p| {
                p.slot == slot && p.generation == generation && p.state != crate::process::ProcessState::Died
            })
        };
        self.subrings.iter().filter(|s| s.holder.is_some_and(alive)).count()
    }

    /// Whether the process in table entry `slot` is running.
    pub fn is_running(&self, slot: u16) -> bool {
        self.processes.iter().any(|p| p.slot == slot && p.state == crate::process::ProcessState::Running)
    }

    /// (bytes, buffers) the process in table entry `slot` holds or, once
    /// it has ended, left allocated: its [`Snapshot::held`] figures summed
    /// (exact, bar frees of buffers allocated before tracking began).
    pub fn process_usage(&self, slot: u16) -> (u64, u64) {
        self.held()
            .into_iter()
            .filter(|(c, ..)| c.process_slot == slot)
            .fold((0, 0), |(bytes, buffers), (_, h, _)| {
                (bytes.saturating_add(h.0), buffers.saturating_add(h.1))
            })
    }
}

/// Who holds a ring open for tracking, from the OFD locks the kernel drops
/// when a process dies (never from pids, which are reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachments {
    /// A consumer holds the reader lock.
    pub reader: bool,
    /// Process-table entries whose lock is held: writers alive, including
    /// ones that shut down tracking but have not ended.
    pub writers: usize,
}

impl Attachments {
    /// Nobody tracks into or reads this ring: removing its file loses
    /// nothing a live process would still write or read.
    pub fn is_unused(&self) -> bool {
        !self.reader && self.writers == 0
    }
}

impl Ring {
    /// Which locks of the ring are held by other open file descriptions
    /// (this attachment's own locks never count).
    pub fn attachments(&self) -> Attachments {
        Attachments {
            reader: self.is_locked(crate::format::READER_LOCK_OFFSET),
            writers: (0..MAX_PROCESSES).filter(|&i| self.is_locked(crate::process::lock_offset(i))).count(),
        }
    }

    /// Reads a snapshot of the ring's tables and counters.
    pub fn snapshot(&self) -> Snapshot {
        let processes = self.processes();
        // Current generation of each used entry: cells of any other are a
        // previous owner's, not yet reclaimed.
        let mut generation = [None; MAX_PROCESSES];
        for p in &processes {
            generation[p.slot as usize] = Some(p.generation);
        }
        let pool = self.counters();
        let mut sums: BTreeMap<(u16, u32, u8), (i64, i64)> = BTreeMap::new();
        for reading in (0..pool.len()).filter_map(|i| pool.read(i)) {
            if generation.get(reading.entry).copied().flatten() != Some(reading.generation) {
                continue;
            }
            let (device, kind, _lane) = counter_key_parts(reading.key);
            let sum = sums.entry((reading.entry as u16, device, kind)).or_default();
            *sum = (sum.0.wrapping_add(reading.bytes), sum.1.wrapping_add(reading.buffers));
        }
        let counters = sums
            .into_iter()
            .filter(|(_, v)| *v != (0, 0))
            .map(|((process_slot, device_id, kind), (live_bytes, live_buffers))| LiveCounter {
                process_slot,
                device_id,
                kind,
                live_bytes,
                live_buffers,
            })
            .collect();
        let untracked = processes
            .iter()
            .filter_map(|p| {
                let entry = self.process_entry(p.slot as usize);
                let u = Untracked {
                    process_slot: p.slot,
                    bytes: entry.untracked_bytes.load(Ordering::Relaxed) as i64,
                    buffers: entry.untracked_buffers.load(Ordering::Relaxed) as i64,
                    events: entry.untracked_events.load(Ordering::Relaxed),
                };
                (u.events != 0).then_some(u)
            })
            .collect();
        let mut capacities: Vec<Capacity> = self
            .capacities()
            .entries()
            .filter(|&(_, bytes)| bytes != 0)
            .map(|(key, bytes)| {
                let (device_id, kind) = capacity_key_parts(key);
                Capacity { device_id, kind, bytes }
            })
            .collect();
        capacities.sort_by_key(|c| (c.device_id, c.kind));
        let header = self.header();
        let reader_pid = header.control.reader.reader_pid.load(Ordering::Relaxed);
        let subrings: Vec<SubRingStatus> = (0..self.subring_count())
            .map(|i| SubRingStatus {
                holder: crate::subrings::holder(self.subring_header(i).lease.load(Ordering::Relaxed))
                    .map(|(entry, generation)| (entry as u16, generation)),
                waiting: self.subring_view(i).waiting(),
            })
            .collect();
        // Each sub-ring's `taken` is read after its `waiting` (which counts
        // from the `taken` it read itself): a consumer moving meanwhile can
        // only make the sum larger than the claimed end, never smaller, so
        // `committed >= tail` never holds while a claimed record waits.
        let subring_ends = subrings
            .iter()
            .enumerate()
            .map(|(i, s)| self.subring_view(i).progress().taken.wrapping_add(s.waiting))
            .fold(0, u64::wrapping_add);
        let corrupt = (0..=self.subring_count())
            .filter_map(|s| {
                let (subring, view) =
                    if s == 0 { (None, self.view()) } else { (Some(s - 1), self.subring_view(s - 1)) };
                view.corrupt_stop().map(|(ticket, behind)| CorruptStop { subring, ticket, behind })
            })
            .collect();
        Snapshot {
            processes,
            counters,
            capacities,
            untracked,
            untracked_capacities: header.control.loss.untracked_capacities.load(Ordering::Relaxed),
            progress: crate::consumer::total_progress(self),
            dropped: self.view().dropped(),
            untracked_processes: header.control.loss.untracked_processes.load(Ordering::Relaxed),
            reader_pid: (reader_pid != 0).then_some(reader_pid),
            tail: header.control.tail.tail.load(Ordering::Relaxed).wrapping_add(subring_ends),
            subrings,
            subring_capacity: self.subring_capacity(),
            corrupt,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::process::ProcessState;

    /// A snapshot of these processes, counters and untracked figures, and
    /// nothing else (no capacities, losses or reader).
    fn snapshot(
        processes: Vec<ProcessInfo>,
        counters: Vec<LiveCounter>,
        untracked: Vec<Untracked>,
    ) -> Snapshot {
        Snapshot {
            processes,
            counters,
            capacities: Vec::new(),
            untracked,
            untracked_capacities: 0,
            progress: Progress::default(),
            dropped: 0,
            untracked_processes: 0,
            reader_pid: None,
            tail: 0,
            subrings: Vec::new(),
            subring_capacity: 0,
            corrupt: Vec::new(),
        }
    }

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
    fn device_usage_counts_running_processes_and_never_goes_negative() {
        let counter = |process_slot, device_id, live_bytes| LiveCounter {
            process_slot,
            device_id,
            kind: 0,
            live_bytes,
            live_buffers: 1,
        };
        let snapshot = snapshot(
            vec![
                process(0, ProcessState::Running),
                process(1, ProcessState::Died),
                process(2, ProcessState::Exited),
            ],
            vec![
                counter(0, 0, 100),
                counter(1, 0, 1000),
                counter(2, 0, 10),
                counter(1, 3, 5),
                // Frees of buffers allocated before tracking began.
                LiveCounter { process_slot: 0, device_id: 1, kind: 0, live_bytes: -9000, live_buffers: -3 },
                counter(0, 2, 7),
                LiveCounter { process_slot: 0, device_id: 2, kind: 0, live_bytes: -9000, live_buffers: -3 },
            ],
            Vec::new(),
        );
        let usage: Vec<_> = snapshot.device_usage().into_iter().collect();
        // Died (slot 1) and exited (slot 2) processes hold nothing; a
        // negative cell holds nothing and takes nothing from the others.
        assert_eq!(usage, [((0, 0), (100, 1)), ((1, 0), (0, 0)), ((2, 0), (7, 1))]);
        assert_eq!(snapshot.process_usage(0), (107, 2));
        assert_eq!(snapshot.process_usage(1), (1005, 2));
    }

    /// A running process whose untracked figure is negative (it freed,
    /// untracked, what it had counted in cells): the deficit comes off its
    /// largest device figures, which are marked approximate, so device
    /// usage plus untracked usage is what the process holds in all; a
    /// positive untracked figure of another process is shown as untracked.
    #[test]
    fn an_untracked_deficit_comes_off_the_process_figures_and_marks_them_approximate() {
        let counter = |process_slot, device_id, live_bytes, live_buffers| LiveCounter {
            process_slot,
            device_id,
            kind: 0,
            live_bytes,
            live_buffers,
        };
        let untracked = |process_slot, bytes, buffers| Untracked { process_slot, bytes, buffers, events: 1 };
        let snapshot = snapshot(
            vec![process(0, ProcessState::Running), process(1, ProcessState::Running)],
            vec![counter(0, 0, 100, 1), counter(0, 1, 5000, 2), counter(1, 1, 7, 1)],
            vec![untracked(0, -4096, -1), untracked(1, 30, 1)],
        );
        let usage: Vec<_> = snapshot.device_usage().into_iter().collect();
        assert_eq!(usage, [((0, 0), (100, 1)), ((1, 0), (904 + 7, 1 + 1))]);
        assert_eq!(snapshot.approximate_usage().into_iter().collect::<Vec<_>>(), [(1, 0)]);
        assert_eq!(snapshot.untracked_usage(), (30, 1, 2));
        assert_eq!(snapshot.process_usage(0), (1004, 2), "5100 counted, 4096 freed untracked");
    }
}
