//! The filters of `report` and `export`: which buffers, scopes, devices
//! and events a user asked about.

use anyhow::{Result, bail};
use clap::Args;
use memtrack::format::kind;

use std::collections::{HashMap, HashSet};

use memtrack::Event;

use crate::engine::{BufferKey, Engine, ProcessId, ProcessStats, ScopeKey};
use crate::recording::{Block, BlockFilter, TimeBase};
use crate::units::printable;

mod unmatched;
pub use unmatched::unmatched;

/// `--device`, `--kind`, `--process`, `--scope`, `--since-mark`, `--top`.
#[derive(Args, Clone, Debug, Default)]
pub struct FilterArgs {
    /// Only device ID.
    #[arg(long, value_name = "ID")]
    pub device: Option<u32>,
    /// Only kind KIND (DRAM, L1, SYSTEM_MEMORY, L1_SMALL, TRACE, CB, KERNEL).
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<u8>,
    /// Only the process with key (`<entry>.<generation>`) or pid PROCESS.
    #[arg(long, value_name = "PROCESS")]
    pub process: Option<String>,
    /// Only what was allocated in scope PATH or a scope inside it
    /// ("a/b" takes "a/b" and "a/b/c"; "" takes allocations in no scope).
    #[arg(long, value_name = "PATH")]
    pub scope: Option<String>,
    /// Only what happened at or after the first mark labelled LABEL.
    #[arg(long, value_name = "LABEL")]
    pub since_mark: Option<String>,
    /// Only the N largest remaining buffers, scopes and peak scopes
    /// (export: the N remaining buffers' lifetimes, not earlier lifetimes
    /// of an id freed and allocated again).
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
}

/// Whether `--process WANT` selects process `p`: its key or its pid.
fn process_selects(want: &str, p: &ProcessStats) -> bool {
    want == p.key() || want.parse::<u32>().is_ok_and(|pid| pid == p.pid)
}

/// Whether `--scope WANT` selects scope `path`: itself or a scope inside
/// it ("" only allocations in no scope).
fn scope_selects(want: &str, path: &str) -> bool {
    path == want || (!want.is_empty() && path.strip_prefix(want).is_some_and(|r| r.starts_with('/')))
}

/// A kind name or code.
pub fn parse_kind(text: &str) -> Result<u8, String> {
    kind::from_name(&text.to_ascii_uppercase()).or_else(|| text.parse().ok()).ok_or_else(|| {
        format!("unknown kind {text:?} (DRAM, L1, SYSTEM_MEMORY, L1_SMALL, TRACE, CB, KERNEL or a number)")
    })
}

/// The filters, resolved against one recording.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    device: Option<u32>,
    kind: Option<u8>,
    process: Option<String>,
    scope: Option<String>,
    /// `--since-mark`, as a time.
    since_ns: Option<u64>,
    /// `--top`.
    pub top: Option<usize>,
}

impl Filter {
    /// `args` for `engine`.
    ///
    /// # Errors
    /// `--since-mark` names no mark of the recording.
    pub fn resolve(args: &FilterArgs, engine: &Engine) -> Result<Filter> {
        let since_ns = match &args.since_mark {
            None => None,
            Some(label) => match engine.marks().iter().find(|m| &m.label == label) {
                Some(mark) => Some(mark.time_ns),
                None => {
                    // Each label once (a mark per test repeats them), in order.
                    let mut seen = HashSet::new();
                    let labels = engine
                        .marks()
                        .iter()
                        .filter(|m| seen.insert(m.label.as_str()))
                        .map(|m| format!("\"{}\"", printable(&unmatched::shorten(&m.label))));
                    bail!(
                        "--since-mark {label:?}: the recording has no mark with that label (marks: {})",
                        unmatched::listing(labels)
                    )
                }
            },
        };
        Ok(Filter {
            device: args.device,
            kind: args.kind,
            process: args.process.clone(),
            scope: args.scope.clone(),
            since_ns,
            top: args.top,
        })
    }

    /// Whether any filter is set, `--top` included.
    pub fn is_set(args: &FilterArgs) -> bool {
        args.device.is_some()
            || args.kind.is_some()
            || args.process.is_some()
            || args.scope.is_some()
            || args.since_mark.is_some()
            || args.top.is_some()
    }

