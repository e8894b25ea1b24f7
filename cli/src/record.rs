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

use crate::check::{self, CheckOptions};
use crate::output::{Output, Protected};
use crate::report::{self, Source};
use crate::ring_arg;
use crate::session::Session;
use crate::signals::{self, Received};
use crate::units::{printable_path, use_colour};

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
    /// Record file to write: a new file renamed into place at the end; an
    /// existing one is kept as FILE.old. A device or FIFO is written in
    /// place. Never a ring, never through a symbolic link.
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
    /// Then check the recording as `memtrack check` does, with the options
    /// below: exit with CMD's status if it failed, else the check's (0
    /// clean, 1 violations, printed on stdout).
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    check_options: CheckOptions,
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
    if !args.check && args.check_options != CheckOptions::default() {
        anyhow::bail!("the check options (--max-remaining, --allow-loss, ...) need --check");
    }
    let duration = match args.duration {
        Some(s) if !(s.is_finite() && s > 0.0) => {
            anyhow::bail!("--duration must be a positive number of seconds")
        }
        Some(s) => Some(Duration::from_secs_f64(s)),
        None => None,
    };
    let (path, _private) = match (&args.ring, args.command.is_empty()) {
        (Some(name), _) => (ring_arg::resolve(Some(name))?, None),
        (None, false) => {
            // A name of its own (`record-<pid>-<random>`, created
            // exclusively): recorders in other PID namespaces sharing
            // /dev/shm may have our pid.
            let options = RingOptions::from_env(&ring_path("record"))?;
            let ring = Ring::create_unique("record", options)?;
            let path = ring.path().to_path_buf();
            (path.clone(), Some(PrivateRing(path, ring.file_id())))
        }
        (None, true) => (ring_arg::resolve(None)?, None),
    };
    signals::install();
    // Checked (and a temporary file made) before the command starts: a
    // refused output must not cost a run.
    let protected = Protected::of(&path, "the ring being recorded");
    let mut output = Output::create(&args.output, protected.as_slice())?;
    // A device or FIFO cannot be read back for the summary: analyse live.
    let read_back = output.is_file();
    let mut session = match Session::consumer_for_recording(&path, !read_back) {
        Ok(session) => session,
        Err(error) => {
            output.discard();
            return Err(error);
        }
    };
    let status = if args.command.is_empty() {
        if let Err(error) = output.connect(|| signals::take().is_none()) {
            output.discard();
            return Err(error);
        }
        session.write_into(output);
        if !args.quiet {
            // Without a command nothing else shows that it runs: a new
            // user would take the wait for a hang.
            let until =
                duration.map_or_else(|| "until Ctrl-C".to_owned(), |d| format!("for {} s", d.as_secs_f64()));
            eprintln!(
                "memtrack record: recording ring {} into {} {until}",
                printable_path(&path),
                printable_path(&args.output)
            );
        }
        consume_until_stopped(&mut session, duration)?;
        None
    } else {
        let child = match spawn(&args.command, &path) {
            Ok(child) => child,
            Err(error) => {
                output.discard();
                // The shell's codes: 127 not found, 126 found but not runnable.
                let code = if error.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
                eprintln!("memtrack: cannot run {}: {error}", args.command[0].to_string_lossy());
                return Ok(code);
            }
        };
        Some(consume_while_running(&mut session, child, output)?)
    };
    let code = status.map_or(0, exit_code);
    let origin_unix_ns = session.started_unix_ns();
    let engine = match session.finish() {
        Ok(engine) => engine,
        Err(error) => {
            // The command ran to its end regardless; say how it ended too.
            let ended = match status {
                Some(status) => format!(" (the command exited with status {code}{})", signal_note(status)),
                None => String::new(),
            };
            eprintln!("{error:#}{ended}");
            return Ok(if code == 0 { 1 } else { code });
        }
    };
    if !args.quiet {
        // The file is complete; a summary that cannot be shown is an
        // error, but the exit status stays the command's when it failed.
        let summary = (|| {
            let loaded;
            let (engine, source) = if read_back {
                let (header, engine) = report::load(&args.output)?;
                loaded = engine;
                (&loaded, Source::of_file(&args.output, &header, true))
            } else {
                let source = Source {
                    origin_unix_ns,
                    file: Some(args.output.clone()),
                    ring: path.clone(),
                    finished: true,
                };
                (&engine, source)
            };
            let mut err = std::io::stderr().lock();
            report::write_text(&mut err, engine, &source, use_colour(&std::io::stderr()))
        })();
        if let Err(error) = summary {
            eprintln!("{error:#}");
            return Ok(if code == 0 { 1 } else { code });
        }
    }
    if args.check && code == 0 {
        let mut out = std::io::stdout().lock();
        return Ok(if read_back {
            check::judge(&args.output, &args.check_options, &mut out)
        } else {
            check::verdict(&engine, &args.check_options, &args.output, &mut out)
        });
    }
    Ok(code)
}

