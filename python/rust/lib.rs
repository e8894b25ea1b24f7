//! `memtrack._native`: the record-file side of the Python package.
//!
//! Reading a record file goes through the same reader and state engine as
//! `memtrack report`, so `memtrack.load` and `report --json` cannot
//! disagree. The writer side (mark, scope, live) is not here: it goes
//! through the process's one `libmemtrack.so` via ctypes (see
//! `memtrack/_writer.py`), so that a process never has two writers.

use std::path::{Path, PathBuf};

use memtrack::{Event, Record};
use memtrack_cli::engine::Engine;
use memtrack_cli::recording::{Block, RecordReader};
use memtrack_cli::report::{Source, to_json};
use memtrack_cli::units::kind_name;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

/// `report --json` of a record file, as a JSON string (schema memtrack.report/1).
#[pyfunction]
#[pyo3(signature = (path, partial = false))]
fn report_json(py: Python<'_>, path: PathBuf, partial: bool) -> PyResult<String> {
    py.allow_threads(|| {
        let (header, engine, finished) = memtrack_cli::report::load_with(&path, partial).map_err(error)?;
        let source = Source::of_file(&path, &header, finished);
        Ok(to_json(&engine, &source).to_string())
    })
}

/// One column per record field, built in one pass over the file.
#[derive(Default)]
struct Columns {
    ticket: Vec<u64>,
    time_ns: Vec<u64>,
    event: Vec<u8>,
    process: Vec<u32>,
    pid: Vec<u32>,
    process_slot: Vec<u16>,
    device_id: Vec<u32>,
    kind: Vec<u8>,
    buffer_id: Vec<u64>,
    parent_id: Vec<u64>,
    address: Vec<u64>,
    size: Vec<u64>,
    flags: Vec<u8>,
    /// (row, label) of the mark and process-start records.
    labels: Vec<(u64, String)>,
}

/// The `process` column's value for a record of no process (a capacity).
const NO_PROCESS: u32 = u32::MAX;

impl Columns {
    fn push(&mut self, r: &Record, time_ns: u64, process: u32) {
        let labelled = matches!(r.event(), Some(Event::Mark | Event::ProcessStart));
        if labelled {
            // The label shares these fields' bytes: they carry no buffer.
            self.labels.push((self.ticket.len() as u64, String::from_utf8_lossy(r.label()).into_owned()));
        }
        let buffer = if labelled { Record::default() } else { *r };
        self.ticket.push(r.ticket);
        self.time_ns.push(time_ns);
        self.event.push(r.event);
        self.process.push(process);
        self.pid.push(r.pid);
        self.process_slot.push(r.process_slot);
        self.device_id.push(buffer.device_id);
        self.kind.push(buffer.kind);
        self.buffer_id.push(buffer.buffer_id);
        self.parent_id.push(buffer.parent_id);
        self.address.push(buffer.address);
        self.size.push(buffer.size);
        self.flags.push(buffer.flags);
    }
}

fn read_columns(path: &Path, partial: bool) -> anyhow::Result<(Columns, Vec<String>)> {
    let mut reader = if partial { RecordReader::open_unfinished(path)? } else { RecordReader::open(path)? };
    let time = reader.header().time_base();
    let mut engine = Engine::new(time);
    let mut columns = Columns::default();
    while let Some(block) = reader.next_block()? {
        engine.apply_block(&block);
        if let Block::Record(r) = block {
            let process = engine.last_record_process().map_or(NO_PROCESS, |id| id.0);
            columns.push(&r, time.ns(r.timestamp), process);
        }
    }
    let keys = engine.processes().iter().map(|p| p.key()).collect();
    Ok((columns, keys))
}

/// The records of a file as columns: `(n, {name: (dtype, bytes)}, process keys, labels)`.
/// The `process` column indexes the process keys (`NO_PROCESS` for none).
#[pyfunction]
#[pyo3(signature = (path, partial = false))]
fn record_columns<'py>(
    py: Python<'py>,
    path: PathBuf,
    partial: bool,
) -> PyResult<(usize, Bound<'py, PyDict>, Vec<String>, Bound<'py, PyList>)> {
    let (columns, keys) = py.allow_threads(|| read_columns(&path, partial)).map_err(error)?;
    let out = PyDict::new(py);
    let put = |name: &str, dtype: &str, bytes: &[u8]| out.set_item(name, (dtype, PyBytes::new(py, bytes)));
    put("ticket", "<u8", bytemuck::cast_slice(&columns.ticket))?;
    put("time_ns", "<u8", bytemuck::cast_slice(&columns.time_ns))?;
    put("event", "u1", &columns.event)?;
    put("process", "<u4", bytemuck::cast_slice(&columns.process))?;
    put("pid", "<u4", bytemuck::cast_slice(&columns.pid))?;
    put("process_slot", "<u2", bytemuck::cast_slice(&columns.process_slot))?;
    put("device_id", "<u4", bytemuck::cast_slice(&columns.device_id))?;
    put("kind", "u1", &columns.kind)?;
    put("buffer_id", "<u8", bytemuck::cast_slice(&columns.buffer_id))?;
    put("parent_id", "<u8", bytemuck::cast_slice(&columns.parent_id))?;
    put("address", "<u8", bytemuck::cast_slice(&columns.address))?;
    put("size", "<u8", bytemuck::cast_slice(&columns.size))?;
    put("flags", "u1", &columns.flags)?;
    let labels = PyList::new(py, columns.labels)?;
    Ok((columns.ticket.len(), out, keys, labels))
}

/// Names of kind codes 0..8 (the ring's kinds), as the report spells them.
#[pyfunction]
fn kind_names() -> Vec<String> {
    (0..8u8).map(kind_name).collect()
}

/// Names of event codes, by code.
#[pyfunction]
fn event_names() -> Vec<(u8, &'static str)> {
    [Event::Alloc, Event::Free, Event::Mark, Event::Capacity, Event::ProcessStart, Event::ProcessExit]
        .into_iter()
        .map(|e| (e as u8, e.name()))
        .collect()
}

fn error(e: anyhow::Error) -> PyErr {
    PyValueError::new_err(format!("{e:#}"))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(report_json, m)?)?;
    m.add_function(wrap_pyfunction!(record_columns, m)?)?;
    m.add_function(wrap_pyfunction!(kind_names, m)?)?;
    m.add_function(wrap_pyfunction!(event_names, m)?)?;
    m.add("NO_PROCESS", NO_PROCESS)?;
    Ok(())
}
