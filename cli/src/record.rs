//! `memtrack record`: consume a ring into a record file, either for the
//! lifetime of a command (`record -- CMD`, like `perf record`) or until
//! Ctrl-C / `--duration` on a named ring.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use memtrack::{FileId, Ring, RingOptions, ring_path};

use crate::report::{self, Source};
use crate::session::Session;
use crate::signals;
use crate::units::use_colour;

/// How often to ask whether every writer has ended once CMD has.
const WRITERS_POLL: Duration = Duration::from_millis(20);

/// How long to wait for the rest after CMD exits before saying so.
const WAIT_NOTE: Duration = Duration::from_secs(2);

#[derive(Args)]
#[command(
    after_help = "Examples:\n  memtrack record -- python -m pytest tests/ttnn/unit_tests/test_add.py\n  \
                        memtrack record -o run.mtr --ring prod --duration 60\n  memtrack report run.mtr"
)]
pub struct RecordArgs {
    /// Record file to write.
    #[arg(short, long, default_value = "memtrack.mtr", value_name = "FILE")]
    output: PathBuf,
    /// Ring name (/dev/shm/memtrack-NAME) or path. With a command, the
    /// default is a private ring, removed afterwards; without one, the
    /// default is $MEMTRACK_RING, else "default". Created if missing.
    #[arg(long, value_name = "NAME")]
    ring: Option<String>,
    /// Without a command: stop after this many seconds (else at Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Do not print the summary report to stderr.
    #[arg(short, long)]
    quiet: bool,
    /// The workload to run with MEMTRACK_RING set, and its arguments.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// Removes a private ring when the recording ends, however it ends: the
/// file this process created, and no other (see `memtrack::remove_ring_file`).
struct PrivateRing(PathBuf, FileId);

impl Drop for PrivateRing {
    fn drop(&mut self) {
        let _ = memtrack::remove_ring_file(&self.0, self.1);
    }
}

/// Runs the command; returns the exit status to exit with.
pub fn run(args: &RecordArgs) -> Result<u8> {
    let duration = match args.duration {
        Some(s) if !(s.is_finite() && s > 0.0) => {
            anyhow::bail!("--duration must be a positive number of seconds")
        }
        Some(s) => Some(Duration::from_secs_f64(s)),
        None => None,
    };
    let (path, _private) = match (&args.ring, args.command.is_empty()) {
        (Some(name), _) => (ring_path(name), None),
        (None, false) => {
            // A name of its own (`record-<pid>-<random>`, created
            // exclusively): recorders in other PID namespaces sharing
            // /dev/shm may have our pid.
            let options = RingOptions::from_env(&ring_path("record"))?;
            let ring = Ring::create_unique("record", options)?;
            let path = ring.path().to_path_buf();
            (path.clone(), Some(PrivateRing(path, ring.file_id())))
        }
        (None, true) => {
            let name = std::env::var("MEMTRACK_RING").unwrap_or_else(|_| "default".to_owned());
            (ring_path(&name), None)
        }
    };
    signals::install();
    let mut session = Session::recorder(&path, &args.output)?;
    let status = if args.command.is_empty() {
        consume_until_stopped(&mut session, duration)?;
        None
    } else {
        let child = spawn(&args.command, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&args.output);
        })?;
        Some(consume_while_running(&mut session, child)?)
    };
    session.finish()?;
    if !args.quiet {
        let (header, engine) = report::load(&args.output)?;
        let source = Source::of_file(&args.output, &header, true);
        let mut err = std::io::stderr().lock();
        report::write_text(&mut err, &engine, &source, use_colour(&std::io::stderr()))?;
    }
    Ok(status.map_or(0, exit_code))
}

fn spawn(command: &[OsString], ring: &Path) -> Result<Child> {
    // Orphaned descendants of CMD (a forked worker that outlives its
    // parent) are re-parented to us, so we can wait for them too: they may
    // attach to the ring after CMD itself has exited.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    Command::new(&command[0])
        .args(&command[1..])
        .env("MEMTRACK_RING", ring)
        .spawn()
        .with_context(|| format!("cannot run {}", command[0].to_string_lossy()))
}

/// `perf record` style: until CMD, its descendants and every process
/// attached to the ring have ended and the ring is drained. Ctrl-C reaches CMD through the
/// terminal; SIGTERM and SIGHUP sent to memtrack are passed on to CMD.
fn consume_while_running(session: &mut Session, mut child: Child) -> Result<ExitStatus> {
    let mut status = None;
    let mut last_check = Instant::now();
    let mut said_waiting = false;
    let mut exited_at = None;
    loop {
        let handled = session.poll()?;
        let signal = signals::take();
        match (signal, status) {
            (Some(signal), None) if signal != libc::SIGINT => {
                // SAFETY: kill has no memory-safety preconditions; the pid
                // is our child's, which we have not yet reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            }
            // CMD is gone and the user wants to stop waiting for the rest.
            (Some(_), Some(status)) => return Ok(status),
            _ => {}
        }
        if status.is_none() {
            status = child.try_wait().context("cannot wait for the command")?;
        }
        if let Some(status) = status
            && last_check.elapsed() >= WRITERS_POLL
        {
            last_check = Instant::now();
            let descendants = reap_descendants();
            if !descendants && session.writers_ended() && session.caught_up() {
                return Ok(status);
            }
            if !said_waiting && last_check.duration_since(*exited_at.get_or_insert(last_check)) > WAIT_NOTE {
                said_waiting = true;
                eprintln!(
                    "memtrack: the command exited; waiting for its remaining processes and those attached to {} \
                     (Ctrl-C to stop)",
                    session.ring().path().display()
                );
            }
        }
        session.pause_if_idle(handled);
    }
}

fn consume_until_stopped(session: &mut Session, duration: Option<Duration>) -> Result<()> {
    let start = Instant::now();
    while signals::take().is_none() && duration.is_none_or(|d| start.elapsed() < d) {
        let handled = session.poll()?;
        session.pause_if_idle(handled);
    }
    Ok(())
}

/// Reaps descendants that exited (orphans re-parented to us); returns
/// whether any is still running.
fn reap_descendants() -> bool {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out pointer; reaping orphans that the
        // kernel gave us as subreaper (CMD itself was reaped by try_wait).
        match unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } {
            0 => return true,           // children exist, none exited
            pid if pid > 0 => continue, // reaped one; look again
            _ => return false,          // ECHILD: none left
        }
    }
}

/// The shell's convention: the exit code, or 128 + the signal number.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.wrapping_add(signal as u8),
        (None, None) => 1,
    }
}
