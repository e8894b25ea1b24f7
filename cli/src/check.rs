//! `memtrack check FILE`: a recording as a CI gate, like LeakSanitizer or
//! pytest-memray's `limit_memory`. Exit 0 when clean, 1 with one line per
//! violation on stdout, 2 for usage errors and files it cannot read.
//!
//! By default any remaining buffer, anomaly or lost record is a violation;
//! the options relax that or add peak limits.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};

use crate::attribution;
use crate::engine::Engine;
use crate::filter::{Filter, parse_kind};
use crate::report;
use crate::units::{human_bytes, kind_name};

/// JSON schema name and version of `check --json`.
pub const CHECK_SCHEMA: &str = "memtrack.check/1";

/// Exit status: the recording broke a rule.
pub const FAILED: u8 = 1;
/// Exit status: bad usage or a file that cannot be read.
pub const USAGE: u8 = 2;

/// Violation lines printed for remaining buffers before a count.
const LEAK_LINES: usize = 50;

/// The rules, shared by `check` and `record --check`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct CheckOptions {
    /// Allow up to N remaining buffers (default 0, unless only
    /// --max-remaining-bytes is given).
    #[arg(long, value_name = "N")]
    pub max_remaining: Option<u64>,
    /// Allow remaining buffers up to BYTES in all (e.g. 4096, 64KiB, 1GiB).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub max_remaining_bytes: Option<u64>,
    /// A limit on the peak of DEVICE's KIND, e.g. 0:DRAM=1GiB, *:L1=1MiB
    /// (* for every device). Repeatable.
    #[arg(long, value_name = "DEVICE:KIND=BYTES", value_parser = parse_peak)]
    pub max_peak: Vec<PeakLimit>,
    /// Anomalies (unknown frees, duplicate allocs, size mismatches) are no
    /// violation.
    #[arg(long)]
    pub allow_anomalies: bool,
    /// Lost records are no violation.
    #[arg(long)]
    pub allow_loss: bool,
    /// Leave KIND out of every rule (e.g. KERNEL for the program cache's
    /// binaries). Repeatable.
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub ignore_kind: Vec<u8>,
    /// The verdict as one JSON document (schema memtrack.check/1) instead
    /// of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(
    after_help = "Exit status: 0 clean, 1 violations (one line each on stdout), 2 usage or unreadable file.\n\
                        Examples:\n  memtrack check run.mtr\n  \
                        memtrack check run.mtr --ignore-kind KERNEL --max-peak '*:L1=1MiB'"
)]
pub struct CheckArgs {
    /// A record file written by `memtrack record`.
    file: PathBuf,
    #[command(flatten)]
    options: CheckOptions,
}

/// `DEVICE:KIND=BYTES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeakLimit {
    /// `None` for `*`.
    pub device: Option<u32>,
    /// Kind code.
    pub kind: u8,
    /// Most bytes the peak may reach.
    pub bytes: u64,
}

/// `4096`, `64KiB`, `1.5GiB`, `10MB`, `2G` (K, M, G, T binary; KB, MB, GB, TB decimal).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("{text:?} is not a size (like 4096, 64KiB, 1GiB)")),
    };
    let value: f64 =
        number.parse().map_err(|_| format!("{text:?} is not a size (like 4096, 64KiB, 1GiB)"))?;
    let bytes = value * scale as f64;
    if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// `DEVICE:KIND=BYTES`.
pub fn parse_peak(text: &str) -> Result<PeakLimit, String> {
    let usage = || format!("{text:?} is not DEVICE:KIND=BYTES (like 0:DRAM=1GiB or *:L1=1MiB)");
    let (cell, bytes) = text.split_once('=').ok_or_else(usage)?;
    let (device, kind) = cell.split_once(':').ok_or_else(usage)?;
    let device = match device.trim() {
        "*" => None,
        d => Some(d.parse::<u32>().map_err(|_| usage())?),
    };
    Ok(PeakLimit { device, kind: parse_kind(kind.trim())?, bytes: parse_bytes(bytes)? })
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    /// `remaining`, `remaining_buffers`, `remaining_bytes`, `anomaly`,
    /// `lost` or `peak`.
    pub rule: &'static str,
    /// The line printed for it.
    pub message: String,
}

