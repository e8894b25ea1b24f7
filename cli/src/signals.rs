//! Ctrl-C and termination requests for the long-running commands: the
//! handler only stores the signal number (and who sent it); the main loop
//! acts on it.

use std::sync::atomic::{AtomicI32, Ordering};

/// The last signal: its number, plus [`FROM_KERNEL`] when the kernel sent
/// it (a terminal's Ctrl-C or hangup, delivered to the whole foreground
/// process group), 0 when none is pending.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

const FROM_KERNEL: i32 = 1 << 16;

/// A signal received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// The signal number.
    pub number: i32,
    /// The kernel sent it to our whole process group (the terminal's
    /// Ctrl-C, Ctrl-\ or hangup), so a child in that group got it too;
    /// otherwise a process sent it to us alone (`kill`, `timeout`).
    pub sent_to_group: bool,
}

extern "C" fn on_signal(signal: libc::c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    let from_kernel = !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL;
    // Only an atomic store: async-signal-safe.
    RECEIVED.store(signal | if from_kernel { FROM_KERNEL } else { 0 }, Ordering::Relaxed);
}

/// Catches SIGINT, SIGTERM and SIGHUP from now on.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` is async-signal-safe (one atomic store) and
        // lives for the whole program; sigaction is called with a fully
        // initialised struct.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The last signal received since the previous call, if any.
pub fn take() -> Option<i32> {
    take_received().map(|r| r.number)
}

/// As [`take`], with who sent it.
pub fn take_received() -> Option<Received> {
    match RECEIVED.swap(0, Ordering::Relaxed) {
        0 => None,
        value => Some(Received { number: value & !FROM_KERNEL, sent_to_group: value & FROM_KERNEL != 0 }),
    }
}
