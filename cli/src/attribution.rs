//! What the report says by scope and by phase: leaks largest first with
//! their scope, totals per scope, what filled each (device, kind) at its
//! peak, and usage per kind from mark to mark.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;

use crate::engine::{Engine, ScopeKey};
use crate::filter::Filter;

mod remaining;

pub use remaining::{Remaining, largest_remaining, remaining};

/// One row of the `scopes` table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeRow {
    /// The path, names joined with `/`; "" for no scope.
    pub scope: String,
    /// ALLOC records made in it.
    pub allocs: u64,
    /// FREE records that released its buffers.
    pub frees: u64,
    /// Bytes its ALLOCs counted.
    pub allocated_bytes: u64,
    /// Its buffers still alive (references).
    pub remaining_buffers: u64,
    /// Their bytes (ALIAS excluded).
    pub remaining_bytes: u64,
}

/// Scope paths, each resolved once (a million buffers share a few paths).
/// Looked up once per buffer: a hasher without SipHash's rounds.
#[derive(Default)]
struct Paths(HashMap<ScopeKey, String, BuildHasherDefault<ScopeHasher>>);

/// FNV-1a over a small key (scope keys, cells), a whole integer field per
/// step: looked up once or twice per remaining buffer. Node ids come from
/// the writers; ids chosen to collide would cost time, never a wrong path.
struct ScopeHasher(u64);

impl Default for ScopeHasher {
    fn default() -> Self {
        ScopeHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for ScopeHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(n.into());
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(n.into());
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x100_0000_01b3);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Paths {
    fn get(&mut self, engine: &Engine, scope: ScopeKey) -> &str {
        self.0.entry(scope).or_insert_with(|| engine.attribution().path(scope))
    }

    /// The path of a scope [`Paths::get`] has resolved.
    fn known(&self, scope: ScopeKey) -> &str {
        self.0.get(&scope).map_or("", String::as_str)
    }
}

/// Per-scope totals of the processes the filter selects, merged by path
/// (one path in several processes is one row), most remaining bytes
/// first, then most allocated bytes, then by path.
pub fn scope_rows(engine: &Engine, filter: &Filter) -> Vec<ScopeRow> {
    let attribution = engine.attribution();
    let mut rows: BTreeMap<String, ScopeRow> = BTreeMap::new();
    for (key, totals) in attribution.totals() {
        if !filter.process(engine, key.0) {
            continue;
        }
        let path = attribution.path(key);
        if !filter.scope(&path) {
            continue;
        }
        let row = rows.entry(path).or_default();
        row.allocs += totals.allocs;
        row.frees += totals.frees;
        row.allocated_bytes = row.allocated_bytes.wrapping_add(totals.allocated_bytes);
    }
    // Summed per scope key first: a few keys stand for millions of
    // buffers, and looking each buffer's path up in `rows` compared
    // strings (a tenth of `report --json`'s time).
    let mut remaining: HashMap<ScopeKey, (u64, u64), BuildHasherDefault<ScopeHasher>> = HashMap::default();
    for b in engine.remaining_unordered() {
        let sums = remaining.entry((b.key.process, b.scope)).or_default();
        sums.0 += b.references() as u64;
        sums.1 = sums.1.wrapping_add(b.counted_bytes());
    }
    for (key, (buffers, bytes)) in remaining {
        if let Some(row) = rows.get_mut(&attribution.path(key))
            && filter.process(engine, key.0)
        {
            row.remaining_buffers += buffers;
            row.remaining_bytes = row.remaining_bytes.wrapping_add(bytes);
        }
    }
    let mut rows: Vec<ScopeRow> = rows.into_iter().map(|(scope, row)| ScopeRow { scope, ..row }).collect();
    rows.sort_by(|a, b| {
        (Reverse(a.remaining_bytes), Reverse(a.allocated_bytes), &a.scope).cmp(&(
            Reverse(b.remaining_bytes),
            Reverse(b.allocated_bytes),
            &b.scope,
        ))
    });
    filter.take(rows)
}

/// What (device, kind) held per scope path at its peak, of buffers
/// allocated during the recording, largest first.
pub fn peak_scopes(engine: &Engine, cell: (u32, u8), filter: &Filter) -> Vec<(String, u64)> {
    let attribution = engine.attribution();
    let mut by_path: BTreeMap<String, u64> = BTreeMap::new();
    for (key, bytes) in attribution.at_peak(cell) {
        if filter.process(engine, key.0) {
            let path = attribution.path(key);
            if filter.scope(&path) {
                let sum = by_path.entry(path).or_default();
                *sum = sum.wrapping_add(bytes);
            }
        }
    }
    let mut rows: Vec<(String, u64)> = by_path.into_iter().collect();
    rows.sort_by(|a, b| (Reverse(a.1), &a.0).cmp(&(Reverse(b.1), &b.0)));
    filter.take(rows)
}

/// Usage of one (device, kind) over one phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseUsage {
    /// (device, kind).
    pub cell: (u32, u8),
    /// Live bytes at the phase's first mark.
    pub start_bytes: u64,
    /// Live bytes at its last mark.
    pub end_bytes: u64,
}

/// From one mark to the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    /// Label of the mark it starts at.
    pub from: String,
    /// Label of the mark it ends at.
    pub to: String,
    /// When it started, ns since the ring's creation.
    pub start_ns: u64,
    /// When it ended.
    pub end_ns: u64,
    /// Every (device, kind) in use at either end.
    pub usage: Vec<PhaseUsage>,
}

/// The phases between consecutive marks (of any process) the filter's
/// time and cells select.
pub fn phases(engine: &Engine, filter: &Filter) -> Vec<Phase> {
    let marks: Vec<_> = engine.marks().iter().filter(|m| filter.time(m.time_ns)).collect();
    marks
        .windows(2)
        .map(|pair| {
            let (a, b) = (pair[0], pair[1]);
            let mut cells: BTreeMap<(u32, u8), (u64, u64)> = BTreeMap::new();
            for &(cell, (bytes, _)) in &a.usage {
                cells.entry(cell).or_default().0 = bytes;
            }
            for &(cell, (bytes, _)) in &b.usage {
                cells.entry(cell).or_default().1 = bytes;
            }
            Phase {
                from: a.label.clone(),
                to: b.label.clone(),
                start_ns: a.time_ns,
                end_ns: b.time_ns,
                usage: cells
                    .into_iter()
                    .filter(|(cell, _)| filter.cell(cell.0, cell.1))
                    .map(|(cell, (start_bytes, end_bytes))| PhaseUsage { cell, start_bytes, end_bytes })
                    .collect(),
            }
        })
        .collect()
}
