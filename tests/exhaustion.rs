//! Exhaustion: no room for the ring file (a full tmpfs, or a file-size
//! limit that makes `posix_fallocate` fail), a ring left full with no
//! reader (or with a dead one) for a long time, and a process table whose
//! 64 entries are held by live processes. Each must degrade cleanly and
//! countably: creation fails with one line, the workload runs on untracked,
//! and every record and process is accounted for.
//!
//! The full-ring tests make rings without sub-rings where what they test
//! is the shared ring's wait, stall and drop rules: a writer never waits on
//! its sub-ring (a full one sends it to the shared ring), so with one the
//! shared ring would not fill. One test fills both.

mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{TempRing, drain_all};
use memtrack::ffi::*;
use memtrack::format::MAX_PROCESSES;
use memtrack::{Consumer, ErrorKind, MemtrackBuffer, ProcessState, Ring, RingOptions, Writer};
use reliability::{helper_command, helper_role, iterations, kill};

/// The helper processes' entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Some(role) = helper_role() else { return };
    match role.as_str() {
        // Tries to track through the C ABI; reports what it got.
        "c-abi" | "c-abi-file-size-limit" => {
            if role == "c-abi-file-size-limit" {
                // No file of more than 64 KiB: posix_fallocate fails (EFBIG)
                // as on a full file system; SIGXFSZ would kill us otherwise.
                let limit = libc::rlimit { rlim_cur: 64 << 10, rlim_max: 64 << 10 };
                // SAFETY: plain system calls with valid arguments.
                unsafe {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
                }
            }
            // SAFETY: NULL: $MEMTRACK_RING.
            let code = unsafe { memtrack_init(std::ptr::null()) };
            // The workload goes on: hooks are no-ops.
            for id in 0..1000 {
                memtrack_alloc(0, MEMTRACK_KIND_DRAM, id, 0, 64);
                memtrack_free(0, MEMTRACK_KIND_DRAM, id, 0, 64);
            }
            // SAFETY: a NUL-terminated string.
            unsafe { memtrack_mark(c"still running".as_ptr()) };
            memtrack_shutdown();
            println!("HELPER code {code} enabled {}", memtrack_enabled());
        }
        // Attaches through the C ABI and holds its table entry until killed.
        "hold-entry" => {
            memtrack_alloc(0, MEMTRACK_KIND_L1, 1, 0, 64);
            println!("HELPER ready {}", memtrack_enabled());
            std::thread::sleep(Duration::from_secs(120));
        }
        // Attaches as the consumer and is killed without detaching.
        "consumer" => {
            let path = std::env::var("MEMTRACK_RING").unwrap();
            let _consumer = Consumer::attach(Path::new(&path)).unwrap();
            println!("HELPER ready 1");
            std::thread::sleep(Duration::from_secs(120));
        }
        // Attaches as the consumer and drains a little every millisecond,
        // far slower than a writer flat out, until killed.
        "slow-consumer" => {
            let path = std::env::var("MEMTRACK_RING").unwrap();
            let mut consumer = Consumer::attach(Path::new(&path)).unwrap();
            println!("HELPER ready 1");
            let mut buf = Vec::new();
            loop {
                buf.clear();
                consumer.take(8, &mut buf);
                consumer.commit();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        other => panic!("unknown helper role {other}"),
    }
}

fn spawn(role: &str, ring: &Path) -> Child {
    let mut cmd = helper_command(role);
    cmd.env("MEMTRACK_RING", ring).stdout(Stdio::piped());
    cmd.spawn().unwrap()
}

/// The helper's `HELPER ...` line.
fn helper_line(child: &mut Child) -> String {
    let mut lines = BufReader::new(child.stdout.as_mut().unwrap()).lines();
    loop {
        let line = lines.next().expect("a HELPER line").unwrap();
        if let Some((_, rest)) = line.split_once("HELPER ") {
            return rest.to_owned();
        }
    }
}

/// Runs a C ABI helper to its end: (its HELPER line, its stderr).
fn run_c_abi(role: &str, ring: &Path) -> (String, String) {
    let mut child = spawn(role, ring);
    let line = helper_line(&mut child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (line, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The process printed exactly one memtrack line, naming `ring` and `reason`.
fn assert_one_line(stderr: &str, ring: &Path, reason: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("memtrack")).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains(&ring.display().to_string()), "names the ring: {stderr}");
    assert!(lines[0].contains(reason), "says {reason:?}: {stderr}");
    assert!(lines[0].ends_with("running untracked"), "{stderr}");
}

/// A tmpfs of `kib` KiB mounted on a fresh directory, unmounted on drop.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    /// `None` where mounting is not permitted (not root, no CAP_SYS_ADMIN).
    fn mount(kib: u64) -> Option<SmallTmpfs> {
        let dir = std::env::temp_dir().join(format!("memtrack-tmpfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k,mode=0700"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status();
        if status.is_ok_and(|s| s.success()) {
            Some(SmallTmpfs(dir))
        } else {
            let _ = std::fs::remove_dir(&dir);
            None
        }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_file_system_fails_creation_cleanly_and_the_workload_runs_untracked() {
    let Some(fs) = SmallTmpfs::mount(256) else {
        eprintln!("cannot mount a tmpfs here: only the file-size-limit variant runs");
        return;
    };
    // A ring of 16 slots needs 279 KB: more than the 256 KiB file system.
    let path = fs.0.join("ring");
    let err =
        Ring::create(&path, RingOptions { capacity: 16, ..RingOptions::default() }).expect_err("no room");
    assert!(matches!(err.kind, ErrorKind::NoSpace { .. }), "{err}");
    let line = err.to_string();
    assert!(line.contains(&path.display().to_string()) && line.contains("no space left"), "{line}");
    // What makes a ring smaller: the sub-rings, most of a default ring.
    assert!(line.contains("MEMTRACK_SUBRINGS=0") && line.contains("MEMTRACK_CAPACITY"), "{line}");
    assert!(!line.contains('\n'));
    assert_eq!(std::fs::read_dir(&fs.0).unwrap().count(), 0, "no file left behind, temporary or not");
    // The default ring size does not fit either, through the C ABI.
    let (line, stderr) = run_c_abi("c-abi", &path);
    assert_eq!(line, format!("code {MEMTRACK_ERR_NO_SPACE} enabled 0"));
    assert_one_line(&stderr, &path, "no space left on device");
    assert_eq!(std::fs::read_dir(&fs.0).unwrap().count(), 0);
}

#[test]
fn a_failing_fallocate_fails_creation_cleanly_and_the_workload_runs_untracked() {
    let tmp = TempRing::new("fsize");
    let (line, stderr) = run_c_abi("c-abi-file-size-limit", tmp.path());
    assert_eq!(line, format!("code {MEMTRACK_ERR_IO} enabled 0"));
    assert_one_line(&stderr, tmp.path(), "reserve ring file pages");
    assert!(!tmp.path().exists(), "no half-made ring");
    let dir_has_tmp = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains(&format!("test-fsize-{}", std::process::id())));
    assert!(!dir_has_tmp, "the temporary file is removed");
}

#[test]
fn a_ring_left_full_without_a_reader_is_accounted_exactly_when_one_attaches() {
    let tmp = TempRing::new("full-idle");
    let writer = Writer::attach(
        Ring::create(tmp.path(), RingOptions { capacity: 64, subrings: 0, ..RingOptions::default() })
            .unwrap(),
    )
    .unwrap();
    let events = 10_000u64;
    for id in 0..events {
        writer.alloc(&MemtrackBuffer { buffer_id: id, size: 8, ..Default::default() });
    }
    // Left full, with no reader, "for a long time".
    std::thread::sleep(Duration::from_millis(200 * reliability::soak()));
    let s = writer.ring().snapshot();
    assert_eq!(s.dropped, events + 1 - 64, "the ring holds one lap; the rest was dropped and counted");
    assert_eq!(s.counters[0].live_buffers, events as i64, "live counters stay exact through drops");
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut records = Vec::new();
    while records.len() < 64 {
        records.extend(drain_all(&mut consumer));
        assert!(Instant::now() < deadline, "the reader did not drain a full ring");
    }
    // The first lap, in order, then nothing.
    let ids: Vec<u64> = records[1..].iter().map(|r| r.buffer_id).collect();
    assert_eq!(ids, (0..63).collect::<Vec<_>>());
    assert!(consumer.caught_up());
    // The writers carry on, now delivered.
    for id in 0..100 {
        writer.free(&MemtrackBuffer { buffer_id: id, size: 8, ..Default::default() });
        records.extend(drain_all(&mut consumer));
    }
    let s = consumer.ring().snapshot();
    assert_eq!(records.len() as u64, 64 + 100);
    assert_eq!(s.progress.delivered + s.dropped, events + 1 + 100, "attempted = delivered + dropped");
    assert_eq!(s.progress.lost_writer_died + s.progress.lost_reader_died, 0);
}

/// The same with a sub-ring: the writer's thread fills its sub-ring, then
/// the shared ring, then drops; a reader attaching later gets both laps,
/// merged in the order they were written, and the writer's sub-ring again
/// once it has room.
#[test]
fn a_full_sub_ring_and_a_full_shared_ring_are_accounted_exactly_when_a_reader_attaches() {
    let tmp = TempRing::new("full-idle-sub");
    let (shared, sub) = (64u64, 256u64);
    let options =
        RingOptions { capacity: shared, subrings: 4, subring_capacity: sub as u32, ..RingOptions::default() };
    let writer = Writer::attach(Ring::create(tmp.path(), options).unwrap()).unwrap();
    let events = 10_000u64;
    for id in 0..events {
        writer.alloc(&MemtrackBuffer { buffer_id: id, size: 8, ..Default::default() });
    }
    let s = writer.ring().snapshot();
    // The start record went to the shared ring (written at attach, before
    // the thread's first hook took a sub-ring).
    assert_eq!(s.dropped, events + 1 - shared - sub, "one lap of each ring is kept: {s:?}");
    assert_eq!(s.subrings.iter().map(|r| r.waiting).sum::<u64>(), sub);
    assert_eq!(s.counters[0].live_buffers, events as i64, "live counters stay exact through drops");
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut records = Vec::new();
    while (records.len() as u64) < shared + sub {
        records.extend(drain_all(&mut consumer));
        assert!(Instant::now() < deadline, "the reader did not drain the full rings");
    }
    // The start record, the sub-ring's lap, then the shared ring's: in the
    // order written, by stamp.
    let ids: Vec<u64> = records[1..].iter().map(|r| r.buffer_id).collect();
    assert_eq!(ids, (0..shared + sub - 1).collect::<Vec<_>>());
    assert!(records.windows(2).all(|w| w[0].ticket < w[1].ticket), "merged tickets increase");
    assert!(consumer.caught_up());
    for id in 0..100 {
        writer.free(&MemtrackBuffer { buffer_id: id, size: 8, ..Default::default() });
        records.extend(drain_all(&mut consumer));
    }
    records.extend(drain_all(&mut consumer));
    let s = consumer.ring().snapshot();
    assert_eq!(records.len() as u64, shared + sub + 100);
    assert_eq!(s.dropped, events + 1 - shared - sub, "nothing more dropped once the reader runs");
    assert_eq!(s.progress.delivered + s.dropped, events + 1 + 100, "attempted = delivered + dropped");
    assert_eq!(s.progress.lost_writer_died + s.progress.lost_reader_died, 0);
}

#[test]
fn writers_stop_waiting_for_a_consumer_that_died() {
    let tmp = TempRing::new("dead-reader");
    let writer = Writer::attach(
        Ring::create(tmp.path(), RingOptions { capacity: 16, subrings: 0, ..RingOptions::default() })
            .unwrap(),
    )
    .unwrap();
    let mut consumer = spawn("consumer", tmp.path());
    assert_eq!(helper_line(&mut consumer), "ready 1");
    kill(&mut consumer);
    assert!(writer.ring().snapshot().reader_pid.is_some(), "a killed consumer leaves its pid behind");
    for id in 0..1000 {
        writer.alloc(&MemtrackBuffer { buffer_id: id, size: 8, ..Default::default() });
    }
    let s = writer.ring().snapshot();
    // The first full-ring wait found the consumer's lock free and cleared
    // its pid: later records drop at once instead of waiting each time.
    assert_eq!(s.reader_pid, None);
    assert_eq!(s.dropped, 1001 - 16);
    // A new consumer takes over the full ring.
    let mut next = Consumer::attach(tmp.path()).unwrap();
    assert_eq!(drain_all(&mut next).len(), 16);
    assert_eq!(next.progress().lost_reader_died, 0, "the dead consumer had taken nothing");
}

/// The futex hand-off across processes: a writer far faster than its
/// consumer sleeps until the consumer (another process) frees slots and
/// wakes it, and loses nothing.
#[test]
fn writers_wait_for_a_slow_consumer_in_another_process_and_lose_nothing() {
    let tmp = TempRing::new("slow-reader");
    let writer = Writer::attach(
        Ring::create(tmp.path(), RingOptions { capacity: 16, subrings: 0, ..RingOptions::default() })
            .unwrap(),
    )
    .unwrap();
    let mut consumer = spawn("slow-consumer", tmp.path());
    assert_eq!(helper_line(&mut consumer), "ready 1");
    let records = 1000;
    for id in 0..records {
        writer.alloc(&MemtrackBuffer { buffer_id: id, size: 8, ..Default::default() });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while writer.ring().snapshot().progress.taken < records + 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = writer.ring().snapshot();
    kill(&mut consumer);
    assert_eq!(s.dropped, 0, "a live consumer costs no record");
    assert_eq!(s.progress.taken, records + 1, "every record (and the start record) taken");
}

/// The stall rule with a real stopped process (Ctrl-Z on a reader): the
/// writer waits a bounded time, then drops and counts; once the consumer
/// runs again it gets every record that was not dropped.
#[test]
fn a_stopped_consumer_costs_a_bounded_wait_then_drops_countably() {
    let tmp = TempRing::new("stopped-reader");
    let writer = Writer::attach(
        Ring::create(tmp.path(), RingOptions { capacity: 16, subrings: 0, ..RingOptions::default() })
            .unwrap(),
    )
    .unwrap();
    let mut consumer = spawn("slow-consumer", tmp.path());
    assert_eq!(helper_line(&mut consumer), "ready 1");
    // SAFETY: kill with the pid of a child we have not reaped yet.
    unsafe { libc::kill(consumer.id() as libc::pid_t, libc::SIGSTOP) };
    let records = 200;
    for id in 0..records {
        writer.alloc(&MemtrackBuffer { buffer_id: id, size: 8, ..Default::default() });
    }
    let dropped = writer.ring().snapshot().dropped;
    assert!(dropped > 0 && dropped <= records, "{dropped}");
    assert!(writer.ring().snapshot().reader_pid.is_some(), "stopped, not dead: still attached");
    // SAFETY: as above.
    unsafe { libc::kill(consumer.id() as libc::pid_t, libc::SIGCONT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while writer.ring().snapshot().progress.taken < records + 1 - dropped && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = writer.ring().snapshot();
    kill(&mut consumer);
    assert_eq!(s.progress.taken + s.dropped, records + 1, "attempted = delivered + dropped");
}

#[test]
fn a_full_process_table_of_live_processes_degrades_countably() {
    let tmp = TempRing::new("table-full");
    Ring::create(tmp.path(), RingOptions { capacity: 4096, ..RingOptions::default() }).unwrap();
    let mut holders: Vec<Child> = (0..MAX_PROCESSES).map(|_| spawn("hold-entry", tmp.path())).collect();
    for h in &mut holders {
        assert_eq!(helper_line(h), "ready 1");
    }
    for round in 0..iterations(2) {
        // The 257th process: one line, runs untracked, counted.
        let (line, stderr) = run_c_abi("c-abi", tmp.path());
        assert_eq!(line, format!("code {MEMTRACK_ERR_PROCESS_TABLE_FULL} enabled 0"));
        assert_one_line(&stderr, tmp.path(), "process table full");
        let s = Ring::open(tmp.path()).unwrap().snapshot();
        assert_eq!(s.untracked_processes, round + 1);
        assert_eq!(s.processes.len(), MAX_PROCESSES);
    }
    // One holder dies: its entry is taken by the next process, which is
    // tracked; the table shows the newcomer, not the dead one.
    let dead = holders.pop().unwrap();
    let dead_pid = {
        let mut dead = dead;
        kill(&mut dead);
        dead.id()
    };
    let ring = Ring::open(tmp.path()).unwrap();
    let died = ring.processes().into_iter().filter(|p| p.state == ProcessState::Died).count();
    assert_eq!(died, 1);
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let (line, _) = run_c_abi("c-abi", tmp.path());
    assert_eq!(line, format!("code {MEMTRACK_OK} enabled 0"), "tracked (and shut down at the end)");
    let processes = ring.processes();
    assert!(processes.iter().all(|p| p.pid != dead_pid), "the dead entry was reused");
    assert_eq!(processes.iter().filter(|p| p.state == ProcessState::Exited).count(), 1);
    let records = drain_all(&mut consumer);
    // 64 starts, 64 allocs, and the newcomer's start, 2000 events, mark, exit.
    assert_eq!(records.len(), 2 * MAX_PROCESSES + 2003);
    for mut h in holders {
        kill(&mut h);
    }
}
