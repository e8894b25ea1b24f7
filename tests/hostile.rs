//! Hostile ring files: random and mutated headers, process-table entries,
//! counters, progress and slots, fed to attach, snapshot, the consumer and
//! a writer. Every outcome must be a one-line error naming the file, or a
//! bounded run that neither panics nor reads outside the mapping (the
//! debug build's overflow checks are on, and every access to the file goes
//! through atomics within the validated length).
//!
//! Also: what a writer slot with garbage in it does to the consumer — a
//! claim whose owner is not a live writer is reclaimed and counted, a state
//! the protocol never writes stops the consumer there (it is never
//! overwritten or guessed at), and garbage record fields are delivered as
//! data, not acted on.

mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{TempRing, drain_all};
use memtrack::format::{self, SLOTS_OFFSET, kind};
use memtrack::{Consumer, Event, MemtrackBuffer, Ring, RingOptions, Writer};
use proptest::prelude::*;

const CAPACITY: u64 = 16;
/// The template's sub-rings: few and small, so that each case's copy of
/// the file stays small (the defaults make it 20 MiB) while its writer's
/// records still land in a sub-ring, as a real writer thread's do.
const SUBRINGS: u32 = 2;
const SUBRING_CAPACITY: u32 = 256;
/// Where the template's sub-ring region (headers, then slots) begins, and
/// where its shared ring's slots begin.
const SUBRINGS_OFFSET: usize = format::subrings_offset(format::DEFAULT_COUNTER_CELLS);
const TEMPLATE_SLOTS_OFFSET: usize =
    format::slots_offset(format::DEFAULT_COUNTER_CELLS, SUBRINGS, SUBRING_CAPACITY);

fn template_options() -> RingOptions {
    RingOptions {
        capacity: CAPACITY,
        subrings: SUBRINGS,
        subring_capacity: SUBRING_CAPACITY,
        ..RingOptions::default()
    }
}

/// A ring that has seen some use: a writer's entry, records (some taken),
/// live counters, a capacity. Built once; each case mutates a copy.
fn template() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let tmp = TempRing::new("hostile-template");
        let writer =
            Writer::attach_named(Ring::create(tmp.path(), template_options()).unwrap(), b"tmpl").unwrap();
        writer.set_capacity(1, kind::DRAM, 1 << 30);
        let mut consumer = Consumer::attach(tmp.path()).unwrap();
        for id in 0..12 {
            writer.alloc(&MemtrackBuffer { buffer_id: id, size: 4096, device_id: 1, ..Default::default() });
        }
        drain_all(&mut consumer);
        for id in 0..6 {
            writer.free(&MemtrackBuffer { buffer_id: id, size: 4096, device_id: 1, ..Default::default() });
        }
        writer.mark(b"left in the ring");
        std::fs::read(tmp.path()).unwrap()
    })
}

