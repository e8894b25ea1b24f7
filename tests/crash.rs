//! Crashes: writer processes SIGKILLed at random points (in the middle of
//! a hook, or parked between claim and publish), and consumer processes
//! SIGKILLed mid-stream and replaced. The accounting must stay exact: every
//! attempted record is delivered, dropped (ring full) or counted lost, no
//! record is delivered twice, and the reader never waits without bound.
//!
//! Helpers are this test binary re-executed in a role; each counts its
//! attempts in a file it maps shared (`SharedCounters`), bumping "started"
//! before a hook and "finished" after it, so the test knows, after the
//! SIGKILL, which attempts were made and which one (per thread) was in
//! flight. An in-flight attempt may have been delivered, dropped, lost
//! (claimed, never published) or not yet have reached the ring; every
//! other attempt must be accounted for exactly.
//!
//! `MEMTRACK_SOAK=N` runs N times the iterations; `MEMTRACK_TEST_SEED`
//! replays the random kill points of a failed run.

mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{TempRing, drain_all, drain_some};
use memtrack::format::kind;
use memtrack::{Consumer, Event, MemtrackBuffer, ProcessState, Record, Ring, RingOptions, Writer};
use reliability::{Rng, SharedCounters, TempFile, env_u64, helper_command, helper_role, iterations, kill};

/// Counter words of a writer helper.
const ATTACH_STARTED: usize = 0;
const ATTACH_FINISHED: usize = 1;
const PARK_STARTED: usize = 2;
const PARK_FINISHED: usize = 3;
fn thread_started(t: usize) -> usize {
    4 + 2 * t
}
fn thread_finished(t: usize) -> usize {
    5 + 2 * t
}
const MAX_THREADS: usize = 4;
const COUNTER_WORDS: usize = 4 + 2 * MAX_THREADS;

/// The buffer a writer thread's attempt `seq` names: allocs on even
/// attempts, the free of that buffer on the next one. The attempt number
/// travels in `address`, so the test can tell which attempt a record is.
fn attempt_buffer(thread: u64, seq: u64) -> MemtrackBuffer {
    MemtrackBuffer {
        buffer_id: thread << 40 | (seq & !1),
        address: seq,
        size: 64,
        device_id: thread as u32,
        kind: kind::L1,
        ..Default::default()
    }
}

fn attempt(writer: &Writer, thread: u64, seq: u64) {
    let b = attempt_buffer(thread, seq);
    if seq.is_multiple_of(2) { writer.alloc(&b) } else { writer.free(&b) }
}

/// Attaches a writer to `$MEMTRACK_RING`, counting the start record.
fn attach_counted(counters: &SharedCounters) -> Writer {
    let path = std::env::var("MEMTRACK_RING").unwrap();
    counters.bump(ATTACH_STARTED);
    let writer = Writer::attach(Ring::open(Path::new(&path)).unwrap()).unwrap();
    counters.bump(ATTACH_FINISHED);
    writer
}

