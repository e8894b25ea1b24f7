//! `memtrack gc` run as a user would: real rings, a real writer process
//! that is SIGKILLed, a consumer and a writer held by this process, and a
//! file that is not a ring. Every ring is named on the command line, so the
//! test never touches other rings in /dev/shm.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;

use common::memtrack;
use memtrack::{Consumer, Ring, RingOptions, Writer, ring_path};
use serde_json::Value;

const ROLE: &str = "MEMTRACK_TEST_ROLE";

/// The helper process's entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Ok(role) = std::env::var(ROLE) else { return };
    assert_eq!(role, "writer");
    let path = std::env::var("MEMTRACK_RING").unwrap();
    let writer = Writer::attach(Ring::open(Path::new(&path)).unwrap()).unwrap();
    writer.mark(b"attached");
    println!("HELPER ready");
    std::thread::sleep(std::time::Duration::from_secs(120));
}

/// A new ring at `/dev/shm/memtrack-cli-gc-TAG-<pid>`, removed on drop.
struct TempRing(PathBuf);

impl TempRing {
    fn new(tag: &str) -> TempRing {
        let path = ring_path(&format!("cli-gc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        drop(Ring::create(&path, RingOptions { capacity: 16, ..RingOptions::default() }).unwrap());
        TempRing(path)
    }

    fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempRing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A writer in another process, attached to `ring`, SIGKILLed: its entry
/// says running, but nobody holds its lock.
fn writer_killed(ring: &TempRing) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper", "--nocapture", "--test-threads=1"])
        .env(ROLE, "writer")
        .env("MEMTRACK_RING", ring.str())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap().contains("HELPER ready")), "the helper never attached");
    child.kill().unwrap();
    child.wait().unwrap();
}

fn gc_json(args: &[&str]) -> Value {
    let mut all = vec!["gc", "--json"];
    all.extend_from_slice(args);
    let out = memtrack(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn ring_entry<'a>(doc: &'a Value, ring: &str) -> &'a Value {
    doc["rings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ring"] == ring)
        .unwrap_or_else(|| panic!("{ring} in {doc}"))
}

#[test]
fn gc_removes_only_rings_no_live_process_holds_and_only_with_force() {
    let dead = TempRing::new("dead");
    writer_killed(&dead);
    let never_used = TempRing::new("never-used");
    let written = TempRing::new("writer");
    let writer = Writer::attach(Ring::open(&written.0).unwrap()).unwrap();
    let read = TempRing::new("reader");
    let consumer = Consumer::attach(&read.0).unwrap();
    let not_a_ring = ring_path(&format!("cli-gc-junk-{}", std::process::id()));
    std::fs::write(&not_a_ring, b"not a ring").unwrap();
    let all = [dead.str(), never_used.str(), written.str(), read.str(), not_a_ring.to_str().unwrap()];

    // A dry run by default: lists, removes nothing.
    let doc = gc_json(&all);
    assert_eq!(doc["schema"], "memtrack.gc/1");
    assert_eq!(ring_entry(&doc, dead.str())["state"], "unused");
    assert_eq!(ring_entry(&doc, never_used.str())["state"], "unused");
    assert_eq!(ring_entry(&doc, written.str())["state"], "in_use");
    assert_eq!(ring_entry(&doc, written.str())["writers"], 1);
    assert_eq!(ring_entry(&doc, read.str())["state"], "in_use");
    assert_eq!(ring_entry(&doc, read.str())["reader"], true);
    let junk = ring_entry(&doc, not_a_ring.to_str().unwrap());
    assert_eq!(junk["state"], "invalid");
    assert!(junk["reason"].as_str().unwrap().contains("shorter than a header"), "{junk}");
    assert!(all.iter().all(|p| Path::new(p).exists()), "a dry run removed something");

    // The text form says what it would do.
    let out = memtrack(&["gc", dead.str(), written.str()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with(dead.str()) && l.ends_with("unused: would remove")), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with(written.str()) && l.contains("in use: 1 writer(s)")),
        "{text}"
    );
    assert!(text.contains("1 unused ring(s)") && text.contains("memtrack gc --force"), "{text}");

    // --force removes the unused ones only.
    let doc = gc_json(&[&["--force"], &all[..]].concat());
    assert_eq!(ring_entry(&doc, dead.str())["removed"], true);
    assert_eq!(ring_entry(&doc, never_used.str())["removed"], true);
    assert!(!dead.0.exists() && !never_used.0.exists());
    assert!(written.0.exists() && read.0.exists() && not_a_ring.exists());
    assert_eq!(ring_entry(&doc, written.str())["removed"], false);

    // Once the writer and the consumer are gone, their rings go too.
    drop(writer);
    drop(consumer);
    let out = memtrack(&["gc", "--force", written.str(), read.str()]);
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("removed 2 unused ring(s)"));
    assert!(!written.0.exists() && !read.0.exists());
    std::fs::remove_file(&not_a_ring).unwrap();
}

#[test]
fn gc_without_rings_named_lists_dev_shm_and_removes_nothing() {
    let ring = TempRing::new("listed");
    let doc = gc_json(&[]);
    assert_eq!(ring_entry(&doc, ring.str())["state"], "unused");
    assert_eq!(ring_entry(&doc, ring.str())["removed"], false);
    assert!(ring.0.exists());
}

#[test]
fn gc_names_a_record_file_among_the_rings_and_goes_on_with_the_others() {
    // A recording named by mistake is one entry of the list, not the end
    // of the command (the other commands refuse it: they take one ring).
    let recording = ring_path(&format!("cli-gc-recording-{}", std::process::id()));
    std::fs::write(&recording, [b"MTRECORD".as_slice(), &[0; 248]].concat()).unwrap();
    let never_used = TempRing::new("beside-recording");
    let doc = gc_json(&[recording.to_str().unwrap(), never_used.str()]);
    let entry = ring_entry(&doc, recording.to_str().unwrap());
    assert_eq!(entry["state"], "invalid");
    assert!(entry["reason"].as_str().unwrap().contains("a record file, not a ring"), "{entry}");
    assert_eq!(ring_entry(&doc, never_used.str())["state"], "unused");
    let out = memtrack(&["gc", "--force", recording.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(recording.exists(), "gc never removes a recording");
    std::fs::remove_file(&recording).unwrap();
}
