//! The engine against hand-written record streams, one rule per test.

use super::testing;
use super::*;
use crate::recording::{CounterBlock, DiedBlock, IdentityBlock, StartBlock};
use memtrack::format::FLAG_ALIAS;
use memtrack::format::kind::{CB, DRAM, L1};

/// The engine tests' stream: records 10 ns apart, from process 100
/// ("runtime", table entry 0) unless they say otherwise.
struct Stream(testing::Stream);

impl std::ops::Deref for Stream {
    type Target = testing::Stream;
    fn deref(&self) -> &testing::Stream {
        &self.0
    }
}

impl std::ops::DerefMut for Stream {
    fn deref_mut(&mut self) -> &mut testing::Stream {
        &mut self.0
    }
}

impl Stream {
    fn new() -> Stream {
        let mut s = Stream(testing::Stream::new(10));
        s.start(100, 0, "runtime");
        s
    }

    fn start(&mut self, pid: u32, slot: u16, name: &str) {
        self.labelled(Event::ProcessStart, pid, slot, name);
    }

    fn alloc(&mut self, device: u32, kind: u8, id: u64, size: u64) {
        self.buffer(Event::Alloc, 100, device, kind, id, size);
    }

    fn free(&mut self, device: u32, kind: u8, id: u64, size: u64) {
        self.buffer(Event::Free, 100, device, kind, id, size);
    }

    /// An ALIAS buffer record.
    fn alias(&mut self, event: Event, id: u64, size: u64) {
        self.push(Record { flags: FLAG_ALIAS, ..testing::buffer_record(event, 100, 0, DRAM, id, size) });
    }

    fn stats(&self, device: u32, kind: u8) -> KindStats {
        self.engine.devices().get(&(device, kind)).copied().unwrap_or_default()
    }
}

/// A used process-table entry, running.
fn table_entry(slot: u16, generation: u32, pid: u32, name: &str) -> memtrack::ProcessInfo {
    memtrack::ProcessInfo {
        slot,
        pid,
        name: name.into(),
        state: memtrack::ProcessState::Running,
        start_time: 0,
        generation,
        dropped: 0,
        pid_ns: 0,
        attach_ticks: 0,
    }
}

#[test]
fn alloc_and_free_balance_with_peak_and_counts() {
    let mut s = Stream::new();
    s.alloc(0, DRAM, 1, 1000);
    s.alloc(0, DRAM, 2, 500);
    s.free(0, DRAM, 1, 1000);
    s.alloc(1, L1, 1, 64); // same id, other device: another buffer
    let dram = s.stats(0, DRAM);
    assert_eq!((dram.live_bytes, dram.live_buffers, dram.peak_bytes), (500, 1, 1500));
    assert_eq!((dram.allocs, dram.frees), (2, 1));
    assert_eq!(dram.peak_time_ns, 30);
    assert_eq!(s.stats(1, L1).live_bytes, 64);
    assert_eq!(s.engine.anomaly_counts(), AnomalyCounts::default());
    let remaining: Vec<u64> = s.engine.remaining().iter().map(|b| b.key.buffer_id).collect();
    assert_eq!(remaining, [2, 1]);
    assert_eq!(s.engine.remaining_by_process()[&s.id(100)], (2, 564));
}

#[test]
fn duplicate_alloc_is_a_second_reference_released_by_a_later_free() {
    let mut s = Stream::new();
    s.alloc(0, DRAM, 1, 100);
    s.alloc(0, DRAM, 1, 100);
    assert_eq!(s.engine.anomaly_counts().duplicate_allocs, 1);
    let dram = s.stats(0, DRAM);
    assert_eq!((dram.live_bytes, dram.live_buffers, dram.allocs), (200, 2, 2));
    s.free(0, DRAM, 1, 100);
    assert_eq!(s.engine.remaining().len(), 1, "one reference left");
    s.free(0, DRAM, 1, 100);
    let dram = s.stats(0, DRAM);
    assert_eq!((dram.live_bytes, dram.live_buffers, dram.frees), (0, 0, 2));
    assert!(s.engine.remaining().is_empty());
    assert_eq!(s.engine.anomaly_counts().unknown_frees, 0);
}

