//! The process-global writer behind the C ABI.
//!
//! One word, [`STATE`], says everything a hook needs: a pointer to the
//! (leaked, never freed) `Writer`, or one of four small sentinel values.
//! A hook does one Acquire load and one compare. Writers are leaked on
//! purpose: a thread may be inside a hook while another calls
//! `memtrack_shutdown`, so the mapping must outlive every hook call.

use std::io::Write as _;
use std::path::PathBuf;
use std::ptr;

use crate::error::Error;
use crate::shm::{Ring, RingOptions, ring_path};
use crate::sync::{AtomicBool, AtomicPtr, Ordering};
use crate::writer::Writer;

const UNDECIDED: usize = 0;
/// A thread is attaching; hooks on other threads wait for it.
const BUSY: usize = 1;
const DISABLED: usize = 2;
const SHUT_DOWN: usize = 3;
const LAST_SENTINEL: usize = SHUT_DOWN;

/// The longest a hook waits for another thread's attach (which opens or
/// creates the ring: normally well under 10 ms) before giving up on it.
const ATTACH_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Read by every hook; alone on its line (see [`OwnLine`]).
static STATE: OwnLine<AtomicPtr<Writer>> = OwnLine(AtomicPtr::new(ptr::null_mut()));
/// The parent's writer, set in a forked child until it attaches anew.
static FORKED_FROM: AtomicPtr<Writer> = AtomicPtr::new(ptr::null_mut());
static HOOKS_INSTALLED: AtomicBool = AtomicBool::new(false);
static WARNED: AtomicBool = AtomicBool::new(false);

/// A static on cache lines of its own: `STATE` shared its line with
/// statics written on warm paths (`NEXT_START` at each sub-ring take or
/// retry, `LAST_SERIAL`, `FORKED_FROM`), and each such write took the line
/// from every thread's next hook.
#[repr(align(128))]
struct OwnLine<T>(T);

impl<T> std::ops::Deref for OwnLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

const _: () = assert!(std::mem::size_of::<OwnLine<AtomicPtr<Writer>>>() == 128);

fn sentinel(value: usize) -> *mut Writer {
    ptr::without_provenance_mut(value)
}

/// Whether hooks are known to do nothing: tracking disabled or shut down.
/// One load and one compare, for the exported hooks' fast path. Relaxed: it only decides to do nothing; the
/// tracked path loads again with Acquire in [`writer`].
#[inline(always)]
pub(crate) fn is_off() -> bool {
    let state = STATE.load(Ordering::Relaxed).addr();
    state.wrapping_sub(DISABLED) <= LAST_SENTINEL - DISABLED
}

/// The writer, if this process records events. The first call decides
/// from `MEMTRACK_RING`.
#[inline(always)]
pub(crate) fn writer() -> Option<&'static Writer> {
    // Acquire: pairs with the Release store in `install`, so the Writer is
    // fully built before we use it.
    let state = STATE.load(Ordering::Acquire);
    if state.addr() > LAST_SENTINEL {
        // SAFETY: non-sentinel values are leaked `Box<Writer>`s, never freed.
        return Some(unsafe { &*state });
    }
    // UNDECIDED: decide now. BUSY: another thread is attaching; wait for
    // it, so that no event of this thread is lost uncounted meanwhile.
    if state.addr() <= BUSY { attach_lazily() } else { None }
}

/// Waits (bounded) while another thread attaches; returns the state after.
fn wait_while_busy() -> usize {
    let start = std::time::Instant::now();
    loop {
        // Acquire: pairs with the attaching thread's Release store of the
        // writer (or of DISABLED) in `attach`.
        let state = STATE.load(Ordering::Acquire).addr();
        if state != BUSY || start.elapsed() > ATTACH_WAIT_LIMIT {
            return state;
        }
        std::thread::yield_now();
    }
}

