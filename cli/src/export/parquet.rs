//! `memtrack export --format parquet`: one row per record with typed
//! columns, for pandas, polars, DuckDB or any engine that reads Apache
//! Parquet, without memtrack.
//!
//! The rows are [`crate::columns`]'s, the same as the Python package's
//! `Recording.records()` (and `to_pandas()`, whose categoricals are the
//! string columns here):
//!
//! | column | parquet type | |
//! |---|---|---|
//! | `ticket` | INT64 (UINT_64) | position in the ring's total order |
//! | `time_ns` | INT64 (UINT_64) | ns since the recording's start |
//! | `event` | BYTE_ARRAY (STRING) | `alloc`, `free`, `mark`, `capacity`, `process_start`, `process_exit`, `scope`, `text` |
//! | `process` | BYTE_ARRAY (STRING), optional | the report's process key `<entry>.<generation>`; null for capacities |
//! | `pid` | INT32 (UINT_32) | |
//! | `process_slot` | INT32 (UINT_16) | |
//! | `device_id` | INT32 (UINT_32) | 0 for records without a buffer |
//! | `kind` | BYTE_ARRAY (STRING), optional | `DRAM`, `L1`, ...; null for records without a buffer |
//! | `buffer_id`, `parent_id`, `address`, `size` | INT64 (UINT_64) | 0 for records without a buffer |
//! | `flags` | INT32 (UINT_8) | |
//! | `scope` | BYTE_ARRAY (STRING), optional | an ALLOC's scope path |
//! | `label` | BYTE_ARRAY (STRING), optional | the text a mark, process-start, scope or text record carries |
//!
//! The file's key-value metadata holds `memtrack.schema`
//! (`memtrack.parquet/1`), `memtrack.recording` (the report's `file`,
//! `ring`, `started_unix_ns`, `finished`, `duration_ns`, `records`,
//! `lost`), `memtrack.processes` and `memtrack.marks` (the report's
//! arrays of those names, marks with their whole labels): JSON each.
//!
//! Written with the parquet crate's column writer (no Arrow): row groups
//! of [`ROW_GROUP_ROWS`] rows, snappy pages, dictionaries for the
//! repetitive columns, delta encoding for `ticket`, `time_ns` and
//! `buffer_id`.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use memtrack::Event;
use parquet::basic::{Compression, Encoding};
use parquet::data_type::{ByteArray, ByteArrayType, DataType, Int32Type, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnPath;
use serde_json::{Value, json};

use crate::columns::{Row, ScopePaths, for_each_row};
use crate::engine::Engine;
use crate::recording::RecordReader;
use crate::report::{Source, to_json};
use crate::units::kind_name;

/// The value of the `memtrack.schema` metadata key.
pub const SCHEMA_NAME: &str = "memtrack.parquet/1";

/// Rows per row group: a batch of 256 Ki rows holds about 50 MB of
/// columns (most of the export's memory) and gives readers units to read
/// in parallel. (1 Mi rows: 200 MB, and a file 15 % smaller when every
/// address is distinct, as in the benchmark.)
pub const ROW_GROUP_ROWS: usize = 1 << 18;

/// The columns, in order. `required`: every row has a value.
const SCHEMA: &str = "message memtrack_record {
    required int64 ticket (INTEGER(64, false));
    required int64 time_ns (INTEGER(64, false));
    required binary event (STRING);
    optional binary process (STRING);
    required int32 pid (INTEGER(32, false));
    required int32 process_slot (INTEGER(16, false));
    required int32 device_id (INTEGER(32, false));
    optional binary kind (STRING);
    required int64 buffer_id (INTEGER(64, false));
    required int64 parent_id (INTEGER(64, false));
    required int64 address (INTEGER(64, false));
    required int64 size (INTEGER(64, false));
    required int32 flags (INTEGER(8, false));
    optional binary scope (STRING);
    optional binary label (STRING);
}";

