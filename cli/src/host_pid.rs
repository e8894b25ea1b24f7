//! Finding a writer's pid in the reader's PID namespace.
//!
//! A writer records its pid as it sees it: in a container (its own PID
//! namespace) the first process is pid 1, whatever the host calls it. The
//! pid and the start time (`/proc/PID/stat` field 22, ticks since boot,
//! the same in every namespace) name the process; the reader finds it in
//! its own `/proc` as the process with that start time whose innermost pid
//! (the last of the `NSpid:` line of `/proc/PID/status`) is the writer's.
//! Only a live process can be found, and only from a namespace that sees it
//! (the writer's own or an ancestor).

use std::path::Path;

/// For each (pid as the writer saw it, start time), the process's pid in
/// this process's PID namespace, where it can be found.
pub fn host_pids(wanted: &[(u32, u64)]) -> Vec<Option<u32>> {
    // Most writers share the reader's namespace: try their own pid first.
    let mut found: Vec<Option<u32>> =
        wanted.iter().map(|&(pid, start)| is_process(pid, pid, start).then_some(pid)).collect();
    if found.iter().all(Option::is_some) {
        return found;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else { return found };
    for entry in dir.filter_map(|e| e.ok()) {
        let Some(host) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Some(start) = start_time(host) else { continue };
        for (slot, &(pid, wanted_start)) in found.iter_mut().zip(wanted) {
            if slot.is_none() && wanted_start == start && innermost_pid(host) == Some(pid) {
                *slot = Some(host);
            }
        }
    }
    found
}

/// Whether `/proc/<host>` is the process that calls itself `pid` and
/// started at `start` (0: unknown, never matched).
fn is_process(host: u32, pid: u32, start: u64) -> bool {
    start != 0 && start_time(host) == Some(start) && innermost_pid(host) == Some(pid)
}

/// Field 22 of `/proc/<pid>/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The name (field 2) may hold spaces and parentheses: count from the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// The process's pid in its own (innermost) PID namespace.
fn innermost_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_and_nothing_that_is_not() {
        let me = std::process::id();
        let start = start_time(me).unwrap();
        assert_eq!(host_pids(&[(me, start), (me, start + 1), (me, 0)]), [Some(me), None, None]);
    }
}
