//! Helpers for the reliability tests (crash, hostile input, exhaustion,
//! scale, lifecycle): the soak multiplier, a seeded random generator,
//! helper processes (this test binary re-executed in a role), counters in a
//! shared file that survive a SIGKILL, and bounded waits.
//!
//! Included with `#[path]` by each test crate that needs it; `std`, `libc`
//! and `memtrack` only.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The environment variable naming a helper's role.
pub const ROLE: &str = "MEMTRACK_TEST_ROLE";

/// `MEMTRACK_SOAK=N` multiplies the iteration counts of the reliability
/// tests by N (default 1): the longer runs of `.ci/run` and of a soak.
pub fn soak() -> u64 {
    std::env::var("MEMTRACK_SOAK").ok().and_then(|v| v.trim().parse().ok()).filter(|&n| n >= 1).unwrap_or(1)
}

/// `base` iterations, times the soak multiplier.
pub fn iterations(base: u64) -> u64 {
    base * soak()
}

/// A u64 from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// SplitMix64: small, seedable, good enough to pick kill points and ops.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `MEMTRACK_TEST_SEED`, else from the clock;
    /// prints the seed so that a failure can be replayed.
    pub fn from_env(test: &str) -> Rng {
        let seed =
            std::env::var("MEMTRACK_TEST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
            });
        eprintln!("{test}: MEMTRACK_TEST_SEED={seed}");
        Rng(seed)
    }

    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A command re-running this test binary's `helper` test in `role`, with
/// no `MEMTRACK_*` variables inherited.
pub fn helper_command(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "helper", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env_remove("MEMTRACK_RING")
        .env_remove("MEMTRACK_CAPACITY")
        .env_remove("MEMTRACK_WAIT_US")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// The role this process plays, if it is a helper.
pub fn helper_role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// SIGKILLs `child` (if it still runs) and reaps it.
pub fn kill(child: &mut Child) {
    // SAFETY: kill with the pid of a child we have not reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    child.wait().unwrap();
}

/// Waits for `child` until `deadline`; panics (after killing it) if it is
/// still running then.
pub fn wait_until(child: &mut Child, deadline: Instant, what: &str) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            kill(child);
            panic!("{what}: still running at the deadline");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// u64 counters in a file that every process maps shared: a helper bumps
/// them as it goes, and the test reads them after the helper was killed
/// (the page cache keeps what a dead process stored).
pub struct SharedCounters {
    path: PathBuf,
    ptr: *mut AtomicU64,
    len: usize,
}

// SAFETY: the mapping is only reached through atomics.
unsafe impl Send for SharedCounters {}
// SAFETY: as above.
unsafe impl Sync for SharedCounters {}

impl SharedCounters {
    /// Creates (zeroed) `len` counters at `path`.
    pub fn create(path: &Path, len: usize) -> SharedCounters {
        let file = std::fs::File::create(path).unwrap();
        file.set_len((len * 8) as u64).unwrap();
        drop(file);
        SharedCounters::open(path, len)
    }

    /// Maps the `len` counters at `path`.
    pub fn open(path: &Path, len: usize) -> SharedCounters {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
        // SAFETY: a shared read-write mapping of a file we opened, `len * 8`
        // bytes long; it is only reached through atomics.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap {}", path.display());
        SharedCounters { path: path.to_path_buf(), ptr: ptr.cast(), len }
    }

    pub fn get(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len);
        // SAFETY: within the mapping, 8-byte aligned (page-aligned base).
        unsafe { &*self.ptr.add(i) }
    }

    pub fn load(&self, i: usize) -> u64 {
        self.get(i).load(Ordering::SeqCst)
    }

    pub fn bump(&self, i: usize) {
        self.get(i).fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for SharedCounters {
    fn drop(&mut self) {
        // SAFETY: our own mapping, not used after this.
        unsafe { libc::munmap(self.ptr.cast(), self.len * 8) };
    }
}

/// A scratch file path in /dev/shm, unique to this process, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(tag: &str) -> TempFile {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempFile(PathBuf::from(format!("/dev/shm/mt-test-scratch-{tag}-{}-{n}", std::process::id())))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether this process runs as root (some tests chown, or mount tmpfs).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
