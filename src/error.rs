//! Why a ring could not be created, attached or consumed.

use std::fmt;
use std::path::{Path, PathBuf};

/// An error about one ring file; its `Display` is one line that names the
/// file and the reason, fit for a log or a terminal. (The reason is part of
/// that line rather than a `source()`, so error-chain printers do not
/// repeat it.)
#[derive(Debug, thiserror::Error)]
#[error("memtrack: ring {}: {kind}", path.display())]
pub struct Error {
    /// The ring file.
    pub path: PathBuf,
    /// What went wrong.
    pub kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(path: &Path, kind: ErrorKind) -> Error {
        Error { path: path.to_path_buf(), kind }
    }

    pub(crate) fn io(path: &Path, action: &'static str, source: std::io::Error) -> Error {
        let kind = match source.raw_os_error() {
            Some(libc::ENOSPC) => ErrorKind::NoSpace { action },
            Some(libc::EACCES | libc::EPERM) => ErrorKind::Permission(format!("{action}: {source}")),
            _ => ErrorKind::Io { action, error: source },
        };
        Error::new(path, kind)
    }
}

/// The reasons a ring operation fails.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// A system call failed.
    #[error("cannot {action}: {error}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file system (usually /dev/shm) is full.
    // The sub-rings are most of a default ring (16 of its 20.6 MiB): a
    // lower MEMTRACK_CAPACITY alone rarely makes it fit.
    #[error(
        "cannot {action}: no space left on device (is /dev/shm full? MEMTRACK_SUBRINGS=0 and a lower \
         MEMTRACK_CAPACITY make a smaller ring)"
    )]
    NoSpace {
        /// What was being done.
        action: &'static str,
    },
    /// Not allowed, or a file whose owner or mode makes it untrustworthy.
    #[error("permission denied: {0}")]
    Permission(String),
    /// The file does not start with the memtrack magic.
    #[error("not a memtrack ring (bad magic)")]
    BadMagic,
    /// A different format version.
    #[error("format version {found}, this build reads version {expected}")]
    Version {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// A header field is out of range or inconsistent.
    #[error("corrupt header: {0}")]
    Corrupt(String),
    /// All process-table entries are held by live processes.
    #[error("process table full ({0} live writer processes); this process runs untracked")]
    ProcessTableFull(usize),
    /// Another consumer is attached.
    #[error(
        "already consumed by pid {pid}{}; only one consumer may attach at a time",
        if *.other_namespace { " of another PID namespace (not a pid of this one)" } else { "" }
    )]
    ReaderBusy {
        /// The consumer's pid, as it recorded it (0 if it had not yet),
        /// in its own PID namespace.
        pid: u32,
        /// Whether the consumer runs in another PID namespace, where
        /// `pid` names another process than it does here.
        other_namespace: bool,
    },
    /// A bad ring name or setting.
    #[error("invalid setting: {0}")]
    Config(String),
}

/// A value out of range in a header, for `ErrorKind::Corrupt`.
pub(crate) fn corrupt(path: &Path, what: impl fmt::Display) -> Error {
    Error::new(path, ErrorKind::Corrupt(what.to_string()))
}
