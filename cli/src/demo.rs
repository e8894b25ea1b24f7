//! `memtrack demo`: a tt_metal-like workload on a private ring, consumed
//! by an embedded reader, then the report. No set-up; a few seconds.
//!
//! The workload models what memtrack was built to debug: a 2x4 mesh of 8
//! devices; mesh buffers (one ALIAS backing buffer on device 0 plus eight
//! per-device buffers, parent = the mesh buffer); programs with circular
//! buffers and kernel binaries on every device, released when the program
//! is destroyed; several threads. Two bugs are planted: one mesh buffer
//! whose device buffers are never freed (tracking only when `owns_data_`),
//! and one buffer deallocated twice (no guard in `mark_as_deallocated`).
//!
//! The report is the same on every run (but for times and the pid), so a
//! newcomer's first answer does not change when they run it again:
//! - no record can be lost: the ring is sized to hold every record of the
//!   run, so even a reader that gets no CPU until the workload ends (a busy
//!   machine) misses nothing;
//! - buffer ids come from per-thread ranges, not from a counter the threads
//!   race on;
//! - the threads allocate, meet at a barrier, then free, so each peak is
//!   reached with every thread's buffers live, whatever the interleaving.

use std::cell::Cell;
use std::sync::Barrier;

use anyhow::Result;
use clap::Args;
use memtrack::format::{FLAG_ALIAS, kind};
use memtrack::{MemtrackBuffer, Ring, RingOptions, Writer};

use crate::report::{self, Source};
use crate::session::Session;
use crate::units::use_colour;

const DEVICES: u32 = 8;
const THREADS: u64 = 4;

#[derive(Args)]
pub struct DemoArgs {
    /// Iterations per workload thread (each: a mesh buffer and a program).
    #[arg(long, default_value_t = 500)]
    iterations: u64,
    /// Print the report as JSON (schema memtrack.report/1).
    #[arg(long)]
    json: bool,
}

/// Removes the demo ring however the demo ends (the file it created, and
/// no other: see `memtrack::remove_ring_file`).
struct DemoRing(std::path::PathBuf, memtrack::FileId);

impl Drop for DemoRing {
    fn drop(&mut self) {
        let _ = memtrack::remove_ring_file(&self.0, self.1);
    }
}

pub fn run(args: &DemoArgs) -> Result<()> {
    // A name of its own: demos in other PID namespaces may have our pid.
    let options = RingOptions { capacity: ring_capacity(args.iterations), ..RingOptions::default() };
    let created = Ring::create_unique("demo", options)?;
    let ring = DemoRing(created.path().to_path_buf(), created.file_id());
    let writer = Writer::attach_named(created, b"tt-metal-demo")?;
    let mut session = Session::start(&ring.0, None)?;
    let mut workers_done = false;
    std::thread::scope(|s| -> Result<()> {
        let workload = s.spawn(|| run_workload(&writer, args.iterations));
        // The reader runs beside the workload, as `memtrack record` would.
        while !workers_done {
            workers_done = workload.is_finished();
            let handled = session.poll()?;
            session.pause_if_idle(handled);
        }
        Ok(())
    })?;
    writer.shutdown();
    let origin_unix_ns = session.started_unix_ns();
    let engine = session.finish()?;
    let source = Source { origin_unix_ns, file: None, ring: ring.0.clone(), finished: true };
    let mut out = std::io::stdout().lock();
    if args.json {
        use std::io::Write;
        writeln!(out, "{}", report::to_json(&engine, &source))?;
    } else {
        report::write_text(&mut out, &engine, &source, use_colour(&std::io::stdout()))?;
    }
    Ok(())
}

/// Records one workload thread writes per iteration, at most: a mesh
/// buffer (backing + one per device, each allocated and freed) and a
/// program (two circular buffers and a kernel binary per device).
const RECORDS_PER_ITERATION: u64 = 2 * (1 + DEVICES as u64) + 2 * 3 * DEVICES as u64;

