//! The model against hand-written record streams, and the screen drawn
//! with ratatui's test backend at several sizes.

use std::time::{Duration, Instant};

use memtrack::format::kind::{DRAM, L1};
use memtrack::{Capacity, CorruptStop, Event, LiveCounter, ProcessInfo, ProcessState, Progress, Snapshot};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier};

use super::model::{HISTORY, KindRow, LATEST, Model};
use super::view::{Plan, rate, render};
use crate::engine::testing::{Stream, buffer_record};
use crate::engine::{MAX_ANOMALY_DETAILS, ProcState};
use crate::recording::LossBlock;

const OWN_PID: u32 = 999;

fn process(slot: u16, pid: u32, name: &str, state: ProcessState) -> ProcessInfo {
    ProcessInfo {
        slot,
        pid,
        name: name.to_owned(),
        state,
        start_time: 0,
        generation: 1,
        dropped: 0,
        pid_ns: 0,
        attach_ticks: 0,
    }
}

fn counter(slot: u16, device_id: u32, kind: u8, live_bytes: i64, live_buffers: i64) -> LiveCounter {
    LiveCounter { process_slot: slot, device_id, kind, live_bytes, live_buffers }
}

fn snapshot(processes: Vec<ProcessInfo>, counters: Vec<LiveCounter>, capacities: Vec<Capacity>) -> Snapshot {
    Snapshot {
        processes,
        counters,
        capacities,
        progress: Progress::default(),
        dropped: 0,
        untracked_processes: 0,
        untracked: Vec::new(),
        untracked_capacities: 0,
        reader_pid: Some(OWN_PID),
        tail: 0,
        subrings: Vec::new(),
        subring_capacity: 0,
        corrupt: Vec::new(),
    }
}

/// Two devices, two writers (one died), the watch itself in the table, an
/// unknown free, a size mismatch and a mark.
fn busy() -> (Stream, Snapshot) {
    let mut s = Stream::new(1_000_000);
    s.labelled(Event::ProcessStart, 100, 0, "model");
    s.labelled(Event::ProcessStart, 200, 1, "worker");
    s.capacity(0, L1, 4 << 20);
    s.buffer(Event::Alloc, 100, 0, L1, 1, 1 << 20);
    s.buffer(Event::Alloc, 100, 0, L1, 2, 1 << 20);
    s.buffer(Event::Alloc, 100, 0, DRAM, 3, 8 << 20);
    s.buffer(Event::Free, 100, 0, DRAM, 3, 8 << 20);
    s.buffer(Event::Alloc, 100, 0, DRAM, 4, 2 << 20);
    s.labelled(Event::Mark, 100, 0, "epoch-1");
    s.buffer(Event::Alloc, 200, 1, DRAM, 9, 3 << 20);
    s.buffer(Event::Free, 100, 0, L1, 77, 4096); // unknown free
    s.buffer(Event::Free, 100, 0, L1, 2, 512); // size mismatch
    s.died(200);
    let table = snapshot(
        vec![
            process(0, 100, "model", ProcessState::Running),
            process(1, 200, "worker", ProcessState::Died),
            process(2, OWN_PID, "memtrack", ProcessState::Running),
        ],
        vec![counter(0, 0, L1, 1 << 20, 1), counter(0, 0, DRAM, 2 << 20, 1), counter(1, 1, DRAM, 3 << 20, 1)],
        vec![
            Capacity { device_id: 0, kind: L1, bytes: 4 << 20 },
            Capacity { device_id: 1, kind: DRAM, bytes: 1 << 30 },
        ],
    );
    (s, table)
}

fn model_of(stream: &Stream, table: &Snapshot, losses: LossBlock) -> Model {
    let start = Instant::now();
    let mut model = Model::new("/dev/shm/memtrack-test".into(), None, OWN_PID, start);
    model.count(500);
    model.sample(&stream.engine, losses, table, start + Duration::from_millis(250));
    model
}

fn draw(model: &Model, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| {
            render(frame, model, 0);
        })
        .unwrap();
    terminal.backend().buffer().clone()
}

fn lines(buf: &Buffer) -> Vec<String> {
    (0..buf.area.height)
        .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect::<String>())
        .collect()
}

fn text(buf: &Buffer) -> String {
    lines(buf).join("\n")
}