    /// The records of a second pass over the recording `engine` analysed
    /// that this filter selects, for `export`: buffer records of the
    /// selected devices, kinds and processes; with `--scope`,
    /// `--since-mark` or `--top`, the ALLOCs of the buffers selected
    /// (allocated in the scope, after the mark; with `--top`, the remaining
    /// lifetimes of the N largest remaining buffers, not the earlier
    /// lifetimes of a buffer id freed and allocated again) and the FREEs of
    /// the buffers whose ALLOC was kept.
    /// Marks, scopes and process records are kept; capacities of the
    /// selected devices and kinds.
    pub fn blocks(&self, engine: &Engine, time: TimeBase) -> BlockFilter {
        let processes: Option<HashSet<ProcessId>> = self.process.as_ref().map(|_| {
            (0..engine.processes().len() as u32)
                .map(ProcessId)
                .filter(|&id| self.process(engine, id))
                .collect()
        });
        let attribution = engine.attribution();
        let scopes: Option<HashSet<ScopeKey>> = self.scope.as_ref().map(|_| {
            attribution
                .totals()
                .map(|(key, _)| key)
                .filter(|&key| self.scope(&attribution.path(key)))
                .collect()
        });
        type Buffer = (ProcessId, u32, u8, u64);
        // Each of the N largest remaining buffers, with the time its
        // remaining lifetime began: an id freed and allocated again has
        // earlier lifetimes, which are not among the N.
        let top: Option<HashMap<Buffer, u64>> = self.top.map(|n| {
            crate::attribution::remaining(engine, self)
                .iter()
                .take(n)
                .map(|(b, _)| ((b.key.process, b.key.device_id, b.key.kind, b.key.buffer_id), b.time_ns))
                .collect()
        });
        let by_buffer = scopes.is_some() || self.since_ns.is_some() || top.is_some();
        // Which process a record is of: a record names it by table entry
        // and pid, which repeat (pids across PID namespaces and on reuse,
        // entries on reuse). A second engine follows the stream the first
        // pass analysed, block by block, so it resolves the same owners
        // and numbers the processes alike: its `ProcessId`s are `engine`'s.
        // Of an ALLOC or FREE it follows only the owner: it holds no
        // buffer, beside the export's engine that may hold them all.
        let mut owners = (processes.is_some() || by_buffer).then(|| Engine::new(time));
        let mut kept: HashMap<Buffer, u32> = HashMap::new();
        let filter = self.clone();
        Box::new(move |block| {
            // Every block, whether kept or not: the owners follow the whole stream.
            let process = owners.as_mut().and_then(|owners| match block {
                Block::Record(r) if matches!(r.event(), Some(Event::Alloc | Event::Free)) => {
                    owners.follow_owner(block)
                }
                _ => {
                    owners.apply_block(block);
                    None
                }
            });
            let Block::Record(r) = block else { return true };
            let event = r.event();
            if event == Some(Event::Capacity) {
                return filter.cell(r.device_id, r.kind);
            }
            if !matches!(event, Some(Event::Alloc | Event::Free)) {
                return true;
            }
            // `owners` ran when a process is needed; an ALLOC or FREE has one.
            let process = process.unwrap_or(ProcessId(u32::MAX));
            if !filter.cell(r.device_id, r.kind) || processes.as_ref().is_some_and(|p| !p.contains(&process))
            {
                return false;
            }
            if !by_buffer {
                return true;
            }
            let buffer = (process, r.device_id, r.kind, r.buffer_id);
            if event == Some(Event::Alloc) {
                let time_ns = time.ns(r.timestamp);
                // A remaining lifetime's ALLOC is stamped at its start; its
                // duplicate ALLOCs (an anomaly) after it. An earlier
                // lifetime of the id, freed before it began, before it.
                let keep = filter.time(time_ns)
                    && scopes.as_ref().is_none_or(|s| s.contains(&(process, r.scope())))
                    && top.as_ref().is_none_or(|t| t.get(&buffer).is_some_and(|&began| time_ns >= began));
                if keep {
                    *kept.entry(buffer).or_default() += 1;
                }
                keep
            } else {
                match kept.get_mut(&buffer) {
                    Some(n) => {
                        *n -= 1;
                        if *n == 0 {
                            kept.remove(&buffer);
                        }
                        true
                    }
                    None => false,
                }
            }
        })
    }

    /// Whether no filter is set (`--top` aside).
    pub fn selects_all(&self) -> bool {
        self.device.is_none()
            && self.kind.is_none()
            && self.process.is_none()
            && self.scope.is_none()
            && self.since_ns.is_none()
    }

    /// Whether neither `--since-mark` nor `--scope` is set: buffers of
    /// unknown time and scope (allocated before the recording) are shown.
    pub fn selects_all_times_and_scopes(&self) -> bool {
        self.scope.is_none() && self.since_ns.is_none()
    }

    /// Whether (device, kind) is shown.
    pub fn cell(&self, device: u32, kind: u8) -> bool {
        self.device.is_none_or(|d| d == device) && self.kind.is_none_or(|k| k == kind)
    }

    /// Whether process `id` is shown.
    pub fn process(&self, engine: &Engine, id: ProcessId) -> bool {
        self.process.as_ref().is_none_or(|want| process_selects(want, engine.process(id)))
    }

    /// Whether scope `path` is shown.
    pub fn scope(&self, path: &str) -> bool {
        self.scope.as_ref().is_none_or(|want| scope_selects(want, path))
    }

    /// Whether something at `time_ns` is shown.
    pub fn time(&self, time_ns: u64) -> bool {
        self.since_ns.is_none_or(|since| time_ns >= since)
    }

    /// Whether an event of buffer `key` at `time_ns` in scope `path` is shown.
    pub fn buffer(&self, engine: &Engine, key: &BufferKey, time_ns: u64, path: &str) -> bool {
        self.cell(key.device_id, key.kind)
            && self.process(engine, key.process)
            && self.time(time_ns)
            && self.scope(path)
    }

    /// Whether a buffer event that carries no scope is shown (anomalies):
    /// not when a scope is asked for.
    pub fn unscoped(&self, engine: &Engine, key: &BufferKey, time_ns: u64) -> bool {
        self.scope.is_none() && self.buffer(engine, key, time_ns, "")
    }

    /// At most `--top` of `items`.
    pub fn take<T>(&self, mut items: Vec<T>) -> Vec<T> {
        if let Some(n) = self.top {
            items.truncate(n);
        }
        items
    }
}
