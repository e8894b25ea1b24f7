//! `memtrack._native`: the record-file side of the Python package.
//!
//! Reading a record file goes through the same reader and state engine as
//! `memtrack report`, so `memtrack.load` and `report --json` cannot
//! disagree. The writer side (mark, scope, live) is not here: it goes
//! through the process's one `libmemtrack.so` via ctypes (see
//! `memtrack/_writer.py`), so that a process never has two writers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use memtrack::{Consumer, Event, Record};
use memtrack_cli::columns::{Row, for_each_row};
use memtrack_cli::recording::RecordReader;
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

/// One column per record field, built in one pass over the file: the rows
/// of [`memtrack_cli::columns`], the same as `export --format parquet`'s.
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
    /// Index into the scope paths of an ALLOC's scope, else `NO_SCOPE`.
    scope: Vec<i32>,
    /// (row, label) of the records that carry text.
    labels: Vec<(u64, String)>,
}

/// The `process` column's value for a record of no process (a capacity).
const NO_PROCESS: u32 = u32::MAX;

/// The `scope` column's value for a record of no scope.
const NO_SCOPE: i32 = -1;

impl Columns {
    fn with_capacity(n: usize) -> Columns {
        Columns {
            ticket: Vec::with_capacity(n),
            time_ns: Vec::with_capacity(n),
            event: Vec::with_capacity(n),
            process: Vec::with_capacity(n),
            pid: Vec::with_capacity(n),
            process_slot: Vec::with_capacity(n),
            device_id: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            buffer_id: Vec::with_capacity(n),
            parent_id: Vec::with_capacity(n),
            address: Vec::with_capacity(n),
            size: Vec::with_capacity(n),
            flags: Vec::with_capacity(n),
            scope: Vec::with_capacity(n),
            labels: Vec::new(),
        }
    }

    fn push(&mut self, row: &Row) {
        let r = row.record;
        if let Some(label) = row.label {
            self.labels.push((self.ticket.len() as u64, String::from_utf8_lossy(label).into_owned()));
        }
        let buffer = row.buffer_or_zero();
        self.ticket.push(r.ticket);
        self.time_ns.push(row.time_ns);
        self.event.push(r.event);
        self.process.push(row.process.map_or(NO_PROCESS, |p| p.0));
        self.pid.push(r.pid);
        self.process_slot.push(r.process_slot);
        self.device_id.push(buffer.device_id);
        self.kind.push(buffer.kind);
        self.buffer_id.push(buffer.buffer_id);
        self.parent_id.push(buffer.parent_id);
        self.address.push(buffer.address);
        self.size.push(buffer.size);
        self.flags.push(r.flags);
        self.scope.push(row.scope.map_or(NO_SCOPE, |s| s as i32));
    }
}

/// The columns of a file, its process keys and its scope paths.
fn read_columns(path: &Path, partial: bool) -> anyhow::Result<(Columns, Vec<String>, Vec<String>)> {
    let mut reader = if partial { RecordReader::open_unfinished(path)? } else { RecordReader::open(path)? };
    // Every block is 64 bytes: the file's size bounds the record count.
    let blocks = std::fs::metadata(path).map_or(0, |m| m.len() / 64) as usize;
    let mut columns = Columns::with_capacity(blocks);
    let mut paths = Vec::new();
    let engine = for_each_row(&mut reader, |row, _, scopes| {
        columns.push(row);
        if row.scope.is_some() && scopes.paths().len() > paths.len() {
            paths.extend_from_slice(&scopes.paths()[paths.len()..]);
        }
        Ok(())
    })?;
    let keys = engine.processes().iter().map(|p| p.key()).collect();
    Ok((columns, keys, paths))
}

/// `record_columns`'s answer: (records, columns, process keys, scope paths, labels).
type RecordColumns<'py> = (usize, Bound<'py, PyDict>, Vec<String>, Vec<String>, Bound<'py, PyList>);

