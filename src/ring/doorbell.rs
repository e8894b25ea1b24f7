//! The consumer's doorbell: an idle consumer sleeps on a futex in the
//! shared header ([`DoorbellLine`]) instead of a plain sleep, and a writer
//! about to sleep for space rings it, so that no writer waits out the
//! consumer's idle pause (up to 1 ms, plus the timer slack: 50 µs outside
//! a real-time class, in which a writer at 12 ns a record fills ~4000
//! slots).
//!
//! The handshake is Dekker's again, as for waiting for space (module doc of
//! `ring`), between the consumer going to sleep and a writer registering
//! as a waiter in any ring:
//!
//! * consumer ([`sleep`]): read `bell`; `sleeping = 1` (Release); SeqCst
//!   fence; look at every ring's `waiters`: any registered in a ring the
//!   consumer has records to take from, stay awake (a ring taken to its
//!   end frees nothing more: see `RingView::writer_waits_on`, and a count
//!   left by a killed writer must not keep the consumer polling); else
//!   futex-wait on `bell` (the value read first) for the pause;
//!   `sleeping = 0`.
//! * writer (`RingView::wait_for_space`): `waiters += 1`; SeqCst fence;
//!   look for a slot once more; none: [`ring`]: if `sleeping != 0`
//!   (Acquire), bump `bell` and wake; then sleep on the ring's wait line.
//!
//! The two fences guarantee that at least one side sees the other: either
//! the consumer sees the registration and does not sleep, or the writer
//! sees `sleeping` and rings. A ring that comes between the consumer's read
//! of `bell` and its futex wait changes `bell`, so the kernel refuses the
//! sleep: no ring is lost. An idle consumer's cost: a fence and one load
//! per ring per pause, and the system call it made anyway (a futex wait
//! instead of `nanosleep`). A writer's: one load per wait for space, and a
//! `FUTEX_WAKE` only when the consumer sleeps.

use std::time::Duration;

use crate::format::DoorbellLine;
use crate::sync::{Ordering, fence};

/// Writer side: wakes the consumer if it sleeps on the doorbell. Call it
/// registered as a waiter (after the SeqCst fence that follows the
/// registration) and having found no slot, before sleeping.
pub(crate) fn ring(line: &DoorbellLine) {
    // Acquire: pairs with the Release store of `sleeping` in `sleep`, so
    // the consumer's read of `bell` happens before our bump below (the
    // bump then makes its futex wait return). The fence the caller issued
    // before this load pairs with the one in `sleep`.
    if line.sleeping.load(Ordering::Acquire) != 0 {
        // Relaxed: the kernel compares the value itself; the Acquire above
        // orders the bump after the consumer's read.
        line.bell.bump(Ordering::Relaxed);
        line.bell.wake_all();
    }
}

/// Consumer side: sleeps on the doorbell for up to `pause`, unless
/// `writer_waits` says a writer waits for space in a ring the consumer can
/// free slots in (then returns at once: it wants a take now). A writer that
/// registers meanwhile rings. Returns whether it slept (until the pause
/// ended or a writer rang).
///
/// `writer_waits` runs after the SeqCst fence below: it loads each ring's
/// `waiters` (Acquire, pairing with the Release registration in
/// `RingView::wait_for_space`) and, for a ring with waiters, whether the
/// consumer has taken everything there (`RingView::writer_waits_on`).
pub(crate) fn sleep(line: &DoorbellLine, writer_waits: impl FnOnce() -> bool, pause: Duration) -> bool {
    // Before saying we sleep: a ring meant for us changes it after this.
    let seen = line.bell.load(Ordering::Relaxed);
    // Release: pairs with the Acquire load in `ring` (our read of `seen`
    // happens before the bump of a writer that saw this store).
    line.sleeping.store(1, Ordering::Release);
    // SeqCst fence: pairs with the one in `RingView::wait_for_space`: we
    // see its registration in `writer_waits`, or it sees `sleeping` and
    // rings.
    fence(Ordering::SeqCst);
    let awake = writer_waits();
    if !awake {
        line.bell.wait(seen, pause);
    }
    // Relaxed: a writer that still sees 1 only rings once more for nothing.
    line.sleeping.store(0, Ordering::Relaxed);
    !awake
}
