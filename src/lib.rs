//! memtrack: allocation tracking for accelerator runtimes through a
//! lock-free ring in a shared-memory file.
//!
//! * [`format`] — the file layout (version 3), offsets and record type.
//! * `ring` — the protocol: many writers in many processes, one consumer.
//! * `subrings` — per-thread sub-rings: who holds which (leases).
//! * `counters` — the live counters: a cell pool, thread lanes, capacities.
//! * [`Ring`], [`Writer`], [`Consumer`], [`Snapshot`] — the Rust API.
//! * `ffi` — the C ABI behind `include/memtrack.h`.
//!
//! Under `--cfg loom` only the protocol is built, for the loom models.
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(loom))]
mod buffer;
#[cfg_attr(loom, allow(dead_code))]
pub(crate) mod counters;
pub mod format;
#[cfg_attr(loom, allow(dead_code))]
pub(crate) mod ring;
#[cfg_attr(loom, allow(dead_code))]
mod subrings;
mod sync;

#[cfg(not(loom))]
pub mod clock;
#[cfg(not(loom))]
mod consumer;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
pub mod ffi;
#[cfg(not(loom))]
mod hook_thread;
#[cfg(not(loom))]
mod process;
#[cfg(not(loom))]
mod shm;
#[cfg(not(loom))]
mod snapshot;
#[cfg(not(loom))]
mod writer;

#[cfg(not(loom))]
pub use crate::{
    buffer::MemtrackBuffer,
    consumer::{Batch, BatchPolicy, Consumer},
    error::{Error, ErrorKind},
    process::{ProcessInfo, ProcessState, pid_namespace},
    shm::{FileId, RING_FILE_PREFIX, Ring, RingOptions, SHM_DIR, remove_ring_file, ring_path},
    snapshot::{Attachments, Capacity, CorruptStop, LiveCounter, Snapshot, SubRingStatus, Untracked},
    writer::{DEFAULT_FULL_WAIT, Writer},
};
pub use format::{Event, Record};
pub use ring::{Owner, Progress};
