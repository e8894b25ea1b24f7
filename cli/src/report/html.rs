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
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use memtrack::Event;
use serde_json::{Value, json};

use super::{Source, load_with, to_json};
use crate::engine::Engine;
use crate::output::{Output, Protected};
use crate::recording::{Block, RecordReader};
use crate::units::kind_name;

/// Points per usage series: a chart is at most this many buckets wide.
const BUCKETS: u64 = 600;

/// Writes the page for record file `file` to `out`.
///
/// # Errors
/// The record file cannot be read, or the page cannot be written; the
/// message names the file.
pub fn write(file: &Path, partial: bool, out: &Path) -> Result<()> {
    let (header, engine, finished) = load_with(file, partial)?;
    let source = Source::of_file(file, &header, finished);
    let mut doc = to_json(&engine, &source);
    doc["series"] = usage_series(file, partial, engine.last_time_ns())?;
    doc["ring_created_unix_ns"] = json!(header.ring_created_unix_ns);
    let page = page(&doc);
    // Like every output: a new file renamed into place, never the input.
    let input = Protected::of(file, "the input");
    let mut output = Output::create(out, input.as_slice())?;
    if let Err(error) = output.write_all(page.as_bytes()) {
        output.discard();
        return Err(error).with_context(|| format!("memtrack: report page {}", out.display()));
    }
    if let Some(replaced) = output.commit()? {
        eprintln!("{replaced}");
    }
    Ok(())
}

/// Per device and kind, the highest live bytes in each of [`BUCKETS`]
/// time buckets (so no peak is lost between points):
/// `{"bucket_ns": N, "tracks": [{"device_id", "kind", "max": [...]}]}`.
fn usage_series(file: &Path, partial: bool, duration_ns: u64) -> Result<Value> {
    let mut reader = if partial { RecordReader::open_unfinished(file)? } else { RecordReader::open(file)? };
    let bucket_ns = duration_ns / BUCKETS + 1;
    let mut engine = Engine::new(reader.header().time_base());
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
    Ok(json!({ "bucket_ns": bucket_ns, "tracks": tracks }))
}

/// The page, with `doc` inline.
fn page(doc: &Value) -> String {
    // Inside <script>, "</script>" or "<!--" in a string would end or
    // confuse the element: escape every '<' (JSON allows \u003c).
    let data = doc.to_string().replace('<', "\\u003c");
    let title = doc["file"].as_str().unwrap_or("memtrack report");
    // The data slot first: a file name holding "{{DATA}}" must stay text.
    let (before, after) = TEMPLATE.split_once("{{DATA}}").expect("the template has a data slot");
    let title = html_escape(title);
    [before.replace("{{TITLE}}", &title), data, after.replace("{{TITLE}}", &title)].concat()
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
        let page = page(&doc);
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
