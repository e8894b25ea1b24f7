//! Ring files: naming, exclusive creation, validation on attach, the
//! mapping, and the kernel locks that say who is alive.
//!
//! A ring is created under a temporary name, fully initialised, and only
//! then linked to its real name (`link` fails if the name exists), so no
//! process ever sees a half-made ring: racing creators end with one ring,
//! and the losers attach to it. Its pages are reserved with
//! `posix_fallocate`, so a full /dev/shm is an error at creation, never a
//! SIGBUS later.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};

use crate::clock::{Calibration, ClockSource, monotonic_ns, realtime_ns};
use crate::counters::{CapacityTable, Pool};
use crate::error::{Error, ErrorKind, corrupt};
use crate::format::*;
use crate::ring::RingView;
use crate::sync::{AtomicU64, Ordering};

/// Directory of rings named without a '/'.
pub const SHM_DIR: &str = "/dev/shm";
/// Prefix of ring files in [`SHM_DIR`].
pub const RING_FILE_PREFIX: &str = "memtrack-";

/// Bytes of a ring's file name kept in its temporary name while it is
/// made: with the pid and a timestamp, well under `NAME_MAX` (255).
const TEMP_PREFIX_MAX: usize = 200;

/// The file of the ring called `name`: a name without '/' is
/// `/dev/shm/memtrack-<name>`; a name with '/' is a path.
pub fn ring_path(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        Path::new(SHM_DIR).join(format!("{RING_FILE_PREFIX}{name}"))
    }
}

/// How to make a ring that does not exist yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingOptions {
    /// Slots (records); a power of two in `MIN_CAPACITY..=MAX_CAPACITY`.
    pub capacity: u64,
    /// Cells of the live-counter pool; a power of two in
    /// `MIN_COUNTER_CELLS..=MAX_COUNTER_CELLS`.
    pub counter_cells: u32,
    /// Sub-rings (one writer thread each), `0..=MAX_SUBRINGS`; 0: every
    /// thread writes the shared ring.
    pub subrings: u32,
    /// Slots per sub-ring; a power of two in
    /// `MIN_SUBRING_CAPACITY..=MAX_SUBRING_CAPACITY`.
    pub subring_capacity: u32,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            capacity: DEFAULT_CAPACITY,
            counter_cells: DEFAULT_COUNTER_CELLS,
            subrings: DEFAULT_SUBRINGS,
            subring_capacity: DEFAULT_SUBRING_CAPACITY,
        }
    }
}

impl RingOptions {
    /// The defaults, with `MEMTRACK_CAPACITY` (records),
    /// `MEMTRACK_COUNTER_CELLS`, `MEMTRACK_SUBRINGS` and
    /// `MEMTRACK_SUBRING_CAPACITY` (records) if set; checks `MEMTRACK_CLOCK`
    /// too. All concern only a ring this process creates: callers ask for
    /// them only then ([`Ring::open_or_create_with`]).
    ///
    /// # Errors
    /// `ErrorKind::Config` if `MEMTRACK_CAPACITY` is not a valid capacity,
    /// `MEMTRACK_COUNTER_CELLS` not a valid pool size, `MEMTRACK_SUBRINGS`
    /// or `MEMTRACK_SUBRING_CAPACITY` out of range, or `MEMTRACK_CLOCK` is
    /// neither `monotonic` nor `tsc`.
    pub fn from_env(path: &Path) -> Result<RingOptions, Error> {
        // Read by `ClockSource::detect` when the ring is made; checked
        // here, where every setting of a new ring is, so a typo is one
        // line rather than silently the default.
        if let Some(clock) = std::env::var_os("MEMTRACK_CLOCK")
            && clock != "monotonic"
            && clock != "tsc"
        {
            return Err(Error::new(
                path,
                ErrorKind::Config(format!(
                    "MEMTRACK_CLOCK={:?} is neither \"monotonic\" nor \"tsc\" (the default: the TSC where invariant)",
                    clock.to_string_lossy()
                )),
            ));
        }
        let number = |name: &str, what: &str| -> Result<Option<u64>, Error> {
            let Some(value) = std::env::var_os(name) else { return Ok(None) };
            let text = value.to_string_lossy();
            text.trim().parse::<u64>().map(Some).map_err(|_| {
                Error::new(path, ErrorKind::Config(format!("{name}={text:?} is not a number of {what}")))
            })
        };
        let mut options = RingOptions::default();
        if let Some(capacity) = number("MEMTRACK_CAPACITY", "records")? {
            options.capacity = capacity;
        }
        if let Some(cells) = number("MEMTRACK_COUNTER_CELLS", "counter cells")? {
            options.counter_cells = u32::try_from(cells).unwrap_or(u32::MAX);
        }
        if let Some(subrings) = number("MEMTRACK_SUBRINGS", "sub-rings")? {
            options.subrings = u32::try_from(subrings).unwrap_or(u32::MAX);
        }
        if let Some(capacity) = number("MEMTRACK_SUBRING_CAPACITY", "records")? {
            options.subring_capacity = u32::try_from(capacity).unwrap_or(u32::MAX);
        }
        options.check(path)?;
        Ok(options)
    }

