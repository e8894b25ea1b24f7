//! `memtrack status`: what a ring's writers report right now, once or
//! every `--interval` milliseconds (`-l` seconds) until Ctrl-C; as text, a
//! JSON document, or one CSV / JSON line per device and kind (`query`).

mod query;

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use memtrack::{Ring, Snapshot};
use serde_json::json;

use crate::engine::process_key;
use crate::host_pid::host_pids;
use crate::units::{human_bytes, kind_name, printable, printable_path};
use crate::{ring_arg, signals};

#[derive(Args)]
pub struct StatusArgs {
    /// Ring name (file /dev/shm/memtrack-NAME) or path. Default:
    /// $MEMTRACK_RING if set, else the list of rings in /dev/shm.
    #[arg(long, value_name = "NAME")]
    ring: Option<String>,
    /// One JSON document instead of text (one per line with --interval).
    #[arg(long)]
    json: bool,
    /// Repeat every MS milliseconds until Ctrl-C.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    interval: Option<u64>,
    /// Repeat every SECONDS until Ctrl-C (as nvidia-smi -l).
    #[arg(short = 'l', long = "loop", value_name = "SECONDS", conflicts_with = "interval",
          value_parser = clap::value_parser!(u64).range(1..))]
    loop_seconds: Option<u64>,
    /// text (default), csv, csv,noheader or json: with csv and json, one
    /// line per ring, device and kind (json: one object per line), numbers
    /// in bytes. Without --ring, every ring in /dev/shm.
    #[arg(long, value_name = "FORMAT", conflicts_with = "json")]
    format: Option<String>,
    /// Fields of --format csv|json, comma-separated, from timestamp, ring,
    /// device, kind, used, total, free, percent, buffers.
    #[arg(long, value_name = "FIELDS", default_value = query::DEFAULT_QUERY)]
    query: String,
}

pub fn run(args: &StatusArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let rows = match args.format.as_deref().map(query::parse_format).transpose()?.flatten() {
        Some(format) => Some((format, query::parse_query(&args.query)?)),
        None => None,
    };
    // Without --ring: $MEMTRACK_RING's ring if set, else the list.
    let name = match &args.ring {
        Some(name) => Some(name.clone()),
        None => ring_arg::from_env()?,
    };
    let ring = match name {
        Some(name) => Some(open(&name)?),
        None => None,
    };
    let mut first = true;
    let mut show_once = |out: &mut std::io::StdoutLock, time_ns: Option<u64>| {
        let shown = match &rows {
            Some((format, fields)) => show_rows(out, ring.as_ref(), *format, fields, first),
            None => show(out, ring.as_ref(), args.json, time_ns),
        };
        first = false;
        shown
    };
    let interval = args.interval.map(Duration::from_millis).or(args.loop_seconds.map(Duration::from_secs));
    let Some(interval) = interval else {
        return show_once(&mut out, None);
    };
    signals::install();
    let mut next = Instant::now();
    loop {
        show_once(&mut out, Some(memtrack::clock::realtime_ns()))?;
        // Each snapshot reaches a pipe as soon as it is taken.
        out.flush()?;
        next += interval;
        // Sleep in short steps so Ctrl-C ends the wait promptly.
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            if signals::take().is_some() {
                return Ok(());
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
        if signals::take().is_some() {
            return Ok(());
        }
        // Slower than the interval (a stalled pipe): do not catch up.
        next = next.max(Instant::now());
        if !args.json && rows.is_none() {
            writeln!(out)?;
        }
    }
}

/// The ring called `name`, or why not; a record file given by mistake
/// is named as one ([`ring_arg::resolve`]).
fn open(name: &str) -> Result<Ring> {
    Ok(Ring::open(&ring_arg::resolve(Some(name))?)?)
}

/// One line per ring, device and kind: of `ring`, or of every ring in
/// /dev/shm that opens (one that does not is named on stderr and skipped).
fn show_rows(
    out: &mut impl Write,
    ring: Option<&Ring>,
    format: query::RowFormat,
    fields: &[query::Field],
    first: bool,
) -> Result<()> {
    let timestamp = local_time(memtrack::clock::realtime_ns());
    let mut rows = Vec::new();
    match ring {
        Some(ring) => rows.extend(query::rows(ring, &ring.snapshot())),
        None => {
            for name in ring_names()? {
                match Ring::open(&memtrack::ring_path(&name)) {
                    Ok(ring) => rows.extend(query::rows(&ring, &ring.snapshot())),
                    Err(error) => eprintln!("memtrack: {error}"),
                }
            }
        }
    }
    query::write_rows(out, format, fields, &rows, &timestamp, first)
}

/// One snapshot of `ring` (or the list of rings), stamped with `time_ns`
/// (since the Unix epoch) when repeating.
fn show(out: &mut impl Write, ring: Option<&Ring>, json: bool, time_ns: Option<u64>) -> Result<()> {
    let Some(ring) = ring else { return list_rings(out, json, time_ns) };
    let snapshot = ring.snapshot();
    if json {
        let mut doc = to_json(ring, &snapshot);
        if let Some(ns) = time_ns {
            doc["time_unix_ns"] = ns.into();
        }
        writeln!(out, "{doc}")?;
    } else {
        if let Some(ns) = time_ns {
            writeln!(out, "{}", local_time(ns))?;
        }
        write_text(out, ring, &snapshot)?;
    }
    Ok(())
}

/// `2026-11-25 11:54:59.250` in local time.
pub(crate) fn local_time(unix_ns: u64) -> String {
    let seconds = (unix_ns / 1_000_000_000) as libc::time_t;
    let millis = unix_ns / 1_000_000 % 1000;
    // SAFETY: localtime_r only writes the `tm` it is given and reads the
    // time zone; a zeroed `tm` is a valid value to overwrite.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&seconds, &mut tm).is_null() {
            return format!("{}.{millis:03} s since the epoch", unix_ns / 1_000_000_000);
        }
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{millis:03}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// The names of the rings in /dev/shm (`memtrack-NAME` files), sorted.
pub(crate) fn ring_names() -> Result<Vec<String>> {
    let mut rings: Vec<String> = std::fs::read_dir(memtrack::SHM_DIR)
        .with_context(|| format!("cannot list {}", memtrack::SHM_DIR))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(memtrack::RING_FILE_PREFIX).map(str::to_owned))
        .collect();
    rings.sort();
    Ok(rings)
}

