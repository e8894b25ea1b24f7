//! What `record` and `export` do with the paths and signals users give
//! them: outputs that are rings, inputs, links, devices, FIFOs, full file
//! systems; signals sent to `record`; commands that cannot run; names
//! that hold terminal escapes. Real processes, files, signals and mounts.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{TempFile, memtrack, memtrack_env, report_json};
use memtrack::ffi::*;
use memtrack::{Ring, RingOptions, ring_path};

const ROLE: &str = "MEMTRACK_TEST_ROLE";

/// The helper processes' entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Ok(role) = std::env::var(ROLE) else { return };
    match role.as_str() {
        // `n` allocations and frees, then exit 0 (`MEMTRACK_TEST_N`).
        "busy" => {
            let n: u64 = std::env::var("MEMTRACK_TEST_N").unwrap().parse().unwrap();
            for id in 0..n {
                memtrack_alloc(0, MEMTRACK_KIND_DRAM, id, 0, 64);
                memtrack_free(0, MEMTRACK_KIND_DRAM, id, 0, 64);
            }
            memtrack_alloc(0, MEMTRACK_KIND_DRAM, n, 0, 4096);
            std::process::exit(0);
        }
        // Writes to the ring until `MEMTRACK_TEST_STOP` exists, then exits
        // 0: killed by a SIGBUS, it would exit 135.
        "steady" => {
            let stop = std::env::var("MEMTRACK_TEST_STOP").unwrap();
            let mut id = 0;
            println!("HELPER ready");
            while !Path::new(&stop).exists() {
                memtrack_alloc(0, MEMTRACK_KIND_DRAM, id, 0, 64);
                memtrack_free(0, MEMTRACK_KIND_DRAM, id, 0, 64);
                id += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            std::process::exit(0);
        }
        // Allocates, says so, and waits to be interrupted.
        "sleeper" => {
            memtrack_alloc(0, MEMTRACK_KIND_DRAM, 1, 0, 100);
            println!("HELPER ready");
            std::thread::sleep(Duration::from_secs(30));
            std::process::exit(3);
        }
        // A process name and a mark label full of terminal escapes.
        "hostile-names" => {
            // The process's comm (what `prctl(PR_SET_NAME)` sets in the main
            // thread; the test harness runs this in another thread).
            std::fs::write("/proc/self/comm", b"\x1bc\x1b]0;X\x07\nfake").unwrap();
            memtrack_alloc(0, MEMTRACK_KIND_DRAM, 1, 0, 100);
            let label = c"\x1b]52;c;cHduZWQ=\x07\n\x1b[2J\u{9b}31m";
            // SAFETY: a NUL-terminated string.
            unsafe { memtrack_mark(label.as_ptr()) };
            std::process::exit(0);
        }
        // MEMTRACK_RING is empty: tracking must stay off, with one line.
        "empty-ring" => {
            memtrack_alloc(0, MEMTRACK_KIND_DRAM, 1, 0, 100);
            assert_eq!(memtrack_enabled(), 0);
            // SAFETY: NULL: use $MEMTRACK_RING, which is empty.
            assert_eq!(unsafe { memtrack_init(std::ptr::null()) }, MEMTRACK_ERR_INVALID);
            std::process::exit(0);
        }
        other => panic!("unknown helper role {other}"),
    }
}

fn helper_command() -> Vec<String> {
    let exe = std::env::current_exe().unwrap().to_str().unwrap().to_owned();
    vec![exe, "--exact".into(), "helper".into(), "--nocapture".into(), "--test-threads=1".into()]
}

/// `memtrack record EXTRA... -- helper ROLE` with `envs`.
fn record_helper(extra: &[&str], role: &str, envs: &[(&str, &str)]) -> Output {
    let mut args = vec!["record"];
    args.extend_from_slice(extra);
    args.push("--");
    let helper = helper_command();
    args.extend(helper.iter().map(String::as_str));
    let mut envs = envs.to_vec();
    envs.push((ROLE, role));
    memtrack_env(&args, &envs)
}