/// The cell where `needle` first starts (every symbol drawn is one column).
fn find(buf: &Buffer, needle: &str) -> Option<(u16, u16)> {
    find_after(buf, needle, needle)
}

/// The cell where `needle` first starts on the first line holding `row`.
fn find_after(buf: &Buffer, row: &str, needle: &str) -> Option<(u16, u16)> {
    let lines = lines(buf);
    let y = lines.iter().position(|l| l.contains(row))?;
    let byte = lines[y].find(needle)?;
    Some((lines[y][..byte].chars().count() as u16, y as u16))
}

/// The colour of `needle` on the line holding `row`.
fn fg_of(buf: &Buffer, row: &str, needle: &str) -> Color {
    let (x, y) =
        find_after(buf, row, needle).unwrap_or_else(|| panic!("{needle:?} not on screen:\n{}", text(buf)));
    buf[(x, y)].fg
}

fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
    lines.iter().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle:?}: {lines:#?}"))
}

#[test]
fn model_takes_usage_from_the_engine_and_capacities_from_either_source() {
    let (s, table) = busy();
    let model = model_of(&s, &table, LossBlock::default());
    let ids: Vec<u32> = model.devices.iter().map(|d| d.device_id).collect();
    assert_eq!(ids, [0, 1]);
    let d0 = &model.devices[0];
    let kinds: Vec<u8> = d0.kinds.iter().map(|k| k.kind).collect();
    assert_eq!(kinds, [DRAM, L1]);
    let dram = d0.kinds[0];
    assert_eq!((dram.live_bytes, dram.peak_bytes, dram.capacity), (2 << 20, 8 << 20, None));
    let l1 = d0.kinds[1];
    assert_eq!((l1.live_bytes, l1.live_buffers, l1.capacity), (1 << 20, 1, Some(4 << 20)));
    // Device 1's worker died: its bytes left usage; the capacity came from
    // the ring's table only.
    let d1 = &model.devices[1];
    assert_eq!((d1.kinds[0].live_bytes, d1.kinds[0].capacity), (0, Some(1 << 30)));
    // A history per kind, each its own.
    assert_eq!(d0.history[&DRAM], [2 << 20]);
    assert_eq!(d0.history[&L1], [1 << 20]);
    assert_eq!(model.records, s.engine.records());
    assert!((model.rate - 2000.0).abs() < 1e-6, "500 records in 250 ms: {}", model.rate);
}

#[test]
fn bars_show_used_over_total_else_used_over_peak() {
    let with_total = KindRow {
        kind: L1,
        live_bytes: 1 << 20,
        peak_bytes: 3 << 20,
        capacity: Some(4 << 20),
        ..Default::default()
    };
    assert_eq!(with_total.fill(), 0.25);
    let without = KindRow { capacity: None, ..with_total };
    assert!((without.fill() - 1.0 / 3.0).abs() < 1e-9);
    let empty = KindRow::default();
    assert_eq!(empty.fill(), 0.0);
    let over = KindRow { live_bytes: 5 << 20, ..with_total };
    assert_eq!(over.fill(), 1.0, "clamped: a gauge panics above 1");
}

#[test]
fn processes_come_from_the_table_without_the_watch_itself() {
    let (mut s, table) = busy();
    // A process the stream saw that has left the table, and the watch's
    // own pid in the stream too.
    s.labelled(Event::ProcessStart, 300, 3, "gone");
    s.buffer(Event::Alloc, 300, 0, DRAM, 1, 4096);
    s.died(300);
    s.labelled(Event::ProcessStart, OWN_PID, 2, "memtrack");
    let model = model_of(&s, &table, LossBlock::default());
    let rows: Vec<(&str, u32, &str, ProcState, i64)> = model
        .processes
        .iter()
        .map(|p| (p.process.as_str(), p.pid, p.name.as_str(), p.state, p.live_bytes))
        .collect();
    assert_eq!(
        rows,
        [
            ("0.1", 100, "model", ProcState::Running, 3 << 20),
            ("1.1", 200, "worker", ProcState::Died, 3 << 20),
            ("3.1", 300, "gone", ProcState::Died, 4096)
        ]
    );
}

