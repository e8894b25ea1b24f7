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

use std::sync::atomic::{AtomicU64, Ordering};

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
    let created = Ring::create_unique("demo", RingOptions::default())?;
    let ring = DemoRing(created.path().to_path_buf(), created.file_id());
    let writer = Writer::attach_named(created, b"tt-metal-demo")?;
    let mut session = Session::start(&ring.0, None)?;
    let ids = AtomicU64::new(1);
    let mut workers_done = false;
    std::thread::scope(|s| -> Result<()> {
        let workload = s.spawn(|| run_workload(&writer, &ids, args.iterations));
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

fn run_workload(writer: &Writer, ids: &AtomicU64, iterations: u64) {
    for device in 0..DEVICES {
        writer.set_capacity(device, kind::DRAM, 12 << 30);
        writer.set_capacity(device, kind::L1, 1464 << 10);
    }
    writer.mark(b"init");
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            s.spawn(move || {
                let model = Model { writer, ids };
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

/// tt_metal's objects, reduced to the hooks they call.
struct Model<'a> {
    writer: &'a Writer,
    ids: &'a AtomicU64,
}

impl Model<'_> {
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
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
