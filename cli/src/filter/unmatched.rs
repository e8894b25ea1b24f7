//! The filters that select nothing in a recording, said in one line each:
//! a mistyped `--process`, `--scope`, `--device` or `--kind` would
//! otherwise give an empty report that reads like a clean one. Not an
//! error: a CI script filtering by a process that did not run this time
//! asked a fair question, and the answer is "nothing".

use std::collections::BTreeSet;
use std::path::Path;

use super::FilterArgs;
use crate::engine::Engine;
use crate::units::{kind_name, printable, printable_path};

/// Values a line lists of what the recording has instead, at most.
const LISTED: usize = 5;

/// Characters of a listed scope path shown, at most.
const PATH_CHARS: usize = 40;

/// One line (without a newline) per filter of `args` that matches nothing
/// in `engine`'s recording of `file`, each naming the flag, its value, the
/// file and a few of the values the recording has. `--since-mark` is not
/// among them: a missing mark is an error ([`super::Filter::resolve`]).
pub fn unmatched(args: &FilterArgs, engine: &Engine, file: &Path) -> Vec<String> {
    let file = printable_path(file);
    let mut lines = Vec::new();
    if let Some(want) = &args.process {
        let processes = engine.processes();
        let matched = processes.iter().any(|p| super::process_selects(want, p));
        if !matched {
            let listed = listing(processes.iter().map(|p| format!("{} (pid {})", p.key(), p.pid)));
            lines.push(format!(
                "memtrack: --process {} matches no process in {file} (processes: {listed})",
                printable(want)
            ));
        }
    }
    if let Some(want) = &args.scope {
        let attribution = engine.attribution();
        let paths: BTreeSet<String> = attribution.totals().map(|(key, _)| attribution.path(key)).collect();
        if !paths.iter().any(|path| super::scope_selects(want, path)) {
            let listed = listing(paths.iter().map(|path| format!("\"{}\"", printable(&shorten(path)))));
            lines.push(format!(
                "memtrack: --scope \"{}\" matches no scope in {file} (scopes with allocations: {listed})",
                printable(want)
            ));
        }
    }
    let cells = engine.devices().keys();
    let devices: BTreeSet<u32> = cells.clone().map(|&(device, _)| device).collect();
    let kinds: BTreeSet<u8> = cells.clone().map(|&(_, kind)| kind).collect();
    let missing_device = args.device.filter(|d| !devices.contains(d));
    let missing_kind = args.kind.filter(|k| !kinds.contains(k));
    if let Some(device) = missing_device {
        let listed = listing(devices.iter().map(u32::to_string));
        lines.push(format!("memtrack: --device {device} matches no device in {file} (devices: {listed})"));
    }
    if let Some(kind) = missing_kind {
        let listed = listing(kinds.iter().map(|&k| kind_name(k)));
        lines.push(format!(
            "memtrack: --kind {} matches no record in {file} (kinds: {listed})",
            kind_name(kind)
        ));
    }
    // Each on its own is in the recording, but not together.
    if let (Some(device), Some(kind), None, None) = (args.device, args.kind, missing_device, missing_kind)
        && !engine.devices().contains_key(&(device, kind))
    {
        let listed = listing(cells.filter(|&&(d, _)| d == device).map(|&(_, k)| kind_name(k)));
        lines.push(format!(
            "memtrack: --device {device} --kind {} matches no record in {file} (device {device} has: {listed})",
            kind_name(kind)
        ));
    }
    lines
}

/// The first [`LISTED`] of `items`, comma-separated, and how many more;
/// `none` for none.
pub(super) fn listing(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        return "none".to_owned();
    }
    let mut text = items[..items.len().min(LISTED)].join(", ");
    if items.len() > LISTED {
        text.push_str(&format!(" and {} more", items.len() - LISTED));
    }
    text
}

/// `path` (or a label), cut to [`PATH_CHARS`] characters.
pub(super) fn shorten(path: &str) -> String {
    match path.char_indices().nth(PATH_CHARS) {
        Some((end, _)) => format!("{}…", &path[..end]),
        None => path.to_owned(),
    }
}
