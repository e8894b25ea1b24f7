//! The Rust API on real shared-memory files: creation, validation,
//! refusals, writers and a consumer in one process.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{TempRing, drain_all};
use memtrack::format::{self, Event, FLAG_ALIAS, kind};
use memtrack::{Consumer, ErrorKind, MemtrackBuffer, ProcessState, Ring, RingOptions, Writer};

fn small() -> RingOptions {
    RingOptions { capacity: 64, ..RingOptions::default() }
}

fn buffer(id: u64, device_id: u32, size: u64) -> MemtrackBuffer {
    MemtrackBuffer {
        buffer_id: id,
        address: 0x1000 * id,
        size,
        device_id,
        kind: kind::DRAM,
        ..Default::default()
    }
}

#[test]
fn events_arrive_in_order_with_every_field() {
    let tmp = TempRing::new("roundtrip");
    let writer = Writer::attach_named(Ring::create(tmp.path(), small()).unwrap(), b"unit-test").unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let mesh = MemtrackBuffer { parent_id: 0, flags: FLAG_ALIAS, ..buffer(100, 0, 8192) };
    writer.alloc(&mesh);
    writer.alloc(&MemtrackBuffer { parent_id: 100, ..buffer(101, 3, 8192) });
    writer.set_capacity(3, kind::DRAM, 1 << 30);
    writer.mark(b"phase one, with a label longer than thirty-six bytes");
    writer.free(&MemtrackBuffer { parent_id: 100, ..buffer(101, 3, 8192) });
    let records = drain_all(&mut consumer);
    let events: Vec<_> = records.iter().map(|r| r.event().unwrap()).collect();
    assert_eq!(
        events,
        [
            Event::ProcessStart,
            Event::Alloc,
            Event::Alloc,
            Event::Capacity,
            Event::Mark,
            Event::Text,
            Event::Free
        ]
    );
    assert_eq!(records[0].label(), b"unit-test");
    assert!(records.windows(2).all(|w| w[0].ticket + 1 == w[1].ticket));
    assert!(records.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    let child = records[2];
    assert_eq!((child.buffer_id, child.parent_id, child.device_id, child.size), (101, 100, 3, 8192));
    assert_eq!(child.address, 0x1000 * 101);
    assert_eq!(child.pid, std::process::id());
    assert!(records[1].is_alias() && !child.is_alias());
    assert_eq!((records[3].device_id, records[3].size), (3, 1 << 30));
    // The label's first 36 bytes in the MARK, the rest in a TEXT record
    // that names the mark's text id and its own chunk number.
    let label = b"phase one, with a label longer than thirty-six bytes";
    assert_eq!(records[4].label(), &label[..format::LABEL_LEN]);
    assert_eq!(records[4].flags, format::FLAG_MORE);
    let text = records[5];
    assert_eq!((text.kind, text.scope(), text.flags), (Event::Mark as u8, records[4].scope(), 1));
    assert_eq!(text.label(), &label[format::LABEL_LEN..]);

    let snapshot = consumer.ring().snapshot();
    let me = &snapshot.processes[0];
    assert_eq!(
        (me.pid, me.name.as_str(), me.state),
        (std::process::id(), "unit-test", ProcessState::Running)
    );
    // The alias still counts as a live buffer, with no bytes; device 3 is back to zero.
    assert_eq!(snapshot.counters.len(), 1);
    let c = snapshot.counters[0];
    assert_eq!((c.device_id, c.kind, c.live_bytes, c.live_buffers), (0, kind::DRAM, 0, 1));
    assert_eq!(snapshot.capacities[0].bytes, 1 << 30);
    assert_eq!(snapshot.reader_pid, Some(std::process::id()));
    assert_eq!(snapshot.progress.delivered, 7);

    writer.shutdown();
    assert_eq!(drain_all(&mut consumer)[0].event(), Some(Event::ProcessExit));
    assert_eq!(consumer.ring().processes()[0].state, ProcessState::Exited);
}

#[test]
fn any_device_id_and_kind_has_live_counters() {
    let tmp = TempRing::new("bigdev");
    let writer = Writer::attach(Ring::create(tmp.path(), small()).unwrap()).unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    writer.alloc(&buffer(1, 4000, 64));
    writer.alloc(&MemtrackBuffer {
        buffer_id: 2,
        size: 1 << 43,
        device_id: 100,
        kind: 9,
        ..Default::default()
    });
    let records = drain_all(&mut consumer);
    assert_eq!(records[1].device_id, 4000);
    let counters = consumer.ring().snapshot().counters;
    let cell = |device| {
        counters.iter().find(|c| c.device_id == device).map(|c| (c.kind, c.live_bytes, c.live_buffers))
    };
    assert_eq!(cell(4000), Some((0, 64, 1)));
    assert_eq!(cell(100), Some((9, 1 << 43, 1)), "2^43 bytes, exact");
}

/// Without sub-rings (a writer thread's sub-ring would take these records
/// and, full, send it here anyway: the exhaustion tests fill both).
#[test]
fn a_full_ring_without_a_consumer_drops_at_once_and_counts() {
    let tmp = TempRing::new("full");
    let writer = Writer::attach(
        Ring::create(tmp.path(), RingOptions { capacity: 16, subrings: 0, ..RingOptions::default() })
            .unwrap(),
    )
    .unwrap();
    let start = std::time::Instant::now();
    for i in 0..100 {
        writer.alloc(&buffer(i, 0, 1));
    }
    // 100 events, 84 over capacity with no consumer: no waiting at all.
    assert!(start.elapsed() < std::time::Duration::from_millis(50), "waited on a full ring with no consumer");
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let records = drain_all(&mut consumer);
    let snapshot = consumer.ring().snapshot();
    // The start record plus 100 events were attempted.
    assert_eq!(records.len(), 16);
    assert_eq!(snapshot.dropped, 101 - 16);
    assert_eq!(snapshot.processes[0].dropped, 101 - 16);
    // Live counters stay exact through drops.
    assert_eq!(snapshot.counters[0].live_buffers, 100);
}

#[test]
fn a_second_consumer_is_refused_with_the_first_ones_pid() {
    let tmp = TempRing::new("busy");
    let _ring = Ring::create(tmp.path(), small()).unwrap();
    let first = Consumer::attach(tmp.path()).unwrap();
    let err = Consumer::attach(tmp.path()).expect_err("second consumer refused");
    assert!(
        matches!(err.kind, ErrorKind::ReaderBusy { pid, other_namespace: false } if pid == std::process::id())
    );
    assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "{err}");
    drop(first);
    Consumer::attach(tmp.path()).expect("free again once the first detached");
}