    fn check(&self, path: &Path) -> Result<(), Error> {
        let c = self.capacity;
        if !c.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&c) {
            return Err(Error::new(
                path,
                ErrorKind::Config(format!(
                    "capacity {c} is not a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}"
                )),
            ));
        }
        let n = self.counter_cells;
        if !n.is_power_of_two() || !(MIN_COUNTER_CELLS..=MAX_COUNTER_CELLS).contains(&n) {
            return Err(Error::new(
                path,
                ErrorKind::Config(format!(
                    "MEMTRACK_COUNTER_CELLS {n} is not a power of two between {MIN_COUNTER_CELLS} and {MAX_COUNTER_CELLS}"
                )),
            ));
        }
        if self.subrings > MAX_SUBRINGS {
            return Err(Error::new(
                path,
                ErrorKind::Config(format!("MEMTRACK_SUBRINGS {} is more than {MAX_SUBRINGS}", self.subrings)),
            ));
        }
        let s = self.subring_capacity;
        if !s.is_power_of_two() || !(MIN_SUBRING_CAPACITY..=MAX_SUBRING_CAPACITY).contains(&s) {
            return Err(Error::new(
                path,
                ErrorKind::Config(format!(
                    "MEMTRACK_SUBRING_CAPACITY {s} is not a power of two between {MIN_SUBRING_CAPACITY} and {MAX_SUBRING_CAPACITY}"
                )),
            ));
        }
        Ok(())
    }
}

/// An attached ring file: its mapping and the open file description whose
/// locks say which process-table entry (and whether the consumer role) this
/// attachment holds.
pub struct Ring {
    path: PathBuf,
    file: File,
    /// Shared with the lane leases of threads that hooked for a writer on
    /// this ring, which may outlive it (see [`LaneWord`]).
    map: Arc<MmapRaw>,
    capacity: u64,
    lap_shift: u32,
    counter_cells: u32,
    subrings: u32,
    subring_capacity: u32,
    /// Offset of the shared ring's slots (past the sub-rings), computed
    /// once: every shared-ring write needs it.
    shared_slots_offset: usize,
    clock: ClockSource,
    calibration: Calibration,
}

// SAFETY: the mapping is only reached through atomics (`format` has no
// other kind of shared field), so sharing it across threads is sound.
unsafe impl Sync for Ring {}
// SAFETY: as above; nothing in a `Ring` is tied to the creating thread.
unsafe impl Send for Ring {}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("path", &self.path).field("capacity", &self.capacity).finish()
    }
}

impl Ring {
    /// Attaches to the existing ring at `path`.
    ///
    /// # Errors
    /// The file is missing or unreadable, owned by another user or writable
    /// by group or others, or its header fails validation (magic, version,
    /// record size, capacity, length, table sizes, clock).
    pub fn open(path: &Path) -> Result<Ring, Error> {
        let file = open_file(path, libc::O_RDWR, 0)?;
        Ring::attach(path, file)
    }

    /// Creates a ring at `path`, which must not exist.
    ///
    /// # Errors
    /// `Config` for bad options; `Io` with `EEXIST` if the file exists;
    /// `NoSpace` if the file system cannot hold it; `Permission`.
    pub fn create(path: &Path, options: RingOptions) -> Result<Ring, Error> {
        match Ring::create_new(path, options)? {
            Some(ring) => Ok(ring),
            None => Err(Error::io(path, "create ring", std::io::Error::from_raw_os_error(libc::EEXIST))),
        }
    }