/// A ring that holds every record of the run (up to the largest ring):
/// what makes the demo's report independent of when its reader runs.
pub fn ring_capacity(iterations: u64) -> u64 {
    let records = THREADS * iterations.saturating_add(1).saturating_mul(RECORDS_PER_ITERATION)
        + 64
        + 4 * DEVICES as u64;
    records.next_power_of_two().clamp(memtrack::format::DEFAULT_CAPACITY, memtrack::format::MAX_CAPACITY)
}

pub fn run_workload(writer: &Writer, iterations: u64) {
    for device in 0..DEVICES {
        writer.set_capacity(device, kind::DRAM, 12 << 30);
        writer.set_capacity(device, kind::L1, 1464 << 10);
    }
    writer.mark(b"init");
    let barrier = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let barrier = &barrier;
            s.spawn(move || {
                // Ids of thread t start at (t + 1) × 10^9: the same on every
                // run (room for 29 M iterations a thread).
                let model = Model { writer, barrier, next_id: Cell::new((thread + 1) * 1_000_000_000) };
                for i in 0..iterations {
                    // Thread 0's first mesh buffer hits the owns_data_ bug.
                    let leak = thread == 0 && i == 0;
                    model.mesh_buffer_lifetime(64 << 10, leak);
                    model.program_lifetime();
                    if thread == 1 && i == iterations / 2 {
                        model.double_free();
                    }
                }
            });
        }
    });
    writer.mark(b"teardown");
}

/// tt_metal's objects, reduced to the hooks they call, on one thread.
struct Model<'a> {
    writer: &'a Writer,
    /// Every thread's buffers are live at once here (deterministic peaks).
    barrier: &'a Barrier,
    next_id: Cell<u64>,
}

impl Model<'_> {
    fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    fn buffer(id: u64, parent: u64, device: u32, kind: u8, size: u64, flags: u8) -> MemtrackBuffer {
        MemtrackBuffer {
            buffer_id: id,
            parent_id: parent,
            address: 0x4000_0000 + (id % 64) * size,
            size,
            device_id: device,
            kind,
            flags,
            reserved: 0,
        }
    }

    /// A MeshBuffer: the backing buffer (ALIAS: its bytes are the device
    /// buffers') and one buffer per device, all at the same address.
    fn mesh_buffer_lifetime(&self, device_size: u64, owns_data_bug: bool) {
        let mesh = self.next_id();
        let backing = Self::buffer(mesh, 0, 0, kind::DRAM, device_size * DEVICES as u64, FLAG_ALIAS);
        self.writer.alloc(&backing);
        let devices: Vec<MemtrackBuffer> = (0..DEVICES)
            .map(|d| MemtrackBuffer {
                address: backing.address,
                ..Self::buffer(self.next_id(), mesh, d, kind::DRAM, device_size, 0)
            })
            .collect();
        devices.iter().for_each(|b| self.writer.alloc(b));
        self.barrier.wait();
        if !owns_data_bug {
            devices.iter().for_each(|b| self.writer.free(b));
        }
        self.writer.free(&backing);
    }

    /// A Program: circular buffers and kernel binaries on every device,
    /// released in `~Program`.
    fn program_lifetime(&self) {
        let program = self.next_id();
        let mut owned = Vec::new();
        for device in 0..DEVICES {
            for cb in 0..2 {
                owned.push(Self::buffer(self.next_id(), program, device, kind::CB, 32 << 10 << cb, 0));
            }
            owned.push(Self::buffer(self.next_id(), program, device, kind::KERNEL, 24 << 10, 0));
        }
        owned.iter().for_each(|b| self.writer.alloc(b));
        self.barrier.wait();
        owned.iter().for_each(|b| self.writer.free(b));
    }

    /// `mark_as_deallocated` without a guard: the same buffer freed twice.
    fn double_free(&self) {
        let buffer = Self::buffer(self.next_id(), 0, 3, kind::L1, 4096, 0);
        self.writer.alloc(&buffer);
        self.writer.free(&buffer);
        self.writer.free(&buffer);
    }
}
