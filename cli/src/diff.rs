//! `memtrack diff A.mtr B.mtr`: two runs side by side, like
//! `heaptrack_print --diff`: per device and kind the peak and what
//! remained, per scope what was allocated and what remained, with B − A.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};

use crate::attribution::{ScopeRow, scope_rows};
use crate::engine::Engine;
use crate::filter::Filter;
use crate::report;
use crate::units::{difference, human_bytes, json_number, kind_name};

/// JSON schema name and version of `diff --json`.
pub const DIFF_SCHEMA: &str = "memtrack.diff/1";

#[derive(Args)]
pub struct DiffArgs {
    /// The first (baseline) record file.
    a: PathBuf,
    /// The second record file.
    b: PathBuf,
    /// One JSON document (schema memtrack.diff/1) instead of text.
    #[arg(long)]
    json: bool,
}

/// One number in both runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pair {
    /// In A.
    pub a: u64,
    /// In B.
    pub b: u64,
}

impl Pair {
    /// B − A, exactly.
    pub fn delta(self) -> i128 {
        difference(self.a, self.b)
    }

    fn json(self) -> Value {
        json!({"a": self.a, "b": self.b, "delta": json_number(self.delta())})
    }
}

/// Per (device, kind): peak bytes, remaining buffers, remaining bytes.
type CellRow = [Pair; 3];

/// Per scope: allocs, allocated bytes, remaining buffers, remaining bytes.
type ScopeDiff = [Pair; 4];

/// Peak and remaining per (device, kind) of one run.
fn cells(engine: &Engine) -> BTreeMap<(u32, u8), [u64; 3]> {
    let mut out: BTreeMap<(u32, u8), [u64; 3]> = BTreeMap::new();
    for (&cell, s) in engine.devices() {
        out.entry(cell).or_default()[0] = s.peak_bytes;
    }
    for b in engine.remaining_unordered() {
        let row = out.entry((b.key.device_id, b.key.kind)).or_default();
        row[1] += b.references() as u64;
        row[2] = row[2].wrapping_add(b.counted_bytes());
    }
    for ((_, device, kind), (bytes, buffers)) in engine.unidentified_remaining() {
        let row = out.entry((device, kind)).or_default();
        row[1] += buffers;
        row[2] = row[2].wrapping_add(bytes);
    }
    out
}

fn scope_map(engine: &Engine) -> BTreeMap<String, ScopeRow> {
    scope_rows(engine, &Filter::default()).into_iter().map(|r| (r.scope.clone(), r)).collect()
}

/// The comparison of two runs.
pub struct Diff {
    /// Per (device, kind), in order.
    pub cells: Vec<((u32, u8), CellRow)>,
    /// Per scope path, the largest change of remaining bytes first, then of
    /// allocated bytes, then by path.
    pub scopes: Vec<(String, ScopeDiff)>,
}