    /// Attaches to the ring at `path`, creating it with `options` if it
    /// does not exist. Processes racing here end up on one ring.
    ///
    /// # Errors
    /// As [`Ring::open`] and [`Ring::create`].
    pub fn open_or_create(path: &Path, options: RingOptions) -> Result<Ring, Error> {
        match Ring::open(path) {
            Err(Error { kind: ErrorKind::Io { error, .. }, .. })
                if error.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        match Ring::create_new(path, options)? {
            Some(ring) => Ok(ring),
            None => Ring::open(path), // Another process won the race.
        }
    }

    /// As [`Ring::open_or_create`], asking `options` only if the ring must
    /// be created: a bad `MEMTRACK_CAPACITY` concerns only rings this
    /// process makes, never attaching to one that exists.
    ///
    /// # Errors
    /// As [`Ring::open_or_create`]; `options`' error when creating.
    pub fn open_or_create_with(
        path: &Path,
        options: impl FnOnce() -> Result<RingOptions, Error>,
    ) -> Result<Ring, Error> {
        match Ring::open(path) {
            Err(Error { kind: ErrorKind::Io { error, .. }, .. })
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                Ring::open_or_create(path, options()?)
            }
            other => other,
        }
    }

    /// Creates and links a new ring; `None` if `path` appeared meanwhile.
    fn create_new(path: &Path, options: RingOptions) -> Result<Option<Ring>, Error> {
        options.check(path)?;
        let size =
            file_size(options.capacity, options.counter_cells, options.subrings, options.subring_capacity);
        let file_name =
            path.file_name().ok_or_else(|| Error::new(path, ErrorKind::Config("not a file name".into())))?;
        // Short whatever the ring's name: a name that fits must not fail
        // on its temporary name (NAME_MAX is 255 bytes); random, since the
        // pid alone is not unique where PID namespaces share /dev/shm.
        let mut prefix = file_name.as_bytes().to_vec();
        prefix.truncate(TEMP_PREFIX_MAX);
        let tmp = path.with_file_name(std::ffi::OsStr::from_bytes(
            &[b".", &prefix[..], format!(".{}.{:016x}.tmp", std::process::id(), random_u64()).as_bytes()]
                .concat(),
        ));
        // Errors name the ring, not the temporary file.
        let file = open_file(&tmp, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600)
            .map_err(|e| Error { path: path.to_path_buf(), ..e })?;
        let result = (|| {
            // Exactly 0600 whatever the umask says.
            // SAFETY: a valid descriptor we own.
            if unsafe { libc::fchmod(file.as_raw_fd(), 0o600) } != 0 {
                return Err(Error::io(path, "set ring file mode", std::io::Error::last_os_error()));
            }
            // SAFETY: a valid descriptor we own; the range is within i64.
            let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
            if rc != 0 {
                return Err(Error::io(
                    path,
                    "reserve ring file pages",
                    std::io::Error::from_raw_os_error(rc),
                ));
            }
            let map = map_file(path, &file, size)?;
            initialise(&map, options);
            drop(map);
            let (old, new) = (c_path(&tmp, path)?, c_path(path, path)?);
            // SAFETY: both are NUL-terminated paths.
            if unsafe { libc::link(old.as_ptr(), new.as_ptr()) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EEXIST) {
                    return Ok(None);
                }
                return Err(Error::io(path, "link ring file into place", err));
            }
            Ok(Some(()))
        })();
        let _ = std::fs::remove_file(&tmp);
        match result? {
            Some(()) => Ring::attach(path, file).map(Some),
            None => Ok(None),
        }
    }

    /// Creates a ring under a name of its own, `<prefix>-<pid>-<random>`
    /// (64 random bits): no other process can hold that name, whichever
    /// PID namespace or host it runs in and whatever pid it has, and the
    /// name is taken exclusively (a name that exists is never reused; a
    /// new random part is drawn).
    ///
    /// # Errors
    /// As [`Ring::create`].
    pub fn create_unique(prefix: &str, options: RingOptions) -> Result<Ring, Error> {
        let mut attempts = 0;
        loop {
            let path = ring_path(&format!("{prefix}-{}-{:016x}", std::process::id(), random_u64()));
            match Ring::create_new(&path, options)? {
                Some(ring) => return Ok(ring),
                // Another process has this name (a 2^-64 chance, or a
                // broken random source): draw again, a few times.
                None if attempts < 8 => attempts += 1,
                None => {
                    return Err(Error::io(
                        &path,
                        "create ring",
                        std::io::Error::from_raw_os_error(libc::EEXIST),
                    ));
                }
            }
        }
    }

    /// Which file this attachment has open: its device and inode, for
    /// [`remove_ring_file`].
    pub fn file_id(&self) -> FileId {
        // fstat of a descriptor we own cannot fail but for EIO; an id that
        // matches nothing makes `remove_ring_file` remove nothing.
        self.file.metadata().map_or(FileId { device: u64::MAX, inode: u64::MAX }, |m| FileId {
            device: m.dev(),
            inode: m.ino(),
        })
    }

    /// The PID namespace of the attached consumer (see
    /// [`pid_namespace`](crate::pid_namespace)), if it said: its pid in
    /// [`Snapshot::reader_pid`](crate::Snapshot) names a process of this
    /// namespace only if this equals ours.
    pub fn reader_pid_namespace(&self) -> Option<u32> {
        let ns = self.header().control.reader.reader_pid_ns.load(Ordering::Relaxed);
        (ns != 0).then_some(ns)
    }

    fn attach(path: &Path, file: File) -> Result<Ring, Error> {
        let meta = file.metadata().map_err(|e| Error::io(path, "stat ring file", e))?;
        if !meta.file_type().is_file() {
            return Err(corrupt(path, "not a regular file"));
        }
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        if meta.uid() != uid {
            return Err(Error::new(
                path,
                ErrorKind::Permission(format!("owned by uid {}, not by this user (uid {uid})", meta.uid())),
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(Error::new(
                path,
                ErrorKind::Permission(format!(
                    "mode {:o} lets group or others write it",
                    meta.mode() & 0o777
                )),
            ));
        }
        let len = meta.len();
        if len < HEADER_REGION as u64 {
            return Err(corrupt(
                path,
                format!("file holds {len} bytes, shorter than a header ({HEADER_REGION})"),
            ));
        }
        let map = map_file(path, &file, len)?;
        // SAFETY: the mapping is at least HEADER_REGION bytes, page-aligned,
        // and Header holds only atomics, so no plain reference into memory
        // other processes write is formed.
        let header = unsafe { &*(map.as_ptr() as *const Header) };
        let id = &header.identity;
        if id.magic.load(Ordering::Acquire) != MAGIC {
            return Err(Error::new(path, ErrorKind::BadMagic));
        }
        let version = id.version.load(Ordering::Relaxed);
        if version != FORMAT_VERSION {
            return Err(Error::new(path, ErrorKind::Version { found: version, expected: FORMAT_VERSION }));
        }
        let check = |field: &str, found: u64, expected: u64| -> Result<(), Error> {
            if found != expected {
                return Err(corrupt(path, format!("{field} is {found}, expected {expected}")));
            }
            Ok(())
        };
        check("record size", id.record_size.load(Ordering::Relaxed) as u64, RECORD_SIZE as u64)?;
        check("process table size", id.max_processes.load(Ordering::Relaxed) as u64, MAX_PROCESSES as u64)?;
        check(
            "capacity table size",
            id.capacity_entries.load(Ordering::Relaxed) as u64,
            CAPACITY_ENTRIES as u64,
        )?;
        check("counter lanes", id.counter_lanes.load(Ordering::Relaxed) as u64, COUNTER_LANES as u64)?;
        let capacity = id.capacity.load(Ordering::Relaxed);
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(corrupt(path, format!("capacity {capacity} is not a power of two in range")));
        }
        let counter_cells = id.counter_cells.load(Ordering::Relaxed);
        if !counter_cells.is_power_of_two()
            || !(MIN_COUNTER_CELLS..=MAX_COUNTER_CELLS).contains(&counter_cells)
        {
            return Err(corrupt(
                path,
                format!("counter pool of {counter_cells} cells is not a power of two in range"),
            ));
        }
        let subrings = id.subrings.load(Ordering::Relaxed);
        if subrings > MAX_SUBRINGS {
            return Err(corrupt(path, format!("{subrings} sub-rings, more than {MAX_SUBRINGS}")));
        }
        let subring_capacity = id.subring_capacity.load(Ordering::Relaxed);
        if !subring_capacity.is_power_of_two()
            || !(MIN_SUBRING_CAPACITY..=MAX_SUBRING_CAPACITY).contains(&subring_capacity)
        {
            return Err(corrupt(
                path,
                format!("sub-ring capacity {subring_capacity} is not a power of two in range"),
            ));
        }
        // Every field that places a byte is checked above, so this cannot
        // overflow, and the length checks below keep every region mapped.
        let size = file_size(capacity, counter_cells, subrings, subring_capacity);
        check("recorded file length", id.file_size.load(Ordering::Relaxed), size)?;
        check("file length", len, size)?;
        let clock_code = id.clock_source.load(Ordering::Relaxed);
        let clock = ClockSource::from_code(clock_code)
            .ok_or_else(|| corrupt(path, format!("unknown clock source {clock_code}")))?;
        let calibration = Calibration {
            ticks: header.clock.ticks.load(Ordering::Relaxed),
            monotonic_ns: header.clock.monotonic_ns.load(Ordering::Relaxed),
            ticks_per_second: header.clock.ticks_per_second.load(Ordering::Relaxed),
        };
        if calibration.ticks_per_second == 0 {
            return Err(corrupt(path, "clock rate is 0"));
        }
        Ok(Ring {
            path: path.to_path_buf(),
            file,
            map: Arc::new(map),
            capacity,
            lap_shift: capacity.trailing_zeros(),
            counter_cells,
            subrings,
            subring_capacity,
            shared_slots_offset: slots_offset(counter_cells, subrings, subring_capacity),
            clock,
            calibration,
        })
    }

    /// The ring file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Where record timestamps come from.
    pub fn clock_source(&self) -> ClockSource {
        self.clock
    }

    /// The creator's calibration of the record clock.
    pub fn calibration(&self) -> Calibration {
        self.calibration
    }

    /// Wall-clock creation time, ns since the Unix epoch.
    pub fn created_unix_ns(&self) -> u64 {
        self.header().identity.created_unix_ns.load(Ordering::Relaxed)
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: validated in `attach`: the mapping holds a header, which
        // is all atomics.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    /// The table entry at `index` (< MAX_PROCESSES).
    pub(crate) fn process_entry(&self, index: usize) -> &ProcessEntry {
        assert!(index < MAX_PROCESSES);
        // SAFETY: the table lies within the validated mapping, entries are
        // 128-byte aligned there, and hold only atomics.
        unsafe { &*(self.map.as_ptr().add(PROCESS_TABLE_OFFSET) as *const ProcessEntry).add(index) }
    }

    /// The live-counter pool.
    #[inline(always)]
    pub(crate) fn counters(&self) -> Pool<'_> {
        // SAFETY: `counter_cells` cells follow COUNTERS_OFFSET in the
        // validated mapping, 32-byte aligned there, and hold only atomics.
        Pool::new(unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(COUNTERS_OFFSET) as *const CounterCell,
                self.counter_cells as usize,
            )
        })
    }

    /// The lane word of entry `index`, mapped for as long as the result
    /// lives, even past this `Ring`.
    pub(crate) fn lane_word(&self, index: usize) -> LaneWord {
        assert!(index < MAX_PROCESSES);
        LaneWord { map: Arc::clone(&self.map), index }
    }

    /// Cells in the live-counter pool.
    pub fn counter_cells(&self) -> u32 {
        self.counter_cells
    }

    /// The capacity table.
    pub(crate) fn capacities(&self) -> CapacityTable<'_> {
        // SAFETY: as for `counters`: CAPACITY_ENTRIES entries of atomics at
        // CAPACITY_TABLE_OFFSET, within the mapping and aligned.
        CapacityTable::new(unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(CAPACITY_TABLE_OFFSET) as *const CapacityEntry,
                CAPACITY_ENTRIES,
            )
        })
    }

    /// How many times writers rang the consumer's doorbell (wrapping at
    /// 2^32; see `ring::doorbell`). For tests.
    #[doc(hidden)]
    pub fn doorbell_rings(&self) -> u32 {
        self.header().doorbell.bell.load(crate::sync::Ordering::Relaxed)
    }

    /// The protocol over this ring's control block and slots.
    #[inline(always)]
    pub(crate) fn view(&self) -> RingView<'_> {
        // SAFETY: `capacity` slots follow the pool in the validated
        // mapping; slots are 64-byte aligned there and hold only atomics.
        let slots = unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(self.shared_slots_offset) as *const Slot,
                self.capacity as usize,
            )
        };
        RingView::with_shift(&self.header().control, slots, self.lap_shift)
    }

    /// Sub-ring `i`'s header (`i < subring_count()`), mapped for as long as
    /// the result lives, even past this `Ring`.
    pub(crate) fn subring_word(&self, i: usize) -> SubRingWord {
        assert!(i < self.subring_count());
        SubRingWord { map: Arc::clone(&self.map), offset: subring_header_offset(self.counter_cells, i) }
    }

    /// Sub-rings in this ring (0: the shared ring only).
    #[inline(always)]
    pub(crate) fn subring_count(&self) -> usize {
        self.subrings as usize
    }

    /// Slots per sub-ring.
    pub(crate) fn subring_capacity(&self) -> u64 {
        self.subring_capacity as u64
    }

    /// Sub-ring `i`'s header (`i < subring_count()`).
    #[inline(always)]
    pub(crate) fn subring_header(&self, i: usize) -> &SubRingHeader {
        assert!(i < self.subring_count());
        // SAFETY: `subrings` headers lie at the sub-ring region's start in
        // the validated mapping (its length was checked against
        // `file_size`), 128-byte aligned there (the region starts at a
        // multiple of 128, headers are 640 bytes), and hold only atomics.
        unsafe {
            &*(self.map.as_ptr().add(subring_header_offset(self.counter_cells, i)) as *const SubRingHeader)
        }
    }

    /// The slots of sub-ring `i` (`i < subring_count()`).
    #[inline(always)]
    pub(crate) fn subring_slots(&self, i: usize) -> &[Slot] {
        assert!(i < self.subring_count());
        // SAFETY: `subring_capacity` slots of sub-ring `i` lie in the
        // validated mapping, 64-byte aligned (the region after the headers
        // starts at a multiple of 128), and hold only atomics.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(subring_slots_offset(
                    self.counter_cells,
                    self.subrings,
                    self.subring_capacity,
                    i,
                )) as *const Slot,
                self.subring_capacity as usize,
            )
        }
    }

    /// The ring protocol over sub-ring `i` (`i < subring_count()`): its
    /// RingControl and its slots, for the consumer (take, commit,
    /// progress) and for the writer holding its lease.
    #[inline(always)]
    pub(crate) fn subring_view(&self, i: usize) -> RingView<'_> {
        RingView::with_shift(
            &self.subring_header(i).control,
            self.subring_slots(i),
            self.subring_capacity.trailing_zeros(),
        )
    }

    /// Closes this attachment's descriptor in a forked child, where it is a
    /// copy of the parent's: the parent's locks stay, since the parent still
    /// holds the description. Async-signal-safe.
    ///
    /// # Safety
    /// Nothing may use or drop this `Ring` afterwards (the descriptor
    /// number may be reused); the C ABI leaks its writers for that reason.
    pub(crate) unsafe fn close_inherited_descriptor(&self) {
        // SAFETY: our own descriptor; the caller promises no further use.
        unsafe { libc::close(self.file.as_raw_fd()) };
    }

    /// Takes the OFD write lock on `offset` without waiting.
    /// `Ok(false)`: another open file description holds it.
    pub(crate) fn try_lock(&self, offset: i64) -> Result<bool, Error> {
        let mut lock = byte_lock(libc::F_WRLCK, offset);
        // SAFETY: a valid descriptor and a valid flock.
        if unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN | libc::EACCES) => Ok(false),
            _ => Err(Error::io(&self.path, "take a lock on the ring file", err)),
        }
    }

    /// Releases the OFD lock on `offset` (if this description holds it).
    pub(crate) fn unlock(&self, offset: i64) {
        let mut lock = byte_lock(libc::F_UNLCK, offset);
        // SAFETY: a valid descriptor and a valid flock.
        unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) };
    }

    /// Whether another open file description holds the lock on `offset`.
    /// The kernel drops a dead process's locks, so this tells a live owner
    /// from a dead one with no pid involved (no reuse, no EPERM).
    pub(crate) fn is_locked(&self, offset: i64) -> bool {
        let mut lock = byte_lock(libc::F_WRLCK, offset);
        // SAFETY: a valid descriptor and a valid flock.
        let rc = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
        // If the probe itself fails, say "locked": waiting is safe, while
        // reclaiming a live writer's slot is not.
        rc != 0 || lock.l_type != libc::F_UNLCK as libc::c_short
    }
}