#[test]
fn free_of_an_absent_buffer_is_an_unknown_free_and_changes_no_usage() {
    let mut s = Stream::new();
    s.alloc(0, DRAM, 1, 100);
    s.free(0, DRAM, 2, 100);
    s.free(0, DRAM, 1, 100);
    s.free(0, DRAM, 1, 100); // double free
    assert_eq!(s.engine.anomaly_counts().unknown_frees, 2);
    let dram = s.stats(0, DRAM);
    assert_eq!((dram.live_bytes, dram.frees), (0, 1), "unknown frees are anomalies only");
    let details: Vec<(AnomalyKind, u64)> =
        s.engine.anomalies().iter().map(|a| (a.kind, a.key.buffer_id)).collect();
    assert_eq!(details, [(AnomalyKind::UnknownFree, 2), (AnomalyKind::UnknownFree, 1)]);
}

#[test]
fn buffers_are_keyed_by_id_not_address() {
    // The socket tracker's phantom frees: two buffers at one address.
    let mut s = Stream::new();
    s.alloc(0, DRAM, 1, 100);
    s.alloc(0, DRAM, 2, 100); // same address 0x1000
    s.free(0, DRAM, 1, 100);
    s.free(0, DRAM, 2, 100);
    assert_eq!(s.engine.anomaly_counts(), AnomalyCounts::default());
}

#[test]
fn size_mismatch_counts_and_the_alloc_size_leaves_usage() {
    let mut s = Stream::new();
    s.alloc(0, DRAM, 1, 100);
    s.free(0, DRAM, 1, 60);
    s.alloc(0, DRAM, 2, 100);
    s.free(0, DRAM, 2, 0); // size unknown at free: not a mismatch
    assert_eq!(s.engine.anomaly_counts().size_mismatches, 1);
    assert_eq!(s.engine.anomalies()[0].expected_size, 100);
    assert_eq!(s.stats(0, DRAM).live_bytes, 0);
}

#[test]
fn alias_buffers_count_in_buffers_not_bytes() {
    let mut s = Stream::new();
    s.alias(Event::Alloc, 9, 4096);
    s.alloc(0, DRAM, 1, 4096);
    let dram = s.stats(0, DRAM);
    assert_eq!((dram.live_bytes, dram.live_buffers, dram.peak_bytes, dram.allocs), (4096, 2, 4096, 2));
    s.alias(Event::Free, 9, 4096);
    s.free(0, DRAM, 1, 4096);
    assert_eq!(
        s.stats(0, DRAM),
        KindStats { peak_bytes: 4096, peak_time_ns: 30, allocs: 2, frees: 2, ..Default::default() }
    );
}

#[test]
fn processes_are_separate_key_spaces() {
    let mut s = Stream::new();
    s.start(200, 1, "worker");
    s.buffer(Event::Alloc, 100, 0, DRAM, 1, 10);
    s.buffer(Event::Free, 200, 0, DRAM, 1, 10);
    assert_eq!(s.engine.anomaly_counts().unknown_frees, 1);
    assert_eq!(s.engine.process(s.id(200)).name, "worker");
}

