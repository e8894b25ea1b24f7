//! The files `record`, `watch --record` and `export` write: never a
//! truncation, never through a symbolic link, never over a ring or over
//! the command's own input.
//!
//! A regular destination is written into a new file beside it,
//! `DEST.PID-N.unfinished` (`O_EXCL`, same directory, so same file system),
//! and renamed into place when complete. A file already at the destination
//! is kept as `DEST.old` (replacing an earlier `.old`, as `perf record`
//! keeps `perf.data.old`), and the command says so. A command that fails
//! removes its `.unfinished` file; one killed by SIGKILL cannot, and its
//! recording stays readable there with `report --partial`. Until the rename, the destination is untouched: a writer still
//! mapping a ring at that name keeps its pages (no SIGBUS), and a reader
//! of the old file reads the old file.
//!
//! A character device (`/dev/null`, a terminal, `/dev/stdout`) or a FIFO
//! is written in place: it cannot be renamed over, and holds nothing to
//! destroy. A FIFO is opened without blocking; `record` connects it once
//! the command runs (see [`Output::connect`]).
//!
//! Refused, with one line naming the file: a symbolic link to anything
//! else (a regular file, a directory, nothing), a directory, a block
//! device, a memtrack ring (its magic, or the same inode as the ring being
//! read) and the command's own input (same device and inode).

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Longest file-name prefix kept in a temporary name: the whole name stays
/// well under `NAME_MAX` (255) whatever the destination's length.
const TEMP_PREFIX_MAX: usize = 160;

/// Where an [`Output`]'s bytes go.
enum Target {
    /// A temporary file, renamed over `dest` by [`Output::commit`].
    Replace { temp: PathBuf, file: File },
    /// A device or FIFO, written in place.
    InPlace { file: File },
    /// A FIFO with no reader yet: [`Output::connect`] opens it.
    Fifo,
    /// Committed (or kept): nothing left to clean up.
    Done,
}

/// One output file being written.
pub struct Output {
    dest: PathBuf,
    target: Target,
    /// A regular file was at `dest` (the only kind replaced: links are
    /// refused); it becomes `DEST.old` at commit.
    replaces: bool,
}

/// A file that must not be overwritten (the ring being read, the input
/// file), by identity so a hard link or another spelling is caught too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protected {
    dev: u64,
    ino: u64,
    what: &'static str,
}

impl Protected {
    /// `path`'s identity, if it exists; `what` says what it is in errors
    /// ("the ring being recorded", "the input").
    pub fn of(path: &Path, what: &'static str) -> Option<Protected> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Protected { dev: meta.dev(), ino: meta.ino(), what })
    }

    fn is(&self, meta: &std::fs::Metadata) -> bool {
        meta.dev() == self.dev && meta.ino() == self.ino
    }
}

