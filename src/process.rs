//! The process table: one entry per writer process, owned through an OFD
//! lock that the kernel releases when the process dies.

use crate::error::{Error, ErrorKind};
use crate::format::*;
use crate::ring::Owner;
use crate::shm::Ring;
use crate::sync::Ordering;

/// What the table says of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessState {
    /// Attached and alive.
    Running,
    /// Shut down cleanly.
    Exited,
    /// Gone without shutting down (its lock was released by the kernel).
    Died,
}

impl ProcessState {
    /// `running`, `exited` or `died`, as in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ProcessState::Running => "running",
            ProcessState::Exited => "exited",
            ProcessState::Died => "died",
        }
    }
}

/// A snapshot of one used process-table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Table index.
    pub slot: u16,
    /// Process id, in the process's own PID namespace.
    pub pid: u32,
    /// Its PID namespace (see [`pid_namespace`]), 0 if unknown.
    pub pid_ns: u32,
    /// Name (comm), lossily decoded.
    pub name: String,
    /// Alive, exited or died.
    pub state: ProcessState,
    /// Start time (clock ticks since boot), which with the pid names the
    /// process even after its pid is reused.
    pub start_time: u64,
    /// Generation of the entry.
    pub generation: u32,
    /// Records it dropped because the ring was full.
    pub dropped: u64,
    /// Ring clock at attach.
    pub attach_ticks: u64,
}

/// This process's entry, as a writer holds it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Registration {
    pub index: usize,
    /// The entry's generation, whole (the owner keeps its low 20 bits).
    pub generation: u32,
    pub owner: Owner,
}

/// The lock offset of entry `index`.
pub(crate) fn lock_offset(index: usize) -> i64 {
    PROCESS_LOCK_BASE + index as i64
}

impl Ring {
    /// Takes a free (or dead) process-table entry for this process.
    ///
    /// # Errors
    /// `ProcessTableFull` when every entry is held by a live process (the
    /// ring counts it in `untracked_processes`); `Io` if locking fails.
    ///
    /// Never-used entries are taken first, so that the table keeps showing
    /// exited and died processes for as long as it has room: a first pass
    /// takes only an entry still never used once its lock is held (one
    /// seen free before may since have been taken, used and left by a
    /// process that exited, whose record must stay), the second any entry
    /// whose lock is free. One registration per `Ring` (its open file
    /// description holds the locks).
    pub(crate) fn register_process(&self, name: &[u8], attach_ticks: u64) -> Result<Registration, Error> {
        for never_used_only in [true, false] {
            for index in 0..MAX_PROCESSES {
                if let Some(registration) = self.take_entry(index, never_used_only, name, attach_ticks)? {
                    return Ok(registration);
                }
            }
        }
        self.header().control.loss.untracked_processes.fetch_add(1, Ordering::Relaxed);
        Err(Error::new(self.path(), ErrorKind::ProcessTableFull(MAX_PROCESSES)))
    }

    /// Takes process-table entry `index` for this process if its lock is
    /// free, and, with `never_used_only`, if no process ever finished
    /// registering there.
    fn take_entry(
        &self,
        index: usize,
        never_used_only: bool,
        name: &[u8],
        attach_ticks: u64,
    ) -> Result<Option<Registration>, Error> {
        let entry = self.process_entry(index);
        let never_used = || entry.state.load(Ordering::Relaxed) == PROCESS_FREE;
        if never_used_only && !never_used() {
            return Ok(None); // Spares the lock probe, a system call.
        }
        if !self.try_lock(lock_offset(index))? {
            return Ok(None); // Held by a live process.
        }
        // Again with the lock held: the state is written only by the
        // lock's holder, and a process that registered and exited here
        // since the look above has given the lock back. (Relaxed: the
        // kernel's lock hand-over, its unlock or exit then our `fcntl`,
        // orders its state store before this load.)
        if never_used_only && !never_used() {
            self.unlock(lock_offset(index));
            return Ok(None);
        }
        // We own the entry: any previous owner is dead.
        let generation = entry.generation.load(Ordering::Relaxed).wrapping_add(1);
        entry.generation.store(generation, Ordering::Relaxed);
        entry.pid.store(std::process::id(), Ordering::Relaxed);
        entry.pid_ns.store(pid_namespace(), Ordering::Relaxed);
        entry.start_time.store(own_start_time(), Ordering::Relaxed);
        entry.attach_ticks.store(attach_ticks, Ordering::Relaxed);
        entry.exit_ticks.store(0, Ordering::Relaxed);
        entry.dropped.store(0, Ordering::Relaxed);
        let mut padded = [0u8; PROCESS_NAME_LEN];
        let n = name.len().min(PROCESS_NAME_LEN);
        padded[..n].copy_from_slice(&name[..n]);
        for (word, chunk) in entry.name.iter().zip(padded.chunks_exact(8)) {
            word.store(u64::from_le_bytes(chunk.try_into().expect("8 bytes")), Ordering::Relaxed);
        }
        entry.untracked_bytes.store(0, Ordering::Relaxed);
        entry.untracked_buffers.store(0, Ordering::Relaxed);
        entry.untracked_events.store(0, Ordering::Relaxed);
        crate::counters::reset_lanes(&entry.lanes, generation);
        self.reclaim_counter_cells(index, generation);
        // Release: the fields above are complete before the entry reads
        // as active; pairs with the Acquire load in `processes`.
        entry.state.store(PROCESS_ACTIVE, Ordering::Release);
        Ok(Some(Registration { index, generation, owner: Owner::new(index as u16, generation) }))
    }

