//! `memtrack status` run as a user would: the built binary, a real ring.

mod common;

use common::{
    corrupt_subring_ticket_2_and_shared_ticket_0, five_allocs_in_a_subring, l1_buffer, memtrack,
    ring_with_writer,
};
use memtrack::format::kind;

#[test]
fn status_json_shows_live_usage_without_consuming() {
    let (path, writer) = ring_with_writer("cli-status");
    writer.set_capacity(2, kind::L1, 1 << 20);
    writer.free(&l1_buffer(0));

    let out = memtrack(&["status", "--ring", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["schema"], "memtrack.status/1");
    assert_eq!(doc["usage"][0]["kind"], "L1");
    assert_eq!(doc["usage"][0]["live_bytes"], 2000);
    assert_eq!(doc["usage"][0]["live_buffers"], 2);
    assert_eq!(doc["capacities"][0]["bytes"], 1 << 20);
    assert_eq!(doc["processes"][0]["name"], "model");
    assert_eq!(doc["processes"][0]["state"], "running");
    assert_eq!(doc["records"]["delivered"], 0, "status does not consume");

    let text = memtrack(&["status", "--ring", path.to_str().unwrap()]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("2000 B") || text.contains("2.0 KiB"), "{text}");
    assert!(text.contains("1.0 MiB"), "{text}");

    let listing = memtrack(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap().strip_prefix("memtrack-").unwrap();
    assert!(doc["rings"].as_array().unwrap().iter().any(|r| r == name));
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}

/// Format 2: a device id past 64 and a kind past 8 are shown with their
/// capacity, and sizes of 2^43 and 2^62 bytes exactly.
#[test]
fn status_shows_any_device_and_kind_and_huge_sizes_exactly() {
    let (path, writer) = ring_with_writer("cli-status-v2");
    writer.set_capacity(100, 9, 32 << 30);
    for id in 10..14 {
        writer.alloc(&memtrack::MemtrackBuffer { size: 256 << 20, device_id: 100, kind: 9, ..l1_buffer(id) });
    }
    writer.alloc(&memtrack::MemtrackBuffer {
        size: 1 << 43,
        device_id: 7,
        kind: kind::DRAM,
        ..l1_buffer(20)
    });
    writer.alloc(&memtrack::MemtrackBuffer {
        size: 1 << 62,
        device_id: 8,
        kind: kind::DRAM,
        ..l1_buffer(21)
    });

    let out = memtrack(&["status", "--ring", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let usage = |device: u64| {
        let cells = doc["usage"].as_array().unwrap();
        cells
            .iter()
            .find(|c| c["device_id"] == device)
            .unwrap_or_else(|| panic!("device {device}: {doc}"))
            .clone()
    };
    assert_eq!(usage(100)["kind"], "KIND_9");
    assert_eq!(usage(100)["live_bytes"], 1u64 << 30);
    assert_eq!(usage(100)["live_buffers"], 4);
    assert_eq!(usage(7)["live_bytes"], 1u64 << 43);
    assert_eq!(usage(8)["live_bytes"], 1u64 << 62);
    let capacity = doc["capacities"].as_array().unwrap().iter().find(|c| c["device_id"] == 100).cloned();
    assert_eq!(capacity.unwrap()["bytes"], 32u64 << 30);
    assert_eq!(doc["untracked"]["events"], 0);

    let text = String::from_utf8(memtrack(&["status", "--ring", path.to_str().unwrap()]).stdout).unwrap();
    let row = text.lines().find(|l| l.trim_start().starts_with("100 ")).unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("KIND_9") && row.contains("1.0 GiB") && row.contains("32.0 GiB"), "{row}");
    let row = text.lines().find(|l| l.trim_start().starts_with("7 ")).unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains(" 8.0 TiB"), "2^43 B, not -8 TiB: {row}");
    assert!(!text.contains("-8.0"), "{text}");
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}

/// A counter pool filled to the brim: status shows the untracked figure
/// in text, JSON and CSV.
#[test]
fn status_shows_the_untracked_figure_of_a_full_counter_pool() {
    let path = memtrack::ring_path(&format!("cli-status-full-pool-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let options = memtrack::RingOptions {
        capacity: 64,
        counter_cells: memtrack::format::MIN_COUNTER_CELLS,
        ..memtrack::RingOptions::default()
    };
    let writer =
        memtrack::Writer::attach_named(memtrack::Ring::create(&path, options).unwrap(), b"many").unwrap();
    let devices = memtrack::format::MIN_COUNTER_CELLS + 10;
    for device in 0..devices {
        writer.alloc(&memtrack::MemtrackBuffer { device_id: device, ..l1_buffer(device as u64) });
    }
    let ring = path.to_str().unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(&memtrack(&["status", "--ring", ring, "--json"]).stdout).unwrap();
    assert_eq!(doc["untracked"]["events"], 10, "{doc}");
    assert_eq!(doc["untracked"]["bytes"], 10 * 1000);
    assert_eq!(doc["untracked"]["buffers"], 10);
    assert_eq!(doc["processes"][0]["untracked_events"], 10);
    let text = String::from_utf8(memtrack(&["status", "--ring", ring]).stdout).unwrap();
    assert!(text.contains("untracked") && text.contains("10 events found the counter pool full"), "{text}");
    let csv = String::from_utf8(memtrack(&["status", "--ring", ring, "--format", "csv"]).stdout).unwrap();
    assert!(csv.lines().any(|l| l == "untracked,,10000,,"), "{csv}");
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}

/// A buffer allocated on one thread (counted in its lane's cell) and freed
/// on another whose lane finds the pool full (counted untracked, −4096):
/// status takes the deficit off the device row, marks it approximate, and
/// shows no held bytes: rows plus untracked add up to what is held.
#[test]
fn status_nets_a_free_counted_untracked_against_the_device_and_marks_it_approximate() {
    let path = memtrack::ring_path(&format!("cli-status-untracked-free-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let options = memtrack::RingOptions {
        capacity: 1024,
        counter_cells: memtrack::format::MIN_COUNTER_CELLS,
        ..memtrack::RingOptions::default()
    };
    let writer =
        memtrack::Writer::attach_named(memtrack::Ring::create(&path, options).unwrap(), b"netted").unwrap();
    let buffer = memtrack::MemtrackBuffer { buffer_id: 1, size: 4096, device_id: 1000, ..Default::default() };
    let (allocated, filled, done) =
        (std::sync::Barrier::new(2), std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            writer.alloc(&buffer); // This thread's lane's cell.
            allocated.wait();
            done.wait();
        });
        s.spawn(|| {
            allocated.wait();
            // Balanced pairs on other devices fill the pool from another lane.
            for device in 0..2 * memtrack::format::MIN_COUNTER_CELLS {
                let b = memtrack::MemtrackBuffer {
                    buffer_id: 2,
                    size: 1,
                    device_id: device,
                    ..Default::default()
                };
                writer.alloc(&b);
                writer.free(&b);
            }
            filled.wait();
        });
        filled.wait();
        writer.free(&buffer); // A third lane: no cell for device 1000.
        done.wait();
    });
    assert_eq!(writer.untracked().0, -4096, "the free was counted untracked");
    let ring = path.to_str().unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(&memtrack(&["status", "--ring", ring, "--json"]).stdout).unwrap();
    assert_eq!(doc["untracked"]["bytes"], 0, "{doc}");
    let row = doc["usage"].as_array().unwrap().iter().find(|c| c["device_id"] == 1000).cloned();
    let row = row.unwrap_or_else(|| panic!("device 1000: {doc}"));
    assert_eq!(
        (&row["live_bytes"], &row["live_buffers"], &row["approximate"]),
        (&0.into(), &0.into(), &true.into())
    );
    let text = String::from_utf8(memtrack(&["status", "--ring", ring]).stdout).unwrap();
    let line = text.lines().find(|l| l.trim_start().starts_with("1000 ")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("~0 B"), "{text}");
    assert!(text.contains("~ approximate"), "{text}");
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn status_of_a_bad_ring_is_one_line_and_exit_1() {
    let path = std::env::temp_dir().join(format!("memtrack-cli-bad-{}", std::process::id()));
    std::fs::write(&path, b"definitely not a ring").unwrap();
    let out = memtrack(&["status", "--ring", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(path.to_str().unwrap()) && stderr.contains("shorter than a header"), "{stderr}");
}

#[test]
fn status_usage_is_never_negative_and_leaves_out_ended_processes() {
    let (path, writer) = ring_with_writer("cli-status-negative");
    // Frees of buffers allocated before tracking: the writer's cell for
    // device 5 goes negative.
    for id in 100..103 {
        writer.free(&memtrack::MemtrackBuffer { device_id: 5, ..l1_buffer(id) });
    }
    let status = |path: &std::path::Path| {
        let out = memtrack(&["status", "--ring", path.to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let doc = status(&path);
    let cells = doc["usage"].as_array().unwrap();
    assert!(cells.iter().all(|c| c["live_bytes"].as_i64().unwrap() >= 0), "{cells:?}");
    let text = String::from_utf8(memtrack(&["status", "--ring", path.to_str().unwrap()]).stdout).unwrap();
    let negative = |t: &str| {
        t.split_whitespace().any(|w| w.starts_with('-') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
    };
    assert!(!negative(&text), "{text}");
    assert!(text.contains("2.9 KiB") || text.contains("3000 B"), "the three live buffers: {text}");

    // A process that exited holds no device memory; its leftovers stay its own.
    writer.shutdown();
    let text = String::from_utf8(memtrack(&["status", "--ring", path.to_str().unwrap()]).stdout).unwrap();
    assert!(text.contains("(no live buffers)"), "{text}");
    assert!(text.contains("exited"), "{text}");
    // Its row shows what it left, under a header that says so (it read
    // "used", beside devices with nothing in use).
    assert!(text.contains("used/left"), "{text}");
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn status_csv_and_json_lines_one_per_device_and_kind() {
    let (path, writer) = ring_with_writer("cli-status-csv");
    writer.set_capacity(2, kind::L1, 10_000); // 3000 used: 30.0 %
    writer.alloc(&memtrack::MemtrackBuffer {
        buffer_id: 9,
        size: 512,
        device_id: 0,
        kind: kind::DRAM,
        ..Default::default()
    });
    writer.set_capacity(1, kind::L1, 1 << 20); // a capacity, nothing used
    let ring = path.to_str().unwrap();

    let out = memtrack(&["status", "--ring", ring, "--format", "csv"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "device,kind,used,total,percent\n0,DRAM,512,,\n1,L1,0,1048576,0.0\n2,L1,3000,10000,30.0\n"
    );

    let out = memtrack(&[
        "status",
        "--ring",
        ring,
        "--format",
        "csv,noheader",
        "--query",
        "kind,free,buffers,ring",
    ]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("DRAM,,1,{ring}\nL1,1048576,0,{ring}\nL1,7000,3,{ring}\n")
    );

    let out = memtrack(&[
        "status",
        "--ring",
        ring,
        "--format",
        "json",
        "--query",
        "device,kind,used,total,percent",
    ]);
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[2],
        serde_json::json!({"device": 2, "kind": "L1", "used": 3000, "total": 10000, "percent": 30.0})
    );
    assert_eq!(lines[0]["total"], serde_json::Value::Null);

    // Without --ring: every ring in /dev/shm, this one among them.
    let out = memtrack(&["status", "--format", "csv", "--query", "ring,device,kind,used"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().any(|l| l == format!("{ring},2,L1,3000")), "{text}");

    // Bad fields and formats: one line naming them, exit 1.
    for (args, reason) in
        [(&["--query", "used,nope"][..], "unknown field \"nope\""), (&["--format", "xml"][..], "\"xml\"")]
    {
        let mut all = vec!["status", "--ring", ring];
        all.extend_from_slice(args);
        if !all.contains(&"--format") {
            all.extend_from_slice(&["--format", "csv"]);
        }
        let out = memtrack(&all);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.lines().count() == 1 && stderr.contains(reason), "{stderr}");
    }
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn status_loop_repeats_with_one_csv_header_until_interrupted() {
    let (path, writer) = ring_with_writer("cli-status-loop");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args(["status", "--ring", path.to_str().unwrap(), "--format", "csv", "-l", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(lines.next().unwrap().unwrap());
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    seen.extend(lines.map(Result::unwrap));
    assert!(child.wait().unwrap().success());
    assert_eq!(seen[0], "device,kind,used,total,percent");
    assert!(seen[1..].iter().all(|l| l == "2,L1,3000,,"), "{seen:?}");
    assert!(seen.len() >= 3);
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}

/// Format 3: status counts the sub-rings held by threads of live
/// processes, in text and JSON, without consuming; a thread's exit frees
/// its sub-ring. (The test's own thread holds one too: it wrote the
/// ring's first buffers, and sub-ring writes are on by default.)
#[test]
fn status_shows_the_sub_rings_in_use() {
    let (path, writer) = ring_with_writer("cli-status-subrings");
    writer.use_subrings(true);
    let ring = path.to_str().unwrap();
    let json = || -> serde_json::Value {
        serde_json::from_slice(&memtrack(&["status", "--ring", ring, "--json"]).stdout).unwrap()
    };
    let before = json()["subrings"]["in_use"].as_u64().unwrap();
    assert_eq!(before, 1, "the test's thread wrote through its sub-ring");
    let (holding, checked) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    // Both looks are taken while the thread holds its sub-ring, and checked
    // once it has gone (a failed check must not leave it waiting).
    let (doc, text) = std::thread::scope(|s| {
        let thread = s.spawn(|| {
            writer.alloc(&l1_buffer(1));
            holding.wait();
            checked.wait();
        });
        holding.wait();
        let looks = (json(), String::from_utf8(memtrack(&["status", "--ring", ring]).stdout).unwrap());
        checked.wait();
        thread.join().unwrap();
        looks
    });
    assert_eq!(doc["subrings"], serde_json::json!({"total": 32, "in_use": before + 1, "capacity": 8192}));
    assert!(text.contains(&format!("sub-rings: {} in use of 32 (8192 slots each)", before + 1)), "{text}");
    assert_eq!(json()["subrings"]["in_use"], before, "given back at thread exit");
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}

/// A slot holding a state the protocol never writes (a damaged file)
/// stops its ring's delivery for good: `status` names the ring (a
/// sub-ring, the shared ring), the ring's ticket where the consumer
/// stops and how many claimed records wait behind it, in text and JSON
/// (`corrupt_slots`, empty for a sound file).
#[test]
fn status_names_each_ring_stopped_at_a_corrupt_slot() {
    let path = memtrack::ring_path(&format!("cli-status-corrupt-{}", std::process::id()));
    let (writer, subring, in_shared) = five_allocs_in_a_subring(&path, l1_buffer);
    let ring = path.to_str().unwrap();
    let json = || -> serde_json::Value {
        let out = memtrack(&["status", "--ring", ring, "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(json()["corrupt_slots"], serde_json::json!([]), "a sound file");
    corrupt_subring_ticket_2_and_shared_ticket_0(&path, subring);
    let shared_behind = in_shared - 1;
    assert_eq!(
        json()["corrupt_slots"],
        serde_json::json!([
            {"subring": null, "ticket": 0, "records_behind": shared_behind},
            {"subring": subring, "ticket": 2, "records_behind": 2},
        ])
    );
    let out = memtrack(&["status", "--ring", ring]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("stopped: ")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("stopped: the shared ring at ticket 0: "), "{text}");
    assert!(lines[0].ends_with(&format!("({shared_behind} claimed behind it)")), "{text}");
    assert!(lines[1].starts_with(&format!("stopped: sub-ring {subring} at ticket 2: ")), "{text}");
    assert!(lines[1].contains("no record of sub-ring"), "{text}");
    assert!(lines[1].ends_with("(2 claimed behind it)"), "{text}");
    // What status says is what a consumer does: the sub-ring's tickets 0
    // and 1 come out, nothing of the shared ring, and it stops there.
    let mut consumer = memtrack::Consumer::attach(&path).unwrap();
    let mut delivered = Vec::new();
    consumer
        .drain(usize::MAX, &mut Vec::new(), |records| {
            delivered.extend(records.iter().map(|r| r.buffer_id));
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!(delivered, [0, 1], "the records below the corrupt slots, no more");
    assert_eq!(json()["corrupt_slots"][1]["records_behind"], 2, "the consumer stopped there");
    drop(consumer);
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}