/// Where mutations land: the regions with meaning, weighted towards the
/// header and the slots.
fn offset() -> impl Strategy<Value = usize> {
    let slots = TEMPLATE_SLOTS_OFFSET..TEMPLATE_SLOTS_OFFSET + (CAPACITY as usize) * 64;
    let subring_slots =
        format::subring_slots_offset(format::DEFAULT_COUNTER_CELLS, SUBRINGS, SUBRING_CAPACITY, 0);
    prop_oneof![
        4 => 0usize..128,                              // identity
        1 => 128usize..256,                            // clock calibration
        4 => 256usize..640,                            // tail, losses, reader, progress
        3 => format::PROCESS_TABLE_OFFSET..format::PROCESS_TABLE_OFFSET + 2 * 128,
        1 => format::CAPACITY_TABLE_OFFSET..format::COUNTERS_OFFSET,
        1 => format::COUNTERS_OFFSET..format::COUNTERS_OFFSET + 1024,
        6 => slots,
        2 => SUBRINGS_OFFSET..subring_slots,           // sub-ring headers: leases, tails, progress
        4 => subring_slots..TEMPLATE_SLOTS_OFFSET,     // sub-ring slots
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    /// One byte.
    Byte(usize, u8),
    /// An aligned little-endian word: state words, counts, lengths.
    Word(usize, u64),
    /// A slot state word (at this offset) made of chosen fields: lap,
    /// owner slot, generation, phase.
    State(usize, u32, u16, u32, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(1 << 63),
        Just(CAPACITY),
        Just(CAPACITY - 1),
        any::<u64>(),
        0u64..64,
    ];
    prop_oneof![
        3 => (offset(), any::<u8>()).prop_map(|(o, b)| Mutation::Byte(o, b)),
        3 => (offset(), interesting).prop_map(|(o, w)| Mutation::Word(o & !7, w)),
        3 => (state_slot(), prop_oneof![Just(0u32), Just(1), any::<u32>()], 0u16..1024, 0u32..8, 0u8..4)
            .prop_map(|(o, lap, slot, generation, phase)| Mutation::State(o, lap, slot, generation, phase)),
    ]
}

/// The state word of a slot of the template: one of the shared ring's, or
/// one of the first 32 of a sub-ring (where its writer's records are).
fn state_slot() -> impl Strategy<Value = usize> {
    let subring = |i: usize| {
        let first =
            format::subring_slots_offset(format::DEFAULT_COUNTER_CELLS, SUBRINGS, SUBRING_CAPACITY, i);
        (0usize..32).prop_map(move |slot| first + slot * 64)
    };
    prop_oneof![
        (0..CAPACITY as usize).prop_map(|slot| TEMPLATE_SLOTS_OFFSET + slot * 64),
        subring(0),
        subring(1),
    ]
}

fn apply(bytes: &mut [u8], m: &Mutation) {
    match *m {
        Mutation::Byte(o, b) => bytes[o] = b,
        Mutation::Word(o, w) => bytes[o..o + 8].copy_from_slice(&w.to_le_bytes()),
        Mutation::State(o, lap, slot, generation, phase) => {
            let owner = (slot as u64) << 20 | generation as u64;
            let word = (lap as u64) << 32 | owner << 2 | phase as u64;
            bytes[o..o + 8].copy_from_slice(&word.to_le_bytes());
        }
    }
}

/// A refusal is one line naming the file.
fn check_error(path: &Path, error: &memtrack::Error) {
    let line = error.to_string();
    assert!(line.contains(&path.display().to_string()), "does not name the file: {line}");
    assert!(!line.contains('\n'), "not one line: {line}");
}

/// Everything a reader and a writer do with a ring, bounded: attach,
/// snapshot, consume, write, consume again.
fn exercise(path: &Path) {
    let ring = match Ring::open(path) {
        Ok(ring) => ring,
        Err(error) => return check_error(path, &error),
    };
    let snapshot = ring.snapshot();
    assert!(snapshot.processes.len() <= format::MAX_PROCESSES);
    for p in &snapshot.processes {
        assert!((p.slot as usize) < format::MAX_PROCESSES);
    }
    for slot in [0u16, 1, 63, 64, 1023] {
        // Owners outside the table are dead; nothing is read for them.
        let dead = ring.is_owner_dead(memtrack::Owner::new(slot, 7));
        assert!(slot < 64 || dead);
    }
    let mut consumer = match Consumer::attach(path) {
        Ok(c) => c,
        Err(error) => return check_error(path, &error),
    };
    let start = Instant::now();
    let mut out = Vec::new();
    // Never more than a lap: a corrupt slot stops the consumer there.
    for _ in 0..4 * CAPACITY {
        let batch = consumer.take(5, &mut out);
        consumer.commit();
        if batch.records + batch.lost == 0 {
            break;
        }
    }
    let taken = out.len();
    assert!(taken as u64 <= 4 * CAPACITY * 5);
    let p = consumer.progress();
    assert!(p.committed == p.taken, "{p:?}");
    // Detached, so that a full ring drops at once rather than after a wait.
    drop(consumer);
    // A writer on the same file: attaches (or is refused), writes, returns.
    if let Ok(writer) = Ring::open(path).and_then(Writer::attach) {
        for id in 0..2 * CAPACITY {
            writer.alloc(&MemtrackBuffer { buffer_id: id, size: 1, ..Default::default() });
        }
        writer.mark(b"x");
        writer.shutdown();
    }
    // The next consumer resumes after the last one, whatever the file said.
    if let Ok(mut again) = Consumer::attach(path) {
        for _ in 0..4 * CAPACITY {
            let batch = again.take(7, &mut out);
            again.commit();
            if batch.records + batch.lost == 0 {
                break;
            }
        }
        let _ = again.ring().snapshot();
    }
    // A generous bound against a hang (each full-ring wait is 1 ms).
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
}

fn write_ring(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn cases() -> u32 {
    256 * reliability::soak() as u32
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Mutations of a used ring: refused with a reason, or used safely.
    #[test]
    fn mutated_rings_are_refused_or_used_safely(
        mutations in proptest::collection::vec(mutation(), 1..12),
        length in prop_oneof![8 => Just(None), 1 => (0usize..300_000).prop_map(Some)],
    ) {
        let tmp = TempRing::new("hostile");
        let mut bytes = template().to_vec();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        if let Some(len) = length {
            bytes.resize(len, 0);
        }
        write_ring(tmp.path(), &bytes);
        exercise(tmp.path());
    }

    /// A valid identity with everything after it random.
    #[test]
    fn random_rings_behind_a_valid_identity_are_used_safely(seed in any::<u64>()) {
        let tmp = TempRing::new("hostile-random");
        let mut rng = reliability::Rng::new(seed);
        let mut bytes = template().to_vec();
        for b in &mut bytes[128..] {
            *b = rng.next_u64() as u8;
        }
        // A nonzero clock rate, so that attach gets past the header.
        bytes[144..152].copy_from_slice(&1_000_000_000u64.to_le_bytes());
        write_ring(tmp.path(), &bytes);
        exercise(tmp.path());
    }

    /// Random bytes of random length: refused, in one line.
    #[test]
    fn random_files_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        let tmp = TempRing::new("hostile-bytes");
        write_ring(tmp.path(), &bytes);
        let error = Ring::open(tmp.path()).expect_err("random bytes are not a ring");
        check_error(tmp.path(), &error);
    }
}

/// The state word of a slot, as `ring` encodes it.
fn state_word(lap: u32, slot: u16, generation: u32, phase: u64) -> u64 {
    (lap as u64) << 32 | ((slot as u64) << 20 | generation as u64) << 2 | phase
}

fn patch(path: &Path, offset: usize, bytes: &[u8]) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, offset as u64).unwrap();
}

