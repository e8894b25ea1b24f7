//! The buffer an allocation or free event describes: the C ABI's
//! `memtrack_buffer`, defined here, below both the writer and the C ABI
//! (`ffi` re-exports it), so that the writer imports nothing from `ffi`.
//!
//! build.rs hands this file to cbindgen with `src/ffi/`: keep it to this
//! one type, or its other items end up in `include/memtrack.h`.

/// One buffer event: the C ABI's `memtrack_buffer`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemtrackBuffer {
    /// Stable identity of the buffer object (tt_metal: `Buffer::unique_id()`).
    pub buffer_id: u64,
    /// Owner: the mesh buffer of a device buffer, the program of a circular buffer; 0 = none.
    pub parent_id: u64,
    /// Device address.
    pub address: u64,
    /// Bytes.
    pub size: u64,
    /// Device id.
    pub device_id: u32,
    /// `MEMTRACK_KIND_*`.
    pub kind: u8,
    /// `MEMTRACK_FLAG_*` bits.
    pub flags: u8,
    /// 0.
    pub reserved: u16,
}
