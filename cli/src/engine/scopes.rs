//! Attribution: which scope each allocation was made in, totals per
//! scope, what each (device, kind) held per scope at its peak, and the
//! full text of long mark labels.
//!
//! SCOPE records define a process's nodes (id, parent, name); an ALLOC
//! carries the node its thread was in. Paths are resolved when asked, so
//! a definition that arrives late (or never: `?<id>`) costs nothing here.

use std::collections::{BTreeMap, HashMap};

use memtrack::format::FLAG_MORE;
use memtrack::{Event, Record};

use super::{FastMap, Mark, ProcessId};

/// A scope of one process: (process, node id); node 0 is "no scope".
pub type ScopeKey = (ProcessId, u32);

/// Allocation totals of one scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeTotals {
    /// ALLOC records made in it.
    pub allocs: u64,
    /// FREE records that released a buffer allocated in it.
    pub frees: u64,
    /// Bytes its ALLOCs counted (ALIAS excluded).
    pub allocated_bytes: u64,
}

struct Node {
    parent: u32,
    name: Vec<u8>,
}

/// Live bytes of one (device, kind) per scope, now and at the peak.
/// (Looked up for every ALLOC and every buffer that leaves usage: maps
/// without SipHash's rounds, as `totals`.)
#[derive(Default)]
struct CellScopes {
    live: FastMap<ScopeKey, u64>,
    at_peak: FastMap<ScopeKey, u64>,
    /// A new peak was reached and `live` still is it: `at_peak` is taken
    /// just before usage next falls (once per fall, not per new peak).
    pending: bool,
}

impl CellScopes {
    /// See [`Attribution::before_fall`].
    fn before_fall(&mut self) {
        if self.pending {
            self.at_peak = self.live.clone();
            self.pending = false;
        }
    }
}

/// What the engine knows of scopes and long texts.
#[derive(Default)]
pub struct Attribution {
    nodes: HashMap<ScopeKey, Node>,
    /// Updated for every ALLOC and FREE.
    totals: FastMap<ScopeKey, ScopeTotals>,
    cells: BTreeMap<(u32, u8), CellScopes>,
    /// Marks with text to come: (process, text id) → (mark index, bytes).
    mark_texts: HashMap<(ProcessId, u32), (usize, Vec<u8>)>,
}

impl Attribution {
    /// A SCOPE record of `process`.
    pub fn define(&mut self, process: ProcessId, record: &Record) {
        let node = Node { parent: record.scope_parent(), name: record.scope_name().to_vec() };
        self.nodes.insert((process, record.scope()), node);
    }

    /// A MARK record of `process`, now `marks[index]`.
    pub fn mark(&mut self, process: ProcessId, record: &Record, index: usize) {
        if record.flags & FLAG_MORE != 0 {
            self.mark_texts.insert((process, record.scope()), (index, record.label().to_vec()));
        }
    }

    /// A TEXT record of `process`: more of a scope's name or mark's label.
    pub fn text(&mut self, process: ProcessId, record: &Record, marks: &mut [Mark]) {
        let chunk = record.label();
        let id = record.scope();
        if record.kind == Event::Scope as u8 {
            if let Some(node) = self.nodes.get_mut(&(process, id)) {
                node.name.extend_from_slice(chunk);
            }
        } else if record.kind == Event::Mark as u8
            && let Some((index, bytes)) = self.mark_texts.get_mut(&(process, id))
        {
            bytes.extend_from_slice(chunk);
            if let Some(mark) = marks.get_mut(*index) {
                mark.label = String::from_utf8_lossy(bytes).into_owned();
            }
        }
    }

    /// An ALLOC in `scope` counting `bytes` in (device, kind) `cell`;
    /// `peaked`: the cell's usage reached a new peak with it.
    pub fn alloc(&mut self, scope: ScopeKey, cell: (u32, u8), bytes: u64, peaked: bool) {
        let totals = self.totals.entry(scope).or_default();
        totals.allocs += 1;
        totals.allocated_bytes = totals.allocated_bytes.wrapping_add(bytes);
        let cell = self.cells.entry(cell).or_default();
        if bytes != 0 {
            let live = cell.live.entry(scope).or_default();
            *live = live.wrapping_add(bytes);
        }
        cell.pending |= peaked;
    }

    /// A FREE released a buffer of `scope`.
    pub fn free(&mut self, scope: ScopeKey) {
        self.totals.entry(scope).or_default().frees += 1;
    }

    /// `bytes` of `scope` leave the usage of `cell`.
    pub fn release(&mut self, scope: ScopeKey, cell: (u32, u8), bytes: u64) {
        if bytes == 0 {
            return;
        }
        let Some(cell) = self.cells.get_mut(&cell) else { return };
        cell.before_fall();
        if let Some(live) = cell.live.get_mut(&scope) {
            *live = live.wrapping_sub(bytes);
            if *live == 0 {
                cell.live.remove(&scope);
            }
        }
    }

    /// Usage of `cell` is about to fall: keep what it held at its peak.
    pub fn before_fall(&mut self, cell: (u32, u8)) {
        if let Some(cell) = self.cells.get_mut(&cell) {
            cell.before_fall();
        }
    }

    /// Usage of `cell` reached a new peak other than by an ALLOC.
    pub fn peaked(&mut self, cell: (u32, u8)) {
        self.cells.entry(cell).or_default().pending = true;
    }

    /// What `cell` held per scope at its peak, of buffers allocated in the
    /// recording.
    pub fn at_peak(&self, cell: (u32, u8)) -> Vec<(ScopeKey, u64)> {
        let Some(cell) = self.cells.get(&cell) else { return Vec::new() };
        let map = if cell.pending { &cell.live } else { &cell.at_peak };
        map.iter().filter(|(_, b)| **b != 0).map(|(&k, &b)| (k, b)).collect()
    }

    /// Totals per scope, every scope any ALLOC was made in.
    pub fn totals(&self) -> impl Iterator<Item = (ScopeKey, &ScopeTotals)> {
        self.totals.iter().map(|(&k, v)| (k, v))
    }

    /// The path of `scope`, its names joined with `/` ("" for none; an
    /// undefined node, whose SCOPE record the stream lacks, is `?<id>`).
    pub fn path(&self, scope: ScopeKey) -> String {
        let (process, mut id) = scope;
        let mut names: Vec<String> = Vec::new();
        // Bounded: a garbage parent chain may loop.
        while id != 0 && names.len() < 256 {
            match self.nodes.get(&(process, id)) {
                Some(node) => {
                    names.push(String::from_utf8_lossy(&node.name).into_owned());
                    id = node.parent;
                }
                None => {
                    names.push(format!("?{id}"));
                    break;
                }
            }
        }
        names.reverse();
        names.join("/")
    }
}