/// Offset of the first slot in a ring without sub-rings (the default pool),
/// where every record a writer makes is in the shared ring, whose slots
/// the tests below patch.
const SHARED_ONLY_SLOTS_OFFSET: usize =
    format::slots_offset(format::DEFAULT_COUNTER_CELLS, 0, format::DEFAULT_SUBRING_CAPACITY);

/// A ring of `capacity` slots without sub-rings.
fn shared_ring_only(capacity: u64) -> RingOptions {
    RingOptions { capacity, subrings: 0, ..RingOptions::default() }
}

/// Drains until the consumer has taken `n` tickets or `limit` passes.
fn drain_for(consumer: &mut Consumer, limit: Duration) -> Vec<memtrack::Record> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        out.extend(drain_all(consumer));
        std::thread::sleep(Duration::from_millis(1));
    }
    out
}

#[test]
fn claims_of_writers_that_do_not_exist_are_reclaimed_and_counted() {
    let tmp = TempRing::new("hostile-claims");
    Ring::create(tmp.path(), RingOptions { capacity: 16, ..RingOptions::default() }).unwrap();
    let writer = Writer::attach(Ring::open(tmp.path()).unwrap()).unwrap(); // start record: ticket 0
    // Tickets 1..4 claimed by owners no live writer holds: an entry outside
    // the table, a never-used entry, this writer's entry at another
    // generation.
    let stale = memtrack::Owner::new(writer.owner().slot, writer.owner().generation + 1);
    patch(tmp.path(), SLOTS_OFFSET + 64, &state_word(0, 1000, 1, 1).to_le_bytes());
    patch(tmp.path(), SLOTS_OFFSET + 128, &state_word(0, 5, 0, 1).to_le_bytes());
    patch(tmp.path(), SLOTS_OFFSET + 192, &state_word(0, stale.slot, stale.generation, 1).to_le_bytes());
    writer.mark(b"behind the garbage");
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let records = drain_for(&mut consumer, Duration::from_millis(50));
    assert_eq!(consumer.progress().lost_writer_died, 3, "three garbage claims counted lost");
    let events: Vec<_> = records.iter().map(|r| (r.ticket, r.event())).collect();
    assert_eq!(events, [(0, Some(Event::ProcessStart)), (4, Some(Event::Mark))]);
    assert!(consumer.caught_up());
}

#[test]
fn a_state_the_protocol_never_writes_stops_the_consumer_and_is_never_overwritten() {
    let tmp = TempRing::new("hostile-invalid");
    Ring::create(tmp.path(), shared_ring_only(16)).unwrap();
    let writer = Writer::attach(Ring::open(tmp.path()).unwrap()).unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    assert_eq!(drain_all(&mut consumer).len(), 1);
    // Ticket 1 holds phase 3; ticket 2 a claim three laps ahead.
    let invalid = state_word(0, 0, 0, 3);
    patch(tmp.path(), SHARED_ONLY_SLOTS_OFFSET + 64, &invalid.to_le_bytes());
    for id in 0..40 {
        writer.alloc(&MemtrackBuffer { buffer_id: id, size: 1, ..Default::default() });
    }
    let records = drain_for(&mut consumer, Duration::from_millis(20));
    assert!(records.is_empty(), "nothing is taken past the corrupt slot: {records:?}");
    assert!(!consumer.caught_up(), "the corrupt slot is not mistaken for the frontier");
    // The writers never overwrote it: finding it at the tail, they took the
    // ring for full, and dropped and counted every record.
    let state = u64::from_le_bytes(
        std::fs::read(tmp.path()).unwrap()[SHARED_ONLY_SLOTS_OFFSET + 64..][..8].try_into().unwrap(),
    );
    assert_eq!(state, invalid);
    let s = consumer.ring().snapshot();
    assert_eq!(s.dropped, 40);
    assert_eq!(s.processes[0].dropped, 40);
}

