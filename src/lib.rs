//! memtrack: allocation tracking for accelerator runtimes through a
//! lock-free ring in a shared-memory file.
//!
//! * [`format`] — the file layout (version 1), offsets and record type.
//! * `ring` — the protocol: many writers in many processes, one consumer.
//! * [`Ring`], [`Writer`], [`Consumer`] — the Rust API.
//! * `ffi` — the C ABI behind `include/memtrack.h`.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod format;
#[cfg_attr(loom, allow(dead_code))]
pub(crate) mod ring;
mod sync;

#[cfg(not(loom))]
pub mod clock;

pub use format::{Event, Record};
