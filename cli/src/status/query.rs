//! `memtrack status --format csv|json [--query FIELDS]`: one line per ring,
//! device and kind, for scripts — what `nvidia-smi --query-gpu=...
//! --format=csv` is for GPUs. Numbers are plain integers (bytes) so that
//! no unit has to be parsed back.

use std::io::Write;

use anyhow::{Result, bail};
use memtrack::{Ring, Snapshot};
use serde_json::json;

use crate::units::kind_name;

/// A column of `--query`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// Local time of the snapshot.
    Timestamp,
    /// The ring file.
    Ring,
    /// Device id.
    Device,
    /// Kind name (`DRAM`, `L1`, ...).
    Kind,
    /// Live bytes.
    Used,
    /// Capacity in bytes, where a writer set one (else empty / null).
    Total,
    /// Capacity minus live bytes (empty / null without a capacity).
    Free,
    /// Live bytes in percent of the capacity, one decimal (empty / null
    /// without a capacity).
    Percent,
    /// Live buffers (ALIAS buffers included).
    Buffers,
}

impl Field {
    const ALL: [(&'static str, Field); 9] = [
        ("timestamp", Field::Timestamp),
        ("ring", Field::Ring),
        ("device", Field::Device),
        ("kind", Field::Kind),
        ("used", Field::Used),
        ("total", Field::Total),
        ("free", Field::Free),
        ("percent", Field::Percent),
        ("buffers", Field::Buffers),
    ];

    fn name(self) -> &'static str {
        Field::ALL.iter().find(|(_, f)| *f == self).expect("every field is listed").0
    }
}

/// The columns without `--query`.
pub const DEFAULT_QUERY: &str = "device,kind,used,total,percent";

/// Parses `--query`: comma-separated field names.
///
/// # Errors
/// An unknown or repeated field, or none; the message lists the known ones.
pub fn parse_query(text: &str) -> Result<Vec<Field>> {
    let known = || Field::ALL.map(|(name, _)| name).join(",");
    let mut fields = Vec::new();
    for word in text.split(',').map(str::trim) {
        let Some(&(_, field)) = Field::ALL.iter().find(|(name, _)| name.eq_ignore_ascii_case(word)) else {
            bail!("--query: unknown field {word:?} (known: {})", known());
        };
        if fields.contains(&field) {
            bail!("--query: field {word:?} given twice");
        }
        fields.push(field);
    }
    Ok(fields)
}

/// How rows are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowFormat {
    /// RFC 4180 CSV; a header line of the field names unless `noheader`.
    Csv { header: bool },
    /// One JSON object per line (JSON Lines), keys the field names.
    Json,
}

/// Parses `--format`: `csv`, `csv,noheader` or `json`.
///
/// # Errors
/// Anything else.
pub fn parse_format(text: &str) -> Result<Option<RowFormat>> {
    let words: Vec<String> = text.split(',').map(|w| w.trim().to_ascii_lowercase()).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    Ok(match words[..] {
        ["text"] => None,
        ["csv"] => Some(RowFormat::Csv { header: true }),
        ["csv", "noheader"] => Some(RowFormat::Csv { header: false }),
        ["json"] => Some(RowFormat::Json),
        _ => bail!("--format: {text:?} is not text, csv, csv,noheader or json"),
    })
}

/// One (ring, device, kind) at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub ring: String,
    pub device: u32,
    pub kind: u8,
    pub used: u64,
    pub buffers: u64,
    pub total: Option<u64>,
    /// The row of live memory the counter pool had no cell for (device
    /// `untracked`, no kind): shown only when there is some.
    pub untracked: bool,
}

impl Row {
    fn free(&self) -> Option<i64> {
        let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.total.map(|t| signed(t).saturating_sub(signed(self.used)))
    }

    /// Percent of the capacity, rounded to one decimal.
    fn percent(&self) -> Option<f64> {
        let total = self.total.filter(|&t| t > 0)?;
        Some((self.used as f64 * 1000.0 / total as f64).round() / 10.0)
    }
}

/// The rows of one snapshot: every (device, kind) with live buffers (of
/// running processes) or a capacity, in device and kind order.
pub fn rows(ring: &Ring, snapshot: &Snapshot) -> Vec<Row> {
    let mut usage = snapshot.device_usage();
    for c in &snapshot.capacities {
        usage.entry((c.device_id, c.kind)).or_default();
    }
    let ring_name = ring.path().display().to_string();
    usage
        .into_iter()
        .map(|((device, kind), (used, buffers))| Row {
            ring: ring_name.clone(),
            device,
            kind,
            used,
            buffers,
            total: snapshot
                .capacities
                .iter()
                .find(|c| c.device_id == device && c.kind == kind)
                .map(|c| c.bytes),
            untracked: false,
        })
        .chain(untracked_row(&ring_name, snapshot))
        .collect()
}

/// The row of what running processes counted outside the counter pool
/// (it was full), if any event was.
fn untracked_row(ring: &str, snapshot: &Snapshot) -> Option<Row> {
    let (used, buffers, events) = snapshot.untracked_usage();
    (events > 0).then(|| Row {
        ring: ring.to_owned(),
        device: 0,
        kind: 0,
        used,
        buffers,
        total: None,
        untracked: true,
    })
}

