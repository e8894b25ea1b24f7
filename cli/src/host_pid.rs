//! Finding a writer's pid in the reader's PID namespace.
//!
//! A writer records its pid as it sees it: in a container (its own PID
//! namespace) the first process is pid 1, whatever the host calls it. The
//! reader finds it in its own `/proc` as the process whose innermost pid
//! (the last of the `NSpid:` line of `/proc/PID/status`) is the writer's,
//! whose start time (`/proc/PID/stat` field 22, ticks since boot, the same
//! in every namespace) is the writer's, and whose PID namespace
//! (`/proc/PID/ns/pid`) is the one the writer put in the process table.
//! Start times tick 100 times a second, so two containers' first processes
//! may share one: without the namespace (a writer that did not record it)
//! two candidates mean "not found", never a guess. Only a live process can
//! be found, and only from a namespace that sees it (the writer's own or an
//! ancestor).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use memtrack::ProcessInfo;

/// For each process of a table, its pid in this process's PID namespace,
/// where it can be found.
pub fn host_pids(processes: &[ProcessInfo]) -> Vec<Option<u32>> {
    // Most writers share the reader's namespace: try their own pid first.
    let mut found: Vec<Option<u32>> =
        processes.iter().map(|p| is_process(p.pid, p).then_some(p.pid)).collect();
    if found.iter().all(Option::is_some) {
        return found;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else { return found };
    let mut candidates: Vec<Vec<u32>> = vec![Vec::new(); processes.len()];
    for entry in dir.filter_map(|e| e.ok()) {
        let Some(host) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Some(start) = start_time(host) else { continue };
        for (i, p) in processes.iter().enumerate() {
            if found[i].is_none() && p.start_time == start && is_process(host, p) {
                candidates[i].push(host);
            }
        }
    }
    for (slot, candidates) in found.iter_mut().zip(candidates) {
        if let [only] = candidates[..] {
            slot.get_or_insert(only);
        }
    }
    found
}

/// Whether `/proc/<host>` is the process `p` of a table: its innermost
/// pid, start time (0: unknown, never matched) and, where the table has
/// it, PID namespace.
fn is_process(host: u32, p: &ProcessInfo) -> bool {
    p.start_time != 0
        && start_time(host) == Some(p.start_time)
        && innermost_pid(host) == Some(p.pid)
        && (p.pid_ns == 0 || pid_namespace(host) == Some(p.pid_ns))
}

fn proc_file(pid: u32, name: &str) -> PathBuf {
    Path::new("/proc").join(pid.to_string()).join(name)
}

/// Field 22 of `/proc/<pid>/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_file(pid, "stat")).ok()?;
    // The name (field 2) may hold spaces and parentheses: count from the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// The process's pid in its own (innermost) PID namespace.
fn innermost_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(proc_file(pid, "status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// The inode of the process's PID namespace, low 32 bits (as
/// `memtrack::pid_namespace` gives it).
fn pid_namespace(pid: u32) -> Option<u32> {
    std::fs::metadata(proc_file(pid, "ns/pid")).ok().map(|m| m.ino() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_and_nothing_that_is_not() {
        let me = ProcessInfo {
            slot: 0,
            pid: std::process::id(),
            pid_ns: memtrack::pid_namespace(),
            name: String::new(),
            state: memtrack::ProcessState::Running,
            start_time: start_time(std::process::id()).unwrap(),
            generation: 1,
            dropped: 0,
            attach_ticks: 0,
        };
        let later = ProcessInfo { start_time: me.start_time + 1, ..me.clone() };
        let unknown = ProcessInfo { start_time: 0, ..me.clone() };
        let elsewhere = ProcessInfo { pid_ns: me.pid_ns ^ 1, ..me.clone() };
        assert_eq!(host_pids(&[me.clone(), later, unknown, elsewhere]), [Some(me.pid), None, None, None]);
    }
}