#[test]
fn history_is_bounded_and_kept_per_device_across_samples() {
    let (mut s, table) = busy();
    let start = Instant::now();
    let mut model = Model::new("r".into(), None, OWN_PID, start);
    // Device `id`'s L1 history.
    let history = |model: &Model, id: u32| {
        model
            .devices
            .iter()
            .find(|d| d.device_id == id)
            .map(|d| d.history[&L1].iter().copied().collect::<Vec<_>>())
    };
    for i in 0..HISTORY + 10 {
        if i == 5 {
            // A device that appears later gets a history of its own.
            s.buffer(Event::Alloc, 100, 7, L1, 1, 100);
        }
        if i == 300 {
            s.buffer(Event::Free, 100, 0, L1, 1, 1 << 20);
        }
        model.sample(&s.engine, LossBlock::default(), &table, start + Duration::from_millis(i as u64 + 1));
        if i == 20 {
            assert_eq!(history(&model, 0).unwrap().len(), 21);
            assert_eq!(history(&model, 7).unwrap(), vec![100; 16]);
        }
    }
    let d0 = history(&model, 0).unwrap();
    assert_eq!(d0.len(), HISTORY);
    // Oldest first: the free at sample 300 shows near the end.
    let before = 1 << 20;
    let after = 0;
    assert_eq!(d0.iter().filter(|&&b| b == before).count(), 300 - 10);
    assert_eq!(d0.iter().filter(|&&b| b == after).count(), HISTORY + 10 - 300);
    assert_eq!((d0[0], d0[HISTORY - 1]), (before, after));
    assert_eq!(history(&model, 7).unwrap().len(), HISTORY);
}

#[test]
fn latest_anomalies_and_marks_come_newest_first_even_past_the_detail_limit() {
    let mut s = Stream::new(1_000_000);
    for id in 0..(MAX_ANOMALY_DETAILS as u64 + 20) {
        s.buffer(Event::Free, 100, 0, L1, id, 64);
    }
    for m in 0..12 {
        s.labelled(Event::Mark, 100, 0, &format!("step-{m}"));
    }
    let model = model_of(&s, &snapshot(vec![], vec![], vec![]), LossBlock::default());
    assert_eq!(model.anomaly_counts.unknown_frees, MAX_ANOMALY_DETAILS as u64 + 20);
    assert_eq!(model.anomalies.len(), LATEST);
    assert_eq!(model.anomalies[0].key.buffer_id, MAX_ANOMALY_DETAILS as u64 + 19);
    assert_eq!(model.mark_count, 12);
    assert_eq!(model.marks.len(), LATEST);
    assert_eq!(model.marks[0].label, "step-11");
}

#[test]
fn screen_shows_devices_kinds_processes_anomalies_and_marks() {
    let (s, table) = busy();
    let model = model_of(&s, &table, LossBlock::default());
    let buf = draw(&model, 100, 30);
    let lines = lines(&buf);
    let screen = lines.join("\n");
    println!("{screen}");
    assert!(lines[0].contains("ring test  "), "a ring in /dev/shm by its name: {screen}");
    assert!(screen.contains("2.0k records/s"), "{screen}");
    assert!(screen.contains("device 0"), "{screen}");
    assert!(screen.contains("device 1"), "{screen}");
    // used/total where the capacity is known, used and peak where not.
    assert!(line_with(&lines, "L1 ").contains("1.0 MiB / 4.0 MiB"), "{screen}");
    assert!(line_with(&lines, "DRAM ").contains("2.0 MiB (peak 8.0 MiB)"), "{screen}");
    assert!(line_with(&lines, "device 1").contains("0 B / 1.0 GiB"), "{screen}");
    // Each kind row ends with its sparkline (one sample so far).
    assert!(line_with(&lines, "L1 ").trim_end().ends_with(['\u{2584}', '\u{2585}']), "{screen}");
    // Processes with their state, not the watch itself.
    let model_row = line_with(&lines, " model ");
    assert!(
        model_row.contains("100") && model_row.contains("running") && model_row.contains("3.0 MiB"),
        "{screen}"
    );
    assert!(line_with(&lines, "worker").contains("died"), "{screen}");
    assert_eq!(fg_of(&buf, "worker", "died"), Color::Red);
    assert_eq!(fg_of(&buf, " model ", "running"), Color::Green);
    assert!(!screen.contains(&OWN_PID.to_string()), "{screen}");
    assert!(screen.contains("processes (2)"), "{screen}");
    // Anomalies, newest first, and the mark.
    assert!(screen.contains("anomalies (2): 1 unknown_free, 1 size_mismatch"), "{screen}");
    let mismatch = find(&buf, "size_mismatch process 0.1 pid 100").unwrap();
    let unknown = find(&buf, "unknown_free process 0.1 pid 100").unwrap();
    assert!(mismatch.1 < unknown.1, "newest first: {screen}");
    assert!(line_with(&lines, "size_mismatch process").contains("freed 512 B of 1.0 MiB"), "{screen}");
    assert!(line_with(&lines, "epoch-1").contains("process 0.1 pid 100"), "{screen}");
}