#[test]
fn a_process_that_dies_leaves_usage_and_lists_its_buffers() {
    let mut s = Stream::new();
    s.start(200, 1, "victim");
    s.buffer(Event::Alloc, 200, 0, DRAM, 1, 1000);
    s.push(Record { flags: FLAG_ALIAS, ..testing::buffer_record(Event::Alloc, 200, 0, DRAM, 2, 1000) });
    s.alloc(0, DRAM, 3, 10);
    s.engine.apply_block(&Block::Died(DiedBlock::new(&table_entry(1, 1, 200, "victim"), 1000)));
    let victim = &s.engine.process(s.id(200));
    assert_eq!(victim.state, ProcState::Died);
    assert_eq!(victim.end_time_ns, Some(1000));
    assert_eq!(victim.ended_with.len(), 2);
    let dram = s.stats(0, DRAM);
    assert_eq!((dram.live_bytes, dram.live_buffers, dram.peak_bytes), (10, 1, 1010));
    assert_eq!(s.engine.remaining().len(), 3, "its buffers are still listed as remaining");
    assert_eq!(s.engine.remaining_by_process()[&s.id(200)], (2, 1000));
    // A free after death (a record published before death, delivered late
    // is not possible: ticket order) is an unknown free.
    s.buffer(Event::Free, 200, 0, DRAM, 1, 1000);
    assert_eq!(s.engine.anomaly_counts().unknown_frees, 1);
}

#[test]
fn a_new_process_in_a_running_processs_table_entry_means_it_died() {
    let mut s = Stream::new();
    s.start(200, 1, "first");
    s.buffer(Event::Alloc, 200, 0, DRAM, 1, 1000);
    s.start(300, 1, "second");
    assert_eq!(s.engine.process(s.id(200)).state, ProcState::Died);
    assert_eq!(s.stats(0, DRAM).live_bytes, 0);
    // A clean exit before the reuse is not a death.
    let mut r = Record { pid: 300, process_slot: 1, event: Event::ProcessExit as u8, ..Default::default() };
    r.timestamp = 5000;
    s.engine.apply(&r);
    s.start(400, 1, "third");
    assert_eq!(s.engine.process(s.id(300)).state, ProcState::Exited);
}

#[test]
fn marks_carry_the_usage_at_that_moment() {
    let mut s = Stream::new();
    s.alloc(2, CB, 1, 256);
    let mut mark = Record { pid: 100, event: Event::Mark as u8, ..Default::default() };
    mark.set_label(b"after-compile");
    s.push(mark);
    s.free(2, CB, 1, 256);
    let marks = s.engine.marks();
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].label, "after-compile");
    assert_eq!(marks[0].usage, [((2, CB), (256, 1))]);
}

#[test]
fn capacity_records_set_totals() {
    let mut s = Stream::new();
    s.push(Record {
        device_id: 3,
        kind: L1,
        size: 1 << 20,
        event: Event::Capacity as u8,
        ..Default::default()
    });
    assert_eq!(s.stats(3, L1).capacity, Some(1 << 20));
}

#[test]
fn cross_check_reports_only_disagreements_of_complete_processes() {
    let mut s = Stream::new();
    s.alloc(0, DRAM, 1, 100);
    s.alloc(1, DRAM, 1, 100);
    let entry = table_entry(0, 1, 100, "runtime");
    s.engine.apply_block(&Block::Process(ProcessBlock::from(&entry)));
    s.engine.apply_block(&Block::Counter(CounterBlock::new(&entry, 0, DRAM, 100, 1)));
    s.engine.apply_block(&Block::Counter(CounterBlock::new(&entry, 1, DRAM, 300, 2)));
    // A process whose start this stream missed is not compared.
    let unseen = table_entry(5, 1, 555, "unseen");
    s.engine.apply_block(&Block::Counter(CounterBlock::new(&unseen, 0, DRAM, 1, 1)));
    assert!(s.engine.cross_checked());
    let mismatches = s.engine.counter_mismatches();
    assert_eq!(
        mismatches,
        [CounterMismatch {
            process: s.id(100),
            pid: 100,
            device_id: 1,
            kind: DRAM,
            reader: (100, 1),
            writers: (300, 2)
        }]
    );
}

