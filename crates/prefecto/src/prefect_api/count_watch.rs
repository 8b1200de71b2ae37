//! When to send a flow run's task runs again: only once the server has
//! stopped recording them.
//!
//! A Prefect server records task-run events from an in-memory queue, some
//! time after `POST /events` accepted them, and drops what overflows that
//! queue without saying so. Counting its task runs tells both apart: while
//! the count moves, the server is still working through what it accepted,
//! and sending those task runs again would have it record each twice (with
//! two event ids for one state, the second breaks its unique index on the
//! state's task run and time). Once the count has not moved for a while and
//! nothing of ours is still on its way, what is missing was dropped, and only
//! that goes again.

use std::time::{Duration, Instant};

/// What to do after a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The server has every task run.
    Recorded,
    /// The server may still be recording: count again later.
    Wait,
    /// The count has not moved for the settle time: send what is missing.
    SendMissing,
}

/// Watches a flow run's task-run count on the server.
#[derive(Debug)]
pub(crate) struct CountWatch {
    expected: u64,
    settle: Duration,
    last: Option<u64>,
    since: Instant,
}

impl CountWatch {
    /// Watches for `expected` task runs, trusting a count that has not moved
    /// for `settle`.
    pub(crate) fn new(expected: u64, settle: Duration, now: Instant) -> Self {
        Self {
            expected,
            settle,
            last: None,
            since: now,
        }
    }

    /// The last count seen, if any.
    pub(crate) fn last(&self) -> Option<u64> {
        self.last
    }

    /// How many task runs the last count lacked (all of them before any count).
    pub(crate) fn missing(&self) -> u64 {
        self.expected - self.last.unwrap_or(0).min(self.expected)
    }

    /// Whether the count moved (or our sending went on) within the settle
    /// time before `now`: the server is still recording.
    pub(crate) fn moving(&self, now: Instant) -> bool {
        now.duration_since(self.since) < self.settle
    }

    /// Something of ours is still being sent: the count cannot have settled.
    pub(crate) fn sending(&mut self, now: Instant) {
        self.since = now;
    }

    /// Takes a count made at `now` and says what to do.
    pub(crate) fn observe(&mut self, count: u64, now: Instant) -> Verdict {
        let moved = self.last != Some(count);
        self.last = Some(count);
        if count >= self.expected {
            return Verdict::Recorded;
        }
        if moved {
            self.since = now;
            return Verdict::Wait;
        }
        if now.duration_since(self.since) >= self.settle {
            // What goes now needs its own settle time before it is judged.
            self.since = now;
            return Verdict::SendMissing;
        }
        Verdict::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(15);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_moving_count_is_never_sent_again() {
        let t0 = Instant::now();
        let mut watch = CountWatch::new(100, SETTLE, t0);
        for second in 0..60 {
            // One more task run recorded every second, for a minute.
            let verdict = watch.observe(second, at(t0, second));
            assert_eq!(verdict, Verdict::Wait, "at {second} s");
        }
        assert_eq!(watch.missing(), 41);
        assert!(watch.moving(at(t0, 60)));
        assert!(!watch.moving(at(t0, 75)));
    }

    #[test]
    fn a_count_that_stops_short_sends_the_missing_once_per_settle() {
        let t0 = Instant::now();
        let mut watch = CountWatch::new(10, SETTLE, t0);
        assert_eq!(watch.observe(7, t0), Verdict::Wait);
        assert_eq!(watch.observe(7, at(t0, 14)), Verdict::Wait);
        assert_eq!(watch.observe(7, at(t0, 15)), Verdict::SendMissing);
        // What went again gets its own settle time.
        assert_eq!(watch.observe(7, at(t0, 16)), Verdict::Wait);
        assert_eq!(watch.observe(7, at(t0, 29)), Verdict::Wait);
        assert_eq!(watch.observe(7, at(t0, 30)), Verdict::SendMissing);
        assert_eq!(watch.observe(10, at(t0, 31)), Verdict::Recorded);
        assert_eq!(watch.missing(), 0);
    }

    #[test]
    fn our_own_sending_postpones_the_judgement() {
        let t0 = Instant::now();
        let mut watch = CountWatch::new(10, SETTLE, t0);
        assert_eq!(watch.observe(3, t0), Verdict::Wait);
        watch.sending(at(t0, 20));
        assert_eq!(watch.observe(3, at(t0, 21)), Verdict::Wait);
        assert_eq!(watch.observe(3, at(t0, 35)), Verdict::SendMissing);
    }

    #[test]
    fn a_count_above_the_expected_is_recorded() {
        let t0 = Instant::now();
        let mut watch = CountWatch::new(5, SETTLE, t0);
        assert_eq!(watch.observe(6, t0), Verdict::Recorded);
        assert_eq!(watch.missing(), 0);
    }

    #[test]
    fn before_any_count_everything_is_missing() {
        let watch = CountWatch::new(5, SETTLE, Instant::now());
        assert_eq!(watch.missing(), 5);
        assert_eq!(watch.last(), None);
    }
}
