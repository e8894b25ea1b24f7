//! `memtrack`: the reader side of memtrack.
//!
//! This first version has `status`, a non-consuming snapshot of a ring's
//! live counters (works while another process consumes the ring). The
//! consuming commands (record, report, watch, export, demo) come next.

mod engine;
mod recording;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "memtrack",
    version,
    about = "Allocation tracking for accelerator runtimes: inspect memtrack rings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Snapshot of a ring from its live counters, without consuming it
    /// (like nvidia-smi). Without --ring, lists the rings in /dev/shm.
    Status(status::StatusArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Status(args) => status::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Output piped into `head` and closed early: not an error.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the library's errors already name the file.
            let text = format!("{error:#}");
            let text = if text.starts_with("memtrack:") { text } else { format!("memtrack: {text}") };
            eprintln!("{text}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