/// A cell's bytes are a sum of `u64` sizes, which the writers keep
/// modulo 2^64: a 2^63-byte buffer is 2^63 bytes on both sides, never
/// −2^63, and a difference is shown as it is.
#[test]
fn cross_check_shows_cells_of_2_pow_63_bytes_and_more_exactly() {
    let mut s = Stream::new();
    s.alloc(0, DRAM, 1, 1 << 63);
    s.alloc(0, DRAM, 2, 4096);
    let entry = table_entry(0, 1, 100, "runtime");
    s.engine.apply_block(&Block::Process(ProcessBlock::from(&entry)));
    // The writers hold one more buffer of 4 KiB (its record was lost),
    // and wrap the 2^63 + 8 KiB they count to a negative i64.
    let writers_bytes = (1u64 << 63) + 3 * 4096;
    s.engine.apply_block(&Block::Counter(CounterBlock::new(&entry, 0, DRAM, writers_bytes as i64, 3)));
    let mismatches = s.engine.counter_mismatches();
    assert_eq!(mismatches.len(), 1);
    assert_eq!(mismatches[0].reader, ((1i128 << 63) + 4096, 2));
    assert_eq!(mismatches[0].writers, ((1i128 << 63) + 3 * 4096, 3));

    // Agreeing cells, 2^63 bytes and more, are no mismatch.
    let mut s = Stream::new();
    s.alloc(0, DRAM, 1, 1 << 63);
    s.alloc(0, DRAM, 2, 4096);
    s.engine.apply_block(&Block::Process(ProcessBlock::from(&entry)));
    let agreeing = (1u64 << 63) + 4096;
    s.engine.apply_block(&Block::Counter(CounterBlock::new(&entry, 0, DRAM, agreeing as i64, 2)));
    assert!(s.engine.cross_checked());
    assert_eq!(s.engine.counter_mismatches(), []);
}

#[test]
fn a_million_live_buffers_and_many_records_do_not_stall() {
    let mut engine = Engine::new(testing::nanosecond_ticks());
    let start = std::time::Instant::now();
    let mut r = Record { pid: 1, event: Event::Alloc as u8, size: 64, ..Default::default() };
    for id in 0..1_000_000 {
        r.buffer_id = id;
        engine.apply(&r);
    }
    r.event = Event::Free as u8;
    for id in 0..1_000_000 {
        r.buffer_id = id;
        engine.apply(&r);
    }
    assert_eq!(engine.devices()[&(0, DRAM)].peak_bytes, 64_000_000);
    assert_eq!(engine.devices()[&(0, DRAM)].live_buffers, 0);
    // Not a timing assertion: a bound only a pathological (quadratic)
    // engine would exceed even on a slow debug build.
    assert!(start.elapsed() < std::time::Duration::from_secs(60));
}

/// The writers of the PID-namespace issue: two processes that both call
/// themselves pid 2, in table entries 1 and 2; the first allocates 3
/// buffers and exits, the second allocates 3, frees 2 and dies.
fn two_writers_with_one_pid() -> Stream {
    let mut s = Stream::new();
    s.start(2, 1, "w");
    s.start(2, 2, "w");
    for id in 1..=3 {
        s.push(Record { process_slot: 1, ..testing::buffer_record(Event::Alloc, 2, 0, DRAM, id, 4096) });
        s.push(Record { process_slot: 2, ..testing::buffer_record(Event::Alloc, 2, 0, DRAM, id, 4096) });
    }
    for id in 2..=3 {
        s.push(Record { process_slot: 2, ..testing::buffer_record(Event::Free, 2, 0, DRAM, id, 4096) });
    }
    s.push(Record { pid: 2, process_slot: 1, event: Event::ProcessExit as u8, ..Default::default() });
    s.engine.apply_block(&Block::Died(DiedBlock::new(&table_entry(2, 1, 2, "w"), 2000)));
    s
}

