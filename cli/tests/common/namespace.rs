//! What the PID-namespace tests share (`namespaces.rs`, `same_pid.rs`):
//! `unshare --pid --fork --mount-proc` standing in for a container, the
//! writer `ffi_tests/ns_writer.c` built against libmemtrack, and a
//! recorder on a named ring. Included with `#[path]` beside `mod common;`
//! and `mod cc;`. The namespace tests need root (for `unshare`), and
//! without it say `SKIPPED` and check nothing.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use memtrack::Ring;

use crate::cc::{self, Build, Lang, Link};
use crate::common::TempFile;

/// `ffi_tests/ns_writer.c`: `ns_writer TOTAL KEEP exit|kill|hold [TAG]`.
pub fn writer() -> PathBuf {
    cc::build(&Build {
        name: "ns_writer",
        source: "ns_writer.c",
        lang: Lang::C,
        link: Link::Shared,
        sanitize: false,
        defines: &[],
    })
    .path
}

/// Whether this machine lets us make PID namespaces; if not, says why the
/// calling test checks nothing.
pub fn namespaces_available(test: &str) -> bool {
    let out = Command::new("unshare").args(["--pid", "--fork", "--mount-proc", "true"]).output();
    match out {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            let why = String::from_utf8_lossy(&out.stderr);
            eprintln!("SKIPPED {test}: `unshare --pid --fork --mount-proc` fails here (root needed): {why}");
            false
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: cannot run unshare: {e}");
            false
        }
    }
}

/// `unshare --pid --fork --mount-proc ARGS...`: ARGS run as pid 1 of a new
/// PID namespace, with their own /proc.
pub fn in_namespace(args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"]).args(args).env_remove("MEMTRACK_RING");
    cmd
}

/// A shell command line running the writer (the shell is pid 1 of the
/// namespace, so the writer is pid 2, which a SIGKILL of its own can end).
pub fn writer_line(args: &str) -> String {
    format!("{} {args}; true", writer().display())
}

/// The child processes of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(path).unwrap_or_default().split_whitespace().map(|p| p.parse().unwrap()).collect()
}

/// Reads lines of `out` until one starts with `ready `.
pub fn wait_ready(out: ChildStdout) -> BufReader<ChildStdout> {
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the writer ended before it was ready");
        if line.starts_with("ready ") {
            return reader;
        }
    }
}

pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn success(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}: {stderr}", out.status);
    stderr
}

/// `memtrack record --ring NAME -o FILE` until SIGINT.
pub struct Recorder(Child);

impl Recorder {
    pub fn start(ring: &Path, file: &TempFile) -> Recorder {
        let child = Command::new(env!("CARGO_BIN_EXE_memtrack"))
            .args(["record", "-q", "--ring", ring.to_str().unwrap(), "-o", file.str()])
            .env_remove("MEMTRACK_RING")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until("the recorder attached", || {
            Ring::open(ring).is_ok_and(|r| r.snapshot().reader_pid == Some(child.id()))
        });
        Recorder(child)
    }

    /// As [`Recorder::start`], on a new ring at `ring`.
    pub fn start_creating(ring: &Path, file: &TempFile) -> Recorder {
        let _ = std::fs::remove_file(ring);
        Ring::create(ring, memtrack::RingOptions { capacity: 1024, ..memtrack::RingOptions::default() })
            .unwrap();
        Recorder::start(ring, file)
    }

    /// Ctrl-C: the recorder drains the ring and completes the file.
    pub fn stop(self) {
        // SAFETY: kill with our child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        success(&self.0.wait_with_output().unwrap());
    }
}