/// Compares run `a` with run `b`.
pub fn compare(a: &Engine, b: &Engine) -> Diff {
    let (ca, cb) = (cells(a), cells(b));
    let mut keys: Vec<(u32, u8)> = ca.keys().chain(cb.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let cells = keys
        .into_iter()
        .map(|k| {
            let (x, y) = (ca.get(&k).copied().unwrap_or_default(), cb.get(&k).copied().unwrap_or_default());
            (k, std::array::from_fn(|i| Pair { a: x[i], b: y[i] }))
        })
        .collect();
    let (sa, sb) = (scope_map(a), scope_map(b));
    let mut names: Vec<&String> = sa.keys().chain(sb.keys()).collect();
    names.sort_unstable();
    names.dedup();
    let fields = |r: Option<&ScopeRow>| {
        r.map_or([0; 4], |r| [r.allocs, r.allocated_bytes, r.remaining_buffers, r.remaining_bytes])
    };
    let mut scopes: Vec<(String, ScopeDiff)> = names
        .into_iter()
        .map(|name| {
            let (x, y) = (fields(sa.get(name)), fields(sb.get(name)));
            (name.clone(), std::array::from_fn(|i| Pair { a: x[i], b: y[i] }))
        })
        .collect();
    scopes.sort_by(|(na, a), (nb, b)| {
        (std::cmp::Reverse(a[3].delta().unsigned_abs()), std::cmp::Reverse(a[1].delta().unsigned_abs()), na)
            .cmp(&(
                std::cmp::Reverse(b[3].delta().unsigned_abs()),
                std::cmp::Reverse(b[1].delta().unsigned_abs()),
                nb,
            ))
    });
    Diff { cells, scopes }
}

/// The `memtrack.diff/1` document.
pub fn to_json(a: &Path, b: &Path, diff: &Diff) -> Value {
    json!({
        "schema": DIFF_SCHEMA,
        "a": a,
        "b": b,
        "devices": diff.cells.iter().map(|&((device, kind), row)| json!({
            "device_id": device, "kind": kind_name(kind),
            "peak_bytes": row[0].json(), "remaining_buffers": row[1].json(), "remaining_bytes": row[2].json(),
        })).collect::<Vec<_>>(),
        "scopes": diff.scopes.iter().map(|(scope, row)| json!({
            "scope": scope,
            "allocs": row[0].json(), "allocated_bytes": row[1].json(),
            "remaining_buffers": row[2].json(), "remaining_bytes": row[3].json(),
        })).collect::<Vec<_>>(),
    })
}

fn signed(delta: i128) -> String {
    if delta > 0 { format!("+{}", human_bytes(delta)) } else { human_bytes(delta) }
}

/// The text comparison.
pub fn write_text(out: &mut impl Write, a: &Path, b: &Path, diff: &Diff) -> Result<()> {
    writeln!(out, "memtrack diff: A {} -> B {}", a.display(), b.display())?;
    writeln!(out, "\nDevices")?;
    writeln!(
        out,
        "{:>6}  {:<13} {:>11} {:>11} {:>11}   {:>11} {:>11} {:>11}",
        "device", "kind", "peak A", "peak B", "delta", "remain A", "remain B", "delta"
    )?;
    for &((device, kind), row) in &diff.cells {
        writeln!(
            out,
            "{device:>6}  {:<13} {:>11} {:>11} {:>11}   {:>11} {:>11} {:>11}",
            kind_name(kind),
            human_bytes(row[0].a),
            human_bytes(row[0].b),
            signed(row[0].delta()),
            human_bytes(row[2].a),
            human_bytes(row[2].b),
            signed(row[2].delta()),
        )?;
    }
    if !diff.scopes.is_empty() {
        writeln!(out, "\nScopes (largest change of remaining bytes first)")?;
        writeln!(
            out,
            "  {:>11} {:>11} {:>11}   {:>11} {:>11} {:>11}  scope",
            "alloc A", "alloc B", "delta", "remain A", "remain B", "delta"
        )?;
        for (scope, row) in &diff.scopes {
            writeln!(
                out,
                "  {:>11} {:>11} {:>11}   {:>11} {:>11} {:>11}  {}",
                human_bytes(row[1].a),
                human_bytes(row[1].b),
                signed(row[1].delta()),
                human_bytes(row[3].a),
                human_bytes(row[3].b),
                signed(row[3].delta()),
                if scope.is_empty() { "(no scope)" } else { scope }
            )?;
        }
    }
    Ok(())
}

/// `memtrack diff`.
pub fn run(args: &DiffArgs) -> Result<u8> {
    let (_, a) = report::load(&args.a)?;
    let (_, b) = report::load(&args.b)?;
    let diff = compare(&a, &b);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", to_json(&args.a, &args.b, &diff))?;
    } else {
        write_text(&mut out, &args.a, &args.b, &diff)?;
    }
    out.flush()?;
    Ok(0)
}