#[test]
fn one_pid_in_two_table_entries_is_two_processes() {
    let s = two_writers_with_one_pid();
    let processes: Vec<(String, u32, ProcState)> =
        s.engine.processes().iter().skip(1).map(|p| (p.key(), p.pid, p.state)).collect();
    assert_eq!(processes, [("1.1".to_owned(), 2, ProcState::Exited), ("2.1".to_owned(), 2, ProcState::Died)]);
    assert_eq!(s.engine.anomaly_counts(), AnomalyCounts::default(), "no invented duplicates");
    let totals = s.engine.remaining_by_process();
    let (exited, died) = (ProcessId(1), ProcessId(2));
    assert_eq!(totals[&exited], (3, 12288), "the exited one's leak is its own");
    assert_eq!(totals[&died], (1, 4096));
    assert_eq!(s.engine.process(died).ended_with.len(), 1);
    // Both ended: device usage holds neither's buffers.
    assert_eq!((s.stats(0, DRAM).live_bytes, s.stats(0, DRAM).live_buffers), (0, 0));
    assert_eq!(s.engine.process(exited).ended_with.len(), 3);
}

#[test]
fn a_reused_pid_in_a_reused_table_entry_is_a_new_process_and_the_old_one_died() {
    let mut s = Stream::new();
    s.start(2, 1, "w");
    s.buffer(Event::Alloc, 2, 0, DRAM, 1, 4096);
    // Killed; the next process with pid 2 takes the same entry.
    s.start(2, 1, "w");
    s.buffer(Event::Alloc, 2, 0, DRAM, 1, 4096);
    let first = &s.engine.processes()[1];
    assert_eq!((first.key(), first.state, first.ended_with.len()), ("1.1".to_owned(), ProcState::Died, 1));
    let second = &s.engine.processes()[2];
    assert_eq!((second.key(), second.state), ("1.2".to_owned(), ProcState::Running));
    assert_eq!(s.engine.anomaly_counts().duplicate_allocs, 0);
    assert_eq!(s.engine.remaining().len(), 2);
}

#[test]
fn a_record_of_another_pid_in_an_entry_is_a_new_owner_whose_start_was_dropped() {
    let mut s = Stream::new();
    s.start(200, 1, "first");
    s.push(Record { process_slot: 1, ..testing::buffer_record(Event::Alloc, 200, 0, DRAM, 1, 10) });
    s.push(Record { process_slot: 1, ..testing::buffer_record(Event::Alloc, 300, 0, DRAM, 1, 10) });
    let keys: Vec<(String, u32, ProcState)> =
        s.engine.processes().iter().skip(1).map(|p| (p.key(), p.pid, p.state)).collect();
    assert_eq!(keys, [("1.1".to_owned(), 200, ProcState::Died), ("1.2".to_owned(), 300, ProcState::Running)]);
}

#[test]
fn a_reader_attaching_late_takes_generations_from_the_table_it_found() {
    let mut s = Stream(testing::Stream::new(10));
    let initial = |slot, generation, pid| {
        let entry = table_entry(slot, generation, pid, "seen");
        Block::Identity(IdentityBlock::version_3(&entry, Some(pid + 1000), Some(100)))
    };
    // Entry 0: generation 5 (pid 7) owned it when the reader looked, after
    // ticket 100. Entry 1: generation 3 (pid 8). Entry 2: generation 2 (pid 12).
    for block in [initial(0, 5, 7), initial(1, 3, 8), initial(2, 2, 12)] {
        s.engine.apply_block(&block);
    }
    let mut at = |ticket, slot, pid, event: Event| {
        let mut r = testing::buffer_record(event, pid, 0, DRAM, ticket, 1);
        (r.ticket, r.process_slot) = (ticket, slot);
        if event == Event::ProcessStart {
            r.set_label(b"w");
        }
        s.push(r);
    };
    at(50, 0, 9, Event::Alloc); // an earlier owner's leftovers
    at(60, 0, 7, Event::ProcessStart); // the owner the reader saw
    at(120, 1, 11, Event::ProcessStart); // a later owner
    at(130, 2, 12, Event::Alloc); // the owner the reader saw, its start consumed before
    let keys: Vec<(String, u32, Option<u32>)> =
        s.engine.processes().iter().map(|p| (p.key(), p.pid, p.host_pid)).collect();
    assert_eq!(
        keys,
        [
            ("0.4".to_owned(), 9, None),
            ("0.5".to_owned(), 7, Some(1007)),
            ("1.4".to_owned(), 11, None),
            ("2.2".to_owned(), 12, Some(1012)),
        ]
    );
    assert_eq!(s.engine.process(ProcessId(0)).state, ProcState::Died, "replaced without an exit");
}