/// The lane word of one process entry, with the mapping it lives in: a
/// thread gives its lane back when it exits, which may be after the
/// `Writer` and `Ring` it hooked for were dropped.
pub(crate) struct LaneWord {
    map: Arc<MmapRaw>,
    index: usize,
}

impl LaneWord {
    pub(crate) fn get(&self) -> &AtomicU64 {
        // SAFETY: `index < MAX_PROCESSES` (checked in `lane_word`): the
        // entry lies in the validated mapping, which `map` keeps alive; the
        // word is an aligned atomic.
        unsafe {
            &(*(self.map.as_ptr().add(PROCESS_TABLE_OFFSET) as *const ProcessEntry).add(self.index)).lanes
        }
    }
}

/// The header of one sub-ring, with the mapping it lives in: a thread
/// gives its sub-ring back when it exits, which may be after the `Writer`
/// and `Ring` it hooked for were dropped.
pub(crate) struct SubRingWord {
    map: Arc<MmapRaw>,
    offset: usize,
}

impl SubRingWord {
    pub(crate) fn get(&self) -> &SubRingHeader {
        // SAFETY: `offset` is a sub-ring header's offset in the validated
        // mapping (from `subring_word`), which `map` keeps alive; headers
        // are aligned there and hold only atomics.
        unsafe { &*(self.map.as_ptr().add(self.offset) as *const SubRingHeader) }
    }
}