/// Reads `stdout` until the helper says it is ready (the test harness
/// prints its own lines first).
fn wait_ready(stdout: std::process::ChildStdout) {
    let mut stdout = std::io::BufReader::new(stdout);
    let mut line = String::new();
    while !line.contains("HELPER ready") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0, "helper ended early");
    }
    // Keep the pipe open (a write to a closed one would kill the helper).
    std::mem::forget(stdout);
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A scratch directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("memtrack-outputs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn an_output_that_is_the_ring_is_refused_and_its_writers_keep_running() {
    let dir = Dir::new("ring-output");
    let name = format!("cli-out-svc-{}", std::process::id());
    let path = ring_path(&name);
    let _ = std::fs::remove_file(&path);
    let _ring = TempFile(path.clone());
    Ring::create(&path, RingOptions { capacity: 1024, ..RingOptions::default() }).unwrap();
    let other = TempFile(ring_path(&format!("cli-out-other-{}", std::process::id())));
    let _ = std::fs::remove_file(&other.0);
    Ring::create(&other.0, RingOptions { capacity: 64, ..RingOptions::default() }).unwrap();
    // A hard link must be on the ring's file system.
    let hard =
        TempFile(Path::new(memtrack::SHM_DIR).join(format!("mt-test-hard-link-{}", std::process::id())));
    let _ = std::fs::remove_file(&hard.0);
    std::fs::hard_link(&path, &hard.0).unwrap();
    let hard = hard.0.clone();
    let soft = dir.join("link-to-ring");
    std::os::unix::fs::symlink(&path, &soft).unwrap();
    let stop = dir.join("stop");
    let mut writer = Command::new(&helper_command()[0])
        .args(&helper_command()[1..])
        .env(ROLE, "steady")
        .env("MEMTRACK_RING", &path)
        .env("MEMTRACK_TEST_STOP", &stop)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(writer.stdout.take().unwrap());
    let ring_bytes = std::fs::metadata(&path).unwrap().len();
    let other_bytes = std::fs::metadata(&other.0).unwrap().len();
    for output in [path.clone(), hard.clone(), soft.clone(), other.0.clone()] {
        let out = memtrack(&["record", "--ring", &name, "-o", output.to_str().unwrap(), "--duration", "0.2"]);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {text}", output.display());
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(output.to_str().unwrap()), "names the output: {text}");
        assert!(
            text.contains("ring") || text.contains("symbolic link"),
            "says why ({}): {text}",
            output.display()
        );
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), ring_bytes, "the ring was not truncated");
    assert_eq!(std::fs::metadata(&other.0).unwrap().len(), other_bytes);
    std::fs::write(&stop, b"").unwrap();
    let status = writer.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the writer survived every -o (a SIGBUS would be 135): {status:?}");
    assert_eq!(dir.names(), ["link-to-ring", "stop"], "no temporary file left");
    let _ = std::fs::remove_file(&hard);
}