/// The helper processes' entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Some(role) = helper_role() else { return };
    let counters =
        || SharedCounters::open(Path::new(&std::env::var("HELPER_COUNTERS").unwrap()), COUNTER_WORDS);
    match role.as_str() {
        // Writes from HELPER_THREADS threads until killed.
        "crash-loop" => {
            let counters = counters();
            let writer = attach_counted(&counters);
            let threads = env_u64("HELPER_THREADS", 2) as usize;
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (writer, counters) = (&writer, &counters);
                    s.spawn(move || {
                        for seq in 0.. {
                            counters.bump(thread_started(t));
                            attempt(writer, t as u64, seq);
                            counters.bump(thread_finished(t));
                        }
                    });
                }
            });
        }
        // A few records, then a claim it never publishes; waits to be killed.
        "crash-park" => {
            let counters = counters();
            let writer = attach_counted(&counters);
            for seq in 0..env_u64("HELPER_EVENTS", 8) {
                counters.bump(thread_started(0));
                attempt(&writer, 0, seq);
                counters.bump(thread_finished(0));
            }
            // PARK_* count a claim that was made (and so must end up lost):
            // a full ring makes no claim, and then no attempt.
            counters.bump(PARK_STARTED);
            if writer.claim_without_publishing() {
                counters.bump(PARK_FINISHED);
            } else {
                counters.get(PARK_STARTED).fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_secs(60));
        }
        // HELPER_EVENTS records, then a clean shutdown.
        "crash-survivor" => {
            let counters = counters();
            let writer = attach_counted(&counters);
            for seq in 0..env_u64("HELPER_EVENTS", 400) {
                counters.bump(thread_started(0));
                attempt(&writer, 0, seq);
                counters.bump(thread_finished(0));
            }
            writer.shutdown();
        }
        // Consumes the ring, writing each batch's (ticket, address) pairs to
        // HELPER_OUTPUT before committing it, until it takes the "stop" mark.
        "crash-consumer" => {
            let path = std::env::var("MEMTRACK_RING").unwrap();
            let mut out = std::fs::OpenOptions::new()
                .append(true)
                .open(std::env::var("HELPER_OUTPUT").unwrap())
                .unwrap();
            let mut consumer = Consumer::attach(Path::new(&path)).unwrap();
            let mut rng = Rng::new(env_u64("HELPER_SEED", 1));
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let batch = consumer.take(1 + rng.below(64) as usize, &mut buf);
                let bytes: Vec<u8> = buf
                    .iter()
                    .flat_map(|r| [r.ticket.to_le_bytes(), r.address.to_le_bytes()])
                    .flatten()
                    .collect();
                out.write_all(&bytes).unwrap();
                consumer.commit();
                if buf.iter().any(|r| r.event() == Some(Event::Mark) && r.label() == b"stop") {
                    return;
                }
                if batch.records == 0 {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
        other => panic!("unknown helper role {other}"),
    }
}

/// One writer helper process and its counters.
struct WriterProc {
    child: Child,
    counters: SharedCounters,
    _file: TempFile,
    role: &'static str,
    kill_at: Option<Instant>,
    killed: bool,
}