fn list_rings(out: &mut impl Write, json: bool, time_ns: Option<u64>) -> Result<()> {
    let rings = ring_names()?;
    if json {
        let mut doc = json!({ "schema": "memtrack.rings/1", "rings": rings });
        if let Some(ns) = time_ns {
            doc["time_unix_ns"] = ns.into();
        }
        writeln!(out, "{doc}")?;
        return Ok(());
    }
    if let Some(ns) = time_ns {
        writeln!(out, "{}", local_time(ns))?;
    }
    if rings.is_empty() {
        writeln!(out, "no rings in {}", memtrack::SHM_DIR)?;
    } else {
        for name in rings {
            writeln!(out, "{}", printable(&name))?;
        }
    }
    Ok(())
}

/// The processes of `s` with their `process` keys and their pids in our
/// PID namespace (where we can see them).
fn identify(s: &Snapshot) -> Vec<(String, Option<u32>)> {
    let keys = s.processes.iter().map(|p| process_key(p.slot, p.generation));
    keys.zip(host_pids(&s.processes)).collect()
}

/// Whether the consumer's pid is one of another PID namespace.
fn reader_elsewhere(ring: &Ring) -> bool {
    let own = memtrack::pid_namespace();
    ring.reader_pid_namespace().is_some_and(|ns| own != 0 && ns != own)
}

fn to_json(ring: &Ring, s: &Snapshot) -> serde_json::Value {
    let key_of =
        |slot: u16| s.processes.iter().find(|p| p.slot == slot).map(|p| process_key(p.slot, p.generation));
    let pid_of = |slot: u16| s.processes.iter().find(|p| p.slot == slot).map_or(0, |p| p.pid);
    let identities = identify(s);
    let untracked = s.untracked_usage();
    json!({
        "schema": "memtrack.status/1",
        "ring": ring.path(),
        "capacity": ring.capacity(),
        "reader_pid": s.reader_pid,
        "reader_other_namespace": reader_elsewhere(ring),
        "records": {
            "delivered": s.progress.delivered,
            "dropped": s.dropped,
            "lost_writer_died": s.progress.lost_writer_died,
            "lost_reader_died": s.progress.lost_reader_died,
        },
        "subrings": {
            "total": s.subrings.len(), "in_use": s.subrings_in_use(), "capacity": s.subring_capacity,
        },
        // Rings whose consumer stops for good at a slot in a state the
        // protocol never writes: `subring` null for the shared ring;
        // `ticket` the ring's own; nothing from it on is delivered.
        "corrupt_slots": s.corrupt.iter().map(|c| json!({
            "subring": c.subring, "ticket": c.ticket, "records_behind": c.behind,
        })).collect::<Vec<_>>(),
        "untracked_processes": s.untracked_processes,
        "untracked": {
            "bytes": untracked.0, "buffers": untracked.1, "events": untracked.2,
            "capacities": s.untracked_capacities,
        },
        "processes": s.processes.iter().zip(&identities).map(|(p, (key, host_pid))| {
            let u = s.untracked.iter().find(|u| u.process_slot == p.slot).copied().unwrap_or_default();
            json!({
                "process": key, "pid": p.pid, "host_pid": host_pid, "start_time": p.start_time,
                "name": p.name, "state": p.state.name(), "dropped": p.dropped,
                "untracked_bytes": u.bytes, "untracked_buffers": u.buffers, "untracked_events": u.events,
            })
        }).collect::<Vec<_>>(),
        // Held figures: a process's untracked frees taken from its largest
        // (then `approximate`), so that they add up with `untracked`.
        "usage": s.held().into_iter().map(|(c, held, approximate)| json!({
            "process": key_of(c.process_slot), "pid": pid_of(c.process_slot),
            "device_id": c.device_id, "kind": kind_name(c.kind),
            "live_bytes": held.0, "live_buffers": held.1, "approximate": approximate,
        })).collect::<Vec<_>>(),
        "capacities": s.capacities.iter().map(|c| json!({
            "device_id": c.device_id, "kind": kind_name(c.kind), "bytes": c.bytes,
        })).collect::<Vec<_>>(),
    })
}