impl Output {
    /// Checks `dest` and opens what will be written: a new temporary file
    /// beside a regular (or missing) destination, the device itself, or
    /// nothing yet for a FIFO.
    ///
    /// # Errors
    /// `dest` is refused (see the module doc) or cannot be created.
    pub fn create(dest: &Path, protected: &[Protected]) -> Result<Output> {
        let context = || format!("memtrack: output file {}", dest.display());
        let fail = |reason: String| -> anyhow::Error { anyhow::anyhow!("{}: {reason}", context()) };
        let existing = match std::fs::symlink_metadata(dest) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(context),
        };
        if let Some(meta) = &existing {
            check_not_protected(meta, "", protected).map_err(fail)?;
            let kind = meta.file_type();
            if kind.is_symlink() {
                // Written through only to a device or FIFO (`/dev/stdout`,
                // `/proc/self/fd/N`); anything else would be written where
                // the link points, which whoever planted it chose.
                match std::fs::metadata(dest) {
                    Ok(target) if target.file_type().is_char_device() || target.file_type().is_fifo() => {
                        check_not_protected(&target, "", protected).map_err(fail)?;
                        return Output::in_place(dest, &target);
                    }
                    _ => {
                        return Err(fail(
                            "is a symbolic link; memtrack does not write through links (give the file it \
                             points to, or remove the link)"
                                .into(),
                        ));
                    }
                }
            }
            if kind.is_dir() {
                return Err(fail("is a directory".into()));
            }
            if kind.is_char_device() || kind.is_fifo() {
                return Output::in_place(dest, meta);
            }
            if !kind.is_file() {
                return Err(fail("is not a regular file, a character device or a FIFO".into()));
            }
            if is_ring_file(dest) {
                return Err(fail(
                    "is a memtrack ring; writing there would destroy it (choose another file name)".into(),
                ));
            }
            let old = old_path(dest);
            if let Ok(old_meta) = std::fs::symlink_metadata(&old) {
                if old_meta.is_dir() {
                    return Err(fail(format!(
                        "{} (where the existing file would be kept) is a directory",
                        old.display()
                    )));
                }
                check_not_protected(
                    &old_meta,
                    &format!("{} (where the existing file would be kept) ", old.display()),
                    protected,
                )
                .map_err(fail)?;
            }
        }
        let (temp, file) = create_temp(dest).with_context(context)?;
        Ok(Output {
            dest: dest.to_owned(),
            target: Target::Replace { temp, file },
            replaces: existing.is_some(),
        })
    }

    fn in_place(dest: &Path, meta: &std::fs::Metadata) -> Result<Output> {
        let mut output = Output { dest: dest.to_owned(), target: Target::Fifo, replaces: false };
        if meta.file_type().is_fifo() {
            // A reader may come later: `connect` opens it.
            if let Some(file) = open_in_place(dest)? {
                output.target = Target::InPlace { file };
            }
        } else {
            match open_in_place(dest)? {
                Some(file) => output.target = Target::InPlace { file },
                None => bail!("memtrack: output file {}: cannot open", dest.display()),
            }
        }
        Ok(output)
    }

    /// The destination, for messages.
    pub fn path(&self) -> &Path {
        &self.dest
    }

    /// Whether the output becomes a regular file (one that can be read
    /// back once committed), not a device or FIFO.
    pub fn is_file(&self) -> bool {
        matches!(self.target, Target::Replace { .. })
    }

    /// Whether the destination is a FIFO no reader has opened yet.
    pub fn waiting_for_reader(&self) -> bool {
        matches!(self.target, Target::Fifo)
    }

    /// Opens a FIFO destination once a reader has opened it, asking
    /// `keep_waiting` every 20 ms whether to go on waiting.
    ///
    /// # Errors
    /// `keep_waiting` gave up (the error says no reader came), or the FIFO
    /// cannot be opened.
    pub fn connect(&mut self, mut keep_waiting: impl FnMut() -> bool) -> Result<()> {
        while self.waiting_for_reader() {
            if let Some(file) = open_in_place(&self.dest)? {
                self.target = Target::InPlace { file };
                return Ok(());
            }
            if !keep_waiting() {
                bail!(
                    "memtrack: output file {}: no process opened the FIFO for reading",
                    self.dest.display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }

    /// Makes the written data the destination: flushes it to disk and, for
    /// a temporary file, renames it into place (an existing file becomes
    /// `DEST.old`). Returns a line saying what was replaced, if anything.
    ///
    /// # Errors
    /// Syncing or renaming failed; the temporary file is removed.
    pub fn commit(mut self) -> Result<Option<String>> {
        let context = || format!("memtrack: output file {}", self.dest.display());
        match &self.target {
            Target::Replace { temp, file } => {
                file.sync_all().with_context(context)?;
                let replaced = self.rename_into_place(temp)?;
                self.target = Target::Done;
                Ok(replaced)
            }
            Target::InPlace { .. } | Target::Fifo | Target::Done => Ok(None),
        }
    }

    /// Puts what was written in place although it is incomplete (the
    /// output failed mid-way; `report --partial` reads it). Returns a
    /// line saying what happened, if anything.
    pub fn keep_partial(mut self) -> Option<String> {
        let Target::Replace { temp, file } = &self.target else { return None };
        let holds = file.metadata().map_or(0, |m| m.len());
        if holds < crate::recording::FILE_HEADER_SIZE as u64 {
            return None; // Dropped: removed.
        }
        let _ = file.sync_all();
        let note = match self.rename_into_place(temp) {
            Ok(replaced) => format!(
                "memtrack: kept the incomplete recording ({holds} bytes) as {}{}",
                self.dest.display(),
                replaced.map_or_else(String::new, |r| format!("; {r}"))
            ),
            Err(error) => return Some(format!("{error:#}")),
        };
        self.target = Target::Done;
        Some(note)
    }

    /// Removes the temporary file: nothing at the destination changes
    /// (dropping an `Output` does the same).
    pub fn discard(self) {}

    fn rename_into_place(&self, temp: &Path) -> Result<Option<String>> {
        let context = || format!("memtrack: output file {}", self.dest.display());
        let mut note = None;
        if self.replaces {
            let old = old_path(&self.dest);
            match std::fs::rename(&self.dest, &old) {
                Ok(()) => {
                    note = Some(format!(
                        "memtrack: replaced {}; the previous file is now {}",
                        self.dest.display(),
                        old.display()
                    ))
                }
                // Removed meanwhile: nothing to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("{}: cannot keep it as {}", context(), old.display()));
                }
            }
        }
        std::fs::rename(temp, &self.dest).with_context(context)?;
        Ok(note)
    }

    fn file(&mut self) -> std::io::Result<&mut File> {
        match &mut self.target {
            Target::Replace { file, .. } | Target::InPlace { file } => Ok(file),
            Target::Fifo => {
                Err(std::io::Error::new(std::io::ErrorKind::NotConnected, "no reader on the FIFO"))
            }
            Target::Done => Err(std::io::Error::other("already complete")),
        }
    }
}

impl Drop for Output {
    /// An output neither committed nor kept leaves nothing behind.
    fn drop(&mut self) {
        if let Target::Replace { temp, .. } = &self.target {
            let _ = std::fs::remove_file(temp);
        }
    }
}

impl Write for Output {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.file()?.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file()?.flush()
    }
}