#[test]
fn the_bar_is_filled_in_proportion() {
    let (s, table) = busy();
    let model = model_of(&s, &table, LossBlock::default());
    let buf = draw(&model, 100, 30);
    let lines = lines(&buf);
    // L1 is a quarter full: a quarter of its bar is the filled symbol.
    let l1 = line_with(&lines, "L1 ");
    let filled = l1.matches('━').count();
    let empty = l1.matches('─').count();
    let ratio = filled as f64 / (filled + empty) as f64;
    assert!((ratio - 0.25).abs() < 0.05, "{filled} of {}: {l1}", filled + empty);
    assert_eq!(fg_of(&buf, "L1 ", "━"), Color::Green, "a quarter of the total");
    assert_eq!(fg_of(&buf, "DRAM ", "━"), Color::Cyan, "no total: scaled to the peak");
    // DRAM has no total: its bar is a quarter of its peak.
    let dram = line_with(&lines, "DRAM ");
    let filled = dram.matches('━').count() as f64;
    assert!((filled / (filled + dram.matches('─').count() as f64) - 0.25).abs() < 0.05, "{dram}");
}

#[test]
fn losses_are_red_only_when_nonzero() {
    let (s, table) = busy();
    let clean = draw(&model_of(&s, &table, LossBlock::default()), 100, 30);
    let line = line_with(&lines(&clean), "lost:").to_owned();
    assert!(line.contains("dropped 0  writer died 0  reader died 0"), "{line}");
    let (x, y) = find(&clean, "dropped 0").unwrap();
    assert_ne!(clean[(x + 8, y)].fg, Color::Red);

    let progress = Progress { lost_writer_died: 3, ..Default::default() };
    let lossy = draw(&model_of(&s, &table, LossBlock::new(17, &progress, 0)), 100, 30);
    let (x, y) = find(&lossy, "dropped 17").unwrap();
    let number = &lossy[(x + 8, y)];
    assert_eq!((number.symbol(), number.fg), ("1", Color::Red));
    assert!(number.modifier.contains(Modifier::BOLD));
    let (x, y) = find(&lossy, "writer died 3").unwrap();
    assert_eq!(lossy[(x + 12, y)].fg, Color::Red);
    let (x, y) = find(&lossy, "reader died 0").unwrap();
    assert_ne!(lossy[(x + 12, y)].fg, Color::Red);
}

/// A ring whose consumer stops at a corrupt slot gets a red line below
/// the losses naming it, its ticket and the records behind (the sub-ring's
/// index, or the shared ring), summed up where the line does not fit; none
/// in a sound ring.
#[test]
fn a_ring_stopped_at_a_corrupt_slot_is_named_below_the_losses() {
    let (s, mut table) = busy();
    let sound = draw(&model_of(&s, &table, LossBlock::default()), 160, 30);
    assert!(!text(&sound).contains("stopped"), "{}", text(&sound));

    table.corrupt = vec![
        CorruptStop { subring: None, ticket: 0, behind: 5 },
        CorruptStop { subring: Some(3), ticket: 2, behind: 1 },
    ];
    let model = model_of(&s, &table, LossBlock::default());
    assert_eq!(model.corrupt, table.corrupt);
    let wide = draw(&model, 160, 30);
    let all = lines(&wide);
    let line = line_with(&all, "stopped at a corrupt slot:");
    assert_eq!(
        line.trim_end(),
        "stopped at a corrupt slot: the shared ring at ticket 0 (5 records behind)  \
         sub-ring 3 at ticket 2 (1 record behind)"
    );
    assert_eq!(fg_of(&wide, "stopped at", "stopped at"), Color::Red);
    assert_ne!(fg_of(&wide, "stopped at", "sub-ring 3"), Color::Red);
    assert_eq!(find(&wide, "stopped at").unwrap().1, find(&wide, "lost:").unwrap().1 + 1);
    // The devices, processes and events still show.
    let screen = text(&wide);
    for section in ["device 0", "processes (2)", "anomalies (2)", "marks (1)"] {
        assert!(screen.contains(section), "{section}: {screen}");
    }

    let narrow = draw(&model, 60, 30);
    let line = line_with(&lines(&narrow), "stopped at").trim_end().to_owned();
    assert_eq!(line, "stopped at a corrupt slot: 2 rings, 6 records behind");

    for (width, height) in [(0, 0), (10, 2), (20, 3), (40, 4), (40, 12), (80, 6)] {
        let plan = Plan::new(Rect::new(0, 0, width, height), &model, 0);
        assert_eq!(plan.stopped, u16::from(height >= 3), "{width}x{height}: {plan:?}");
        let used = plan.header + plan.losses + plan.stopped + plan.devices.iter().sum::<u16>();
        assert!(used + plan.processes + plan.events <= height, "{width}x{height}: {plan:?}");
        draw(&model, width, height);
    }
}