#[test]
fn since_record_file_version_4_an_owners_attach_time_tells_earlier_owners_from_later_ones() {
    // Records are stamped 10, 20, 30, 40. Merged tickets (ring format 3)
    // say nothing of claim order across rings: these contradict the stamps.
    let mut s = Stream(testing::Stream::new(10));
    let initial = |slot, generation, pid, attach_ticks| {
        let entry = memtrack::ProcessInfo { attach_ticks, ..table_entry(slot, generation, pid, "seen") };
        Block::Identity(IdentityBlock::new(&entry, None, true))
    };
    for block in [initial(0, 5, 7, 15), initial(1, 3, 8, 15)] {
        s.engine.apply_block(&block);
    }
    let mut at = |ticket, slot, pid, event: Event| {
        let mut r = testing::buffer_record(event, pid, 0, DRAM, ticket, 1);
        (r.ticket, r.process_slot) = (ticket, slot);
        s.push(r);
    };
    at(900, 0, 9, Event::Alloc); // stamped 10, before generation 5 attached: an earlier owner
    at(901, 0, 7, Event::Alloc); // the owner the reader saw
    at(2, 1, 11, Event::Alloc); // stamped 30, after generation 3 attached: a later owner
    let keys: Vec<(String, u32)> = s.engine.processes().iter().map(|p| (p.key(), p.pid)).collect();
    assert_eq!(keys, [("0.4".to_owned(), 9), ("0.5".to_owned(), 7), ("1.4".to_owned(), 11)]);
}

#[test]
fn identity_blocks_name_the_process_with_its_pid_in_the_readers_namespace() {
    let mut s = Stream::new();
    s.start(1, 1, "w");
    let mut entry = table_entry(1, 1, 1, "w");
    entry.start_time = 777;
    s.engine.apply_block(&Block::Identity(IdentityBlock::new(&entry, Some(4321), false)));
    // Another owner's identity (the same pid, the next generation) is not this one's.
    let mut next = table_entry(1, 2, 1, "w");
    next.start_time = 888;
    s.engine.apply_block(&Block::Identity(IdentityBlock::new(&next, Some(5555), false)));
    let p = s.engine.process(s.id(1));
    assert_eq!((p.host_pid, p.start_time), (Some(4321), Some(777)));
    s.start(1, 1, "w");
    let p = s.engine.process(s.id(1));
    assert_eq!((p.key(), p.host_pid, p.start_time), ("1.2".to_owned(), Some(5555), Some(888)));
}

#[test]
fn process_keys_stay_unique_when_the_table_contradicts_the_stream() {
    let mut s = Stream::new();
    s.start(200, 1, "w");
    // The table says entry 1's first owner was pid 300 (a start record the
    // ring dropped, say): another process, another key.
    s.engine.apply_block(&Block::Died(DiedBlock::new(&table_entry(1, 1, 300, "x"), 50)));
    let keys: Vec<String> = s.engine.processes().iter().map(|p| p.key()).collect();
    assert_eq!(keys, ["0.1", "1.1", "1.1.1"]);
    assert_eq!(s.engine.process(s.id(300)).state, ProcState::Died);
    assert_eq!(s.engine.process(s.id(200)).state, ProcState::Running);
}

/// Process 100's table entry (slot 0, generation 1), in `state`, having
/// dropped `dropped`, as the table at the start or the end of a recording.
fn table_block(state: memtrack::ProcessState, dropped: u64, phase: u8) -> Block {
    let entry = memtrack::ProcessInfo { state, dropped, ..table_entry(0, 1, 100, "runtime") };
    let mut block = ProcessBlock::from(&entry);
    block.phase = phase;
    Block::Process(block)
}