#[test]
fn a_restarted_consumer_resumes_without_repeating() {
    let tmp = TempRing::new("resume");
    let writer = Writer::attach(Ring::create(tmp.path(), small()).unwrap()).unwrap();
    for i in 0..10 {
        writer.alloc(&buffer(i, 0, 1));
    }
    let mut first = Consumer::attach(tmp.path()).unwrap();
    let mut out = Vec::new();
    assert_eq!(first.take(4, &mut out).records, 4);
    first.commit();
    drop(first);
    for i in 10..20 {
        writer.alloc(&buffer(i, 0, 1));
    }
    let mut second = Consumer::attach(tmp.path()).unwrap();
    out.extend(drain_all(&mut second));
    let tickets: Vec<u64> = out.iter().map(|r| r.ticket).collect();
    assert_eq!(tickets, (0..21).collect::<Vec<_>>());
    assert_eq!(second.progress().lost_reader_died, 0);
}

#[test]
fn racing_creators_end_on_one_ring() {
    let tmp = TempRing::new("race");
    let path = tmp.path().to_path_buf();
    let writers: Vec<Writer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| Writer::attach(Ring::open_or_create(&path, small()).unwrap()).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, w) in writers.iter().enumerate() {
        w.alloc(&buffer(i as u64, 0, 1));
    }
    let mut consumer = Consumer::attach(&path).unwrap();
    let records = drain_all(&mut consumer);
    assert_eq!(records.iter().filter(|r| r.event() == Some(Event::Alloc)).count(), 8);
    assert_eq!(consumer.ring().processes().len(), 8);
    let leftovers: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(&format!("race-{}", std::process::id())))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