#[test]
fn an_empty_ring_says_so() {
    let s = Stream::new(1_000_000);
    let model = model_of(&s, &snapshot(vec![], vec![], vec![]), LossBlock::default());
    let screen = text(&draw(&model, 80, 24));
    assert!(screen.contains("no writer processes attached"), "{screen}");
    assert!(screen.contains("anomalies (0)"), "{screen}");
    assert!(screen.contains("marks (0)"), "{screen}");
}

#[test]
fn a_small_terminal_shortens_panels_and_never_panics() {
    let (mut s, table) = busy();
    for m in 0..5 {
        s.labelled(Event::Mark, 100, 0, &format!("m{m}"));
    }
    let model = model_of(&s, &table, LossBlock::new(4, &Progress::default(), 1));
    for width in [0, 1, 2, 5, 10, 20, 39, 40, 41, 69, 70, 79, 80, 200] {
        for height in [0, 1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 60] {
            for first in [0, 1, 5] {
                let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
                terminal
                    .draw(|frame| {
                        render(frame, &model, first);
                    })
                    .unwrap();
                let plan = Plan::new(Rect::new(0, 0, width, height), &model, first);
                let used = plan.header
                    + plan.losses
                    + plan.stopped
                    + plan.devices.iter().sum::<u16>()
                    + plan.processes
                    + plan.events;
                assert!(used <= height, "{width}x{height}: {plan:?}");
                assert!(plan.first <= 1, "clamped to the last device: {plan:?}");
            }
        }
    }
    // 40x12: the header, the losses, a device, and the processes,
    // anomalies and marks shortened, not left out.
    let buf = draw(&model, 40, 12);
    let screen = text(&buf);
    println!("{screen}");
    assert!(screen.contains("memtrack watch"), "{screen}");
    assert!(screen.contains("dropped 4"), "{screen}");
    assert!(screen.contains("device 0") && screen.contains("1.0 MiB / 4.0 MiB"), "{screen}");
    for panel in ["processes (2", "anomalies (2)", "marks (6)"] {
        assert!(screen.contains(panel), "{panel}: {screen}");
    }
}

/// 32 devices of three kinds each (DRAM 12 GiB, L1 1.5 MiB, L1_SMALL with
/// no capacity), a writer, an anomaly and marks.
fn galaxy() -> Model {
    let mut s = Stream::new(1_000_000);
    s.labelled(Event::ProcessStart, 100, 0, "model");
    let mut capacities = Vec::new();
    for device in 0..32 {
        s.capacity(device, DRAM, 12 << 30);
        s.capacity(device, L1, 1_536 << 10);
        capacities.push(Capacity { device_id: device, kind: DRAM, bytes: 12 << 30 });
        capacities.push(Capacity { device_id: device, kind: L1, bytes: 1_536 << 10 });
        s.buffer(Event::Alloc, 100, device, DRAM, 1, 260 << 20);
        s.buffer(Event::Alloc, 100, device, L1, 2, 1_536 << 10);
        s.buffer(Event::Alloc, 100, device, memtrack::format::kind::L1_SMALL, 3, 4096);
    }
    s.buffer(Event::Free, 100, 5, L1, 99, 64); // unknown free
    for m in 0..3 {
        s.labelled(Event::Mark, 100, 0, &format!("layer-{m}"));
    }
    let table = snapshot(vec![process(0, 100, "model", ProcessState::Running)], vec![], capacities);
    model_of(&s, &table, LossBlock::default())
}