/// The records of a file as columns: `(n, {name: (dtype, bytes)}, process
/// keys, scope paths, labels)`. The `process` column indexes the process
/// keys (`NO_PROCESS` for none), the `scope` column the scope paths
/// (`NO_SCOPE` for none).
#[pyfunction]
#[pyo3(signature = (path, partial = false))]
fn record_columns<'py>(py: Python<'py>, path: PathBuf, partial: bool) -> PyResult<RecordColumns<'py>> {
    let (columns, keys, paths) = py.allow_threads(|| read_columns(&path, partial)).map_err(error)?;
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
    put("scope", "<i4", bytemuck::cast_slice(&columns.scope))?;
    let labels = PyList::new(py, columns.labels)?;
    Ok((columns.ticket.len(), out, keys, paths, labels))
}

/// Names of kind codes 0..8 (the ring's kinds), as the report spells them.
#[pyfunction]
fn kind_names() -> Vec<String> {
    (0..8u8).map(kind_name).collect()
}

/// Names of event codes, by code.
#[pyfunction]
fn event_names() -> Vec<(u8, &'static str)> {
    [
        Event::Alloc,
        Event::Free,
        Event::Mark,
        Event::Capacity,
        Event::ProcessStart,
        Event::ProcessExit,
        Event::Scope,
        Event::Text,
    ]
    .into_iter()
    .map(|e| (e as u8, e.name()))
    .collect()
}

/// `MEMTRACK_FLAG_ALIAS`: the buffer's bytes are counted by other buffers.
const FLAG_ALIAS: u8 = 1;

/// This process's running usage and its peak per (device, kind), from the
/// records it wrote, in order; and the buffers it allocated since the last
/// reset and has not freed (what a leaking test left, by buffer id).
#[derive(Default)]
struct Peaks {
    pid: u32,
    /// (device, kind) -> (live bytes, peak bytes since the last reset).
    cells: HashMap<(u32, u8), (i64, i64)>,
    /// (device, kind, buffer id) -> size of the buffers allocated since the
    /// last reset and still live. Bounded by what one test keeps live.
    born: HashMap<(u32, u8, u64), u64>,
}

impl Peaks {
    fn apply(&mut self, records: &[Record]) {
        for r in records.iter().filter(|r| r.pid == self.pid && r.flags & FLAG_ALIAS == 0) {
            let key = (r.device_id, r.kind, r.buffer_id);
            let delta = match r.event() {
                Some(Event::Alloc) => {
                    self.born.insert(key, r.size);
                    r.size as i64
                }
                Some(Event::Free) => {
                    self.born.remove(&key);
                    -(r.size as i64)
                }
                _ => continue,
            };
            let cell = self.cells.entry((r.device_id, r.kind)).or_default();
            cell.0 = cell.0.wrapping_add(delta);
            cell.1 = cell.1.max(cell.0);
        }
    }

    /// Starts a new peak and a new set of buffers born.
    fn reset(&mut self) {
        for cell in self.cells.values_mut() {
            cell.1 = cell.0;
        }
        self.born.clear();
    }
}

struct Watched {
    consumer: Consumer,
    peaks: Peaks,
    buf: Vec<Record>,
}

impl Watched {
    /// Consumes every record claimed so far: for an answer to Python. Not
    /// `Consumer::drain`, which would not return while another thread
    /// allocates flat out.
    fn drain(&mut self) {
        let Watched { consumer, peaks, buf } = self;
        let _ = consumer.drain_claimed(buf, |records| {
            peaks.apply(records);
            Ok::<(), ()>(())
        });
    }

    /// Consumes what the consumer's batching policy says is due: for the
    /// background thread, which thus takes whole batches (or everything
    /// when writers wait) instead of every record as soon as it appears,
    /// and leaves the writers' cache lines alone in between.
    fn drain_due(&mut self) {
        let Watched { consumer, peaks, buf } = self;
        let _ = consumer.drain_due(usize::MAX, buf, |records| {
            peaks.apply(records);
            Ok::<(), ()>(())
        });
    }
}

