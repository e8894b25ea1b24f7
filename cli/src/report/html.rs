//! `memtrack report FILE --html OUT`: the report as one self-contained page
//! (no network: the data, the style and the script are inline, and its
//! Content-Security-Policy forbids fetching anything).
//!
//! Per device, a stacked usage-over-time chart by kind with each kind's
//! peak and the marks, and small per-kind charts each scaled to its own
//! peak (L1's megabytes are not lost under DRAM's gigabytes); then the
//! remaining buffers (leaks), the anomalies and the processes as tables
//! that sort by any column. The data is the `memtrack.report/1` document
//! plus a usage series per device and kind.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use memtrack::Event;
use serde_json::{Value, json};

use super::{Source, document, write_document};
use crate::engine::Engine;
use crate::filter::Filter;
use crate::output::{Output, Protected};
use crate::recording::{Block, FileHeader, RecordReader};
use crate::units::kind_name;

/// Points per usage series: a chart is at most this many buckets wide.
const BUCKETS: u64 = 600;

/// Writes the page for record file `file` to `out`.
///
/// # Errors
/// The record file cannot be read, or the page cannot be written; the
/// message names the file.
pub fn write(file: &Path, partial: bool, out: &Path) -> Result<()> {
    // One pass finds the duration (the width of the usage buckets), the
    // next reads the file through the engine and the usage series at once:
    // one engine in memory, never two.
    let duration_ns = duration_ns(file, partial)?;
    let (header, engine, finished, series) = load_with_series(file, partial, duration_ns)?;
    let source = Source::of_file(file, &header, finished);
    let filter = Filter::default();
    let mut doc = document(&engine, &source, &filter);
    doc.insert("series".to_owned(), series);
    doc.insert("ring_created_unix_ns".to_owned(), json!(header.ring_created_unix_ns));
    let title = doc.get("file").and_then(Value::as_str).unwrap_or("memtrack report").to_owned();
    // Like every output: a new file renamed into place, never the input.
    let input = Protected::of(file, "the input");
    let mut output = BufWriter::with_capacity(1 << 16, Output::create(out, input.as_slice())?);
    let written = write_page(&mut output, &title, |data| write_document(data, &doc, &engine, &filter))
        .and_then(|()| output.flush());
    // Without flushing again: after a failure, only the temporary file matters.
    let (output, _) = output.into_parts();
    if let Err(error) = written {
        output.discard();
        return Err(error).with_context(|| format!("memtrack: report page {}", out.display()));
    }
    if let Some(replaced) = output.commit()? {
        eprintln!("{replaced}");
    }
    Ok(())
}

/// The time of the last record of `file`, ns since the ring's creation,
/// as the engine would find it ([`Engine::last_time_ns`]).
fn duration_ns(file: &Path, partial: bool) -> Result<u64> {
    let mut reader = if partial { RecordReader::open_unfinished(file)? } else { RecordReader::open(file)? };
    let time = reader.header().time_base();
    let mut last = 0;
    while let Some(block) = reader.next_block()? {
        if let Block::Record(r) = block {
            last = u64::max(last, time.ns(r.timestamp));
        }
    }
    Ok(last)
}

