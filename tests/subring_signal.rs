//! Two format-3 review findings, fixed. (1) A signal handler that hooks on a thread interrupted inside its own
//! sub-ring claim (`RingView::claim_own`: a load that finds the slot
//! EMPTY, then a plain store of CLAIMED). The handler's hook finds the
//! same ticket EMPTY, claims and publishes it; the interrupted claim then
//! stores CLAIMED over the handler's FULL record and publishes its own:
//! the handler's record is gone, counted nowhere. Every ALLOC hooked must
//! come out exactly once.
//!
//! No timed assertion: the run lasts a while so that many signals land in
//! the claim's window of a few instructions; the check is on counts only.

mod common;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::TempRing;
use memtrack::{Consumer, Event, MemtrackBuffer, Ring, RingOptions, Writer};

static WRITER: OnceLock<Writer> = OnceLock::new();
static HANDLER_ALLOCS: AtomicU64 = AtomicU64::new(0);
const HANDLER_IDS: u64 = 1 << 40;

fn buffer(id: u64) -> MemtrackBuffer {
    MemtrackBuffer { buffer_id: id, size: 64, address: id << 6, ..Default::default() }
}

extern "C" fn on_signal(_: libc::c_int) {
    let n = HANDLER_ALLOCS.fetch_add(1, Ordering::Relaxed);
    if let Some(writer) = WRITER.get() {
        writer.alloc(&buffer(HANDLER_IDS + n));
    }
}

#[test]
fn a_signal_handler_hooking_mid_claim_loses_no_record() {
    let ring = TempRing::new("subring-signal");
    let options =
        RingOptions { capacity: 1 << 16, subrings: 2, subring_capacity: 1 << 16, ..RingOptions::default() };
    let writer = Writer::attach(Ring::create(ring.path(), options).unwrap()).unwrap();
    writer.use_subrings(true);
    assert!(WRITER.set(writer).is_ok());
    let writer = WRITER.get().unwrap();
    let mut consumer = Consumer::attach(ring.path()).unwrap();
    // SAFETY: installs a handler for SIGUSR1, which this test alone sends.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()), 0);
    }

    let stop = AtomicBool::new(false);
    let target = AtomicU64::new(0);
    let (mut allocs_seen, mut buf) = (0u64, Vec::new());
    let main_allocs = std::thread::scope(|s| {
        let hooker = s.spawn(|| {
            writer.alloc(&buffer(0)); // Takes its sub-ring before the signals start.
            // SAFETY: no preconditions.
            target.store(unsafe { libc::pthread_self() } as u64, Ordering::Release);
            let mut id = 1;
            while !stop.load(Ordering::Relaxed) {
                writer.alloc(&buffer(id));
                writer.free(&buffer(id));
                id += 1;
            }
            id
        });
        let signaller = s.spawn(|| {
            let target = loop {
                match target.load(Ordering::Acquire) {
                    0 => std::thread::yield_now(),
                    t => break t as libc::pthread_t,
                }
            };
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: the hooking thread is alive until `stop`, which
                // this thread sees before that thread is joined.
                unsafe { libc::pthread_kill(target, libc::SIGUSR1) };
            }
        });
        let start = Instant::now();
        // Enough signals that some land in the claim's window (a cap so a
        // machine that delivers none ends the test; not an assertion).
        while HANDLER_ALLOCS.load(Ordering::Relaxed) < 5000 && start.elapsed() < Duration::from_secs(60) {
            buf.clear();
            consumer.take(4096, &mut buf);
            allocs_seen += buf.iter().filter(|r| r.event == Event::Alloc as u8).count() as u64;
            consumer.commit();
        }
        stop.store(true, Ordering::Relaxed);
        signaller.join().unwrap();
        hooker.join().unwrap()
    });
    loop {
        buf.clear();
        let batch = consumer.take(4096, &mut buf);
        allocs_seen += buf.iter().filter(|r| r.event == Event::Alloc as u8).count() as u64;
        consumer.commit();
        if batch.records == 0 && batch.lost == 0 && consumer.caught_up() {
            break;
        }
    }
    let handler_allocs = HANDLER_ALLOCS.load(Ordering::Relaxed);
    let progress = consumer.progress();
    let dropped = consumer.ring().snapshot().dropped;
    assert!(handler_allocs >= 5000, "too few signals to tell: {handler_allocs}");
    // Exact accounting: the process start, the hooker's ALLOCs and FREEs
    // (one FREE fewer: buffer 0), the handler's ALLOCs.
    let attempted = 1 + main_allocs + (main_allocs - 1) + handler_allocs;
    assert_eq!(
        progress.delivered + progress.lost_writer_died + dropped,
        attempted,
        "delivered + lost + dropped ({dropped}) != attempted; {allocs_seen} ALLOCs seen of \
         {main_allocs} + {handler_allocs} in the handler; progress {progress:?}"
    );
}

/// One word of a sub-ring nobody writes set to a state the protocol never
/// writes (a hostile or damaged file): that ring stops at it, as a take
/// always did, and bounds nothing (`merge::Bound`), so the watermark does
/// not hold back every other ring's records for good, as it did before the
/// fix: only the damaged ring stops, as in format 2.
#[test]
fn a_corrupt_slot_in_an_unused_sub_ring_does_not_stop_the_shared_ring() {
    use std::os::unix::fs::FileExt;
    let ring = TempRing::new("subring-corrupt");
    let options =
        RingOptions { capacity: 1024, subrings: 2, subring_capacity: 256, ..RingOptions::default() };
    let writer = Writer::attach(Ring::create(ring.path(), options).unwrap()).unwrap();
    writer.use_subrings(false); // Everything goes to the shared ring.
    let offset = memtrack::format::subring_slots_offset(memtrack::format::DEFAULT_COUNTER_CELLS, 2, 256, 1);
    let file = std::fs::OpenOptions::new().write(true).open(ring.path()).unwrap();
    file.write_all_at(&3u64.to_le_bytes(), offset as u64).unwrap(); // Lap 0, phase 3 (invalid).
    let mut consumer = Consumer::attach(ring.path()).unwrap();
    for id in 1..=10 {
        writer.alloc(&buffer(id));
    }
    let records = common::drain_all(&mut consumer);
    let allocs = records.iter().filter(|r| r.event == Event::Alloc as u8).count();
    assert_eq!(allocs, 10, "the shared ring's records are delivered");
}
