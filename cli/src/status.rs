//! `memtrack status`: what a ring's writers report right now.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;
use memtrack::{Ring, Snapshot, ring_path};
use serde_json::json;

use crate::units::{human_bytes, kind_name};

#[derive(Args)]
pub struct StatusArgs {
    /// Ring name (file /dev/shm/memtrack-NAME) or path. Default: list rings.
    #[arg(long)]
    ring: Option<String>,
    /// One JSON document instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &StatusArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let Some(name) = &args.ring else { return list_rings(&mut out, args.json) };
    let ring = Ring::open(&ring_path(name))?;
    let snapshot = ring.snapshot();
    if args.json {
        writeln!(out, "{}", to_json(&ring, &snapshot))?;
    } else {
        write_text(&mut out, &ring, &snapshot)?;
    }
    Ok(())
}

fn list_rings(out: &mut impl Write, json: bool) -> Result<()> {
    let mut rings: Vec<String> = std::fs::read_dir(memtrack::SHM_DIR)
        .with_context(|| format!("cannot list {}", memtrack::SHM_DIR))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(memtrack::RING_FILE_PREFIX).map(str::to_owned))
        .collect();
    rings.sort();
    if json {
        writeln!(out, "{}", json!({ "schema": "memtrack.rings/1", "rings": rings }))?;
    } else if rings.is_empty() {
        writeln!(out, "no rings in {}", memtrack::SHM_DIR)?;
    } else {
        for name in rings {
            writeln!(out, "{name}")?;
        }
    }
    Ok(())
}

fn to_json(ring: &Ring, s: &Snapshot) -> serde_json::Value {
    let pid_of = |slot: u16| s.processes.iter().find(|p| p.slot == slot).map_or(0, |p| p.pid);
    json!({
        "schema": "memtrack.status/1",
        "ring": ring.path(),
        "capacity": ring.capacity(),
        "reader_pid": s.reader_pid,
        "records": {
            "delivered": s.progress.delivered,
            "dropped": s.dropped,
            "lost_writer_died": s.progress.lost_writer_died,
            "lost_reader_died": s.progress.lost_reader_died,
        },
        "untracked_processes": s.untracked_processes,
        "processes": s.processes.iter().map(|p| json!({
            "pid": p.pid, "name": p.name, "state": p.state.name(), "dropped": p.dropped,
        })).collect::<Vec<_>>(),
        "usage": s.counters.iter().map(|c| json!({
            "pid": pid_of(c.process_slot), "device_id": c.device_id, "kind": kind_name(c.kind),
            "live_bytes": c.live_bytes, "live_buffers": c.live_buffers,
        })).collect::<Vec<_>>(),
        "capacities": s.capacities.iter().map(|c| json!({
            "device_id": c.device_id, "kind": kind_name(c.kind), "bytes": c.bytes,
        })).collect::<Vec<_>>(),
    })
}

fn write_text(out: &mut impl Write, ring: &Ring, s: &Snapshot) -> Result<()> {
    writeln!(out, "ring {}  ({} slots)", ring.path().display(), ring.capacity())?;
    match s.reader_pid {
        Some(pid) => writeln!(out, "consumer pid {pid}")?,
        None => writeln!(out, "no consumer attached")?,
    }
    writeln!(
        out,
        "records: {} delivered, {} dropped (ring full), {} lost (writer died), {} lost (consumer died)",
        s.progress.delivered, s.dropped, s.progress.lost_writer_died, s.progress.lost_reader_died
    )?;
    // Usage per device and kind, summed over processes.
    let mut usage: std::collections::BTreeMap<(u32, u8), (i64, i64)> = Default::default();
    for c in &s.counters {
        let entry = usage.entry((c.device_id, c.kind)).or_default();
        entry.0 += c.live_bytes;
        entry.1 += c.live_buffers;
    }
    writeln!(out, "\n{:>6}  {:<14} {:>12} {:>12} {:>8}", "device", "kind", "used", "total", "buffers")?;
    for ((device, kind), (bytes, buffers)) in &usage {
        let total = s.capacities.iter().find(|c| c.device_id == *device && c.kind == *kind);
        let total = total.map_or_else(|| "-".to_owned(), |c| human_bytes(c.bytes as i64));
        writeln!(
            out,
            "{device:>6}  {:<14} {:>12} {total:>12} {buffers:>8}",
            kind_name(*kind),
            human_bytes(*bytes)
        )?;
    }
    if usage.is_empty() {
        writeln!(out, "{:>6}  (no live buffers)", "")?;
    }
    writeln!(out, "\n{:>8}  {:<16} {:<8} {:>12} {:>8}", "pid", "name", "state", "used", "dropped")?;
    for p in &s.processes {
        let used: i64 = s.counters.iter().filter(|c| c.process_slot == p.slot).map(|c| c.live_bytes).sum();
        writeln!(
            out,
            "{:>8}  {:<16} {:<8} {:>12} {:>8}",
            p.pid,
            p.name,
            p.state.name(),
            human_bytes(used),
            p.dropped
        )?;
    }
    if s.untracked_processes > 0 {
        writeln!(
            out,
            "\n{} process(es) found the process table full and ran untracked",
            s.untracked_processes
        )?;
    }
    Ok(())
}
