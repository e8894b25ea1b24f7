//! `memtrack watch` without a terminal, and `memtrack status --interval`,
//! run as a user would: the built binary, a real ring.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

use common::{corrupt_subring_ticket_2_and_shared_ticket_0, five_allocs_in_a_subring, ring_with_writer};
use memtrack::ring_path;

fn memtrack() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memtrack"))
}

/// Runs `memtrack args`, sends it Ctrl-C (SIGINT) after `after`, and
/// returns its exit status and stdout.
fn run_then_interrupt(args: &[&str], after: Duration) -> (std::process::ExitStatus, String) {
    let mut child = memtrack().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(after);
    // SAFETY: kill has no memory-safety preconditions; the pid is our
    // child's, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let status = child.wait().unwrap();
    (status, stdout)
}

#[test]
fn watch_without_a_terminal_is_one_line_pointing_at_status() {
    let path = ring_path(&format!("cli-watch-pipe-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let out = memtrack().args(["watch", "--ring", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing drawn into a pipe");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("memtrack: ") && stderr.contains("terminal"), "{stderr}");
    assert!(stderr.contains("memtrack status") && stderr.contains("--interval"), "{stderr}");
    assert!(stderr.contains("memtrack record"), "{stderr}");
    assert!(!path.exists(), "refused before creating or consuming the ring");
}

