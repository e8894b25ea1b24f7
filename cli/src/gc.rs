//! `memtrack gc`: finds ring files nobody uses any more (no live writer, no
//! consumer) and, with `--force`, removes them.
//!
//! Whether a process uses a ring is read from the ring's OFD locks
//! ([`Ring::attachments`]): the kernel drops them when the process dies, so
//! a reused pid can never make a dead ring look alive, nor a process of
//! another PID namespace make a live ring look dead.
//!
//! Removal moves the file aside first (a rename in the same directory),
//! checks the locks again on the moved file, and only then unlinks it; a
//! process that attached between the two checks gets its ring put back.
//! A process that opens the ring's path after the rename creates a new ring
//! there, as it would after any removal.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use memtrack::{Ring, ring_path};
use serde_json::json;

use crate::units::{human_bytes, printable_path};

#[derive(Args)]
pub struct GcArgs {
    /// Rings to look at (names or paths). Default: every ring in /dev/shm.
    #[arg(value_name = "RING")]
    rings: Vec<String>,
    /// Remove the unused rings. Without it, gc only lists what it would
    /// remove (a dry run).
    #[arg(long, short = 'f')]
    force: bool,
    /// One JSON document (schema memtrack.gc/1) instead of text.
    #[arg(long)]
    json: bool,
}

/// What gc found of one ring file.
#[derive(Debug)]
enum Verdict {
    /// Nobody uses it: removed with `--force`.
    Unused,
    /// A live writer or a consumer holds it.
    InUse { writers: usize, reader: bool },
    /// Not a ring gc may judge (not a ring, another version, another
    /// user's): never removed.
    Invalid(String),
}

struct Found {
    path: PathBuf,
    bytes: u64,
    created_unix_ns: Option<u64>,
    verdict: Verdict,
    /// With `--force`: whether it was removed, or why not.
    removal: Option<Result<(), String>>,
}

pub fn run(args: &GcArgs) -> Result<()> {
    let paths: Vec<PathBuf> = if args.rings.is_empty() {
        crate::status::ring_names()?.iter().map(|name| ring_path(name)).collect()
    } else {
        args.rings.iter().map(|name| crate::ring_arg::path_of(name)).collect::<Result<_>>()?
    };
    let mut found: Vec<Found> = paths.into_iter().map(examine).collect();
    if args.force {
        for f in found.iter_mut().filter(|f| matches!(f.verdict, Verdict::Unused)) {
            f.removal = Some(remove_if_still_unused(&f.path));
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        write_json(&mut out, &found, args.force)?;
    } else {
        write_text(&mut out, &found, args.force)?;
    }
    let failed: Vec<(&Path, &String)> = found
        .iter()
        .filter_map(|f| match &f.removal {
            Some(Err(reason)) => Some((f.path.as_path(), reason)),
            _ => None,
        })
        .collect();
    if let Some((path, reason)) = failed.first() {
        bail!("{}: cannot remove: {reason} ({} ring(s) not removed)", printable_path(path), failed.len());
    }
    Ok(())
}

fn examine(path: PathBuf) -> Found {
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.size());
    let (created_unix_ns, verdict) = match Ring::open(&path) {
        Ok(ring) => {
            let a = ring.attachments();
            let verdict = if a.is_unused() {
                Verdict::Unused
            } else {
                Verdict::InUse { writers: a.writers, reader: a.reader }
            };
            (Some(ring.created_unix_ns()), verdict)
        }
        Err(_) if crate::ring_arg::is_record_file(&path) => {
            (None, Verdict::Invalid("a record file, not a ring: gc never removes it".to_owned()))
        }
        Err(error) => (None, Verdict::Invalid(error.to_string())),
    };
    Found { path, bytes, created_unix_ns, verdict, removal: None }
}