impl WriterProc {
    fn spawn(
        ring: &Path,
        role: &'static str,
        envs: &[(&str, String)],
        kill_at: Option<Instant>,
    ) -> WriterProc {
        let file = TempFile::new("counters");
        let counters = SharedCounters::create(file.path(), COUNTER_WORDS);
        let mut cmd = helper_command(role);
        cmd.env("MEMTRACK_RING", ring).env("HELPER_COUNTERS", file.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        WriterProc { child: cmd.spawn().unwrap(), counters, _file: file, role, kill_at, killed: false }
    }

    fn started(&self) -> u64 {
        (0..COUNTER_WORDS).filter(|i| i % 2 == 0).map(|i| self.counters.load(i)).sum()
    }

    fn finished(&self) -> u64 {
        (0..COUNTER_WORDS).filter(|i| i % 2 == 1).map(|i| self.counters.load(i)).sum()
    }
}

/// Writers killed at random points, a writer killed while parked between
/// claim and publish, and a survivor on one small ring, many times over.
#[test]
fn writers_killed_at_random_points_are_accounted_exactly() {
    let mut rng = Rng::from_env("writers_killed_at_random_points");
    let rounds = iterations(60);
    let started = Instant::now();
    let mut kills = 0;
    let mut parked_lost = 0;
    for round in 0..rounds {
        let tmp = TempRing::new("crash");
        // Small: the ring wraps many times and fills while a claim is parked.
        Ring::create(tmp.path(), RingOptions { capacity: 256, ..RingOptions::default() }).unwrap();
        let mut consumer = Consumer::attach(tmp.path()).unwrap();
        let now = Instant::now();
        let mut procs = Vec::new();
        for _ in 0..3 {
            let at = now + Duration::from_micros(rng.below(40_000));
            procs.push(WriterProc::spawn(
                tmp.path(),
                "crash-loop",
                &[("HELPER_THREADS", "2".into())],
                Some(at),
            ));
        }
        let park_at = now + Duration::from_micros(5_000 + rng.below(40_000));
        let events = rng.below(16).to_string();
        procs.push(WriterProc::spawn(tmp.path(), "crash-park", &[("HELPER_EVENTS", events)], Some(park_at)));
        procs.push(WriterProc::spawn(tmp.path(), "crash-survivor", &[("HELPER_EVENTS", "400".into())], None));

        let deadline = Instant::now() + Duration::from_secs(30);
        let mut records: Vec<Record> = Vec::new();
        loop {
            // At most a few laps of the rings per look: writers flat out
            // wait for the reader rather than drop, so a drain "until
            // empty" could last as long as they write, and the victims
            // would be killed late.
            records.extend(drain_some(&mut consumer, 1 << 16));
            for p in procs.iter_mut().filter(|p| !p.killed) {
                if p.kill_at.is_some_and(|at| Instant::now() >= at) {
                    kill(&mut p.child);
                    p.killed = true;
                    kills += 1;
                }
            }
            let survivors_done = procs.iter_mut().filter(|p| p.kill_at.is_none()).all(|p| {
                p.child.try_wait().unwrap().inspect(|s| assert!(s.success(), "{} failed", p.role)).is_some()
            });
            let victims_done = procs.iter().all(|p| p.kill_at.is_none() || p.killed);
            if survivors_done && victims_done && consumer.caught_up() {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: the reader did not catch up within 30 s");
            std::thread::sleep(Duration::from_micros(200));
        }
        records.extend(drain_all(&mut consumer));

        let snapshot = consumer.ring().snapshot();
        let progress = consumer.progress();
        let delivered = records.len() as u64;
        assert_eq!(progress.delivered, delivered);
        assert_eq!(progress.lost_reader_died, 0);
        assert_eq!(progress.committed, delivered + progress.lost_writer_died, "every ticket accounted for");
        assert!(records.windows(2).all(|w| w[0].ticket < w[1].ticket), "tickets in order");
        let total = delivered + snapshot.dropped + progress.lost_writer_died;
        // The survivors' exit records (written by `shutdown`, which no
        // counter counts): without them a round in which no writer was
        // killed inside a hook counted one record more than attempted.
        let exits = procs.iter().filter(|p| p.kill_at.is_none()).count() as u64;
        let finished: u64 = procs.iter().map(WriterProc::finished).sum::<u64>() + exits;
        let attempted: u64 = procs.iter().map(WriterProc::started).sum::<u64>() + exits;
        // Each in-flight attempt (started, not finished: at most one per
        // thread) may or may not have reached the ring; all others did.
        assert!(
            finished <= total && total <= attempted,
            "round {round}: finished {finished} <= delivered {delivered} + dropped {} + lost {} <= started \
             {attempted}",
            snapshot.dropped,
            progress.lost_writer_died
        );

        let mut by_pid: HashMap<u32, Vec<&Record>> = HashMap::new();
        for r in &records {
            by_pid.entry(r.pid).or_default().push(r);
        }
        for p in &procs {
            let pid = p.child.id();
            let mine = by_pid.remove(&pid).unwrap_or_default();
            // No attempt delivered twice; each thread's attempts in order;
            // nothing delivered that was not attempted.
            let mut seen = HashSet::new();
            let mut last: HashMap<u32, u64> = HashMap::new();
            for r in mine.iter().filter(|r| matches!(r.event(), Some(Event::Alloc | Event::Free))) {
                let thread = r.device_id;
                assert!(seen.insert((thread, r.address)), "{pid}: attempt {} delivered twice", r.address);
                if let Some(prev) = last.insert(thread, r.address) {
                    assert!(prev < r.address, "{pid}: thread {thread} out of order");
                }
                assert!(r.address < p.counters.load(thread_started(thread as usize)), "never attempted");
            }
            let entry = snapshot.processes.iter().find(|e| e.pid == pid);
            if p.kill_at.is_none() {
                // The survivor: exact, whatever happened around it.
                let entry = entry.expect("survivor in the table");
                assert_eq!(entry.state, ProcessState::Exited);
                assert_eq!(mine.len() as u64 + entry.dropped, p.finished() + 1, "survivor: start..exit");
            } else if p.counters.load(ATTACH_FINISHED) == 1 {
                assert_eq!(entry.map(|e| e.state), Some(ProcessState::Died), "{} {pid}", p.role);
                // Whatever it finished is delivered or dropped; at most its
                // in-flight attempts (one per thread) are also there, or lost.
                let dropped = entry.unwrap().dropped;
                let in_flight = p.started() - p.finished();
                let parked = p.counters.load(PARK_FINISHED);
                let counted = mine.len() as u64 + dropped + parked;
                assert!(
                    p.finished() <= counted + in_flight && counted <= p.started(),
                    "{} {pid}: finished {} started {} delivered {} dropped {dropped}",
                    p.role,
                    p.finished(),
                    p.started(),
                    mine.len()
                );
            }
            if p.role == "crash-park" && p.counters.load(PARK_FINISHED) == 1 {
                parked_lost += 1;
            }
        }
        assert!(by_pid.is_empty(), "records from unknown processes: {:?}", by_pid.keys());
        // Each parked claim is lost once its writer is dead, never waited
        // for forever and never delivered.
        let parked: u64 = procs.iter().map(|p| p.counters.load(PARK_FINISHED)).sum();
        assert!(progress.lost_writer_died >= parked, "round {round}: parked claims not counted lost");
    }
    eprintln!(
        "{rounds} rounds, {kills} writers killed ({parked_lost} parked between claim and publish) in {:.1?}",
        started.elapsed()
    );
    assert!(kills >= 4 * rounds);
}

/// Consumers killed mid-stream and replaced, while a writer keeps
/// writing: across all consumers no record is delivered twice, and every
/// ticket missing from their outputs is counted in `lost_reader_died`.
#[test]
fn consumers_killed_mid_stream_never_repeat_or_silently_skip() {
    let mut rng = Rng::from_env("consumers_killed_mid_stream");
    for round in 0..iterations(3) {
        let tmp = TempRing::new("reader-crash");
        let writer = Writer::attach_named(
            Ring::create(tmp.path(), RingOptions { capacity: 1024, ..RingOptions::default() }).unwrap(),
            b"w",
        )
        .unwrap();
        let output = TempFile::new("consumer-out");
        std::fs::write(output.path(), b"").unwrap();
        let spawn_consumer = |seed: u64| {
            let mut cmd = helper_command("crash-consumer");
            cmd.env("MEMTRACK_RING", tmp.path())
                .env("HELPER_OUTPUT", output.path())
                .env("HELPER_SEED", seed.to_string());
            cmd.spawn().unwrap()
        };
        let events = 60_000u64;
        let kills = 15;
        std::thread::scope(|s| {
            let writing = s.spawn(|| {
                for seq in 0..events {
                    writer.alloc(&MemtrackBuffer {
                        buffer_id: seq,
                        address: seq,
                        size: 1,
                        ..Default::default()
                    });
                    if seq % 256 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            });
            for k in 0..kills {
                let mut consumer = spawn_consumer(rng.next_u64());
                std::thread::sleep(Duration::from_micros(2_000 + rng.below(20_000)));
                kill(&mut consumer);
                // Sometimes no consumer for a while: the writer drops.
                if k % 5 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            writing.join().unwrap();
        });
        // The last consumer attaches before the stop mark is written, so
        // the mark finds room (a dead consumer leaves the ring full).
        let mut last = spawn_consumer(rng.next_u64());
        let attached = Instant::now() + Duration::from_secs(10);
        while writer.ring().snapshot().reader_pid != Some(last.id()) {
            assert!(Instant::now() < attached, "the last consumer did not attach");
            std::thread::sleep(Duration::from_millis(1));
        }
        writer.mark(b"stop");
        let status =
            reliability::wait_until(&mut last, Instant::now() + Duration::from_secs(30), "last consumer");
        assert!(status.success());

        let bytes = std::fs::read(output.path()).unwrap();
        let pairs: Vec<(u64, u64)> = bytes
            .chunks_exact(16)
            .map(|c| {
                (
                    u64::from_le_bytes(c[..8].try_into().unwrap()),
                    u64::from_le_bytes(c[8..].try_into().unwrap()),
                )
            })
            .collect();
        let ring = Ring::open(tmp.path()).unwrap();
        let s = ring.snapshot();
        let p = s.progress;
        let tickets: HashSet<u64> = pairs.iter().map(|&(t, _)| t).collect();
        assert_eq!(tickets.len(), pairs.len(), "round {round}: a record was handed on twice");
        // The start record and the mark carry address 0 too; allocs are unique.
        assert!(tickets.iter().all(|&t| t < p.committed));
        let missing = p.committed - tickets.len() as u64;
        assert!(
            missing <= p.lost_reader_died,
            "round {round}: {missing} missing, {} counted",
            p.lost_reader_died
        );
        assert_eq!(p.lost_writer_died, 0);
        assert_eq!(p.delivered + p.lost_reader_died, p.committed);
        // Every attempt: start + events + stop mark.
        assert_eq!(
            p.committed + s.dropped,
            events + 2,
            "round {round}: attempted = delivered + dropped + lost"
        );
        eprintln!(
            "round {round}: {} delivered, {} dropped, {} lost with killed consumers ({missing} never handed on)",
            p.delivered, s.dropped, p.lost_reader_died
        );
    }
}