fn draw_from(model: &Model, width: u16, height: u16, first: usize) -> (Buffer, super::view::Shown) {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    let mut shown = None;
    terminal.draw(|frame| shown = Some(render(frame, model, first))).unwrap();
    (terminal.backend().buffer().clone(), shown.unwrap())
}

#[test]
fn many_devices_scroll_and_say_which_are_shown() {
    let model = galaxy();
    for (width, height) in [(80, 24), (160, 48)] {
        let (buf, shown) = draw_from(&model, width, height, 0);
        let screen = text(&buf);
        println!("{width}x{height}:\n{screen}");
        assert!(shown.count >= 1 && shown.count < 32, "{shown:?}");
        let range = format!("devices 1\u{2013}{} of 32", shown.count);
        assert!(lines(&buf)[0].contains(&range), "{range}: {screen}");
        assert!(lines(&buf)[0].contains("q quits"), "{screen}");
        for device in 0..shown.count {
            assert!(screen.contains(&format!("device {device} ")), "device {device}: {screen}");
        }
        assert!(!screen.contains(&format!("device {} ", shown.count)), "{screen}");
        // Every kind with a capacity as used / total; without, used and peak.
        assert!(line_with(&lines(&buf), "L1 ").contains("1.5 MiB / 1.5 MiB"), "{screen}");
        assert!(line_with(&lines(&buf), "DRAM ").contains("260.0 MiB / 12.0 GiB"), "{screen}");
        assert!(line_with(&lines(&buf), "L1_SMALL").contains("4.0 KiB (peak 4.0 KiB)"), "{screen}");
        // The panels are there, shortened.
        for panel in ["processes (1)", "anomalies (1)", "marks (3)", "model", "unknown_free", "layer-2"] {
            assert!(screen.contains(panel), "{panel} at {width}x{height}: {screen}");
        }

        // The next page starts where this one ended; the last one ends
        // with device 31.
        let (buf, next) = draw_from(&model, width, height, shown.first + shown.count);
        let screen = text(&buf);
        assert_eq!(next.first, shown.count);
        assert!(screen.contains(&format!("device {} ", shown.count)), "{screen}");
        let (buf, last) = draw_from(&model, width, height, 32 - shown.count);
        let screen = text(&buf);
        assert!(screen.contains("device 31 "), "{screen}");
        let range = format!("devices {}\u{2013}32 of 32", 32 - shown.count + 1);
        assert!(lines(&buf)[0].contains(&range), "{range}: {screen}");
        assert_eq!(last.first + last.count, 32);
    }
}

#[test]
fn each_sparkline_is_scaled_to_its_own_kind() {
    let mut s = Stream::new(1_000_000);
    s.capacity(0, DRAM, 12 << 30);
    s.capacity(0, L1, 1_536 << 10);
    s.buffer(Event::Alloc, 100, 0, DRAM, 1, 260 << 20);
    s.buffer(Event::Alloc, 100, 0, L1, 2, 1 << 20);
    let start = Instant::now();
    let mut model = Model::new("r".into(), None, OWN_PID, start);
    let empty = snapshot(vec![], vec![], vec![]);
    let sample = |model: &mut Model, s: &Stream, i: u64| {
        model.sample(&s.engine, LossBlock::default(), &empty, start + Duration::from_millis(i))
    };
    sample(&mut model, &s, 1);
    s.buffer(Event::Alloc, 100, 0, L1, 3, 512 << 10); // L1 full: 1.5 of 1.5 MiB
    sample(&mut model, &s, 2);
    s.buffer(Event::Free, 100, 0, L1, 3, 512 << 10);
    s.buffer(Event::Free, 100, 0, L1, 2, 1 << 20);
    sample(&mut model, &s, 3);
    let (buf, _) = draw_from(&model, 120, 24, 0);
    let lines = lines(&buf);
    // L1: 1 MiB, 1.5 MiB (its peak: a full block), then 0 — newest at the
    // right. Scaled to DRAM + L1 capacity, all three would be blank.
    let l1 = line_with(&lines, "L1 ");
    assert!(l1.ends_with("\u{2585}\u{2588} "), "{l1:?}");
    // DRAM holds 2 % of its 12 GiB, unchanged: a full block of its own
    // peak, not a blank line.
    let dram = line_with(&lines, "DRAM ").trim_end();
    assert!(dram.ends_with("\u{2588}\u{2588}\u{2588}"), "{dram:?}");
    assert!(line_with(&lines, "DRAM ").contains("260.0 MiB / 12.0 GiB"));
}

