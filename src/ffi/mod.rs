//! The C ABI: `include/memtrack.h` is generated from this module.
//!
//! Every function is a panic boundary and accepts NULL pointers as no-ops.
//! Event functions return nothing and never block beyond the bounded
//! full-ring wait, never allocate, lock or make a system call once the
//! process is attached. Tracking is off until `MEMTRACK_RING` is set or
//! `memtrack_init` is called; off, an event function costs one load and one
//! predictable branch.

mod codes;
mod global;
mod scope;

use crate::format::Event;
use std::ffi::{CStr, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use crate::buffer::MemtrackBuffer;
pub use codes::*;

/// Kind: device DRAM (tt_metal `BufferType::DRAM`).
pub const MEMTRACK_KIND_DRAM: u8 = 0;
/// Kind: core L1 (`BufferType::L1`).
pub const MEMTRACK_KIND_L1: u8 = 1;
/// Kind: host memory mapped for the device (`BufferType::SYSTEM_MEMORY`).
pub const MEMTRACK_KIND_SYSTEM_MEMORY: u8 = 2;
/// Kind: the small L1 region (`BufferType::L1_SMALL`).
pub const MEMTRACK_KIND_L1_SMALL: u8 = 3;
/// Kind: trace buffers (`BufferType::TRACE`).
pub const MEMTRACK_KIND_TRACE: u8 = 4;
/// Kind: a program's circular buffers.
pub const MEMTRACK_KIND_CB: u8 = 5;
/// Kind: kernel binaries.
pub const MEMTRACK_KIND_KERNEL: u8 = 6;

/// Flag: the buffer's memory is already counted by other live buffers (a
/// mesh buffer's backing buffer; a buffer at a preallocated address). Its
/// lifecycle is tracked; its bytes are not counted.
pub const MEMTRACK_FLAG_ALIAS: u8 = 1;

/// Runs `f` inside a panic boundary: a bug in memtrack must never unwind
/// into (or abort) the runtime that called it.
#[inline(always)]
fn boundary<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// Attaches this process to a ring, creating it if needed.
///
/// `ring` names the ring: NULL means `$MEMTRACK_RING`, or "default" if that
/// is unset. An empty name (or an empty `$MEMTRACK_RING`) is
/// `MEMTRACK_ERR_INVALID`. A name without '/' is the file `/dev/shm/memtrack-<name>`; a
/// name with '/' is a path. Idempotent: once attached, returns 0.
///
/// Returns 0 on success, else a negative `MEMTRACK_ERR_*` code; on error one
/// line naming the ring and the reason is printed to stderr (once per
/// process) and the process runs on untracked.
///
/// # Safety
/// `ring` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memtrack_init(ring: *const c_char) -> c_int {
    boundary(MEMTRACK_ERR_INTERNAL, || {
        let name = if ring.is_null() {
            match std::env::var("MEMTRACK_RING") {
                // As `memtrack_init("")`.
                Ok(name) if name.is_empty() => return MEMTRACK_ERR_INVALID,
                name => name.unwrap_or_else(|_| "default".to_owned()),
            }
        } else {
            // SAFETY: the caller passes a NUL-terminated string.
            match unsafe { CStr::from_ptr(ring) }.to_str() {
                Ok(name) if !name.is_empty() => name.to_owned(),
                _ => return MEMTRACK_ERR_INVALID,
            }
        };
        match global::init(crate::shm::ring_path(&name)) {
            Ok(()) => MEMTRACK_OK,
            Err(code) => code,
        }
    })
}

/// 1 when this process records events, else 0.
#[unsafe(no_mangle)]
pub extern "C" fn memtrack_enabled() -> c_int {
    boundary(0, || global::writer().is_some() as i32)
}

/// Records an allocation (short form: no parent, no flags).
#[unsafe(no_mangle)]
pub extern "C" fn memtrack_alloc(device_id: u32, kind: u8, buffer_id: u64, address: u64, size: u64) {
    if !global::is_off() {
        alloc_short(device_id, kind, buffer_id, address, size);
    }
}

/// Records a free (short form).
#[unsafe(no_mangle)]
pub extern "C" fn memtrack_free(device_id: u32, kind: u8, buffer_id: u64, address: u64, size: u64) {
    if !global::is_off() {
        free_short(device_id, kind, buffer_id, address, size);
    }
}