/// Moves `path` aside, checks again that nobody holds the moved ring, and
/// unlinks it; puts it back if somebody attached in between.
fn remove_if_still_unused(path: &Path) -> Result<(), String> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let aside = path.with_file_name(format!(".{file_name}.gc-{}", std::process::id()));
    std::fs::rename(path, &aside).map_err(|e| e.to_string())?;
    let still_unused = Ring::open(&aside).map(|ring| ring.attachments().is_unused());
    match still_unused {
        Ok(true) => std::fs::remove_file(&aside).map_err(|e| e.to_string()),
        Ok(false) | Err(_) => {
            // Somebody attached meanwhile (or the file changed): put it
            // back, unless a new ring took the name in between.
            let back = std::fs::hard_link(&aside, path);
            let _ = std::fs::remove_file(&aside);
            match back {
                Ok(()) => Err("a process attached while gc was removing it; left in place".into()),
                Err(e) => {
                    Err(format!("a process attached while gc was removing it, and it cannot go back: {e}"))
                }
            }
        }
    }
}

fn state_word(f: &Found, force: bool) -> String {
    match (&f.verdict, &f.removal) {
        (Verdict::Unused, Some(Ok(()))) => "removed".into(),
        (Verdict::Unused, Some(Err(reason))) => format!("not removed: {reason}"),
        (Verdict::Unused, None) if force => "unused".into(),
        (Verdict::Unused, None) => "unused: would remove".into(),
        (Verdict::InUse { writers, reader }, _) => {
            let reader = if *reader { ", a consumer" } else { "" };
            format!("in use: {writers} writer(s){reader}")
        }
        (Verdict::Invalid(reason), _) => format!("skipped: {reason}"),
    }
}

fn write_text(out: &mut impl Write, found: &[Found], force: bool) -> Result<()> {
    if found.is_empty() {
        writeln!(out, "no rings in {}", memtrack::SHM_DIR)?;
        return Ok(());
    }
    writeln!(out, "{:<40} {:>10}  {:<23}  state", "ring", "size", "created")?;
    for f in found {
        let created = f.created_unix_ns.map_or_else(|| "-".to_owned(), crate::status::local_time);
        writeln!(
            out,
            "{:<40} {:>10}  {created:<23}  {}",
            printable_path(&f.path),
            human_bytes(f.bytes as i64),
            state_word(f, force)
        )?;
    }
    let unused: Vec<&Found> = found.iter().filter(|f| matches!(f.verdict, Verdict::Unused)).collect();
    let bytes: u64 = unused.iter().map(|f| f.bytes).sum();
    if !force && !unused.is_empty() {
        writeln!(
            out,
            "{} unused ring(s), {}: `memtrack gc --force` removes them",
            unused.len(),
            human_bytes(bytes as i64)
        )?;
    } else if force {
        let removed: Vec<&&Found> = unused.iter().filter(|f| matches!(f.removal, Some(Ok(())))).collect();
        let freed: u64 = removed.iter().map(|f| f.bytes).sum();
        writeln!(out, "removed {} unused ring(s), {}", removed.len(), human_bytes(freed as i64))?;
    }
    Ok(())
}

fn write_json(out: &mut impl Write, found: &[Found], force: bool) -> Result<()> {
    let rings: Vec<serde_json::Value> = found
        .iter()
        .map(|f| {
            let (state, writers, reader, reason) = match &f.verdict {
                Verdict::Unused => ("unused", json!(0), json!(false), None),
                Verdict::InUse { writers, reader } => ("in_use", json!(writers), json!(reader), None),
                Verdict::Invalid(reason) => ("invalid", json!(null), json!(null), Some(reason.clone())),
            };
            let reason = reason.or_else(|| f.removal.as_ref().and_then(|r| r.clone().err()));
            json!({
                "ring": f.path, "state": state, "bytes": f.bytes, "created_unix_ns": f.created_unix_ns,
                "writers": writers, "reader": reader,
                "removed": matches!(f.removal, Some(Ok(()))), "reason": reason,
            })
        })
        .collect();
    writeln!(out, "{}", json!({ "schema": "memtrack.gc/1", "force": force, "rings": rings }))?;
    Ok(())
}