/// `DEST.old`.
pub fn old_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".old");
    PathBuf::from(name)
}

/// `subject` is "" for the destination itself, else the file named.
fn check_not_protected(
    meta: &std::fs::Metadata,
    subject: &str,
    protected: &[Protected],
) -> Result<(), String> {
    match protected.iter().find(|p| p.is(meta)) {
        Some(p) => Err(format!("{subject}is {}; choose another output file", p.what)),
        None => Ok(()),
    }
}

/// Whether `path` starts with a ring's magic (opened without following
/// links and without blocking, read only).
fn is_ring_file(path: &Path) -> bool {
    let Ok(file) =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
    else {
        return false;
    };
    let mut magic = [0u8; 8];
    (&file).read_exact(&mut magic).is_ok() && u64::from_le_bytes(magic) == memtrack::format::MAGIC
}

/// A new file beside `dest`, `NAME.PID-N.unfinished`, created exclusively.
/// Visible on purpose: a recorder killed by SIGKILL (no handler runs)
/// leaves its records there, and `report --partial` reads them.
fn create_temp(dest: &Path) -> std::io::Result<(PathBuf, File)> {
    let name = dest.file_name().ok_or_else(|| std::io::Error::other("not a file name"))?;
    let mut prefix = name.as_bytes().to_vec();
    prefix.truncate(TEMP_PREFIX_MAX);
    for n in 0u32.. {
        let mut temp_name = prefix.clone();
        temp_name.extend_from_slice(format!(".{}-{n}.unfinished", std::process::id()).as_bytes());
        let temp = dest.with_file_name(OsString::from_vec(temp_name));
        // O_EXCL | O_CREAT: never an existing file, never through a link.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

/// Opens a device or FIFO for writing without truncating, creating or
/// blocking; `None` for a FIFO no process has open for reading.
fn open_in_place(dest: &Path) -> Result<Option<File>> {
    let context = || format!("memtrack: output file {}", dest.display());
    let c = CString::new(dest.as_os_str().as_bytes()).with_context(context)?;
    // Links are followed here (`/dev/stdout`): what was opened is checked
    // below, so a link swapped for a regular file meanwhile is refused
    // before anything is written.
    // SAFETY: a NUL-terminated path; no mode (no O_CREAT).
    let fd = unsafe {
        libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
    };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(error).with_context(context);
    }
    // SAFETY: a descriptor we just opened and nobody else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    let kind = file.metadata().with_context(context)?.file_type();
    if !(kind.is_char_device() || kind.is_fifo()) {
        bail!("{}: changed while being opened (no longer a device or FIFO)", context());
    }
    // Blocking writes from now on: a slow reader slows us, it does not
    // make us drop data.
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("memtrack-output-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_new_file_appears_only_when_committed() {
        let dir = dir("new");
        let dest = dir.join("out.mtr");
        let mut out = Output::create(&dest, &[]).unwrap();
        out.write_all(b"hello").unwrap();
        assert!(!dest.exists());
        assert_eq!(out.commit().unwrap(), None);
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_existing_file_is_kept_as_old_and_untouched_until_commit() {
        let dir = dir("old");
        let dest = dir.join("out.mtr");
        std::fs::write(&dest, b"previous").unwrap();
        std::fs::write(old_path(&dest), b"older").unwrap();
        let mut out = Output::create(&dest, &[]).unwrap();
        out.write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"previous");
        let note = out.commit().unwrap().unwrap();
        assert!(note.contains("out.mtr.old"), "{note}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(std::fs::read(old_path(&dest)).unwrap(), b"previous");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn discarding_leaves_the_destination_as_it_was() {
        let dir = dir("discard");
        let dest = dir.join("out.mtr");
        std::fs::write(&dest, b"previous").unwrap();
        let mut out = Output::create(&dest, &[]).unwrap();
        out.write_all(b"half").unwrap();
        out.discard();
        assert_eq!(std::fs::read(&dest).unwrap(), b"previous");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_inputs_and_directories_are_refused() {
        let dir = dir("refuse");
        let target = dir.join("target");
        std::fs::write(&target, b"precious").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let dangling = dir.join("dangling");
        std::os::unix::fs::symlink(dir.join("nothing"), &dangling).unwrap();
        let hard = dir.join("hard");
        std::fs::hard_link(&target, &hard).unwrap();
        let input = Protected::of(&target, "the input").unwrap();
        let error = |dest: &Path| format!("{:#}", Output::create(dest, &[input]).err().unwrap());
        assert!(error(&link).contains("symbolic link"), "{}", error(&link));
        assert!(error(&dangling).contains("symbolic link"));
        assert!(error(&target).contains("is the input"), "{}", error(&target));
        assert!(error(&hard).contains("is the input"));
        assert!(error(&dir).contains("directory"));
        assert!(!dangling.with_file_name("nothing").exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        // `X.old` would move the input: refused as well.
        let old_input = dir.join("x.old");
        std::fs::write(&old_input, b"in").unwrap();
        std::fs::write(dir.join("x"), b"out").unwrap();
        let error = Output::create(&dir.join("x"), &[Protected::of(&old_input, "the input").unwrap()]);
        assert!(format!("{:#}", error.err().unwrap()).contains("x.old"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_long_name_gets_a_temporary_name_that_fits() {
        let dir = dir("long");
        let dest = dir.join("n".repeat(250));
        let mut out = Output::create(&dest, &[]).unwrap();
        out.write_all(b"x").unwrap();
        out.commit().unwrap();
        assert!(dest.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_device_is_written_in_place() {
        let mut out = Output::create(Path::new("/dev/null"), &[]).unwrap();
        out.write_all(b"gone").unwrap();
        assert_eq!(out.commit().unwrap(), None);
        assert!(Path::new("/dev/null").metadata().unwrap().file_type().is_char_device());
    }
}