#[test]
fn the_header_shortens_the_ring_path_before_leaving_things_out() {
    let mut model = galaxy();
    assert!(lines(&draw_from(&model, 160, 48, 0).0)[0].contains("ring test  "));
    model.ring = "/tmp/elsewhere".into();
    assert!(lines(&draw_from(&model, 160, 48, 0).0)[0].contains("ring /tmp/elsewhere  "));
    model.ring =
        format!("{}/{}{}", memtrack::SHM_DIR, memtrack::RING_FILE_PREFIX, "long-ring-name-".repeat(8));
    let (buf, _) = draw_from(&model, 80, 24, 0);
    let header = lines(&buf)[0].clone();
    for part in [
        "memtrack watch",
        "devices 1\u{2013}",
        "of 32",
        "PgUp PgDn",
        "q quits",
        "ring \u{2026}",
        "-ring-name-",
    ] {
        assert!(header.contains(part), "{part}: {header}");
    }
    assert!(!header.contains("/dev/shm"), "a ring in /dev/shm is shown by its name: {header}");
    let (buf, _) = draw_from(&model, 34, 24, 0);
    let header = lines(&buf)[0].clone();
    assert!(header.starts_with("memtrack watch  devices 1"), "{header}");
}

#[test]
fn rates_read_naturally() {
    assert_eq!(rate(0.0), "0 records/s");
    assert_eq!(rate(840.4), "840 records/s");
    assert_eq!(rate(12_500.0), "12.5k records/s");
    assert_eq!(rate(3_100_000.0), "3.1M records/s");
}

#[test]
fn escapes_in_names_labels_and_the_ring_path_reach_the_screen_escaped() {
    let mut s = Stream::new(1_000_000);
    s.labelled(Event::ProcessStart, 100, 0, "w\x1b]0;x\x07");
    s.labelled(Event::Mark, 100, 0, "m\x1b]52;c;eA==\x07\nz");
    let table = snapshot(vec![process(0, 100, "w\x1b]0;x\x07", ProcessState::Running)], vec![], vec![]);
    let start = Instant::now();
    let mut model = Model::new("/dev/shm/memtrack-\x1b[2J".into(), None, OWN_PID, start);
    model.sample(&s.engine, LossBlock::default(), &table, start + Duration::from_millis(250));
    let screen = text(&draw(&model, 120, 30));
    assert!(!screen.contains(|c: char| c.is_control() && c != '\n'), "{screen:?}");
    assert!(screen.contains("w\\x1b]0;x\\x07"), "{screen}");
    assert!(screen.contains("m\\x1b]52;c;eA==\\x07\\nz"), "{screen}");
    // A ring in /dev/shm is shown by its name.
    assert!(screen.contains("ring \\x1b[2J"), "{screen}");
}

#[test]
fn anomalies_and_marks_name_their_process_by_key_where_pids_repeat() {
    // Two writers that are both pid 7 (two containers), in entries 1 and 2.
    let mut s = Stream::new(1_000);
    for slot in [1u16, 2] {
        s.labelled(Event::ProcessStart, 7, slot, "w");
        let mut free = buffer_record(Event::Free, 7, 0, L1, 50 + u64::from(slot), 64);
        free.process_slot = slot;
        s.push(free); // unknown free
        s.labelled(Event::Mark, 7, slot, &format!("step-{slot}"));
    }
    let model = model_of(&s, &snapshot(vec![], vec![], vec![]), LossBlock::default());
    let lines = lines(&draw(&model, 120, 30));
    for slot in [1, 2] {
        let who = format!("process {slot}.1 pid 7");
        assert!(line_with(&lines, &format!("buffer 5{slot}")).contains(&who), "{lines:#?}");
        assert!(line_with(&lines, &format!("step-{slot}")).contains(&who), "{lines:#?}");
    }
}
