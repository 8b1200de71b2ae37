//! The clock of every state's timestamp: the system's realtime clock, read
//! through the CPU's time-stamp counter where Linux itself does so.
//!
//! A task run reads the clock up to three times (Pending, Running, its
//! end; a quick run that a map's lane takes straight on reads it once: it
//! is made as the lane's last run ended, and starts as it is made). On
//! the bench's VM `clock_gettime(CLOCK_REALTIME)` costs 23–29 ns, and perf
//! put a fifth of a quick run of a warm map in it; the counter (`rdtsc`)
//! costs 10. So, on x86-64 Linux whose clock source is the TSC (the kernel
//! found it invariant and in step across CPUs), the clock counts ticks from
//! an anchor: a reading of the realtime clock, and the counter then, shared
//! by every thread. Its first 10 ms read the realtime clock directly and
//! give the counter's rate (nothing waits for a calibration). Once a second
//! it reads the realtime clock again and bends its rate so as to meet it a
//! second later, rather than jumping to it: a thread's readings never go
//! backwards, and stay within microseconds of the realtime clock (the rate
//! is measured again between anchors). A difference of a millisecond or
//! more (the system's clock was set, the machine slept) is a jump, as the
//! realtime clock itself makes.
//!
//! The counter is read without a fence, which would cost what the realtime
//! clock does: a reading may be taken a little early, while a load before
//! it waits for memory. Two threads' readings may disagree by that much
//! (tens of nanoseconds in the tests here); a run's own states are stamped
//! on one thread, or with a hand-over between them (a spawn, a wake-up)
//! that takes far longer. Elsewhere the realtime clock is read directly.

// The anchor's arithmetic is tested everywhere, used only there.
#![cfg_attr(
    not(all(target_arch = "x86_64", target_os = "linux")),
    allow(dead_code)
)]

/// The clock, in nanoseconds since the epoch.
pub(crate) fn now_nanos() -> i64 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if let Some(nanos) = counted::now() {
        return nanos;
    }
    system_nanos()
}

/// The realtime clock, read directly: `SystemTime::now()` then
/// `duration_since` cost twice the read itself.
#[cfg(unix)]
// `time_t` and `c_long` are 32 bits on some targets.
#[allow(clippy::unnecessary_cast)]
fn system_nanos() -> i64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write, and CLOCK_REALTIME always
    // exists (the call cannot fail with these arguments).
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    (now.tv_sec as i64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as i64)
}

#[cfg(not(unix))]
fn system_nanos() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_nanos().min(i64::MAX as u128) as i64,
        Err(before) => -(before.duration().as_nanos().min(i64::MAX as u128) as i64),
    }
}

/// How far the counted time may be from the realtime clock and still be
/// bent toward it rather than jump.
const MAX_BEND_NANOS: f64 = 1_000_000.0;
/// How fast the rate may bend: a millisecond per second at most.
const MAX_BEND: f64 = 1e-3;

/// An anchor: the counter's ticks, the time there, and the nanoseconds per
/// tick from there on.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Fixed {
    ticks: u64,
    nanos: i64,
    rate: f64,
}

impl Fixed {
    /// The time at `ticks`; ticks read before the anchor moved count back.
    fn at(&self, ticks: u64) -> i64 {
        let since = ticks.wrapping_sub(self.ticks) as i64;
        self.nanos.saturating_add((since as f64 * self.rate) as i64)
    }

    /// The anchor that follows this one at `ticks`, when the realtime clock
    /// reads `real`: the time goes on from where this one counted to, at a
    /// rate that meets the realtime clock `period` ticks later (the rate
    /// `measured` since the last realtime reading, bent), or jumps to it if
    /// it is a millisecond or more away.
    fn next(&self, ticks: u64, real: i64, measured: f64, period: u64) -> Fixed {
        let counted = self.at(ticks);
        let behind = (real - counted) as f64;
        if behind.abs() >= MAX_BEND_NANOS {
            return Fixed {
                ticks,
                nanos: real,
                rate: measured,
            };
        }
        let bend = (behind / period as f64).clamp(-measured * MAX_BEND, measured * MAX_BEND);
        Fixed {
            ticks,
            nanos: counted,
            rate: measured + bend,
        }
    }
}

