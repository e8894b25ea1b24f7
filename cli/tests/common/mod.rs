//! What the CLI tests share: running the built `memtrack`, temporary record
//! files that remove themselves, reading a report back, and decoding a
//! Perfetto protobuf trace.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use memtrack::format::kind;
use memtrack::{MemtrackBuffer, Ring, RingOptions, Writer, ring_path};
use serde_json::Value;

/// Runs `memtrack ARGS` with no `MEMTRACK_RING` and no input.
pub fn memtrack(args: &[&str]) -> Output {
    memtrack_env(args, &[])
}

/// As [`memtrack`], with extra environment variables.
pub fn memtrack_env(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_memtrack"));
    cmd.args(args).env_remove("MEMTRACK_RING").stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run memtrack")
}

/// A file path in the temporary directory, unique to this test process and
/// call, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(tag: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempFile(std::env::temp_dir().join(format!("memtrack-cli-{tag}-{}-{n}.mtr", std::process::id())))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl AsRef<Path> for TempFile {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `memtrack report FILE --json`, which must succeed, parsed.
pub fn report_json(file: impl AsRef<Path>) -> Value {
    let file = file.as_ref().to_str().unwrap();
    let out = memtrack(&["report", file, "--json"]);
    assert!(out.status.success(), "report failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// A new ring `NAME-<pid>` with one writer ("model") holding three
/// 1000-byte L1 buffers (ids 0..3) on device 2.
pub fn ring_with_writer(name: &str) -> (PathBuf, Writer) {
    let path = ring_path(&format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let writer = Writer::attach_named(
        Ring::create(&path, RingOptions { capacity: 64, ..RingOptions::default() }).unwrap(),
        b"model",
    )
    .unwrap();
    for buffer_id in 0..3 {
        writer.alloc(&l1_buffer(buffer_id));
    }
    (path, writer)
}

/// A 1000-byte L1 buffer on device 2.
pub fn l1_buffer(buffer_id: u64) -> MemtrackBuffer {
    MemtrackBuffer { buffer_id, size: 1000, device_id: 2, kind: kind::L1, ..Default::default() }
}

/// Where each frame of a version 3 record file starts (its 16-byte frame
/// header begins with the payload length; see docs/READER.md).
pub fn frame_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 256;
    while at + 16 <= bytes.len() {
        starts.push(at);
        at += 16 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    starts
}

/// Two sub-rings of 256 slots and a 64-slot shared ring: the file of
/// [`five_allocs_in_a_subring`].
fn corruptible() -> RingOptions {
    RingOptions { capacity: 64, subrings: 2, subring_capacity: 256, ..RingOptions::default() }
}

/// A new ring file at `path` in which a writer ("model") wrote the ALLOCs
/// of `buffer(0..5)` through this thread's sub-ring, with no consumer
/// attached: the writer, that sub-ring, and the records the shared ring
/// holds (at least the process start record).
pub fn five_allocs_in_a_subring(path: &Path, buffer: impl Fn(u64) -> MemtrackBuffer) -> (Writer, usize, u64) {
    let _ = std::fs::remove_file(path);
    let writer = Writer::attach_named(Ring::create(path, corruptible()).unwrap(), b"model").unwrap();
    writer.use_subrings(true);
    for buffer_id in 0..5 {
        writer.alloc(&buffer(buffer_id));
    }
    let subring = writer.own_subring().expect("the test's thread writes through a sub-ring");
    let snapshot = Ring::open(path).unwrap().snapshot();
    assert_eq!(snapshot.subrings[subring].waiting, 5, "the five ALLOCs");
    let in_shared = snapshot.tail - snapshot.subrings.iter().map(|s| s.waiting).sum::<u64>();
    assert!(in_shared >= 1, "the process start record is in the shared ring");
    (writer, subring, in_shared)
}

/// Damages the file [`five_allocs_in_a_subring`] made: the state word (a
/// slot's first) of `subring`'s ticket 2 and of the shared ring's ticket 0
/// becomes lap 0, phase 3, which the protocol never writes.
pub fn corrupt_subring_ticket_2_and_shared_ticket_0(path: &Path, subring: usize) {
    use memtrack::format::{DEFAULT_COUNTER_CELLS, RECORD_SIZE, slots_offset, subring_slots_offset};
    use std::os::unix::fs::FileExt;
    let RingOptions { subrings, subring_capacity: capacity, .. } = corruptible();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let slot = |offset: usize, ticket: u64| offset as u64 + ticket * RECORD_SIZE as u64;
    let sub_offset = subring_slots_offset(DEFAULT_COUNTER_CELLS, subrings, capacity, subring);
    file.write_all_at(&3u64.to_le_bytes(), slot(sub_offset, 2)).unwrap();
    file.write_all_at(&3u64.to_le_bytes(), slot(slots_offset(DEFAULT_COUNTER_CELLS, subrings, capacity), 0))
        .unwrap();
}

/// Decodes a Perfetto protobuf trace with Perfetto's own published schema
/// (the `perfetto_trace_pb2` module of PyPI's `perfetto` package, which
/// `.ci/run` installs into `target/pyperfetto`; `MEMTRACK_PERFETTO_PYTHON`
/// names another directory) and summarises it as JSON: per track its
/// descriptor, per event its kind, track, time, name, value, annotations.
pub fn decode_with_perfetto_schema(trace: &Path) -> Value {
    let python_path = std::env::var("MEMTRACK_PERFETTO_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/pyperfetto").to_owned());
    let script = r#"
import json, sys
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
trace = pb.Trace()
trace.ParseFromString(open(sys.argv[1], "rb").read())
tracks, events = {}, []
for p in trace.packet:
    if p.HasField("track_descriptor"):
        d = p.track_descriptor
        tracks[str(d.uuid)] = {
            "name": d.name, "parent": str(d.parent_uuid) if d.HasField("parent_uuid") else None,
            "pid": d.process.pid if d.HasField("process") else None,
            "process_name": d.process.process_name if d.HasField("process") else None,
            "unit": pb.CounterDescriptor.Unit.Name(d.counter.unit) if d.HasField("counter") else None,
        }
    elif p.HasField("track_event"):
        e = p.track_event
        events.append({
            "type": pb.TrackEvent.Type.Name(e.type), "track": str(e.track_uuid), "ts": p.timestamp,
            "name": e.name, "value": e.counter_value, "categories": list(e.categories),
            "args": {a.name: (a.string_value if a.HasField("string_value") else
                              a.bool_value if a.HasField("bool_value") else
                              a.uint_value if a.HasField("uint_value") else a.int_value)
                     for a in e.debug_annotations},
            "sequence": p.trusted_packet_sequence_id,
        })
json.dump({"tracks": tracks, "events": events}, sys.stdout)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(trace)
        .env("PYTHONPATH", &python_path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "decoding with Perfetto's schema failed (is `perfetto` installed in {python_path}? .ci/run does it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
