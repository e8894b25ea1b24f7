//! Record timestamps: invariant-TSC ticks where the CPU has them (one
//! `rdtsc`, ~8 ns here), else `CLOCK_MONOTONIC` nanoseconds through the
//! vDSO (~20 ns). The ring's creator picks the source and writes a
//! calibration pair into the header; every writer uses the same source.

use crate::format::{CLOCK_MONOTONIC_NS, CLOCK_TSC};

/// How to turn ring-clock ticks into `CLOCK_MONOTONIC` nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Calibration {
    /// Ticks at the reference instant.
    pub ticks: u64,
    /// `CLOCK_MONOTONIC` nanoseconds at the reference instant.
    pub monotonic_ns: u64,
    /// Ticks per second.
    pub ticks_per_second: u64,
}

impl Calibration {
    /// `CLOCK_MONOTONIC` nanoseconds at which the clock read `ticks`.
    pub fn to_monotonic_ns(&self, ticks: u64) -> u64 {
        let tps = self.ticks_per_second.max(1) as i128;
        let delta = ticks as i128 - self.ticks as i128;
        let ns = self.monotonic_ns as i128 + delta * 1_000_000_000 / tps;
        ns.clamp(0, u64::MAX as i128) as u64
    }

    /// A calibration whose rate is measured between `self` and a later pair
    /// taken now, which is as precise as the interval is long.
    pub fn refined(&self, source: ClockSource) -> Calibration {
        let (ticks, ns) = (source.now(), monotonic_ns());
        let (dt, dns) = (ticks.wrapping_sub(self.ticks), ns.saturating_sub(self.monotonic_ns));
        if source == ClockSource::Monotonic || dns < 100_000_000 || dt == 0 {
            return *self;
        }
        let tps = (dt as u128 * 1_000_000_000 / dns as u128) as u64;
        Calibration { ticks, monotonic_ns: ns, ticks_per_second: tps }
    }
}

/// Where record timestamps come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockSource {
    /// `CLOCK_MONOTONIC` nanoseconds.
    Monotonic,
    /// The x86-64 time-stamp counter (only chosen when invariant).
    Tsc,
}

impl ClockSource {
    /// The source named by a header's `clock_source` code.
    pub fn from_code(code: u32) -> Option<ClockSource> {
        match code {
            CLOCK_MONOTONIC_NS => Some(ClockSource::Monotonic),
            CLOCK_TSC if cfg!(target_arch = "x86_64") => Some(ClockSource::Tsc),
            _ => None,
        }
    }

    /// The header code of this source.
    pub fn code(self) -> u32 {
        match self {
            ClockSource::Monotonic => CLOCK_MONOTONIC_NS,
            ClockSource::Tsc => CLOCK_TSC,
        }
    }

    /// The best source on this machine: the TSC when /proc/cpuinfo says it
    /// is constant and non-stop (so ticks mean the same on every core and in
    /// every power state), else `CLOCK_MONOTONIC`.
    pub fn detect() -> ClockSource {
        if cfg!(target_arch = "x86_64") && std::env::var_os("MEMTRACK_CLOCK").is_none_or(|v| v != "monotonic")
        {
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            if let Some(flags) = cpuinfo.lines().find(|l| l.starts_with("flags")) {
                let has = |f: &str| flags.split_whitespace().any(|w| w == f);
                if has("constant_tsc") && has("nonstop_tsc") {
                    return ClockSource::Tsc;
                }
            }
        }
        ClockSource::Monotonic
    }

    /// Reads the clock.
    #[inline(always)]
    pub fn now(self) -> u64 {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: rdtsc has no preconditions on x86-64.
            ClockSource::Tsc => unsafe { core::arch::x86_64::_rdtsc() },
            _ => monotonic_ns(),
        }
    }

    /// Reads the clock no earlier than every instruction before the call and
    /// no later than every load after it: for a consumer that compares the
    /// reading with what it then finds in slots (`consumer::merge`). A bare
    /// `rdtsc` may execute before the loads ahead of it complete, or after
    /// later ones; `lfence` on both sides forbids both (on AMD as well: Linux
    /// makes `lfence` dispatch-serializing there).
    #[inline]
    pub fn now_ordered(self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: lfence has no preconditions; SSE2 is part of x86-64.
        unsafe {
            core::arch::x86_64::_mm_lfence()
        };
        let now = self.now();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        unsafe {
            core::arch::x86_64::_mm_lfence()
        };
        #[cfg(not(target_arch = "x86_64"))]
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        now
    }

    /// Measures this clock against `CLOCK_MONOTONIC` over `interval`.
    pub fn calibrate(self, interval: std::time::Duration) -> Calibration {
        let (t0, ns0) = (self.now(), monotonic_ns());
        if self == ClockSource::Monotonic {
            return Calibration { ticks: t0, monotonic_ns: ns0, ticks_per_second: 1_000_000_000 };
        }
        let deadline = ns0 + interval.as_nanos() as u64;
        let mut ns1 = ns0;
        while ns1 < deadline {
            std::hint::spin_loop();
            ns1 = monotonic_ns();
        }
        let t1 = self.now();
        let tps = ((t1 - t0) as u128 * 1_000_000_000 / (ns1 - ns0).max(1) as u128) as u64;
        Calibration { ticks: t0, monotonic_ns: ns0, ticks_per_second: tps.max(1) }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_maps_ticks_to_monotonic_time() {
        let source = ClockSource::detect();
        let cal = source.calibrate(std::time::Duration::from_millis(5));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (ticks, ns) = (source.now(), monotonic_ns());
        let estimate = cal.to_monotonic_ns(ticks);
        // 5 ms of calibration is good to far better than 1 %, and the sleep is
        // 20 ms: an error of 1 ms would mean the conversion is wrong.
        assert!(estimate.abs_diff(ns) < 1_000_000, "estimate {estimate} vs {ns}");
    }
}