fn write_text(out: &mut impl Write, ring: &Ring, s: &Snapshot) -> Result<()> {
    writeln!(out, "ring {}  ({} slots)", printable_path(ring.path()), ring.capacity())?;
    match s.reader_pid {
        Some(pid) if reader_elsewhere(ring) => writeln!(out, "consumer pid {pid} of another PID namespace")?,
        Some(pid) => writeln!(out, "consumer pid {pid}")?,
        None => writeln!(out, "no consumer attached")?,
    }
    writeln!(
        out,
        "records: {} delivered, {} dropped (ring full), {} lost (writer died), {} lost (consumer died)",
        s.progress.delivered, s.dropped, s.progress.lost_writer_died, s.progress.lost_reader_died
    )?;
    for c in &s.corrupt {
        let ring = c.subring.map_or_else(|| "the shared ring".to_owned(), |i| format!("sub-ring {i}"));
        writeln!(
            out,
            "stopped: {ring} at ticket {}: its slot holds a state memtrack never writes (a damaged file); \
             no record of {ring} from there on is delivered ({} claimed behind it)",
            c.ticket, c.behind
        )?;
    }
    if s.subrings.is_empty() {
        writeln!(out, "sub-rings: none (every writer thread shares the ring)")?;
    } else {
        writeln!(
            out,
            "sub-rings: {} in use of {} ({} slots each)",
            s.subrings_in_use(),
            s.subrings.len(),
            s.subring_capacity
        )?;
    }
    // Device memory held per device and kind: running processes only.
    let usage = s.device_usage();
    let approximate = s.approximate_usage();
    writeln!(out, "\n{:>6}  {:<14} {:>12} {:>12} {:>8}", "device", "kind", "used", "total", "buffers")?;
    for ((device, kind), (bytes, buffers)) in &usage {
        let total = s.capacities.iter().find(|c| c.device_id == *device && c.kind == *kind);
        let total = total.map_or_else(|| "-".to_owned(), |c| human_bytes(c.bytes as i64));
        // `~`: untracked frees were taken from this row (their device is unknown).
        let mark = if approximate.contains(&(*device, *kind)) { "~" } else { "" };
        writeln!(
            out,
            "{device:>6}  {:<14} {:>12} {total:>12} {buffers:>8}",
            kind_name(*kind),
            format!("{mark}{}", human_bytes(*bytes as i64))
        )?;
    }
    if !approximate.is_empty() {
        writeln!(
            out,
            "{:>6}  ~ approximate: frees that found the counter pool full were taken from these rows; the total is exact",
            ""
        )?;
    }
    let (untracked_bytes, untracked_buffers, untracked_events) = s.untracked_usage();
    if untracked_events > 0 {
        // The counter pool was full for these: not in the rows above.
        writeln!(
            out,
            "{:>6}  {:<14} {:>12} {:>12} {untracked_buffers:>8}  ({untracked_events} events found the counter pool full; MEMTRACK_COUNTER_CELLS sizes it)",
            "untracked",
            "",
            human_bytes(untracked_bytes as i64),
            "-"
        )?;
    } else if usage.is_empty() {
        writeln!(out, "{:>6}  (no live buffers)", "")?;
    }
    if s.untracked_capacities > 0 {
        writeln!(out, "{:>6}  {} capacities found the capacity table full", "", s.untracked_capacities)?;
    }
    writeln!(
        out,
        "\n{:>8}  {:>8} {:>8}  {:<16} {:<8} {:>12} {:>8}",
        "process", "pid", "host pid", "name", "state", "used/left", "dropped"
    )?;
    for (p, (key, host_pid)) in s.processes.iter().zip(identify(s)) {
        // A process that ended holds nothing; this is what it left (its
        // leak): hence the header "used/left", beside devices that show
        // only running processes' usage.
        let used = s.process_usage(p.slot).0 as i64;
        let host_pid = host_pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string());
        writeln!(
            out,
            "{key:>8}  {:>8} {host_pid:>8}  {:<16} {:<8} {:>12} {:>8}",
            p.pid,
            printable(&p.name),
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