#[test]
fn a_full_process_table_is_refused_and_counted() {
    let tmp = TempRing::new("table");
    Ring::create(tmp.path(), small()).unwrap();
    // Each Ring is its own open file description, so each takes an entry.
    let writers: Vec<Writer> = (0..format::MAX_PROCESSES)
        .map(|_| Writer::attach(Ring::open(tmp.path()).unwrap()).unwrap())
        .collect();
    let err = Writer::attach(Ring::open(tmp.path()).unwrap()).expect_err("table full");
    assert!(matches!(err.kind, ErrorKind::ProcessTableFull(256)), "{err}");
    let ring = Ring::open(tmp.path()).unwrap();
    assert_eq!(ring.snapshot().untracked_processes, 1);
    // An entry whose holder went away is taken again.
    drop(writers);
    Writer::attach(Ring::open(tmp.path()).unwrap()).expect("entries of closed writers are free");
}

fn expect_refusal(path: &std::path::Path, what: &str) -> memtrack::Error {
    let err = Ring::open(path).err().unwrap_or_else(|| panic!("{what}: attached anyway"));
    let line = err.to_string();
    assert!(line.contains(&path.display().to_string()), "{what}: message does not name the file: {line}");
    assert!(!line.contains('\n'), "{what}: not one line: {line}");
    err
}

/// Rewrites bytes of a ring file in place.
fn patch(path: &std::path::Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, offset).unwrap();
}

#[test]
fn hostile_and_broken_files_are_refused_with_the_reason() {
    let tmp = TempRing::new("refuse");
    let path = tmp.path();
    let make = || {
        let _ = std::fs::remove_file(path);
        Ring::create(path, small()).unwrap();
    };

    make();
    patch(path, 0, b"NOTARING");
    assert!(matches!(expect_refusal(path, "bad magic").kind, ErrorKind::BadMagic));

    // A version-1 or version-2 ring and an unknown version: one line
    // naming the file, the file's version and the one this build reads.
    for found in [1u32, 2, 4] {
        make();
        patch(path, 8, &found.to_le_bytes());
        let err = expect_refusal(path, "version");
        assert!(matches!(err.kind, ErrorKind::Version { found: f, expected: 3 } if f == found), "{err}");
        assert!(
            err.to_string().contains(&format!("format version {found}, this build reads version 3")),
            "{err}"
        );
    }

    make();
    patch(path, 16, &100u64.to_le_bytes());
    let err = expect_refusal(path, "capacity");
    assert!(err.to_string().contains("power of two"), "{err}");

    // Sub-ring fields out of range, or in range but not the file's: each
    // is one line, never a mapping past the end (SIGBUS).
    for (offset, value, says) in [
        (64, 257u32, "257 sub-rings, more than 256"),
        (68, 1000, "sub-ring capacity 1000 is not a power of two"),
        (68, 1 << 17, "sub-ring capacity 131072"),
        (64, 33, "recorded file length"),
        (68, 1 << 16, "recorded file length"),
    ] {
        make();
        patch(path, offset, &value.to_le_bytes());
        let err = expect_refusal(path, says).to_string();
        assert!(err.contains(says) && !err.contains('\n'), "{err}");
    }

    make();
    patch(path, 12, &128u32.to_le_bytes());
    assert!(expect_refusal(path, "record size").to_string().contains("record size"));

    make();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(format::default_file_size(64) - 64)
        .unwrap();
    assert!(expect_refusal(path, "truncated").to_string().contains("file length"));

    make();
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(100).unwrap();
    assert!(expect_refusal(path, "tiny").to_string().contains("shorter than a header"));

    make();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o620)).unwrap();
    assert!(matches!(expect_refusal(path, "group-writable").kind, ErrorKind::Permission(_)));

    make();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o606)).unwrap();
    assert!(matches!(expect_refusal(path, "world-writable").kind, ErrorKind::Permission(_)));

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        make();
        std::os::unix::fs::chown(path, Some(65534), None).unwrap();
        assert!(expect_refusal(path, "other owner").to_string().contains("owned by uid 65534"));
    }

    let _ = std::fs::remove_file(path);
    let target = TempRing::new("target");
    Ring::create(target.path(), small()).unwrap();
    std::os::unix::fs::symlink(target.path(), path).unwrap();
    expect_refusal(path, "symlink");

    let _ = std::fs::remove_file(path);
    let err = expect_refusal(path, "missing");
    assert!(err.to_string().contains("No such file"), "{err}");
}