#[test]
fn status_json_interval_prints_one_flushed_document_per_line_until_ctrl_c() {
    let (path, writer) = ring_with_writer("cli-status-interval-json");
    let mut child = memtrack()
        .args(["status", "--ring", path.to_str().unwrap(), "--json", "--interval", "50"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Lines arrive while it runs: each is flushed into the pipe at once.
    let mut lines: Vec<String> =
        (0..3).map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("a line while it runs")).collect();
    std::thread::sleep(Duration::from_millis(150));
    // SAFETY: kill has no memory-safety preconditions; the pid is our
    // child's, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C ends it cleanly: {status:?}");
    lines.extend(rx.iter());
    let docs: Vec<serde_json::Value> =
        lines.iter().map(|l| serde_json::from_str(l).expect("each line one JSON document")).collect();
    assert!(docs.len() >= 4, "every 50 ms: {lines:?}");
    let mut last = 0;
    for doc in &docs {
        assert_eq!(doc["schema"], "memtrack.status/1");
        assert_eq!(doc["usage"][0]["live_bytes"], 3000);
        assert_eq!(doc["processes"][0]["name"], "model");
        let time = doc["time_unix_ns"].as_u64().expect("a timestamp");
        assert!(time > last, "timestamps increase");
        last = time;
    }
    let first = docs[0]["time_unix_ns"].as_u64().unwrap();
    let second = docs[1]["time_unix_ns"].as_u64().unwrap();
    assert!(second - first >= 40_000_000, "about 50 ms apart: {}", second - first);
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn status_text_interval_stamps_each_snapshot_and_separates_them() {
    let (path, writer) = ring_with_writer("cli-status-interval-text");
    let (status, stdout) = run_then_interrupt(
        &["status", "--ring", path.to_str().unwrap(), "--interval", "50"],
        Duration::from_millis(250),
    );
    assert!(status.success(), "{status:?}");
    // 2026-11-25 11:54:59.250
    let is_stamp = |l: &str| {
        l.len() == 23 && l.bytes().filter(u8::is_ascii_digit).count() == 17 && l.as_bytes()[4] == b'-'
    };
    let lines: Vec<&str> = stdout.lines().collect();
    let stamps: Vec<usize> = (0..lines.len()).filter(|&i| is_stamp(lines[i])).collect();
    assert!(stamps.len() >= 2, "{stdout}");
    assert_eq!(stamps[0], 0, "{stdout}");
    for &i in &stamps {
        assert!(lines[i + 1].starts_with("ring "), "{stdout}");
        assert!(i == 0 || lines[i - 1].is_empty(), "a blank line between snapshots: {stdout}");
    }
    assert!(stdout.matches("model").count() >= stamps.len(), "{stdout}");
    drop(writer);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn status_interval_must_be_positive() {
    let out = memtrack().args(["status", "--interval", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    let out = memtrack().args(["watch", "--interval", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A tmux server of its own (socket `-L`), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(tag: &str) -> Tmux {
        Tmux { socket: format!("memtrack-test-{tag}-{}", std::process::id()) }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .env("LANG", "C.UTF-8")
            .output()
            .expect("tmux must be installed (.ci/run installs it)")
    }

    /// The screen of session `s`, one string per row.
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "s"]).stdout).into_owned()
    }

    /// Waits (at most 30 s) until the screen holds `text`; returns it.
    fn wait_for(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(std::time::Instant::now() < deadline, "never showed {text:?}:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// "devices A–B of N" in the header: (A, B, N).
fn device_range(screen: &str) -> (usize, usize, usize) {
    let header = screen.lines().next().unwrap_or("");
    let rest = header.split("devices ").nth(1).unwrap_or_else(|| panic!("no device range: {header}"));
    let (range, rest) = rest.split_once(" of ").unwrap();
    let (a, b) = range.split_once('\u{2013}').unwrap();
    let n = rest.split_whitespace().next().unwrap();
    (a.parse().unwrap(), b.parse().unwrap(), n.parse().unwrap())
}

#[test]
fn watch_in_tmux_pages_through_32_devices_at_80x24_and_160x48() {
    use memtrack::format::kind;
    use memtrack::{MemtrackBuffer, Ring, RingOptions, Writer};

    for (width, height) in [(80u16, 24u16), (160, 48)] {
        let path = ring_path(&format!("cli-watch-tmux-{width}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let writer = Writer::attach_named(
            Ring::create(&path, RingOptions { capacity: 1024, ..RingOptions::default() }).unwrap(),
            b"model",
        )
        .unwrap();
        for device in 0..32 {
            writer.set_capacity(device, kind::DRAM, 12 << 30);
            writer.set_capacity(device, kind::L1, 1_536 << 10);
            for (id, kind, size) in
                [(1, kind::DRAM, 260 << 20), (2, kind::L1, 1 << 20), (3, kind::CB, 64 << 10)]
            {
                writer.alloc(&MemtrackBuffer {
                    buffer_id: id,
                    size,
                    device_id: device,
                    kind,
                    ..Default::default()
                });
            }
        }
        writer.free(&MemtrackBuffer {
            buffer_id: 99,
            size: 64,
            device_id: 5,
            kind: kind::L1,
            ..Default::default()
        });
        writer.mark(b"layer-1");

        let tmux = Tmux::new(&format!("{width}"));
        let command =
            format!("{} watch --ring {} --interval 100", env!("CARGO_BIN_EXE_memtrack"), path.display());
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "s",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            &command,
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let screen = tmux.wait_for("marks (1)");
        println!("{width}x{height}:\n{screen}");
        let (first, last, total) = device_range(&screen);
        assert_eq!((first, total), (1, 32), "{screen}");
        assert!(last < 32, "{screen}");
        assert!(screen.lines().count() <= height as usize);
        assert!(screen.lines().all(|l| l.chars().count() <= width as usize), "{screen}");
        // Every kind with a capacity as used / total, L1 included.
        assert!(screen.contains("1.0 MiB / 1.5 MiB"), "{screen}");
        assert!(screen.contains("260.0 MiB / 12.0 GiB"), "{screen}");
        // The panels are shortened, not dropped.
        for panel in ["processes (1)", "model", "anomalies (1)", "unknown_free", "marks (1)", "layer-1"] {
            assert!(screen.contains(panel), "{panel} at {width}x{height}:\n{screen}");
        }

        // PgDn: the next page starts after the last device shown.
        tmux.run(&["send-keys", "-t", "s", "PageDown"]);
        let screen = tmux.wait_for(&format!("devices {}\u{2013}", last + 1));
        assert!(screen.contains(&format!("device {last} ")), "{screen}");
        // End: the last page ends with device 31; Up moves one back.
        tmux.run(&["send-keys", "-t", "s", "End"]);
        let screen = tmux.wait_for("\u{2013}32 of 32");
        assert!(screen.contains("device 31 "), "{screen}");
        let (end_first, _, _) = device_range(&screen);
        tmux.run(&["send-keys", "-t", "s", "Up"]);
        tmux.wait_for(&format!("devices {}\u{2013}", end_first - 1));
        tmux.run(&["send-keys", "-t", "s", "Home"]);
        tmux.wait_for("devices 1\u{2013}");

        // q quits: the session ends with it.
        tmux.run(&["send-keys", "-t", "s", "q"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while tmux.run(&["has-session", "-t", "s"]).status.success() {
            assert!(std::time::Instant::now() < deadline, "watch did not quit on q");
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(writer);
        std::fs::remove_file(&path).unwrap();
    }
}

/// A real ring file with a corrupt slot in a sub-ring and in the shared
/// ring: `memtrack watch` (in tmux, as an operator runs it) names both
/// rings below the losses, with the ticket and the records behind each, as
/// `memtrack status` does.
#[test]
fn watch_in_tmux_names_each_ring_stopped_at_a_corrupt_slot() {
    use memtrack::MemtrackBuffer;
    use memtrack::format::kind;

    let path = ring_path(&format!("cli-watch-corrupt-{}", std::process::id()));
    let (writer, subring, in_shared) = five_allocs_in_a_subring(&path, |buffer_id| MemtrackBuffer {
        buffer_id,
        size: 4096,
        kind: kind::L1,
        ..Default::default()
    });
    corrupt_subring_ticket_2_and_shared_ticket_0(&path, subring);

    let tmux = Tmux::new("corrupt");
    let command =
        format!("{} watch --ring {} --interval 100", env!("CARGO_BIN_EXE_memtrack"), path.display());
    let out = tmux.run(&["new-session", "-d", "-s", "s", "-x", "160", "-y", "30", &command]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let screen = tmux.wait_for("stopped at a corrupt slot:");
    println!("{screen}");
    let lines: Vec<&str> = screen.lines().collect();
    let at =
        lines.iter().position(|l| l.starts_with("stopped at a corrupt slot:")).expect("a line of its own");
    assert!(lines[at - 1].starts_with("lost:"), "right below the losses:\n{screen}");
    let behind = |n: u64| if n == 1 { "1 record".to_owned() } else { format!("{n} records") };
    assert_eq!(
        lines[at].trim_end(),
        format!(
            "stopped at a corrupt slot: the shared ring at ticket 0 ({} behind)  \
             sub-ring {subring} at ticket 2 (2 records behind)",
            behind(in_shared - 1)
        ),
        "{screen}"
    );
    // What came before the corrupt slot does reach the screen: the
    // sub-ring's tickets 0 and 1, two of the five ALLOCs.
    let screen = tmux.wait_for("  2 records\n");
    assert!(screen.contains("device 0 8.0 KiB in 2 buffers"), "{screen}");
    drop(tmux);
    drop(writer);
    let _ = std::fs::remove_file(&path);
}

/// A process that died before `watch` attached, its records still in the
/// ring and its last claim never published (killed between claim and
/// publish: the backlog's last record never arrives): `watch` shows it
/// ended and its buffers out of device usage once it has read the
/// backlog, not only when some other process writes again.
#[test]
fn watch_in_tmux_ends_a_process_that_died_before_it_attached_when_its_backlog_ends_in_a_hole() {
    use memtrack::format::kind;
    use memtrack::{MemtrackBuffer, Ring, RingOptions, Writer};

    let path = ring_path(&format!("cli-watch-hole-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    drop(Ring::create(&path, RingOptions { capacity: 1024, subrings: 0, ..RingOptions::default() }).unwrap());
    // SAFETY: the child only writes the ring and leaves with _exit, running
    // no destructor and touching nothing the parent's threads hold.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let writer = Writer::attach_named(Ring::open(&path).unwrap(), b"model").unwrap();
        writer.set_capacity(0, kind::DRAM, 12 << 30);
        for id in 0..4 {
            writer.alloc(&MemtrackBuffer {
                buffer_id: id,
                size: 64 << 20,
                kind: kind::DRAM,
                ..Default::default()
            });
        }
        let claimed = writer.claim_without_publishing();
        // SAFETY: ends the child at once, as a kill would: no exit record.
        unsafe { libc::_exit(if claimed { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert_eq!(status, 0, "the child claimed its hole");

    let tmux = Tmux::new("hole");
    let command =
        format!("{} watch --ring {} --interval 100", env!("CARGO_BIN_EXE_memtrack"), path.display());
    let out = tmux.run(&["new-session", "-d", "-s", "s", "-x", "160", "-y", "48", &command]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Its records read (start, capacity, four allocs), the hole counted
    // lost, it has died, and the device shows no usage: its buffers are
    // what it left.
    let screen = tmux.wait_for(" 6 records");
    println!("{screen}");
    assert!(screen.contains(" died "), "{screen}");
    assert!(screen.contains("device 0 0 B / 12.0 GiB in 0 buffers"), "{screen}");
    tmux.run(&["send-keys", "-t", "s", "q"]);
    drop(tmux);
    std::fs::remove_file(&path).unwrap();
}