#[test]
fn garbage_record_fields_are_delivered_as_data() {
    let tmp = TempRing::new("hostile-fields");
    let writer = Writer::attach(Ring::create(tmp.path(), shared_ring_only(16)).unwrap()).unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    // A hostile writer's records: the largest device id and kind, every
    // flag bit, a huge size. Format 2 counts any device and kind.
    writer.alloc(&MemtrackBuffer {
        buffer_id: 1,
        size: u64::MAX,
        device_id: u32::MAX,
        kind: 255,
        flags: 255,
        reserved: 0xffff,
        ..Default::default()
    });
    writer.free(&MemtrackBuffer {
        buffer_id: 1,
        size: u64::MAX,
        device_id: 64,
        kind: 8,
        ..Default::default()
    });
    writer.set_capacity(u32::MAX, 200, u64::MAX);
    // And a record with an unknown event code, written into a slot by hand.
    let ticket = 4;
    let mut payload = [0u8; 64];
    payload[0..8]
        .copy_from_slice(&state_word(0, writer.owner().slot, writer.owner().generation, 2).to_le_bytes());
    payload[58] = 0x8f; // the record file's end-block code
    payload[56..58].copy_from_slice(&999u16.to_le_bytes()); // process slot outside the table
    patch(tmp.path(), SHARED_ONLY_SLOTS_OFFSET + ticket * 64, &payload);
    writer.ring().snapshot(); // (no effect; keeps the writer alive to here)
    let records = drain_for(&mut consumer, Duration::from_millis(20));
    let r = &records[1];
    assert_eq!((r.device_id, r.kind, r.flags, r.size), (u32::MAX, 255, 255, u64::MAX));
    assert_eq!(records[4].event, 0x8f, "delivered verbatim: the reader decides what it means");
    assert_eq!(records[4].event(), None);
    let s = consumer.ring().snapshot();
    let cell = |device| s.counters.iter().find(|c| c.device_id == device).copied();
    let top = cell(u32::MAX).unwrap_or_else(|| panic!("{:?}", s.counters));
    assert_eq!((top.kind, top.live_bytes, top.live_buffers), (255, 0, 1), "ALIAS: a buffer, no bytes");
    assert_eq!(cell(64).map(|c| (c.kind, c.live_buffers)), Some((8, -1)));
    assert_eq!(s.counters.len(), 2, "{:?}", s.counters);
    assert_eq!(s.capacities, [memtrack::Capacity { device_id: u32::MAX, kind: 200, bytes: u64::MAX }]);
}

#[test]
fn a_writer_facing_slots_laps_ahead_returns_at_once() {
    let tmp = TempRing::new("hostile-ahead");
    Ring::create(tmp.path(), RingOptions { capacity: 16, ..RingOptions::default() }).unwrap();
    // Every slot waits for a ticket 2^31 - 1 laps ahead of the tail: a
    // writer stepping one ticket at a time would probe 2^35 tickets.
    for i in 0..16 {
        patch(tmp.path(), SLOTS_OFFSET + i * 64, &state_word(i32::MAX as u32, 0, 0, 0).to_le_bytes());
    }
    let (done, finished) = std::sync::mpsc::channel();
    let path = tmp.path().to_path_buf();
    std::thread::spawn(move || {
        let writer = Writer::attach(Ring::open(&path).unwrap()).unwrap();
        writer.alloc(&MemtrackBuffer { buffer_id: 1, size: 1, ..Default::default() });
        done.send(writer.ring().snapshot()).unwrap();
    });
    let snapshot = finished.recv_timeout(Duration::from_secs(20)).expect("the writer's hook returned");
    // Its records went somewhere the consumer can account for: claimed at
    // the tickets those slots wait for.
    assert_eq!(snapshot.dropped, 0, "{snapshot:?}");
    assert!(
        snapshot.tail >= (i32::MAX as u64) << 4,
        "the tail moved to where the slots are: {}",
        snapshot.tail
    );
}
