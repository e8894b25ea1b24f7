//! The `remaining` array of `report --json`: one row per remaining
//! buffer, 20 million of them after a long run.
//!
//! Each row is written directly, as `serde_json` prints the object
//! `{"address": …, …, "uncertain": …}` (keys in its sorted order, compact):
//! building that object took a map and 26 small allocations per row, most
//! of the report's time. The strings that repeat (process keys, kind
//! names) are escaped once. The tests hold the rows to the `json!` form,
//! byte for byte.

use std::collections::BTreeMap;
use std::io::Write;

use crate::attribution;
use crate::engine::{Cell, Engine, LiveBuffer, ProcessId, Uncertainty};
use crate::filter::Filter;
use crate::units::kind_name;

/// The `remaining` array of the buffers `filter` selects, largest first.
pub(super) fn write(out: &mut impl Write, engine: &Engine, filter: &Filter) -> std::io::Result<()> {
    let uncertain = engine.uncertain_cells();
    // `--top N` needs the N first, not all of them sorted.
    let remaining = match filter.top {
        Some(n) => attribution::largest_remaining(engine, filter, n).1,
        None => attribution::remaining(engine, filter),
    };
    let mut names = Names::new(engine);
    out.write_all(b"[")?;
    for (i, (b, scope)) in remaining.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        let row = Row { buffer: b, scope, uncertain: is_uncertain(&uncertain, b) };
        row.write(out, &mut names)?;
    }
    out.write_all(b"]")
}

fn is_uncertain(uncertain: &BTreeMap<Cell, Uncertainty>, b: &LiveBuffer) -> bool {
    !uncertain.is_empty() && uncertain.contains_key(&(b.key.process, b.key.device_id, b.key.kind))
}

/// Process keys and kind names as JSON strings, each escaped once.
struct Names<'e> {
    engine: &'e Engine,
    /// By [`ProcessId`]: the process's key, quoted.
    processes: Vec<Option<String>>,
    /// By kind code: its name, quoted.
    kinds: Vec<Option<String>>,
}

impl<'e> Names<'e> {
    fn new(engine: &'e Engine) -> Self {
        Names { engine, processes: vec![None; engine.processes().len()], kinds: vec![None; 256] }
    }

    fn process(&mut self, id: ProcessId) -> &str {
        let engine = self.engine;
        self.processes[id.0 as usize].get_or_insert_with(|| quoted(&engine.process(id).key()))
    }

    fn kind(&mut self, kind: u8) -> &str {
        self.kinds[kind as usize].get_or_insert_with(|| quoted(&kind_name(kind)))
    }
}

/// `prefix` (the punctuation and key before a value), then `value`.
fn number(out: &mut impl Write, prefix: &str, value: impl itoa::Integer) -> std::io::Result<()> {
    out.write_all(prefix.as_bytes())?;
    out.write_all(itoa::Buffer::new().format(value).as_bytes())
}

/// `prefix`, then `json`, a value already in JSON.
fn text(out: &mut impl Write, prefix: &str, json: &str) -> std::io::Result<()> {
    out.write_all(prefix.as_bytes())?;
    out.write_all(json.as_bytes())
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// One row of the array.
struct Row<'a> {
    buffer: &'a LiveBuffer,
    scope: &'a str,
    uncertain: bool,
}

impl Row<'_> {
    /// Writes the row as `serde_json` prints [`Row::value`].
    fn write(&self, out: &mut impl Write, names: &mut Names) -> std::io::Result<()> {
        let b = self.buffer;
        number(out, "{\"address\":", b.address)?;
        number(out, ",\"buffer_id\":", b.key.buffer_id)?;
        number(out, ",\"device_id\":", b.key.device_id)?;
        number(out, ",\"flags\":", b.flags)?;
        text(out, ",\"kind\":", names.kind(b.key.kind))?;
        number(out, ",\"parent_id\":", b.parent_id)?;
        number(out, ",\"pid\":", b.key.pid)?;
        text(out, ",\"process\":", names.process(b.key.process))?;
        number(out, ",\"references\":", b.references())?;
        out.write_all(b",\"scope\":")?;
        serde_json::to_writer(&mut *out, self.scope)?;
        number(out, ",\"size\":", b.size)?;
        number(out, ",\"time_ns\":", b.time_ns)?;
        out.write_all(if self.uncertain { b",\"uncertain\":true}" } else { b",\"uncertain\":false}" })
    }

    /// The row as a JSON value: the contract [`Row::write`] follows.
    #[cfg(test)]
    fn value(&self, engine: &Engine) -> serde_json::Value {
        let b = self.buffer;
        serde_json::json!({
            "process": engine.process(b.key.process).key(), "pid": b.key.pid,
            "device_id": b.key.device_id, "kind": kind_name(b.key.kind),
            "buffer_id": b.key.buffer_id, "parent_id": b.parent_id, "address": b.address,
            "size": b.size, "flags": b.flags, "references": b.references(), "time_ns": b.time_ns,
            "scope": self.scope, "uncertain": self.uncertain,
        })
    }
}

#[cfg(test)]
mod tests {
    use memtrack::Event::{Alloc, ProcessStart};
    use memtrack::Record;

    use super::*;
    use crate::engine::testing::Stream;

    #[test]
    fn rows_are_what_serde_json_prints_of_the_json_object() {
        let mut s = Stream::new(3);
        s.labelled(ProcessStart, u32::MAX, 7, "one");
        s.labelled(ProcessStart, 12, 3, "two");
        let extremes = [0, 1, 255, 1 << 32, 1 << 63, u64::MAX];
        for (i, &n) in extremes.iter().enumerate() {
            let pid = if i % 2 == 0 { u32::MAX } else { 12 };
            let record = Record {
                pid,
                device_id: if i % 3 == 0 { u32::MAX } else { i as u32 },
                kind: [0, 1, 2, 5, 99, 255][i],
                buffer_id: n,
                parent_id: n.rotate_left(7),
                address: n ^ 0x1000,
                size: n,
                flags: [0, 1, 2, 3, 128, 255][i],
                event: Alloc as u8,
                ..Default::default()
            };
            s.push(record);
        }
        // A second reference: `references` 2.
        s.buffer(Alloc, 12, 1, 1, 1, 64);
        let engine = &s.engine;
        let scopes =
            ["", "layer1/matmul", "quote \" back \\ slash", "tab\tnew\nline \u{1} \u{7f}", "µs ✓ 🦀"];
        let mut names = Names::new(engine);
        let mut rows = 0;
        for (i, b) in engine.remaining_unordered().enumerate() {
            for (j, scope) in scopes.iter().enumerate() {
                let row = Row { buffer: b, scope, uncertain: (i + j) % 2 == 0 };
                let mut written = Vec::new();
                row.write(&mut written, &mut names).unwrap();
                let printed = serde_json::to_vec(&row.value(engine)).unwrap();
                assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(printed).unwrap());
                rows += 1;
            }
        }
        assert_eq!(rows, extremes.len() * scopes.len());
        assert!(engine.remaining_unordered().any(|b| b.references() == 2));
    }
}