/// An engine for a recording that attached to a ring where process 100
/// (entry 0, generation 1) was running and holding `opening` (bytes,
/// buffers) of DRAM on device 0, with tickets `first..backlog_end` waiting.
fn mid_run(opening: (i64, i64), first: u64, backlog_end: u64) -> Stream {
    let mut s = Stream(testing::Stream::new(10));
    let entry = table_entry(0, 1, 100, "runtime");
    s.engine.apply_block(&Block::Identity(IdentityBlock::version_3(&entry, None, Some(backlog_end))));
    s.engine.apply_block(&table_block(memtrack::ProcessState::Running, 0, ProcessBlock::AT_START));
    s.engine.apply_block(&Block::opening(CounterBlock::new(&entry, 0, DRAM, opening.0, opening.1)));
    s.engine.apply_block(&Block::Start(StartBlock::new(0, first, backlog_end, 0)));
    s
}

impl Stream {
    /// A buffer record of process 100 with ticket `ticket`.
    fn at_ticket(&mut self, ticket: u64, event: Event, id: u64, size: u64) {
        self.push(Record { ticket, ..testing::buffer_record(event, 100, 0, DRAM, id, size) });
    }
}

#[test]
fn a_recording_that_starts_mid_run_opens_with_the_writers_usage() {
    let mut s = mid_run((3000, 3), 50, 50);
    let dram = s.stats(0, DRAM);
    assert_eq!((dram.live_bytes, dram.live_buffers, dram.peak_bytes), (3000, 3, 3000), "before any record");
    // Frees of buffers allocated before the recording release the opening.
    s.at_ticket(50, Event::Free, 7, 1000);
    assert_eq!(s.stats(0, DRAM).live_bytes, 2000);
    s.at_ticket(51, Event::Alloc, 8, 500);
    assert_eq!(s.stats(0, DRAM).live_bytes, 2500);
    s.at_ticket(52, Event::Free, 9, 1000);
    s.at_ticket(53, Event::Free, 10, 1000);
    assert_eq!(s.engine.anomaly_counts().unknown_frees, 0);
    // The opening had three: a fourth unknown free is an anomaly.
    s.at_ticket(54, Event::Free, 11, 1000);
    assert_eq!(s.engine.anomaly_counts().unknown_frees, 1);
    assert_eq!(s.stats(0, DRAM).live_bytes, 500, "never below what the stream holds");
    assert_eq!(s.stats(0, DRAM).frees, 3, "the opening's buffers were freed");
    let start = s.engine.start().unwrap();
    assert_eq!((start.mid_run, start.opening_buffers, start.opening_frees), (true, 3, 3));
    assert!(s.engine.unidentified_remaining().is_empty());
    assert_eq!(s.engine.processes().len(), 1, "the table's process is the records' one");
    assert_eq!(s.engine.processes()[0].key(), "0.1");
}

#[test]
fn a_size_0_free_of_an_opening_buffer_releases_its_share() {
    let mut s = mid_run((3000, 2), 50, 50);
    s.at_ticket(50, Event::Free, 7, 0);
    assert_eq!((s.stats(0, DRAM).live_bytes, s.stats(0, DRAM).live_buffers), (1500, 1));
    s.at_ticket(51, Event::Free, 8, 0);
    assert_eq!(
        (s.stats(0, DRAM).live_bytes, s.stats(0, DRAM).live_buffers),
        (0, 0),
        "the last takes the rest"
    );
    assert!(s.engine.unidentified_remaining().is_empty());
}