/// A file's identity: its device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    /// `st_dev`.
    pub device: u64,
    /// `st_ino`.
    pub inode: u64,
}

/// Removes the ring file at `path` only if it is the file `id` (from
/// [`Ring::file_id`] of a ring this process created): a file someone else
/// has put at that name since is left alone. Returns whether it removed it.
///
/// The check and the unlink are two system calls (Linux has no unlink
/// conditional on the inode); the names [`Ring::create_unique`] makes are
/// not ones another process creates, so nothing can slip in between.
///
/// # Errors
/// The file could not be examined or removed (a missing file is `Ok(false)`).
pub fn remove_ring_file(path: &Path, id: FileId) -> std::io::Result<bool> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if (meta.dev(), meta.ino()) != (id.device, id.inode) {
        return Ok(false);
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// 64 random bits from the kernel (`getrandom`), for names no other
/// process picks; if that fails, the clock, pid and an address mixed
/// (still distinct per process and call, not secret).
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n == bytes.len() as isize {
        return u64::from_ne_bytes(bytes);
    }
    let local = 0u8;
    let mixed = monotonic_ns() ^ (u64::from(std::process::id()) << 32) ^ (&local as *const u8 as u64);
    mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn byte_lock(kind: libc::c_int, offset: i64) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = offset as libc::off_t;
    lock.l_len = 1;
    lock.l_pid = 0; // Required by F_OFD_* locks.
    lock
}