/// Records an allocation (full form: with parent_id and flags).
///
/// # Safety
/// `b` is NULL (a no-op) or points to a valid `memtrack_buffer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memtrack_alloc_buffer(b: *const MemtrackBuffer) {
    // SAFETY: NULL or valid, per the contract.
    if let (false, Some(b)) = (global::is_off(), unsafe { b.as_ref() }) {
        record(Event::Alloc, b);
    }
}

/// Records a free (full form).
///
/// # Safety
/// `b` is NULL (a no-op) or points to a valid `memtrack_buffer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memtrack_free_buffer(b: *const MemtrackBuffer) {
    // SAFETY: NULL or valid, per the contract.
    if let (false, Some(b)) = (global::is_off(), unsafe { b.as_ref() }) {
        record(Event::Free, b);
    }
}

/// The tracked path of the buffer hooks, out of line so that the exported
/// functions stay a load, a compare and a return when tracking is off
/// (inlined, its register saves ran before the check and cost ~1 ns).
#[inline(never)]
fn record(event: Event, buffer: &MemtrackBuffer) {
    boundary((), || record_inline(event, buffer));
}

/// The tracked paths of the short forms: the fields stay in the registers
/// they came in (no `memtrack_buffer` built on the exported function's
/// stack for the tracked path to read back), and the signature is the
/// exported one's, as `extern "C"` (it cannot unwind: `boundary` catches),
/// so the exported function reaches it with a jump: no frame, no register
/// shuffle, no landing pad before the check.
#[inline(never)]
extern "C" fn alloc_short(device_id: u32, kind: u8, buffer_id: u64, address: u64, size: u64) {
    // Its own closure (not `record`'s): each caller's `catch_unwind` then
    // has one caller and is inlined into it.
    boundary((), || record_inline(Event::Alloc, &short_buffer(device_id, kind, buffer_id, address, size)));
}

/// As [`alloc_short`], for [`memtrack_free`].
#[inline(never)]
extern "C" fn free_short(device_id: u32, kind: u8, buffer_id: u64, address: u64, size: u64) {
    boundary((), || record_inline(Event::Free, &short_buffer(device_id, kind, buffer_id, address, size)));
}

#[inline(always)]
fn short_buffer(device_id: u32, kind: u8, buffer_id: u64, address: u64, size: u64) -> MemtrackBuffer {
    MemtrackBuffer { buffer_id, address, size, device_id, kind, ..MemtrackBuffer::default() }
}

#[inline(always)]
fn record_inline(event: Event, buffer: &MemtrackBuffer) {
    if let Some(w) = global::writer() {
        match event {
            Event::Alloc => w.alloc_with_scope(buffer, |t| scope::current(t, w)),
            _ => w.free(buffer),
        }
    }
}

/// Sets the total memory of (device, kind), for used/total views.
#[unsafe(no_mangle)]
pub extern "C" fn memtrack_set_capacity(device_id: u32, kind: u8, bytes: u64) {
    boundary((), || {
        if let Some(w) = global::writer() {
            w.set_capacity(device_id, kind, bytes);
        }
    })
}

/// Records a phase marker. Labels up to 1024 bytes are kept whole (longer
/// ones are cut there).
///
/// # Safety
/// `label` is NULL (a no-op) or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memtrack_mark(label: *const c_char) {
    boundary((), || {
        if label.is_null() {
            return;
        }
        if let Some(w) = global::writer() {
            // SAFETY: NUL-terminated per the contract.
            w.mark(unsafe { text(label) });
        }
    })
}

/// The bytes of `text` up to its NUL, at most `MAX_TEXT_LEN` of them.
///
/// # Safety
/// `text` is a non-NULL, NUL-terminated string that outlives the result.
unsafe fn text<'a>(text: *const c_char) -> &'a [u8] {
    let max = crate::format::MAX_TEXT_LEN;
    // SAFETY: NUL-terminated per the contract; strnlen reads at most `max`
    // bytes, and only up to the NUL.
    unsafe { std::slice::from_raw_parts(text.cast::<u8>(), libc::strnlen(text, max)) }
}

/// Opens a scope named `name` on this thread: every allocation this thread
/// records until the matching `memtrack_scope_end` is attributed to the
/// path of its open scopes ("outer/inner"). NULL is a no-op. Names up to
/// 1024 bytes are kept whole. Nesting deeper than 64 is counted, and
/// attributed to the 64th scope.
///
/// Off, this costs what a disabled hook costs. On, the first use of a name
/// (and of a path) in the process takes a lock and records it once; later
/// calls make no system call, take no lock and allocate nothing.
///
/// # Safety
/// `name` is NULL (a no-op) or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memtrack_scope_begin(name: *const c_char) {
    if !global::is_off() && !name.is_null() {
        scope_begin(name);
    }
}