/// The live-counter cells of the ring named `name` (a name or a path, as
/// `MEMTRACK_RING`): what `MEMTRACK_COUNTER_CELLS` was when it was created.
/// Opens the ring read-only in effect (validates and maps it, registers no
/// process, consumes nothing).
#[pyfunction]
fn ring_counter_cells(name: &str) -> PyResult<u32> {
    let path = memtrack::ring_path(name);
    memtrack::Ring::open(&path)
        .map(|ring| ring.counter_cells())
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The consumer of a private ring (the pytest plugin's, when no `memtrack
/// record` reads the ring): keeps the ring drained from a thread, and
/// follows this process's peak usage per (device, kind), which the live
/// counters alone cannot give.
#[pyclass]
struct PeakWatcher {
    shared: Arc<(Mutex<Watched>, AtomicBool)>,
    thread: Option<JoinHandle<()>>,
}

#[pymethods]
impl PeakWatcher {
    /// Attaches as the ring's consumer; `pid` is the process whose peaks count.
    #[new]
    fn new(path: PathBuf, pid: u32) -> PyResult<Self> {
        let consumer = Consumer::attach(&path).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let watched = Watched { consumer, peaks: Peaks { pid, ..Peaks::default() }, buf: Vec::new() };
        let shared = Arc::new((Mutex::new(watched), AtomicBool::new(false)));
        let background = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            while !background.1.load(Ordering::Relaxed) {
                if let Ok(mut watched) = background.0.lock() {
                    watched.drain_due();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Ok(PeakWatcher { shared, thread: Some(thread) })
    }

    /// Starts a new peak: each cell's peak becomes its current usage.
    fn reset(&self, py: Python<'_>) {
        py.allow_threads(|| {
            let mut watched = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
            watched.drain();
            watched.peaks.reset();
        })
    }

    /// {(device, kind): [buffer ids, ascending]} of the buffers this process
    /// allocated since the last reset and has not freed, after consuming
    /// every record published so far.
    fn born(&self, py: Python<'_>) -> HashMap<(u32, u8), Vec<u64>> {
        py.allow_threads(|| {
            let mut watched = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
            watched.drain();
            let mut born: HashMap<(u32, u8), Vec<u64>> = HashMap::new();
            for &(device, kind, buffer_id) in watched.peaks.born.keys() {
                born.entry((device, kind)).or_default().push(buffer_id);
            }
            born.values_mut().for_each(|ids| ids.sort_unstable());
            born
        })
    }

    /// {(device, kind): (live bytes, peak bytes since the last reset)}, after
    /// consuming every record published so far.
    fn peaks(&self, py: Python<'_>) -> HashMap<(u32, u8), (i64, i64)> {
        py.allow_threads(|| {
            let mut watched = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
            watched.drain();
            watched.peaks.cells.clone()
        })
    }

    /// Stops the thread and detaches (also when garbage-collected).
    fn close(&mut self, py: Python<'_>) {
        self.shared.1.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            py.allow_threads(|| {
                let _ = thread.join();
            });
        }
    }
}

impl Drop for PeakWatcher {
    fn drop(&mut self) {
        self.shared.1.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reader's error as a `ValueError`; its advice for the command line
/// (`report --partial`) said in Python's terms.
fn error(e: anyhow::Error) -> PyErr {
    let message =
        format!("{e:#}").replace("`memtrack report --partial`", "`memtrack.load(path, partial=True)`");
    PyValueError::new_err(message)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(report_json, m)?)?;
    m.add_function(wrap_pyfunction!(record_columns, m)?)?;
    m.add_function(wrap_pyfunction!(kind_names, m)?)?;
    m.add_function(wrap_pyfunction!(event_names, m)?)?;
    m.add_function(wrap_pyfunction!(ring_counter_cells, m)?)?;
    m.add("NO_PROCESS", NO_PROCESS)?;
    m.add("NO_SCOPE", NO_SCOPE)?;
    m.add_class::<PeakWatcher>()?;
    Ok(())
}