/// What `options` find wrong with `engine`'s recording.
pub fn violations(engine: &Engine, options: &CheckOptions) -> Vec<Violation> {
    let ignored = |kind: u8| options.ignore_kind.contains(&kind);
    let mut out = Vec::new();
    let mut push = |rule, message: String| out.push(Violation { rule, message });

    // Remaining buffers, largest first, and those allocated before the
    // recording (ids unknown).
    let all_remaining = attribution::remaining(engine, &Filter::default());
    let remaining = || all_remaining.iter().filter(|(b, _)| !ignored(b.key.kind));
    let unidentified: Vec<_> =
        engine.unidentified_remaining().into_iter().filter(|((_, _, kind), _)| !ignored(*kind)).collect();
    let buffers = remaining().map(|(b, _)| b.references() as u64).sum::<u64>()
        + unidentified.iter().map(|(_, (_, n))| n).sum::<u64>();
    let bytes = remaining().fold(0u64, |sum, (b, _)| sum.wrapping_add(b.counted_bytes()))
        + unidentified.iter().fold(0u64, |sum, (_, (b, _))| sum.wrapping_add(*b));
    let limits_given = options.max_remaining.is_some() || options.max_remaining_bytes.is_some();
    if !limits_given {
        let count = remaining().count();
        for (b, scope) in remaining().take(LEAK_LINES) {
            push(
                "remaining",
                format!(
                    "remaining: {} {} on device {} buffer {} process {} scope {:?}",
                    human_bytes(b.size),
                    kind_name(b.key.kind),
                    b.key.device_id,
                    b.key.buffer_id,
                    engine.process(b.key.process).key(),
                    scope
                ),
            );
        }
        if count > LEAK_LINES {
            push("remaining", format!("remaining: {} more buffers", count - LEAK_LINES));
        }
        for ((process, device, kind), (bytes, n)) in &unidentified {
            push(
                "remaining",
                format!(
                    "remaining: {n} {} buffers ({}) on device {device} process {}, allocated before the recording",
                    kind_name(*kind),
                    human_bytes(*bytes),
                    engine.process(*process).key()
                ),
            );
        }
    }
    if let Some(max) = options.max_remaining
        && buffers > max
    {
        push("remaining_buffers", format!("remaining: {buffers} buffers, more than --max-remaining {max}"));
    }
    if let Some(max) = options.max_remaining_bytes
        && bytes > max
    {
        push(
            "remaining_bytes",
            format!(
                "remaining: {} ({bytes} bytes), more than --max-remaining-bytes {max}",
                human_bytes(bytes)
            ),
        );
    }

    if !options.allow_anomalies {
        let counts = engine.anomaly_counts();
        let total = counts.unknown_frees + counts.duplicate_allocs + counts.size_mismatches;
        let details = engine.anomalies();
        let shown: Vec<_> = details.iter().filter(|a| !ignored(a.key.kind)).collect();
        for a in &shown {
            let size = match a.kind {
                crate::engine::AnomalyKind::SizeMismatch => {
                    format!("allocated {} bytes, freed {}", a.expected_size, a.size)
                }
                _ => format!("{} bytes", a.size),
            };
            push(
                "anomaly",
                format!(
                    "anomaly: {} of {} buffer {} on device {} process {} ({size})",
                    a.kind.name(),
                    kind_name(a.key.kind),
                    a.key.buffer_id,
                    a.key.device_id,
                    engine.process(a.key.process).key()
                ),
            );
        }
        let undetailed = total.saturating_sub(details.len() as u64);
        if undetailed > 0 {
            push(
                "anomaly",
                format!(
                    "anomaly: {undetailed} more anomalies (details kept for the first {})",
                    details.len()
                ),
            );
        }
    }

    let lost = engine.losses().total();
    if !options.allow_loss && lost > 0 {
        push(
            "lost",
            format!("lost: {lost} records (the report marks the cells they may have changed uncertain)"),
        );
    }

    for limit in &options.max_peak {
        for (&(device, kind), stats) in engine.devices() {
            if limit.device.is_some_and(|d| d != device) || limit.kind != kind || ignored(kind) {
                continue;
            }
            if stats.peak_bytes > limit.bytes {
                push(
                    "peak",
                    format!(
                        "peak: device {device} {} reached {} ({} bytes), more than {}",
                        kind_name(kind),
                        human_bytes(stats.peak_bytes),
                        stats.peak_bytes,
                        limit.bytes
                    ),
                );
            }
        }
    }
    out
}

