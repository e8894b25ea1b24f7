//! The filters of `report` and `export`: which buffers, scopes, devices
//! and events a user asked about.

use anyhow::{Result, bail};
use clap::Args;
use memtrack::format::kind;

use crate::engine::{BufferKey, Engine, ProcessId};

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
    /// Only the N largest remaining buffers, scopes and peak scopes.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
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
                None => bail!("--since-mark {label:?}: the recording has no mark with that label"),
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
        self.process.as_ref().is_none_or(|want| {
            let p = engine.process(id);
            *want == p.key() || want.parse::<u32>().is_ok_and(|pid| pid == p.pid)
        })
    }

    /// Whether scope `path` is shown.
    pub fn scope(&self, path: &str) -> bool {
        self.scope.as_ref().is_none_or(|want| {
            path == want
                || (!want.is_empty() && path.strip_prefix(want.as_str()).is_some_and(|r| r.starts_with('/')))
        })
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
