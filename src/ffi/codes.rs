//! Result codes of the C ABI and their messages.

use std::ffi::{c_char, c_int};

use crate::error::{Error, ErrorKind};

/// Success.
pub const MEMTRACK_OK: c_int = 0;
/// A bad ring name or environment setting (`MEMTRACK_CAPACITY`, `MEMTRACK_COUNTER_CELLS`, `MEMTRACK_SUBRINGS`, `MEMTRACK_SUBRING_CAPACITY`, `MEMTRACK_WAIT_US`).
pub const MEMTRACK_ERR_INVALID: c_int = -1;
/// A system call failed.
pub const MEMTRACK_ERR_IO: c_int = -2;
/// No space left for the ring (is /dev/shm full?).
pub const MEMTRACK_ERR_NO_SPACE: c_int = -3;
/// Permission denied, or a ring file owned by another user or writable by others.
pub const MEMTRACK_ERR_PERMISSION: c_int = -4;
/// The file is not a valid memtrack ring.
pub const MEMTRACK_ERR_CORRUPT: c_int = -5;
/// The ring has another format version.
pub const MEMTRACK_ERR_VERSION: c_int = -6;
/// The ring's process table is full.
pub const MEMTRACK_ERR_PROCESS_TABLE_FULL: c_int = -7;
/// `memtrack_shutdown` was called; tracking stays off in this process.
pub const MEMTRACK_ERR_SHUTDOWN: c_int = -8;
/// An internal error (a bug in memtrack), contained at the boundary.
pub const MEMTRACK_ERR_INTERNAL: c_int = -9;

pub(crate) fn code_of(error: &Error) -> c_int {
    match error.kind {
        ErrorKind::Io { .. } => MEMTRACK_ERR_IO,
        ErrorKind::NoSpace { .. } => MEMTRACK_ERR_NO_SPACE,
        ErrorKind::Permission(_) => MEMTRACK_ERR_PERMISSION,
        ErrorKind::BadMagic | ErrorKind::Corrupt(_) => MEMTRACK_ERR_CORRUPT,
        ErrorKind::Version { .. } => MEMTRACK_ERR_VERSION,
        ErrorKind::ProcessTableFull(_) => MEMTRACK_ERR_PROCESS_TABLE_FULL,
        ErrorKind::Config(_) | ErrorKind::ReaderBusy { .. } => MEMTRACK_ERR_INVALID,
    }
}

/// A static, NUL-terminated description of `code`.
pub(crate) fn message(code: c_int) -> *const c_char {
    let text: &'static std::ffi::CStr = match code {
        MEMTRACK_OK => c"success",
        MEMTRACK_ERR_INVALID => c"invalid ring name or setting",
        MEMTRACK_ERR_IO => c"input/output error on the ring file",
        MEMTRACK_ERR_NO_SPACE => c"no space left for the ring (is /dev/shm full?)",
        MEMTRACK_ERR_PERMISSION => {
            c"permission denied, or ring file not owned by this user / writable by others"
        }
        MEMTRACK_ERR_CORRUPT => c"not a valid memtrack ring",
        MEMTRACK_ERR_VERSION => c"ring has an unsupported format version",
        MEMTRACK_ERR_PROCESS_TABLE_FULL => c"ring process table is full",
        MEMTRACK_ERR_SHUTDOWN => c"memtrack was shut down in this process",
        MEMTRACK_ERR_INTERNAL => c"internal error in memtrack",
        _ => c"unknown memtrack error code",
    };
    text.as_ptr()
}