/// Writes `rows`; the CSV header only when `first` (a repeating status
/// prints it once, as nvidia-smi does).
pub fn write_rows(
    out: &mut impl Write,
    format: RowFormat,
    fields: &[Field],
    rows: &[Row],
    timestamp: &str,
    first: bool,
) -> Result<()> {
    match format {
        RowFormat::Csv { header } => {
            if header && first {
                writeln!(out, "{}", fields.iter().map(|f| f.name()).collect::<Vec<_>>().join(","))?;
            }
            for row in rows {
                let cells: Vec<String> =
                    fields.iter().map(|&f| csv_cell(&text_value(f, row, timestamp))).collect();
                writeln!(out, "{}", cells.join(","))?;
            }
        }
        RowFormat::Json => {
            for row in rows {
                let mut object = serde_json::Map::new();
                for &field in fields {
                    object.insert(field.name().to_owned(), json_value(field, row, timestamp));
                }
                writeln!(out, "{}", serde_json::Value::Object(object))?;
            }
        }
    }
    Ok(())
}

fn text_value(field: Field, row: &Row, timestamp: &str) -> String {
    let optional = |v: Option<String>| v.unwrap_or_default();
    match field {
        Field::Timestamp => timestamp.to_owned(),
        Field::Ring => row.ring.clone(),
        Field::Device if row.untracked => "untracked".to_owned(),
        Field::Device => row.device.to_string(),
        Field::Kind if row.untracked => String::new(),
        Field::Kind => kind_name(row.kind),
        Field::Used => row.used.to_string(),
        Field::Total => optional(row.total.map(|t| t.to_string())),
        Field::Free => optional(row.free().map(|f| f.to_string())),
        Field::Percent => optional(row.percent().map(|p| format!("{p:.1}"))),
        Field::Buffers => row.buffers.to_string(),
    }
}

fn json_value(field: Field, row: &Row, timestamp: &str) -> serde_json::Value {
    match field {
        Field::Timestamp => json!(timestamp),
        Field::Ring => json!(row.ring),
        Field::Device if row.untracked => json!("untracked"),
        Field::Device => json!(row.device),
        Field::Kind if row.untracked => serde_json::Value::Null,
        Field::Kind => json!(kind_name(row.kind)),
        Field::Used => json!(row.used),
        Field::Total => json!(row.total),
        Field::Free => json!(row.free()),
        Field::Percent => json!(row.percent()),
        Field::Buffers => json!(row.buffers),
    }
}

/// A CSV cell, quoted when it holds a comma, a quote or a line break.
fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(used: u64, total: Option<u64>) -> Row {
        Row {
            ring: "/dev/shm/memtrack-a,b".into(),
            device: 3,
            kind: 1,
            used,
            buffers: 2,
            total,
            untracked: false,
        }
    }

    #[test]
    fn csv_has_a_header_once_and_quotes_what_needs_it() {
        let fields = parse_query("ring,device,kind,used,total,free,percent,buffers").unwrap();
        let rows = [row(256, Some(1024)), row(5, None)];
        let mut out = Vec::new();
        write_rows(&mut out, RowFormat::Csv { header: true }, &fields, &rows, "t", true).unwrap();
        write_rows(&mut out, RowFormat::Csv { header: true }, &fields, &rows[..1], "t", false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ring,device,kind,used,total,free,percent,buffers\n\
             \"/dev/shm/memtrack-a,b\",3,L1,256,1024,768,25.0,2\n\
             \"/dev/shm/memtrack-a,b\",3,L1,5,,,,2\n\
             \"/dev/shm/memtrack-a,b\",3,L1,256,1024,768,25.0,2\n"
        );
    }

    #[test]
    fn json_lines_use_the_field_names_and_null_without_a_capacity() {
        let fields = parse_query(DEFAULT_QUERY).unwrap();
        let mut out = Vec::new();
        write_rows(&mut out, RowFormat::Json, &fields, &[row(1, Some(3)), row(1, None)], "t", true).unwrap();
        let lines: Vec<serde_json::Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0], json!({"device": 3, "kind": "L1", "used": 1, "total": 3, "percent": 33.3}));
        assert_eq!(lines[1], json!({"device": 3, "kind": "L1", "used": 1, "total": null, "percent": null}));
    }

    #[test]
    fn bad_queries_and_formats_are_refused_by_name() {
        assert!(parse_query("used,bogus").unwrap_err().to_string().contains("unknown field \"bogus\""));
        assert!(parse_query("used,used").unwrap_err().to_string().contains("twice"));
        assert_eq!(parse_format("csv,noheader").unwrap(), Some(RowFormat::Csv { header: false }));
        assert_eq!(parse_format("JSON").unwrap(), Some(RowFormat::Json));
        assert_eq!(parse_format("text").unwrap(), None);
        assert!(parse_format("xml").is_err());
        assert!(parse_format("json,noheader").is_err());
        assert!(parse_format("csv,noheader,x").is_err());
    }
}