#[test]
fn export_refuses_its_own_input_and_keeps_an_existing_file_as_old() {
    let dir = Dir::new("export");
    let file = dir.join("run.mtr");
    let out = record_helper(&["-o", file.to_str().unwrap(), "--quiet"], "busy", &[("MEMTRACK_TEST_N", "10")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let original = std::fs::read(&file).unwrap();
    let link = dir.join("run-link.mtr");
    std::fs::hard_link(&file, &link).unwrap();
    let cases = [("csv", &file), ("perfetto", &file), ("parquet", &file), ("csv", &link), ("parquet", &link)];
    for (format, output) in cases.into_iter().filter(|(f, _)| *f != "parquet" || cfg!(feature = "parquet")) {
        let out =
            memtrack(&["export", file.to_str().unwrap(), "--format", format, "-o", output.to_str().unwrap()]);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("is the input"), "{text}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), original, "the recording is intact");

    let csv = dir.join("run.csv");
    std::fs::write(&csv, b"previous export\n").unwrap();
    let out = memtrack(&["export", file.to_str().unwrap(), "--format", "csv", "-o", csv.to_str().unwrap()]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("replaced") && text.contains("run.csv.old"), "says what it replaced: {text}");
    assert_eq!(std::fs::read(dir.join("run.csv.old")).unwrap(), b"previous export\n");
    assert!(std::fs::read_to_string(&csv).unwrap().starts_with("ticket,"));

    // A link planted at the output is never followed.
    let victim = dir.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let planted = dir.join("planted.csv");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let out =
        memtrack(&["export", file.to_str().unwrap(), "--format", "csv", "-o", planted.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // And record: the same rules, checked before the command runs.
    let out = record_helper(&["-o", planted.to_str().unwrap()], "sleeper", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!stderr(&out).contains("HELPER"), "the command never ran");
    assert!(out.stdout.is_empty(), "the command never ran");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let names = dir.names();
    assert!(names.iter().all(|n| !n.ends_with(".unfinished")), "{names:?}");
}

#[test]
fn export_of_an_unfinished_recording_leaves_nothing_unless_partial() {
    let dir = Dir::new("export-partial");
    let file = dir.join("run.mtr");
    let out = record_helper(&["-o", file.to_str().unwrap(), "--quiet"], "busy", &[("MEMTRACK_TEST_N", "20")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&file).unwrap();
    // Cut inside the last frame: the end block is gone, the records stay.
    let last_frame = *common::frame_starts(&bytes).last().unwrap();
    std::fs::write(&file, &bytes[..last_frame + 10]).unwrap();
    let json = dir.join("run.json");
    let out =
        memtrack(&["export", file.to_str().unwrap(), "--format", "perfetto", "-o", json.to_str().unwrap()]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("--partial"), "{text}");
    assert_eq!(dir.names(), ["run.mtr"], "no invalid JSON left behind");
    let out = memtrack(&[
        "export",
        file.to_str().unwrap(),
        "--format",
        "perfetto",
        "--partial",
        "-o",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(!doc["traceEvents"].as_array().unwrap().is_empty());
}

#[test]
fn record_into_dev_full_drains_waits_for_the_command_and_fails() {
    // The command says which ring it was given, then runs the helper.
    let mut args: Vec<String> =
        ["record", "-o", "/dev/full", "--", "sh", "-c", "echo \"$MEMTRACK_RING\"; exec \"$@\"", "sh"]
            .map(str::to_owned)
            .to_vec();
    args.extend(helper_command());
    let out = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args(&args)
        .env(ROLE, "busy")
        .env("MEMTRACK_TEST_N", "3000")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = stderr(&out);
    let ring = String::from_utf8_lossy(&out.stdout).lines().next().unwrap().to_owned();
    assert!(ring.starts_with("/dev/shm/memtrack-"), "{ring}");
    assert!(!Path::new(&ring).exists(), "the private ring is removed");
    assert_eq!(out.status.code(), Some(1), "the command exited 0, the output failed: {text}");
    let last = text.lines().last().unwrap();
    assert!(last.contains("/dev/full") && last.contains("No space left on device"), "{text}");
    assert!(last.contains("records not kept"), "{text}");
    assert!(last.contains("the command exited with status 0"), "{text}");
    let not_kept: u64 = last.split(';').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    // The command's records: start, 3000 alloc/free pairs, one alloc, exit.
    assert!(not_kept >= 6000, "counted what was lost: {not_kept}: {text}");
    assert!(!text.contains("Devices"), "no summary of a recording that was not kept");
}

#[test]
fn a_full_file_system_keeps_the_command_running_and_the_partial_file_readable() {
    let dir = Dir::new("fullfs");
    let mount = dir.join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "memtrack-test", mount.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a 64 KiB tmpfs (the tests run as root)");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount);
    let file = mount.join("run.mtr");
    // 100 000 records: ~600 KB encoded, well past the 64 KiB.
    let out = record_helper(&["-o", file.to_str().unwrap()], "busy", &[("MEMTRACK_TEST_N", "50000")]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("No space left on device") && text.contains("records not kept"), "{text}");
    assert!(text.contains("kept the incomplete recording"), "{text}");
    // What fitted is readable, and the report does not claim nothing was lost.
    let partial = memtrack(&["report", file.to_str().unwrap(), "--partial"]);
    let report = String::from_utf8_lossy(&partial.stdout);
    assert!(partial.status.success(), "{}", stderr(&partial));
    assert!(report.contains("UNFINISHED"), "{report}");
    assert!(!report.contains("0 records lost"), "{report}");
    assert!(report.contains("records lost: unknown"), "{report}");
}

#[test]
fn a_fifo_output_does_not_hold_the_command_back() {
    let dir = Dir::new("fifo");
    let fifo = dir.join("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let started = dir.join("started");
    let mut helper = helper_command();
    // The command leaves a mark as soon as it runs; nobody reads the FIFO
    // until then.
    let script = format!("touch {} && exec \"$@\"", started.display());
    let mut args: Vec<String> = vec!["record".into(), "-o".into(), fifo.to_str().unwrap().into()];
    args.extend(["--".into(), "sh".into(), "-c".into(), script, "sh".into()]);
    args.append(&mut helper);
    let child = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args(&args)
        .env(ROLE, "busy")
        .env("MEMTRACK_TEST_N", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the command did not start while the FIFO had no reader");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO is still a FIFO");
    let bytes = std::fs::read(&fifo).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The summary comes from the live analysis: a FIFO cannot be read back.
    assert!(stderr(&out).contains("1 remaining buffers"), "{}", stderr(&out));
    let copy = TempFile::new("fifo-copy");
    std::fs::write(&copy.0, &bytes).unwrap();
    let report = report_json(&copy.0);
    assert_eq!(report["finished"], true);
    assert_eq!(report["remaining"][0]["size"], 4096);
}

#[test]
fn record_into_dev_null_succeeds_with_a_summary() {
    let out = record_helper(&["-o", "/dev/null"], "busy", &[("MEMTRACK_TEST_N", "10")]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 remaining buffers") && text.contains("0 records lost"), "{text}");
    assert!(Path::new("/dev/null").metadata().unwrap().file_type().is_char_device(), "still a device");
}

#[test]
fn sigint_and_sighup_sent_to_record_reach_the_command() {
    for (signal, via_timeout) in [(libc::SIGINT, true), (libc::SIGHUP, false)] {
        let file = TempFile::new("signal");
        let mut cmd = if via_timeout {
            // What a user (or CI) does: `timeout -s INT`, a signal to
            // memtrack alone, not to its process group.
            let mut cmd = Command::new("timeout");
            cmd.args(["--preserve-status", "-s", "INT", "3", env!("CARGO_BIN_EXE_memtrack")]);
            cmd
        } else {
            Command::new(env!("CARGO_BIN_EXE_memtrack"))
        };
        cmd.args(["record", "-o", file.str(), "--quiet", "--"]).args(helper_command()).env(ROLE, "sleeper");
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        wait_ready(child.stdout.take().unwrap());
        if !via_timeout {
            // SAFETY: kill with our child's pid.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
        let started = Instant::now();
        let out = child.wait_with_output().unwrap();
        assert!(started.elapsed() < Duration::from_secs(20), "the command was not interrupted");
        assert_eq!(out.status.code(), Some(128 + signal), "{}", stderr(&out));
        let report = report_json(&file.0);
        assert_eq!(report["processes"][0]["state"], "died", "the command died of the signal");
        assert_eq!(report["processes"][0]["remaining_buffers"], 1);
    }
}

#[test]
fn commands_that_cannot_run_exit_127_or_126_like_a_shell() {
    let dir = Dir::new("exec");
    let not_executable = dir.join("script.sh");
    std::fs::write(&not_executable, b"#!/bin/sh\nexit 0\n").unwrap();
    for (command, code) in [
        ("./memtrack-no-such-program", 127),
        ("memtrack-no-such-program-on-path", 127),
        (not_executable.to_str().unwrap(), 126),
        (dir.0.to_str().unwrap(), 126),
    ] {
        let file = dir.join("out.mtr");
        let out = memtrack(&["record", "-o", file.to_str().unwrap(), "--", command]);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{command}: {text}");
        assert!(text.starts_with(&format!("memtrack: cannot run {command}")), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!file.exists());
    }
    assert_eq!(dir.names(), ["script.sh"], "no file left behind");
}

#[test]
fn terminal_escapes_in_names_and_labels_are_shown_escaped() {
    let file = TempFile::new("escapes");
    let out = record_helper(&["-o", file.str()], "hostile-names", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = stderr(&out);
    let report = memtrack(&["report", file.str()]);
    let report = String::from_utf8_lossy(&report.stdout).into_owned();
    for text in [&summary, &report] {
        assert!(!text.contains('\x1b') && !text.contains('\x07') && !text.contains('\u{9b}'), "{text:?}");
        assert!(text.contains("\\x1b]52;c;cHduZWQ=\\x07\\n\\x1b[2J\\u{9b}31m"), "the label, escaped: {text}");
        assert!(text.contains("\\x1bc\\x1b]0;X\\x07\\n"), "the name, escaped: {text}");
        let rows = text.lines().filter(|l| l.contains("fake")).count();
        assert_eq!(rows, 1, "a newline in a name does not make a row: {text}");
    }
    // JSON keeps the bytes (escaped by JSON itself), CSV quotes the line break.
    assert_eq!(report_json(&file.0)["marks"][0]["label"], "\x1b]52;c;cHduZWQ=\x07\n\x1b[2J\u{9b}31m");
    let csv = memtrack(&["export", file.str(), "--format", "csv"]);
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    assert!(csv.contains(",\"\x1b]52;c;cHduZWQ=\x07\n\x1b[2J\u{9b}31m\""), "{csv:?}");
}

#[test]
fn status_escapes_names_and_ring_names() {
    let name = format!("cli-out-esc\n\x1b[2J-{}", std::process::id());
    let path = ring_path(&name);
    let _ = std::fs::remove_file(&path);
    let _ring = TempFile(path.clone());
    let writer = memtrack::Writer::attach_named(
        Ring::create(&path, RingOptions { capacity: 64, ..RingOptions::default() }).unwrap(),
        b"w\x1b]0;pwned\x07",
    )
    .unwrap();
    let list = memtrack(&["status"]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(!list.contains('\x1b'), "{list:?}");
    let escaped = format!("cli-out-esc\\n\\x1b[2J-{}", std::process::id());
    assert!(list.lines().any(|l| l == escaped), "one line per ring: {list}");
    let one = memtrack(&["status", "--ring", &name]);
    let one = String::from_utf8_lossy(&one.stdout).into_owned();
    assert!(!one.contains('\x1b') && one.contains("w\\x1b]0;pwned\\x07"), "{one:?}");
    drop(writer);
}

#[test]
fn smaller_ring_name_and_setting_rules() {
    // MEMTRACK_RING="" names no ring, in the library and the CLI alike.
    let bare = Path::new("/dev/shm/memtrack-");
    let _ = std::fs::remove_file(bare);
    let mut helper = Command::new(&helper_command()[0]);
    let out = helper
        .args(&helper_command()[1..])
        .env(ROLE, "empty-ring")
        .env("MEMTRACK_RING", "")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!bare.exists(), "no /dev/shm/memtrack-");
    let warning = stderr(&out);
    assert_eq!(warning.lines().filter(|l| l.contains("MEMTRACK_RING")).count(), 1, "{warning}");
    for args in [vec!["status"], vec!["record", "--duration", "0.1"], vec!["status", "--ring", ""]] {
        let out = memtrack_env(&args, &[("MEMTRACK_RING", "")]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        assert!(!bare.exists());
    }

    // status without --ring shows $MEMTRACK_RING's ring.
    let (path, writer) = common::ring_with_writer("cli-out-env");
    let _ring = TempFile(path.clone());
    let out = memtrack_env(&["status"], &[("MEMTRACK_RING", path.to_str().unwrap())]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with(&format!("ring {}", path.display())), "{text}");

    // A bad MEMTRACK_CAPACITY or MEMTRACK_CLOCK concerns only a ring being
    // made: attaching to this one works, making one is refused in one line.
    drop(writer);
    let fresh = TempFile(ring_path(&format!("cli-out-fresh-{}", std::process::id())));
    let _ = std::fs::remove_file(&fresh.0);
    drop(Ring::create(&fresh.0, RingOptions { capacity: 1024, ..RingOptions::default() }).unwrap());
    let file = TempFile::new("capacity");
    let name = fresh.str();
    let out = record_helper(
        &["--ring", name, "-o", file.str(), "--quiet"],
        "busy",
        &[("MEMTRACK_TEST_N", "5"), ("MEMTRACK_CAPACITY", "lots"), ("MEMTRACK_CLOCK", "sundial")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report_json(&file.0)["records"], 5 * 2 + 1 + 2);
    for (key, value) in [
        ("MEMTRACK_CAPACITY", "lots"),
        ("MEMTRACK_CLOCK", "sundial"),
        ("MEMTRACK_SUBRINGS", "257"),
        ("MEMTRACK_SUBRINGS", "many"),
        ("MEMTRACK_SUBRING_CAPACITY", "1000"),
        ("MEMTRACK_SUBRING_CAPACITY", "128"),
    ] {
        let out = record_helper(&["-o", file.str()], "busy", &[("MEMTRACK_TEST_N", "1"), (key, value)]);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(key) && text.contains(value), "{text}");
    }

    // A recording given where a ring belongs is named as one, by every
    // command that takes a ring (record made a new ring beside it, serve
    // said "bad magic"); and a ring given where a recording belongs.
    let other = TempFile::new("not-written");
    for args in [
        &["status", "--ring", file.str()][..],
        &["serve", "--ring", file.str(), "--listen", "127.0.0.1:0"],
        &["record", "--ring", file.str(), "--duration", "0.1", "-o", other.str()],
    ] {
        let out = memtrack(args);
        let text = stderr(&out);
        assert_eq!((out.status.code(), text.lines().count()), (Some(1), 1), "{args:?}: {text}");
        assert!(
            text.contains("is a record file, not a ring") && text.contains(file.str()),
            "{args:?}: {text}"
        );
    }
    assert!(!other.path().exists());
    for (args, code) in [
        (&["report", name][..], 1),
        (&["export", name, "--format", "csv"], 1),
        (&["diff", name, name], 1),
        (&["check", name], 2),
    ] {
        let out = memtrack(args);
        let text = stderr(&out);
        assert_eq!((out.status.code(), text.lines().count()), (Some(code), 1), "{args:?}: {text}");
        assert!(text.contains("a ring, not a record file") && text.contains(name), "{args:?}: {text}");
    }

    // watch attaches only: a typo makes no ring.
    let typo = format!("cli-out-typo-{}", std::process::id());
    let out = Command::new("script")
        .args(["-qec", &format!("{} watch --ring {typo}", env!("CARGO_BIN_EXE_memtrack")), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("no such ring"), "{text}");
    assert!(!ring_path(&typo).exists(), "watch made no ring");
}

#[test]
fn ring_names_near_the_length_limit() {
    // "memtrack-" + 246 bytes = 255, the longest file name: it works.
    for len in [240, 246] {
        let name = format!("{}{}", "r".repeat(len - 8), &format!("{:08}", std::process::id())[..8]);
        let path = ring_path(&name);
        let _ = std::fs::remove_file(&path);
        let _ring = TempFile(path.clone());
        Ring::create(&path, RingOptions { capacity: 64, ..RingOptions::default() }).unwrap();
        let out = memtrack(&["status", "--ring", &name]);
        assert!(out.status.success(), "{len}: {}", stderr(&out));
    }
    // One more does not fit, and the error names the ring.
    let name = "r".repeat(247);
    let error = Ring::create(&ring_path(&name), RingOptions { capacity: 64, ..RingOptions::default() })
        .unwrap_err()
        .to_string();
    assert!(error.contains(&format!("memtrack-{name}:")), "{error}");
    assert!(!error.contains(".tmp"), "{error}");
}

#[test]
fn a_recording_of_alloc_free_churn_takes_at_most_24_bytes_a_record() {
    let dir = Dir::new("compact");
    let file = dir.join("run.mtr");
    // 2 × 50 000 records from a writer flat out, as many batches as the
    // reader happens to take (each a frame).
    let out =
        record_helper(&["-o", file.to_str().unwrap(), "--quiet"], "busy", &[("MEMTRACK_TEST_N", "50000")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = report_json(&file)["records"].as_u64().unwrap();
    assert!(records >= 100_000, "{records}");
    let bytes = std::fs::metadata(&file).unwrap().len();
    // Header, frames, reader blocks and all.
    assert!(bytes <= 24 * records, "{bytes} bytes for {records} records");
}

#[test]
fn a_record_file_that_is_a_pipe_or_a_device_is_named_as_such() {
    // It read as 0 bytes: "too short for a header", which sends a user
    // looking for a damaged recording.
    let out = memtrack(&["report", "/dev/null"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/dev/null: not a regular file"), "{}", stderr(&out));
    // `cat run.mtr | memtrack report /dev/stdin`: a pipe.
    let mut child = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args(["report", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The reader may have refused and closed the pipe already.
    let _ = std::io::Write::write_all(&mut stdin, b"MTRECORD and then some");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = stderr(&out);
    assert_eq!((out.status.code(), text.lines().count()), (Some(1), 1), "{text}");
    assert!(text.contains("/dev/stdin: not a regular file (a pipe"), "{text}");
}