/// Writes the records `reader` yields (the export's filters applied) to
/// `out` as a parquet file; `file` is the record file, for the metadata.
///
/// # Errors
/// The reader's errors and `out`'s.
pub fn write(reader: &mut RecordReader, out: &mut impl Write, file: &Path) -> Result<()> {
    let header = *reader.header();
    let schema = Arc::new(parse_message_type(SCHEMA).context("memtrack: the parquet schema")?);
    // The writer wants a `Send` sink and standard output's lock is not one:
    // it writes into a vector that is drained into `out` after each row
    // group (the writer counts its own offsets; emptying the vector does
    // not disturb them).
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, Arc::new(properties()))?;
    let mut batch = Batch::default();
    let mut names = Names::new();
    let engine = for_each_row(reader, |row, engine, scopes| {
        names.learn(engine, scopes);
        batch.push(row, &names);
        if batch.rows() == ROW_GROUP_ROWS {
            batch.write_to(&mut writer)?;
            drain(&mut writer, out)?;
        }
        Ok(())
    })?;
    if batch.rows() > 0 {
        batch.write_to(&mut writer)?;
    }
    let source = Source::of_file(file, &header, reader.finished());
    for (key, value) in metadata(&engine, &source) {
        writer.append_key_value_metadata(KeyValue::new(key.to_owned(), value));
    }
    out.write_all(&writer.into_inner()?)?;
    Ok(())
}

fn properties() -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("memtrack {} (parquet-rs)", env!("CARGO_PKG_VERSION")));
    // Increasing (ticket, time) or nearly (buffer ids, handed out in
    // order), mostly distinct: a dictionary would be tried and dropped for
    // every chunk; deltas take a few bits a row.
    for column in ["ticket", "time_ns", "buffer_id"] {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(column), false)
            .set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED);
    }
    builder.build()
}

/// Moves what the writer has written so far into `out`.
fn drain(writer: &mut SerializedFileWriter<Vec<u8>>, out: &mut impl Write) -> Result<()> {
    writer.flush()?;
    let bytes = writer.inner_mut();
    out.write_all(bytes)?;
    bytes.clear();
    Ok(())
}

/// The key-value metadata: the recording, its processes and its marks,
/// under the names `report --json` gives them.
fn metadata(engine: &Engine, source: &Source) -> Vec<(&'static str, String)> {
    let report = to_json(engine, source);
    let pick = |keys: &[&str]| -> Value {
        keys.iter().map(|&k| (k.to_owned(), report.get(k).cloned().unwrap_or(Value::Null))).collect()
    };
    let recording = pick(&["file", "ring", "started_unix_ns", "finished", "duration_ns", "records", "lost"]);
    vec![
        ("memtrack.schema", SCHEMA_NAME.to_owned()),
        ("memtrack.recording", recording.to_string()),
        ("memtrack.processes", report.get("processes").cloned().unwrap_or_else(|| json!([])).to_string()),
        ("memtrack.marks", report.get("marks").cloned().unwrap_or_else(|| json!([])).to_string()),
    ]
}

/// The strings of the dictionary columns, made once each: a row's value
/// is a clone (a reference count).
struct Names {
    events: Vec<ByteArray>,
    kinds: Vec<ByteArray>,
    processes: Vec<ByteArray>,
    scopes: Vec<ByteArray>,
}

impl Names {
    fn new() -> Names {
        let event = |code: u8| Event::from_code(code).map_or("unknown", Event::name);
        Names {
            events: (0..=u8::MAX).map(|code| ByteArray::from(event(code).as_bytes().to_vec())).collect(),
            kinds: (0..=u8::MAX).map(|code| ByteArray::from(kind_name(code).into_bytes())).collect(),
            processes: Vec::new(),
            scopes: Vec::new(),
        }
    }

    /// Takes the process keys and scope paths that appeared since the last call.
    fn learn(&mut self, engine: &Engine, scopes: &ScopePaths) {
        let processes = engine.processes();
        if processes.len() > self.processes.len() {
            let new = &processes[self.processes.len()..];
            self.processes.extend(new.iter().map(|p| ByteArray::from(p.key().into_bytes())));
        }
        let paths = scopes.paths();
        if paths.len() > self.scopes.len() {
            let new = &paths[self.scopes.len()..];
            self.scopes.extend(new.iter().map(|p| ByteArray::from(p.as_bytes().to_vec())));
        }
    }
}

/// An optional column's values and definition levels (1: a value, 0: null).
#[derive(Default)]
struct Optional {
    values: Vec<ByteArray>,
    defined: Vec<i16>,
}

impl Optional {
    fn push(&mut self, value: Option<ByteArray>) {
        self.defined.push(i16::from(value.is_some()));
        self.values.extend(value);
    }

    fn clear(&mut self) {
        self.values.clear();
        self.defined.clear();
    }
}

