//! A recording's records as rows of typed columns: the one definition
//! behind `export --format parquet` and the Python package's
//! `Recording.records()`, so that the two cannot disagree.
//!
//! One row per ring record, in the file's order. What a record's bytes
//! mean depends on its event (a MARK's label lies over the buffer fields),
//! so a row says what the record *is*:
//!
//! * the buffer columns (`device_id`, `kind`, `buffer_id`, `parent_id`,
//!   `address`, `size`) are the record's for ALLOC, FREE and CAPACITY
//!   records; other records carry no buffer: 0 (`kind`: none);
//! * `process` is the writer process the state engine resolved (the same
//!   one `report` names), none for a CAPACITY, which belongs to a device;
//! * `scope` is the path of the scope an ALLOC was made in (`"model/step"`,
//!   as `report` spells it), none for other records and unscoped ALLOCs;
//! * `label` is the text the record itself carries: a MARK's label, a
//!   PROCESS_START's process name, a SCOPE's node name, a TEXT record's
//!   chunk (long labels and names go on in TEXT records; the engine's
//!   marks and the `scope` column have them whole).

use std::collections::HashMap;

use anyhow::Result;
use memtrack::{Event, Record};

use crate::engine::{Engine, ProcessId, ScopeKey};
use crate::recording::{Block, RecordReader};

/// One record as a row. Borrows the record for its label.
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    /// The record as read.
    pub record: &'a Record,
    /// ns since the recording's start.
    pub time_ns: u64,
    /// The event (`None`: a code this reader does not know).
    pub event: Option<Event>,
    /// The writer process, an index into [`Engine::processes`].
    pub process: Option<ProcessId>,
    /// The buffer (or capacity) the record is about, if any.
    pub buffer: Option<BufferFields>,
    /// Index into [`ScopePaths::paths`] of an ALLOC's scope path.
    pub scope: Option<u32>,
    /// The text the record carries, up to its first NUL.
    pub label: Option<&'a [u8]>,
}

/// The buffer columns of a row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferFields {
    /// Device id.
    pub device_id: u32,
    /// Kind code.
    pub kind: u8,
    /// Buffer id.
    pub buffer_id: u64,
    /// Parent id.
    pub parent_id: u64,
    /// Device address.
    pub address: u64,
    /// Bytes.
    pub size: u64,
}

impl Row<'_> {
    /// The buffer columns, 0 for a record that carries no buffer.
    pub fn buffer_or_zero(&self) -> BufferFields {
        self.buffer.unwrap_or_default()
    }
}

/// Scope paths, each stored once: rows name them by index (a dictionary,
/// which is also how parquet and pandas store such a column).
#[derive(Default)]
pub struct ScopePaths {
    paths: Vec<String>,
    by_path: HashMap<String, u32>,
    /// Resolved (process, node) pairs. Cleared whenever a SCOPE or TEXT
    /// record may change a node's name or parent.
    by_key: HashMap<ScopeKey, u32>,
}

impl ScopePaths {
    /// Every path seen so far; a row's `scope` indexes it.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    fn index(&mut self, engine: &Engine, key: ScopeKey) -> u32 {
        if let Some(&index) = self.by_key.get(&key) {
            return index;
        }
        let path = engine.attribution().path(key);
        let next = self.paths.len() as u32;
        let index = *self.by_path.entry(path).or_insert_with_key(|path| {
            self.paths.push(path.clone());
            next
        });
        self.by_key.insert(key, index);
        index
    }
}

/// Reads `reader` to its end through a new state engine, calling `each`
/// with every record as a row (after the engine applied it) and the
/// scope paths so far. Returns the engine, which then holds what `report`
/// would say of the same stream (processes, marks, ...).
///
/// # Errors
/// The reader's errors, and `each`'s.
pub fn for_each_row(
    reader: &mut RecordReader,
    mut each: impl FnMut(&Row, &Engine, &ScopePaths) -> Result<()>,
) -> Result<Engine> {
    let time = reader.header().time_base();
    let mut engine = Engine::new(time);
    let mut scopes = ScopePaths::default();
    while let Some(block) = reader.next_block_or_left_out(|b| {
        engine.follow_owner(b);
    })? {
        engine.apply_block(&block);
        let Block::Record(record) = &block else { continue };
        let event = record.event();
        let row = Row {
            record,
            time_ns: time.ns(record.timestamp),
            event,
            process: match event {
                // Capacities belong to devices, not to processes.
                Some(Event::Capacity) | None => None,
                Some(_) => engine.last_process(),
            },
            buffer: match event {
                Some(Event::Alloc | Event::Free | Event::Capacity) => Some(BufferFields {
                    device_id: record.device_id,
                    kind: record.kind,
                    buffer_id: record.buffer_id,
                    parent_id: record.parent_id,
                    address: record.address,
                    size: record.size,
                }),
                _ => None,
            },
            scope: match (event, engine.last_process()) {
                (Some(Event::Alloc), Some(process)) if record.scope() != 0 => {
                    Some(scopes.index(&engine, (process, record.scope())))
                }
                (Some(Event::Scope | Event::Text), _) => {
                    // A node was defined or its name grew: resolve again.
                    scopes.by_key.clear();
                    None
                }
                _ => None,
            },
            label: match event {
                Some(Event::Mark | Event::ProcessStart | Event::Text) => Some(record.label()),
                Some(Event::Scope) => Some(record.scope_name()),
                _ => None,
            },
        };
        each(&row, &engine, &scopes)?;
    }
    Ok(engine)
}