#[cold]
#[inline(never)]
fn attach_lazily() -> Option<&'static Writer> {
    // Relaxed would do for the test; `wait_while_busy` and
    // `writer_if_attached` load again with Acquire.
    if STATE.load(Ordering::Relaxed).addr() == BUSY {
        wait_while_busy();
        return writer_if_attached();
    }
    let forked_from = FORKED_FROM.load(Ordering::Acquire);
    let path = if forked_from.is_null() {
        match std::env::var_os("MEMTRACK_RING") {
            // As `memtrack_init("")`: an empty name names no ring (and
            // must not become the file `/dev/shm/memtrack-`).
            Some(name) if name.is_empty() => {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    let _ = writeln!(
                        std::io::stderr(),
                        "memtrack: MEMTRACK_RING is set but empty; running untracked"
                    );
                }
                None
            }
            name => name.map(|name| ring_path(&name.to_string_lossy())),
        }
    } else {
        // SAFETY: FORKED_FROM holds a leaked writer of the parent.
        Some(unsafe { &*forked_from }.ring().path().to_path_buf())
    };
    match path {
        Some(path) => {
            let _ = attach(path);
        }
        None => {
            let _ = STATE.compare_exchange(
                sentinel(UNDECIDED),
                sentinel(DISABLED),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
    writer_if_attached()
}

fn writer_if_attached() -> Option<&'static Writer> {
    let state = STATE.load(Ordering::Acquire);
    // SAFETY: as in `writer`.
    (state.addr() > LAST_SENTINEL).then(|| unsafe { &*state })
}

/// `memtrack_init`: attach to `path`, unless already attached.
pub(crate) fn init(path: PathBuf) -> Result<(), i32> {
    match attach(path) {
        Attach::Attached => Ok(()),
        Attach::ShutDown => Err(super::MEMTRACK_ERR_SHUTDOWN),
        Attach::Failed(code) => Err(code),
    }
}

enum Attach {
    Attached,
    ShutDown,
    Failed(i32),
}

fn attach(path: PathBuf) -> Attach {
    // Become the one thread that attaches, or wait for the one that does.
    loop {
        let state = STATE.load(Ordering::Acquire);
        match state.addr() {
            UNDECIDED | DISABLED => {
                if STATE.compare_exchange(state, sentinel(BUSY), Ordering::AcqRel, Ordering::Acquire).is_ok()
                {
                    break;
                }
            }
            // Attaching takes a few milliseconds once per process.
            BUSY => {
                if wait_while_busy() == BUSY {
                    return Attach::Failed(super::MEMTRACK_ERR_INTERNAL);
                }
            }
            SHUT_DOWN => return Attach::ShutDown,
            _ => return Attach::Attached,
        }
    }
    // Before opening: a fork from another thread while we attach must
    // find the child handler in place (it resets BUSY in the child).
    install_process_hooks();
    match open_writer(&path) {
        Ok(writer) => {
            // Release: pairs with the Acquire load in `writer`.
            STATE.store(leak_writer_for_process_lifetime(writer), Ordering::Release);
            Attach::Attached
        }
        Err(error) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                let _ = writeln!(std::io::stderr(), "{error}; running untracked");
            }
            let code = super::codes::code_of(&error);
            STATE.store(sentinel(DISABLED), Ordering::Release);
            Attach::Failed(code)
        }
    }
}

/// Moves the process's writer to the heap for good: another thread may
/// still be inside a hook when `memtrack_shutdown` runs, so it must outlive
/// every hook call. Never inlined, so that LeakSanitizer sees this frame in
/// every build profile: `ffi_tests/lsan.supp` names it.
#[inline(never)]
fn leak_writer_for_process_lifetime(writer: Writer) -> *mut Writer {
    Box::into_raw(Box::new(writer))
}

fn open_writer(path: &std::path::Path) -> Result<Writer, Error> {
    let ring = Ring::open_or_create_with(path, || RingOptions::from_env(path))?;
    Writer::attach(ring)
}

/// `memtrack_shutdown`: writes the exit record, marks this process exited,
/// and turns every later hook into a no-op.
pub(crate) fn shutdown() {
    let state = STATE.swap(sentinel(SHUT_DOWN), Ordering::AcqRel);
    if state.addr() > LAST_SENTINEL {
        // SAFETY: as in `writer`.
        unsafe { &*state }.shutdown();
    }
}

/// Registers the fork and exit handlers, once per process.
fn install_process_hooks() {
    if HOOKS_INSTALLED.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: both handlers are `extern "C"` functions with static lifetime
    // that do only async-signal-safe work (the child handler) or call our
    // own shutdown (the exit handler).
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_in_child));
        libc::atexit(at_exit);
    }
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(shutdown);
}

/// In a forked child: the parent's process-table entry and lock are not
/// ours. Drop our copy of the parent's lock descriptor (closing it leaves
/// the parent's lock in place) and attach anew at the next event, under
/// our own pid. Only async-signal-safe work here: two atomics and close().
extern "C" fn after_fork_in_child() {
    let state = STATE.load(Ordering::Relaxed);
    if state.addr() > LAST_SENTINEL {
        // SAFETY: as in `writer`.
        let parent = unsafe { &*state };
        // SAFETY: the parent's writer is leaked and never used again here.
        unsafe { parent.ring().close_inherited_descriptor() };
        FORKED_FROM.store(state, Ordering::Relaxed);
        STATE.store(sentinel(UNDECIDED), Ordering::Release);
    } else if state.addr() == BUSY {
        // Forked while another thread was attaching: that thread does not
        // exist here. Decide again from scratch.
        STATE.store(sentinel(UNDECIDED), Ordering::Release);
    }
}