    /// Frees the counter cells a new owner of entry `index` must not count
    /// on: its entry's earlier generations', and the cells of processes
    /// that have ended whose counts add up to nothing.
    ///
    /// An ended process's cells no longer change, so what it left is the
    /// sum of its cells per (device, kind) over its lanes (one thread's
    /// +4096 and another's -4096 is nothing left); every cell of a sum of
    /// (0, 0) is freed, else its entry's dead processes would keep one cell
    /// per lane and (device, kind) until the entry is taken again, and 256
    /// of them fill the pool. A cell still being initialised by an ended
    /// process counts nothing and never will: freed too. Two registrants
    /// reclaiming at once compute the same sums and free the same cells
    /// (each CAS from the owner word read, so a cell claimed since is kept).
    fn reclaim_counter_cells(&self, index: usize, generation: u32) {
        // (generation, ended) per entry, generation read *before* the lock
        // is probed: a cell of a later generation (a process that took the
        // entry since) never matches, so a live process's cell is never
        // freed here.
        let ended: Vec<(u32, bool)> = (0..MAX_PROCESSES)
            .map(|i| {
                let entry = self.process_entry(i);
                // Acquire keeps this load before the lock probe below. It has
                // no Release partner: the generation is written only by the
                // holder of the entry's lock (`register_process`), and the
                // lock, not this ordering, says whether a holder exists.
                let generation = entry.generation.load(Ordering::Acquire);
                let used = entry.state.load(Ordering::Relaxed) != PROCESS_FREE;
                (generation, i != index && used && !self.is_locked(lock_offset(i)))
            })
            .collect();
        let is_ended = |entry: usize, cell_generation: u32| {
            ended.get(entry).is_some_and(|&(current, ended)| ended && cell_generation == current)
        };
        let pool = self.counters();
        // What each ended process left per (entry, device, kind).
        let mut left = std::collections::HashMap::<(usize, u32, u8), (i64, i64)>::new();
        for reading in (0..pool.len()).filter_map(|i| pool.read(i)) {
            if is_ended(reading.entry, reading.generation) {
                let (device, kind, _lane) = counter_key_parts(reading.key);
                let sum = left.entry((reading.entry, device, kind)).or_default();
                *sum = (sum.0.wrapping_add(reading.bytes), sum.1.wrapping_add(reading.buffers));
            }
        }
        pool.reclaim_where(|entry, cell_generation, reading| {
            if entry == index {
                return cell_generation != generation;
            }
            if !is_ended(entry, cell_generation) {
                return false;
            }
            let Some(reading) = reading else { return true }; // Initialising, by a dead process.
            let (device, kind, _lane) = counter_key_parts(reading.key);
            left.get(&(entry, device, kind)) == Some(&(0, 0))
        });
    }

    /// Marks entry `index` exited (its lock stays held until the process
    /// ends, so its in-flight claims are never taken for a dead writer's).
    pub(crate) fn mark_exited(&self, index: usize, exit_ticks: u64) {
        let entry = self.process_entry(index);
        entry.exit_ticks.store(exit_ticks, Ordering::Relaxed);
        entry.state.store(PROCESS_EXITED, Ordering::Release);
    }

    /// Whether the claim owner `owner` is dead: its entry has a new owner,
    /// or nobody holds the entry's lock. Call from an attachment other than
    /// the writer's own (locks of one open file never conflict).
    pub fn is_owner_dead(&self, owner: Owner) -> bool {
        let index = owner.slot as usize;
        if index >= MAX_PROCESSES {
            return true; // No such entry: nobody can ever publish this claim.
        }
        let entry = self.process_entry(index);
        Owner::new(owner.slot, entry.generation.load(Ordering::Acquire)) != owner
            || !self.is_locked(lock_offset(index))
    }

    /// The used entries of the process table.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        (0..MAX_PROCESSES)
            .filter_map(|index| {
                let entry = self.process_entry(index);
                // Acquire: pairs with the Release store in `register_process`.
                let raw_state = entry.state.load(Ordering::Acquire);
                // The lock probe (a system call) only for an entry that
                // says it runs: readers list the table every few ms, and
                // 256 probes each time cost a reader that idles for days
                // ~12 000 system calls a second.
                let state = match raw_state {
                    PROCESS_FREE => return None,
                    PROCESS_EXITED => ProcessState::Exited,
                    _ if self.is_locked(lock_offset(index)) => ProcessState::Running,
                    _ => ProcessState::Died,
                };
                let name: Vec<u8> =
                    entry.name.iter().flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes()).collect();
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                Some(ProcessInfo {
                    slot: index as u16,
                    pid: entry.pid.load(Ordering::Relaxed),
                    pid_ns: entry.pid_ns.load(Ordering::Relaxed),
                    name: String::from_utf8_lossy(&name[..end]).into_owned(),
                    state,
                    start_time: entry.start_time.load(Ordering::Relaxed),
                    generation: entry.generation.load(Ordering::Relaxed),
                    dropped: entry.dropped.load(Ordering::Relaxed),
                    attach_ticks: entry.attach_ticks.load(Ordering::Relaxed),
                })
            })
            .collect()
    }
}

/// This process's start time, field 22 of /proc/self/stat (0 if unreadable).
fn own_start_time() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The name (field 2) may hold spaces and parentheses: count from the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The inode of this process's PID namespace, low 32 bits (0 if
/// unknown). Two processes see the same pids only within one namespace:
/// a pid another process wrote into the ring means something here only
/// when its namespace is ours.
pub fn pid_namespace() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino() as u32)
}

/// This process's name (comm), for the table.
pub(crate) fn own_name() -> Vec<u8> {
    let mut name = std::fs::read("/proc/self/comm").unwrap_or_default();
    while name.last() == Some(&b'\n') {
        name.pop();
    }
    name
}