/// `, killed by signal N` when the command died of a signal.
fn signal_note(status: ExitStatus) -> String {
    status.signal().map_or_else(String::new, |s| format!(", killed by signal {s}"))
}

fn spawn(command: &[OsString], ring: &Path) -> std::io::Result<Child> {
    // Orphaned descendants of CMD (a forked worker that outlives its
    // parent) are re-parented to us, so we can wait for them too: they may
    // attach to the ring after CMD itself has exited.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    Command::new(&command[0]).args(&command[1..]).env("MEMTRACK_RING", ring).spawn()
}

/// `perf record` style: until CMD, its descendants and every process
/// attached to the ring have ended and the ring is drained, whatever
/// happens to the output: a failing one is counted, not abandoned with the
/// command. SIGINT, SIGTERM and SIGHUP are passed on to CMD, unless the
/// terminal sent them to CMD already (to the whole foreground group).
fn consume_while_running(session: &mut Session, mut child: Child, mut output: Output) -> Result<ExitStatus> {
    let mut status = None;
    // A FIFO is opened only now that CMD runs (a reader may come later);
    // meanwhile the ring holds CMD's records. A signal stops the wait: the
    // recording goes on without an output, counting what it cannot keep.
    // So does the command's end: nobody may ever open the FIFO.
    if let Err(error) = output.connect(|| match signals::take_received() {
        Some(signal) => {
            forward(signal, &child);
            false
        }
        // `Child` keeps the status for the `try_wait` of the loop below.
        None => child.try_wait().ok().flatten().is_none(),
    }) {
        eprintln!("{error:#}; recording on without an output until the command ends");
    }
    session.write_into(output);
    let mut last_check = Instant::now();
    let mut said_waiting = false;
    let mut said_failed = false;
    let mut exited_at = None;
    loop {
        let handled = session.poll()?;
        if !said_failed && let Some(failure) = session.output_failure() {
            said_failed = true;
            eprintln!(
                "memtrack: cannot write the record file: {}; draining the ring until the command ends, counting \
                 what is not kept",
                failure.error
            );
        }
        match (signals::take_received(), status) {
            (Some(signal), None) => forward(signal, &child),
            // CMD is gone and the user wants to stop waiting for the rest.
            (Some(_), Some(status)) => return Ok(status),
            (None, _) => {}
        }
        if status.is_none() {
            status = child.try_wait().context("cannot wait for the command")?;
        }
        if let Some(status) = status
            && last_check.elapsed() >= WRITERS_POLL
        {
            last_check = Instant::now();
            let descendants = reap_descendants();
            if !descendants && session.writers_ended() {
                // The writers are done: take their last partial batch now,
                // not after the batching policy's latency bound.
                session.drain()?;
                if session.caught_up() {
                    return Ok(status);
                }
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

/// Passes `signal` on to CMD, unless the terminal sent it to CMD's whole
/// process group already (a second SIGINT would interrupt its cleanup).
fn forward(signal: Received, child: &Child) {
    if !signal.sent_to_group {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // child's, which we have not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, signal.number) };
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