/// Closes this thread's innermost scope; a no-op when it has none open.
#[unsafe(no_mangle)]
pub extern "C" fn memtrack_scope_end() {
    if !global::is_off() {
        scope_end();
    }
}

/// The tracked path of `memtrack_scope_begin`, out of line as `record`.
#[inline(never)]
fn scope_begin(name: *const c_char) {
    boundary((), || {
        if let Some(w) = global::writer() {
            // SAFETY: non-NULL (checked by the caller) and NUL-terminated
            // per the contract; the bytes are copied before returning.
            scope::begin(w, unsafe { text(name) });
        }
    })
}

/// The tracked path of `memtrack_scope_end`.
#[inline(never)]
fn scope_end() {
    boundary((), || {
        if let Some(w) = global::writer() {
            scope::end(w);
        }
    })
}

/// One nonzero live-counter cell of this process: `memtrack_live_usage`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemtrackLive {
    /// Live bytes, ALIAS buffers excluded (negative when frees of buffers
    /// allocated before tracking began outnumber allocations).
    pub live_bytes: i64,
    /// Live buffers, ALIAS buffers included.
    pub live_buffers: i64,
    /// Device id.
    pub device_id: u32,
    /// `MEMTRACK_KIND_*`.
    pub kind: u8,
    /// 0.
    pub reserved: [u8; 3],
}

const _: () = assert!(std::mem::size_of::<MemtrackLive>() == 24);

/// This process's live usage, from its own live counters in the ring (no
/// consumer needed), for any device id and kind: writes up to `capacity`
/// nonzero (device, kind) cells to
/// `out` in (device, kind) order and returns how many cells are nonzero (call
/// again with more room when that is more than `capacity`). Returns 0 when
/// this process does not record events. `out` may be NULL when `capacity`
/// is 0.
///
/// # Safety
/// `out` is NULL or points to `capacity` writable `memtrack_live`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memtrack_live_usage(out: *mut MemtrackLive, capacity: u32) -> u32 {
    boundary(0, || {
        let Some(w) = global::writer() else { return 0 };
        let mut count = 0;
        for ((device_id, kind), (live_bytes, live_buffers)) in w.live() {
            if count < capacity && !out.is_null() {
                let cell = MemtrackLive { live_bytes, live_buffers, device_id, kind, reserved: [0; 3] };
                // SAFETY: `out` has `capacity` writable cells, per the contract.
                unsafe { out.add(count as usize).write(cell) };
            }
            count += 1;
        }
        count
    })
}

/// This process's untracked usage: the live bytes and buffers of its
/// events that found the ring's counter pool full (so `memtrack_live_usage`
/// does not show them), and how many such events there were. While
/// `*events` stays 0, `memtrack_live_usage` is the whole truth; once it
/// grows, a leak may hide here (a ring created with a larger
/// `MEMTRACK_COUNTER_CELLS` avoids it).
///
/// Writes the three figures through the pointers that are not NULL (zeros
/// when this process does not record events) and returns `MEMTRACK_OK`;
/// `MEMTRACK_ERR_INTERNAL` only if memtrack itself failed, leaving the
/// outputs untouched. Like `memtrack_live_usage`, it needs no consumer.
///
/// # Safety
/// Each pointer is NULL or points to a writable value of its type.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memtrack_untracked_usage(
    bytes: *mut i64,
    buffers: *mut i64,
    events: *mut u64,
) -> c_int {
    boundary(MEMTRACK_ERR_INTERNAL, || {
        let (live_bytes, live_buffers, event_count) = global::writer().map_or((0, 0, 0), |w| w.untracked());
        // SAFETY: each pointer is NULL (skipped) or writable, per the contract.
        unsafe {
            if !bytes.is_null() {
                bytes.write(live_bytes);
            }
            if !buffers.is_null() {
                buffers.write(live_buffers);
            }
            if !events.is_null() {
                events.write(event_count);
            }
        }
        MEMTRACK_OK
    })
}

/// Marks this process exited and stops recording; later events are no-ops.
/// Also runs at normal exit. Safe to call more than once.
#[unsafe(no_mangle)]
pub extern "C" fn memtrack_shutdown() {
    boundary((), global::shutdown)
}

/// A static description of a `MEMTRACK_*` result code. Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn memtrack_strerror(code: c_int) -> *const c_char {
    message(code)
}