/// The rows of one row group, column by column. Unsigned values are
/// stored as the same bits in parquet's signed physical types; the
/// columns' logical types say they are unsigned.
#[derive(Default)]
struct Batch {
    ticket: Vec<i64>,
    time_ns: Vec<i64>,
    event: Vec<ByteArray>,
    process: Optional,
    pid: Vec<i32>,
    process_slot: Vec<i32>,
    device_id: Vec<i32>,
    kind: Optional,
    buffer_id: Vec<i64>,
    parent_id: Vec<i64>,
    address: Vec<i64>,
    size: Vec<i64>,
    flags: Vec<i32>,
    scope: Optional,
    label: Optional,
}

impl Batch {
    fn rows(&self) -> usize {
        self.ticket.len()
    }

    fn push(&mut self, row: &Row, names: &Names) {
        let r = row.record;
        let buffer = row.buffer_or_zero();
        self.ticket.push(r.ticket as i64);
        self.time_ns.push(row.time_ns as i64);
        self.event.push(names.events[usize::from(r.event)].clone());
        self.process.push(row.process.map(|p| names.processes[p.0 as usize].clone()));
        self.pid.push(r.pid as i32);
        self.process_slot.push(i32::from(r.process_slot));
        self.device_id.push(buffer.device_id as i32);
        self.kind.push(row.buffer.map(|b| names.kinds[usize::from(b.kind)].clone()));
        self.buffer_id.push(buffer.buffer_id as i64);
        self.parent_id.push(buffer.parent_id as i64);
        self.address.push(buffer.address as i64);
        self.size.push(buffer.size as i64);
        self.flags.push(i32::from(r.flags));
        self.scope.push(row.scope.map(|s| names.scopes[s as usize].clone()));
        self.label
            .push(row.label.map(|l| ByteArray::from(String::from_utf8_lossy(l).into_owned().into_bytes())));
    }

    /// Writes the rows as one row group, in [`SCHEMA`]'s column order, and
    /// empties the batch.
    fn write_to(&mut self, writer: &mut SerializedFileWriter<Vec<u8>>) -> Result<()> {
        let mut group = writer.next_row_group()?;
        required::<Int64Type>(&mut group, &self.ticket)?;
        required::<Int64Type>(&mut group, &self.time_ns)?;
        required::<ByteArrayType>(&mut group, &self.event)?;
        optional(&mut group, &self.process)?;
        required::<Int32Type>(&mut group, &self.pid)?;
        required::<Int32Type>(&mut group, &self.process_slot)?;
        required::<Int32Type>(&mut group, &self.device_id)?;
        optional(&mut group, &self.kind)?;
        required::<Int64Type>(&mut group, &self.buffer_id)?;
        required::<Int64Type>(&mut group, &self.parent_id)?;
        required::<Int64Type>(&mut group, &self.address)?;
        required::<Int64Type>(&mut group, &self.size)?;
        required::<Int32Type>(&mut group, &self.flags)?;
        optional(&mut group, &self.scope)?;
        optional(&mut group, &self.label)?;
        group.close()?;
        self.clear();
        Ok(())
    }

    fn clear(&mut self) {
        let Batch {
            ticket,
            time_ns,
            event,
            process,
            pid,
            process_slot,
            device_id,
            kind,
            buffer_id,
            parent_id,
            address,
            size,
            flags,
            scope,
            label,
        } = self;
        for column in [ticket, time_ns, buffer_id, parent_id, address, size] {
            column.clear();
        }
        for column in [pid, process_slot, device_id, flags] {
            column.clear();
        }
        event.clear();
        for column in [process, kind, scope, label] {
            column.clear();
        }
    }
}

/// Writes the next column of `group`, a required one.
fn required<T: DataType>(group: &mut SerializedRowGroupWriter<'_, Vec<u8>>, values: &[T::T]) -> Result<()> {
    let mut column =
        group.next_column()?.context("memtrack: parquet schema has fewer columns than written")?;
    column.typed::<T>().write_batch(values, None, None)?;
    column.close()?;
    Ok(())
}

/// Writes the next column of `group`, an optional string one.
fn optional(group: &mut SerializedRowGroupWriter<'_, Vec<u8>>, column: &Optional) -> Result<()> {
    let mut writer =
        group.next_column()?.context("memtrack: parquet schema has fewer columns than written")?;
    writer.typed::<ByteArrayType>().write_batch(&column.values, Some(&column.defined), None)?;
    writer.close()?;
    Ok(())
}