/// A realtime reading and the counter's ticks then.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Reading {
    ticks: u64,
    real: i64,
}

impl Reading {
    /// Nanoseconds per tick from this reading to `later`, if ticks passed.
    fn rate_to(&self, later: Reading) -> Option<f64> {
        let elapsed = later.ticks.wrapping_sub(self.ticks) as i64;
        (elapsed > 0).then(|| (later.real - self.real) as f64 / elapsed as f64)
    }
}

/// The rate measured between two readings, unless the realtime clock was
/// set between them (it then differs from `current` by more than a bend):
/// then `current`.
fn measured(last: Reading, now: Reading, current: f64) -> f64 {
    last.rate_to(now)
        .filter(|rate| (rate - current).abs() <= current * MAX_BEND)
        .unwrap_or(current)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod counted {
    use super::{Fixed, Reading, measured, system_nanos};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering, fence};

    /// How long the realtime clock is read directly, to measure the
    /// counter's first rate between two readings: each is within a
    /// microsecond of its ticks at worst (`paired`), 30 ns as a rule, so
    /// the rate is within 2·10⁻⁴ at worst, a few parts per million as a
    /// rule; the rate measured over the next second takes over.
    const CALIBRATION_NANOS: i64 = 10_000_000;

    /// Where counting starts, written under a sequence number (odd while
    /// written, 0 until the first rate is known), so that readers on every
    /// thread see a whole anchor without a lock.
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    static TICKS: AtomicU64 = AtomicU64::new(0);
    static NANOS: AtomicI64 = AtomicI64::new(0);
    /// Nanoseconds per tick, as `f64` bits.
    static RATE: AtomicU64 = AtomicU64::new(0);
    /// Ticks in a second at that rate: how often the anchor moves.
    static PERIOD: AtomicU64 = AtomicU64::new(u64::MAX);
    /// The last realtime reading and the ticks then (while calibrating,
    /// the first one): the next rate is measured from it. Its lock is the
    /// right to move the anchor.
    static REAL: Mutex<Option<Reading>> = Mutex::new(None);
    /// Whether the counter can be used: 0 not known yet, 1 yes, 2 no.
    static USABLE: AtomicU8 = AtomicU8::new(0);

    /// How far apart the counter's two readings around a realtime reading
    /// may be for the pair to count (a microsecond or two): further, the
    /// thread was interrupted between them, and the pair could be far off.
    const MAX_PAIR_TICKS: u64 = 5_000;

    fn ticks() -> u64 {
        // SAFETY: every x86-64 CPU has the instruction; it only reads the counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// A realtime reading, and the ticks then if the thread was not
    /// interrupted around it.
    fn paired() -> (i64, Option<u64>) {
        let before = ticks();
        let real = system_nanos();
        let spread = ticks().wrapping_sub(before);
        (real, (spread < MAX_PAIR_TICKS).then(|| before + spread / 2))
    }

    /// The counted time, or `None` where the counter is not used.
    pub(super) fn now() -> Option<i64> {
        loop {
            let sequence = SEQUENCE.load(Ordering::Acquire);
            if sequence == 0 {
                return calibrate();
            }
            let ticks = ticks();
            let fixed = Fixed {
                ticks: TICKS.load(Ordering::Relaxed),
                nanos: NANOS.load(Ordering::Relaxed),
                rate: f64::from_bits(RATE.load(Ordering::Relaxed)),
            };
            let period = PERIOD.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if sequence & 1 == 1 || SEQUENCE.load(Ordering::Relaxed) != sequence {
                // Being moved: a matter of nanoseconds.
                std::hint::spin_loop();
                continue;
            }
            if (ticks.wrapping_sub(fixed.ticks) as i64) < period as i64 {
                return Some(fixed.at(ticks));
            }
            return Some(move_anchor(fixed));
        }
    }

    /// Before the counter's rate is known: the realtime clock, read
    /// directly, noting the ticks at the first reading and, 10 ms on, the
    /// first anchor. `None` where the counter is not used.
    #[cold]
    fn calibrate() -> Option<i64> {
        match USABLE.load(Ordering::Relaxed) {
            1 => {}
            2 => return None,
            _ => {
                // The kernel reads the realtime clock through the TSC only
                // once it found it invariant and in step across CPUs.
                let source = std::fs::read_to_string(
                    "/sys/devices/system/clocksource/clocksource0/current_clocksource",
                );
                let usable = source.is_ok_and(|source| source.trim() == "tsc");
                USABLE.store(if usable { 1 } else { 2 }, Ordering::Relaxed);
                if !usable {
                    return None;
                }
            }
        }
        let (real, ticks) = paired();
        // Another thread calibrating, or an interrupted pair: this reading
        // goes without.
        let (Ok(mut first), Some(ticks)) = (REAL.try_lock(), ticks) else {
            return Some(real);
        };
        let now = Reading { ticks, real };
        match *first {
            None => *first = Some(now),
            Some(start) if real - start.real >= CALIBRATION_NANOS => {
                // A counter that did not move forward at a sane pace (the
                // realtime clock set meanwhile, say) is measured again.
                let Some(rate) = start.rate_to(now).filter(|r| (0.01..100.0).contains(r)) else {
                    *first = None;
                    return Some(real);
                };
                *first = Some(now);
                publish(
                    0,
                    Fixed {
                        ticks,
                        nanos: real,
                        rate,
                    },
                );
            }
            Some(_) => {}
        }
        Some(real)
    }

    /// Moves the anchor to now, from `fixed`, and reads the time there.
    /// Another thread moving it meanwhile counts on from the anchor as it stands.
    #[cold]
    fn move_anchor(fixed: Fixed) -> i64 {
        let Ok(mut last_real) = REAL.try_lock() else {
            return fixed.at(ticks());
        };
        // It may have moved while this thread took the lock.
        let sequence = SEQUENCE.load(Ordering::Acquire);
        let current = Fixed {
            ticks: TICKS.load(Ordering::Relaxed),
            nanos: NANOS.load(Ordering::Relaxed),
            rate: f64::from_bits(RATE.load(Ordering::Relaxed)),
        };
        let period = PERIOD.load(Ordering::Relaxed);
        let (real, paired_ticks) = paired();
        let Some(ticks) = paired_ticks else {
            // Interrupted: moved at a later reading.
            return current.at(ticks());
        };
        if sequence & 1 == 1 || (ticks.wrapping_sub(current.ticks) as i64) < period as i64 {
            return current.at(ticks);
        }
        let now = Reading { ticks, real };
        let rate = last_real.map_or(current.rate, |last| measured(last, now, current.rate));
        let next = current.next(ticks, real, rate, period);
        *last_real = Some(now);
        publish(sequence, next);
        next.nanos
    }

    /// Writes the anchor, under its lock (`REAL`'s).
    fn publish(sequence: u64, anchor: Fixed) {
        SEQUENCE.store(sequence + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        TICKS.store(anchor.ticks, Ordering::Relaxed);
        NANOS.store(anchor.nanos, Ordering::Relaxed);
        RATE.store(anchor.rate.to_bits(), Ordering::Relaxed);
        PERIOD.store((1e9 / anchor.rate) as u64, Ordering::Relaxed);
        SEQUENCE.store(sequence + 2, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::{Duration, Instant, SystemTime};

    fn system_time_nanos() -> i64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64
    }

    #[test]
    fn the_clock_reads_as_the_system_time_within_a_millisecond() {
        // Through its first rate's measure and on.
        let end = Instant::now() + Duration::from_millis(50);
        while Instant::now() < end {
            let before = system_time_nanos();
            let now = now_nanos();
            let after = system_time_nanos();
            assert!(
                before - 1_000_000 <= now && now <= after + 1_000_000,
                "{before} {now} {after}"
            );
        }
    }

    #[test]
    fn a_threads_readings_never_go_backwards_and_threads_agree_closely() {
        // Each thread reads after seeing the greatest reading of all so far,
        // past a move of the anchor. A reading of another thread may be
        // ahead by the time a load takes (see the module's docs), not more.
        let greatest = AtomicI64::new(now_nanos());
        let end = Instant::now() + Duration::from_millis(1500);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    let mut own = i64::MIN;
                    while Instant::now() < end {
                        for _ in 0..1000 {
                            let seen = greatest.load(Ordering::Acquire);
                            let now = now_nanos();
                            assert!(now >= own, "{now} after this thread's {own}");
                            assert!(now >= seen - 100_000, "{now} after another thread's {seen}");
                            own = now;
                            greatest.fetch_max(now, Ordering::AcqRel);
                        }
                    }
                });
            }
        });
    }

    const RATE: f64 = 0.385;
    const PERIOD: u64 = 2_597_402_597; // a second at RATE

    #[test]
    fn an_anchor_bends_its_rate_to_meet_the_realtime_clock_a_period_later() {
        let anchor = Fixed {
            ticks: 1_000,
            nanos: 5_000_000_000,
            rate: RATE,
        };
        let ticks = anchor.ticks + PERIOD;
        let counted = anchor.at(ticks);
        // The realtime clock is 16 µs behind what was counted.
        let real = counted - 16_000;
        let next = anchor.next(ticks, real, RATE, PERIOD);
        assert_eq!(next.nanos, counted, "time goes on from where it was");
        assert!(next.rate < RATE);
        let met = next.at(ticks + PERIOD);
        let real_then = real + (PERIOD as f64 * RATE) as i64;
        assert!((met - real_then).abs() <= 1, "{met} {real_then}");
        // Ahead of it: faster.
        assert!(anchor.next(ticks, counted + 16_000, RATE, PERIOD).rate > RATE);
    }

    #[test]
    fn an_anchor_jumps_to_a_realtime_clock_a_millisecond_or_more_away() {
        let anchor = Fixed {
            ticks: 0,
            nanos: 0,
            rate: RATE,
        };
        let counted = anchor.at(PERIOD);
        for real in [counted + 3_600_000_000_000, counted - 1_000_000] {
            let next = anchor.next(PERIOD, real, RATE, PERIOD);
            assert_eq!((next.nanos, next.rate), (real, RATE));
        }
    }

    #[test]
    fn a_bend_is_at_most_a_millisecond_a_second() {
        let anchor = Fixed {
            ticks: 0,
            nanos: 0,
            rate: RATE,
        };
        let counted = anchor.at(10);
        let next = anchor.next(10, counted + 999_999, RATE, 10);
        assert!((next.rate - RATE * (1.0 + MAX_BEND)).abs() < 1e-12);
        let next = anchor.next(10, counted - 999_999, RATE, 10);
        assert!(next.rate > 0.0);
    }

    #[test]
    fn the_rate_is_measured_between_realtime_readings_unless_the_clock_was_set() {
        let last = Reading {
            ticks: 1_000,
            real: 1_000_000_000,
        };
        let at = |ticks, real| measured(last, Reading { ticks, real }, 0.4);
        // 0.4 ns a tick, 16 ppm slower than thought.
        let rate = at(1_000 + 1_000_000_000, 1_000_000_000 + 399_993_600);
        assert!((rate - 0.3999936).abs() < 1e-12, "{rate}");
        // Set back an hour meanwhile: no measure.
        assert_eq!(at(2_000, -3_600_000_000_000), 0.4);
        assert_eq!(at(500, 2_000_000_000), 0.4);
    }

    #[test]
    fn ticks_read_before_the_anchor_moved_count_back_from_it() {
        let anchor = Fixed {
            ticks: 1_000,
            nanos: 1_000_000,
            rate: 0.5,
        };
        assert_eq!(anchor.at(990), 999_995);
        assert_eq!(anchor.at(1_010), 1_000_005);
    }
}