fn c_path(p: &Path, ring: &Path) -> Result<CString, Error> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::new(ring, ErrorKind::Config("path contains a NUL byte".into())))
}

fn open_file(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> Result<File, Error> {
    let c = c_path(path, path)?;
    // O_NOFOLLOW: a symlink planted at the ring's name is refused, not followed.
    let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: a NUL-terminated path; the mode is read only with O_CREAT.
    let fd = unsafe { libc::open(c.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        let action = if flags & libc::O_CREAT != 0 { "create ring file" } else { "open ring file" };
        return Err(Error::io(path, action, std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a descriptor we just opened and nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn map_file(path: &Path, file: &File, len: u64) -> Result<MmapRaw, Error> {
    MmapOptions::new().len(len as usize).map_raw(file).map_err(|e| Error::io(path, "map ring file", e))
}

/// Writes a new ring's header; the slots and tables are already zero
/// (empty, lap 0; no processes; no counts).
fn initialise(map: &MmapRaw, options: RingOptions) {
    let RingOptions { capacity, counter_cells, subrings, subring_capacity } = options;
    // SAFETY: a fresh mapping of a file no other process can see yet, at
    // least a header long and page-aligned; Header is all atomics.
    let header = unsafe { &*(map.as_ptr() as *const Header) };
    let source = ClockSource::detect();
    let calibration = source.calibrate(Duration::from_millis(5));
    let id = &header.identity;
    id.version.store(FORMAT_VERSION, Ordering::Relaxed);
    id.record_size.store(RECORD_SIZE as u32, Ordering::Relaxed);
    id.capacity.store(capacity, Ordering::Relaxed);
    id.file_size.store(file_size(capacity, counter_cells, subrings, subring_capacity), Ordering::Relaxed);
    id.subrings.store(subrings, Ordering::Relaxed);
    id.subring_capacity.store(subring_capacity, Ordering::Relaxed);
    id.max_processes.store(MAX_PROCESSES as u32, Ordering::Relaxed);
    id.counter_cells.store(counter_cells, Ordering::Relaxed);
    id.capacity_entries.store(CAPACITY_ENTRIES as u32, Ordering::Relaxed);
    id.counter_lanes.store(COUNTER_LANES, Ordering::Relaxed);
    id.clock_source.store(source.code(), Ordering::Relaxed);
    id.created_unix_ns.store(realtime_ns(), Ordering::Relaxed);
    id.creator_pid.store(std::process::id(), Ordering::Relaxed);
    header.clock.ticks.store(calibration.ticks, Ordering::Relaxed);
    header.clock.monotonic_ns.store(calibration.monotonic_ns, Ordering::Relaxed);
    header.clock.ticks_per_second.store(calibration.ticks_per_second, Ordering::Relaxed);
    // Release: the magic goes last; pairs with the Acquire load in `attach`
    // (belt and braces: the file is not visible until it is linked).
    id.magic.store(MAGIC, Ordering::Release);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let path = ring_path(&format!("test-shm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    /// The sub-ring region lies where `format` says, each sub-ring a free
    /// lease and an empty ring of its own, apart from the shared ring.
    #[test]
    fn sub_rings_are_laid_out_between_the_pool_and_the_shared_slots() {
        let path = temp("subrings");
        let options =
            RingOptions { capacity: 64, subrings: 3, subring_capacity: 256, ..RingOptions::default() };
        let ring = Ring::create(&path, options).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!((ring.subring_count(), ring.subring_capacity()), (3, 256));
        let base = ring.map.as_ptr() as usize;
        let slots_at = |s: &[Slot]| s.as_ptr() as usize - base;
        for i in 0..3 {
            let header = ring.subring_header(i);
            assert_eq!(
                std::ptr::from_ref(header) as usize - base,
                subring_header_offset(DEFAULT_COUNTER_CELLS, i)
            );
            assert_eq!(header.lease.load(Ordering::Relaxed), 0, "free");
            assert_eq!(ring.subring_slots(i).len(), 256);
            assert_eq!(
                slots_at(ring.subring_slots(i)),
                subring_slots_offset(DEFAULT_COUNTER_CELLS, 3, 256, i)
            );
            let view = ring.subring_view(i);
            let cursor = view.attach_consumer();
            assert!(view.caught_up(&cursor), "empty");
        }
        let end = subring_slots_offset(DEFAULT_COUNTER_CELLS, 3, 256, 3);
        assert!(slots_offset(DEFAULT_COUNTER_CELLS, 3, 256) >= end, "the shared slots come after");
        assert_eq!(ring.file.metadata().unwrap().len(), file_size(64, DEFAULT_COUNTER_CELLS, 3, 256));
    }

    #[test]
    fn zero_sub_rings_leave_the_format_2_layout_with_the_shared_ring_only() {
        let path = temp("no-subrings");
        let options = RingOptions { capacity: 64, subrings: 0, ..RingOptions::default() };
        let ring = Ring::create(&path, options).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(ring.subring_count(), 0);
        assert_eq!(
            slots_offset(DEFAULT_COUNTER_CELLS, 0, DEFAULT_SUBRING_CAPACITY),
            subrings_offset(DEFAULT_COUNTER_CELLS)
        );
        assert_eq!(ring.file.metadata().unwrap().len(), 626688 + 64 * 64);
    }

    #[test]
    fn bad_sub_ring_options_are_refused_in_one_line() {
        for (subrings, subring_capacity, says) in [
            (MAX_SUBRINGS + 1, DEFAULT_SUBRING_CAPACITY, "MEMTRACK_SUBRINGS 257 is more than 256"),
            (1, 1000, "MEMTRACK_SUBRING_CAPACITY 1000 is not a power of two"),
            (1, 128, "MEMTRACK_SUBRING_CAPACITY 128 is not a power of two between 256 and 65536"),
            (0, 1 << 17, "MEMTRACK_SUBRING_CAPACITY 131072"),
        ] {
            let path = temp("bad-options");
            let options = RingOptions { capacity: 64, subrings, subring_capacity, ..RingOptions::default() };
            let error = Ring::create(&path, options).unwrap_err().to_string();
            assert!(error.contains(says) && !error.contains('\n'), "{error}");
            assert!(!path.exists());
        }
    }
}