/// Reads `file` through the engine (as [`super::load_with`]) and, on the
/// way, per device and kind, the highest live bytes in each of [`BUCKETS`]
/// time buckets of a recording `duration_ns` long (so no peak is lost
/// between points): `{"bucket_ns": N, "tracks": [{"device_id", "kind",
/// "max": [...]}]}`.
fn load_with_series(
    file: &Path,
    partial: bool,
    duration_ns: u64,
) -> Result<(FileHeader, Engine, bool, Value)> {
    let mut reader = if partial { RecordReader::open_unfinished(file)? } else { RecordReader::open(file)? };
    let header = *reader.header();
    let bucket_ns = duration_ns / BUCKETS + 1;
    let mut engine = Engine::new(header.time_base());
    // Per track: the highest value of each bucket so far, and the value
    // now (which the next bucket starts with).
    let mut tracks: BTreeMap<(u32, u8), (Vec<u64>, u64)> = BTreeMap::new();
    while let Some(block) = reader.next_block()? {
        engine.apply_block(&block);
        let touched: Vec<(u32, u8)> = match &block {
            Block::Record(r) if matches!(r.event(), Some(Event::Alloc | Event::Free)) => {
                vec![(r.device_id, r.kind)]
            }
            // A death (or a table entry taken over) may release any track.
            Block::Died(_) => engine.devices().keys().copied().collect(),
            Block::Record(r) if r.event() == Some(Event::ProcessStart) => {
                engine.devices().keys().copied().collect()
            }
            _ => continue,
        };
        let bucket = (engine.last_time_ns() / bucket_ns) as usize;
        for track in touched {
            let Some(stats) = engine.devices().get(&track) else { continue };
            let (series, now) = tracks.entry(track).or_default();
            if series.len() > bucket && *now == stats.live_bytes {
                continue;
            }
            // Buckets up to this one start with the value held until now.
            while series.len() <= bucket {
                series.push(*now);
            }
            series[bucket] = series[bucket].max(stats.live_bytes);
            *now = stats.live_bytes;
        }
    }
    let buckets = BUCKETS as usize + 1;
    let tracks: Vec<Value> = tracks
        .into_iter()
        .map(|((device, kind), (mut series, now))| {
            if series.len() < buckets {
                series.resize(buckets, now);
            }
            json!({ "device_id": device, "kind": kind_name(kind), "max": series })
        })
        .collect();
    let series = json!({ "bucket_ns": bucket_ns, "tracks": tracks });
    Ok((header, engine, reader.finished(), series))
}

/// Writes the page, its data slot filled by `data` (a JSON document)
/// and its title `title`.
fn write_page<W: Write>(
    out: &mut W,
    title: &str,
    data: impl FnOnce(&mut EscapeLessThan<&mut W>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    // The data slot first: a file name holding "{{DATA}}" must stay text.
    let (before, after) = TEMPLATE.split_once("{{DATA}}").expect("the template has a data slot");
    let title = html_escape(title);
    out.write_all(before.replace("{{TITLE}}", &title).as_bytes())?;
    data(&mut EscapeLessThan(&mut *out))?;
    out.write_all(after.replace("{{TITLE}}", &title).as_bytes())
}

/// Writes JSON with every '<' as `\u003c`: inside <script>, "</script>"
/// or "<!--" in a string would end or confuse the element. Outside
/// strings JSON has no '<', so escaping bytes is escaping strings.
struct EscapeLessThan<W>(W);

impl<W: Write> Write for EscapeLessThan<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for (i, part) in buf.split(|&b| b == b'<').enumerate() {
            if i > 0 {
                self.0.write_all(b"\\u003c")?;
            }
            self.0.write_all(part)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const TEMPLATE: &str = include_str!("report.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_cannot_close_the_script_element() {
        let doc =
            json!({ "file": "a<b>\"c\".mtr", "marks": [{ "label": "</script><script>alert(1)</script>" }] });
        let mut page = Vec::new();
        write_page(&mut page, doc["file"].as_str().unwrap(), |out| {
            serde_json::to_writer(out, &doc).map_err(Into::into)
        })
        .unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(r#""label":"\u003c/script>\u003cscript>alert(1)\u003c/script>""#), "{page}");
        assert!(!page.contains("</script><script>alert"), "{page}");
        assert!(page.contains("<title>memtrack report: a&lt;b&gt;&quot;c&quot;.mtr</title>"));
        assert_eq!(page.matches("</script>").count(), TEMPLATE.matches("</script>").count());
    }

    #[test]
    fn the_page_fetches_nothing() {
        // No URL to load from (the SVG namespace is a name, not fetched),
        // no src/href attributes, a policy that forbids connecting.
        let template = TEMPLATE.replace("\"http://www.w3.org/2000/svg\"", "");
        for needle in ["http:", "https:", "src=", "href=", "@import", "url("] {
            assert!(!template.contains(needle), "{needle} in the template");
        }
        assert!(TEMPLATE.contains("default-src 'none'"));
    }
}