#[test]
fn the_backlog_is_in_the_opening_counters_already() {
    // The counters at attach: buffer 1 (allocated in the backlog, 1000
    // bytes) and one older buffer of 1000; buffer 9 (500 bytes, older too)
    // was freed in the backlog.
    let mut s = mid_run((2000, 2), 0, 2);
    s.at_ticket(0, Event::Alloc, 1, 1000);
    s.at_ticket(1, Event::Free, 9, 500);
    s.at_ticket(2, Event::Alloc, 3, 10);
    let dram = s.stats(0, DRAM);
    assert_eq!((dram.live_bytes, dram.live_buffers), (2010, 3), "counted once");
    assert_eq!(s.engine.anomaly_counts().unknown_frees, 0, "buffer 9 was one of the older ones");
    let id = s.id(100);
    assert_eq!(s.engine.unidentified_remaining(), [((id, 0, DRAM), (1000, 1))]);
    assert_eq!(s.engine.remaining_by_process()[&id], (3, 2010));
}

#[test]
fn a_process_that_exits_leaves_device_usage_and_lists_its_leaks() {
    let mut s = mid_run((4000, 4), 10, 10);
    s.at_ticket(10, Event::Alloc, 1, 100);
    s.push(Record { pid: 100, event: Event::ProcessExit as u8, ticket: 11, ..Default::default() });
    let dram = s.stats(0, DRAM);
    assert_eq!((dram.live_bytes, dram.live_buffers, dram.peak_bytes), (0, 0, 4100));
    let id = s.id(100);
    assert_eq!(s.engine.process(id).state, ProcState::Exited);
    assert_eq!(s.engine.remaining().len(), 1);
    assert_eq!(s.engine.unidentified_remaining(), [((id, 0, DRAM), (4000, 4))]);
    assert_eq!(s.engine.remaining_by_process()[&id], (5, 4100));
}

#[test]
fn records_missing_make_their_cells_uncertain() {
    let mut s = Stream::new();
    s.alloc(0, DRAM, 1, 100);
    s.start(200, 1, "other");
    s.buffer(Event::Alloc, 200, 1, L1, 1, 100);
    assert!(s.engine.uncertain_cells().is_empty());
    // Process 100 dropped records: its cells, not process 200's.
    s.engine.apply_block(&table_block(memtrack::ProcessState::Running, 3, ProcessBlock::AT_END));
    let (runtime, other) = (s.id(100), s.id(200));
    let cells: Vec<_> = s.engine.uncertain_cells().into_iter().collect();
    assert_eq!(cells, [((runtime, 0, DRAM), Uncertainty::Dropped)]);
    // A consumer that died with records of unknown processes: every cell.
    let mut losses = LossBlock::default();
    losses.lost_reader_died = 1;
    s.engine.apply_block(&Block::Loss(losses));
    let cells = s.engine.uncertain_cells();
    assert_eq!(cells.get(&(other, 1, L1)), Some(&Uncertainty::ReaderDied));
    assert_eq!(cells.get(&(runtime, 0, DRAM)), Some(&Uncertainty::Dropped));
}

#[test]
fn drops_before_a_recording_without_backlog_are_not_its_own() {
    let (running, at_start, at_end) =
        (memtrack::ProcessState::Running, ProcessBlock::AT_START, ProcessBlock::AT_END);
    let mut s = Stream(testing::Stream::new(10));
    s.engine.apply_block(&table_block(running, 7, at_start));
    s.engine.apply_block(&Block::Start(StartBlock::new(0, 40, 40, 7)));
    s.at_ticket(40, Event::Alloc, 1, 100);
    s.engine.apply_block(&table_block(running, 9, at_end));
    assert_eq!(s.engine.processes()[0].dropped, 2, "the 7 came before its first record");
    // With a backlog, they may fall into the stream: all of them count.
    let mut s = Stream(testing::Stream::new(10));
    s.engine.apply_block(&table_block(running, 7, at_start));
    s.engine.apply_block(&Block::Start(StartBlock::new(0, 40, 56, 7)));
    s.engine.apply_block(&table_block(running, 9, at_end));
    assert_eq!(s.engine.processes()[0].dropped, 9);
}