/// One line (for stderr) per `--max-peak` that limits nothing: no device
/// and kind of the recording is its. Not a violation, as `report
/// --process` of a process that did not run is no error: the recording
/// broke no rule; but a limit that a typo (or a device the run did not
/// use) made vacuous should not pass unseen.
fn unmatched_limits(engine: &Engine, options: &CheckOptions, file: &std::path::Path) -> Vec<String> {
    let cells = engine.devices();
    options
        .max_peak
        .iter()
        .filter(|limit| !cells.keys().any(|&(d, k)| limit.device.is_none_or(|want| want == d) && k == limit.kind))
        .map(|limit| {
            let device = limit.device.map_or_else(|| "*".to_owned(), |d| d.to_string());
            let mut listed: Vec<String> = cells.keys().map(|&(d, k)| format!("{d}:{}", kind_name(k))).collect();
            if listed.len() > 5 {
                let more = listed.len() - 5;
                listed.truncate(5);
                listed.push(format!("and {more} more"));
            }
            let listed = if listed.is_empty() { "none".to_owned() } else { listed.join(", ") };
            format!(
                "memtrack: --max-peak {device}:{} matches no device and kind in {} (recorded: {listed}); it limits nothing",
                kind_name(limit.kind),
                crate::units::printable_path(file)
            )
        })
        .collect()
}

/// The `--json` document.
fn to_json(file: &std::path::Path, violations: &[Violation]) -> Value {
    json!({
        "schema": CHECK_SCHEMA,
        "file": file,
        "passed": violations.is_empty(),
        "violations": violations.iter().map(|v| json!({"rule": v.rule, "message": v.message})).collect::<Vec<_>>(),
    })
}

/// Prints the verdict on `file`'s recording; returns the exit status.
pub fn judge(file: &std::path::Path, options: &CheckOptions, out: &mut impl Write) -> u8 {
    let engine = match report::load(file) {
        Ok((_, engine)) => engine,
        Err(error) => {
            let text = format!("{error:#}");
            let text = if text.starts_with("memtrack:") { text } else { format!("memtrack: {text}") };
            eprintln!("{text}");
            return USAGE;
        }
    };
    verdict(&engine, options, file, out)
}

/// Prints the verdict on a recording already analysed (of `file`);
/// returns the exit status.
pub fn verdict(engine: &Engine, options: &CheckOptions, file: &std::path::Path, out: &mut impl Write) -> u8 {
    for line in unmatched_limits(engine, options, file) {
        eprintln!("{line}");
    }
    let found = violations(engine, options);
    let written = if options.json {
        writeln!(out, "{}", to_json(file, &found))
    } else {
        found.iter().try_for_each(|v| writeln!(out, "{}", v.message))
    };
    if written.and_then(|()| out.flush()).is_err() {
        return USAGE;
    }
    if found.is_empty() { 0 } else { FAILED }
}

/// `memtrack check`.
pub fn run(args: &CheckArgs) -> Result<u8> {
    Ok(judge(&args.file, &args.options, &mut std::io::stdout().lock()))
}