#[test]
fn new_rings_are_private_and_bad_capacities_refused() {
    let tmp = TempRing::new("mode");
    Ring::create(tmp.path(), small()).unwrap();
    let mode = std::fs::metadata(tmp.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let err = Ring::create(tmp.path(), small()).expect_err("exists");
    assert!(err.to_string().contains("exists"), "{err}");
    for capacity in [0, 3, 8, 1 << 27] {
        let other = TempRing::new("cap");
        let err = Ring::create(other.path(), RingOptions { capacity, ..RingOptions::default() })
            .expect_err("refused");
        assert!(matches!(err.kind, ErrorKind::Config(_)), "{capacity}: {err}");
        assert!(!other.path().exists());
    }
}

#[test]
fn unique_rings_have_names_of_their_own_and_only_their_own_file_is_removed() {
    let prefix = format!("test-unique-{}", std::process::id());
    let (a, b) =
        (Ring::create_unique(&prefix, small()).unwrap(), Ring::create_unique(&prefix, small()).unwrap());
    let (path_a, path_b) = (a.path().to_path_buf(), b.path().to_path_buf());
    let _cleanup = (TempRing(path_a.clone()), TempRing(path_b.clone()));
    assert_ne!(path_a, path_b);
    let name = path_a.file_name().unwrap().to_str().unwrap().to_owned();
    let random = name.strip_prefix(&format!("memtrack-{prefix}-{}-", std::process::id())).unwrap();
    assert_eq!(random.len(), 16, "{name}: 64 random bits");
    assert!(random.bytes().all(|c| c.is_ascii_hexdigit()), "{name}");
    // Someone else's file now at a's name (a's removed, a new ring made
    // there): a's id does not remove it.
    let id_a = a.file_id();
    drop(a);
    std::fs::remove_file(&path_a).unwrap();
    let replacement = Ring::create(&path_a, small()).unwrap();
    assert!(!memtrack::remove_ring_file(&path_a, id_a).unwrap(), "not the file a created");
    assert!(path_a.exists());
    // The file's own id removes it; a second time finds nothing.
    assert!(memtrack::remove_ring_file(&path_a, replacement.file_id()).unwrap());
    assert!(!path_a.exists());
    assert!(!memtrack::remove_ring_file(&path_a, replacement.file_id()).unwrap());
    assert!(memtrack::remove_ring_file(&path_b, b.file_id()).unwrap());
}

#[test]
fn a_second_consumer_in_this_namespace_is_told_so() {
    let tmp = TempRing::new("busy-ns");
    let _ring = Ring::create(tmp.path(), small()).unwrap();
    let _first = Consumer::attach(tmp.path()).unwrap();
    let err = Consumer::attach(tmp.path()).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::ReaderBusy { other_namespace: false, .. }), "{err}");
    assert!(!err.to_string().contains("another PID namespace"), "{err}");
}

#[test]
fn the_table_says_which_pid_namespace_a_writers_pid_is_of() {
    let tmp = TempRing::new("pid-ns");
    let writer = Writer::attach_named(Ring::create(tmp.path(), small()).unwrap(), b"w").unwrap();
    let table = writer.ring().processes();
    assert_eq!(table.len(), 1);
    assert_eq!((table[0].pid, table[0].pid_ns), (std::process::id(), memtrack::pid_namespace()));
    assert_ne!(table[0].pid_ns, 0, "this process's namespace is readable");
}
