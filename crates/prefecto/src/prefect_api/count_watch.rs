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
//!
//! The count of one flow run also stands still while the server's recorder
//! works through other runs' task runs (other processes, other flows): then
//! the run's own are still queued behind them. So before it sends anything
//! again, the watch asks for the server's count of all its task runs, and
//! waits while that moves.

use std::time::{Duration, Instant};

/// What to do after a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The server has every task run.
    Recorded,
    /// The server may still be recording: count again later.
    Wait,
    /// The count has not moved for the settle time: count every task run
    /// the server has, and give it to [`CountWatch::observe_server`].
    AskServer,
    /// Neither count has moved: send what is missing.
    SendMissing,
}

/// How long the server's count of all its task runs must stand still
/// before the server is taken for idle.
const SERVER_STILL: Duration = Duration::from_secs(5);

/// Watches a flow run's task-run count on the server.
#[derive(Debug)]
pub(crate) struct CountWatch {
    expected: u64,
    settle: Duration,
    last: Option<u64>,
    since: Instant,
    /// The server's count of all its task runs, and when it was taken.
    server: Option<(u64, Instant)>,
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
            server: None,
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
            self.server = None;
            return Verdict::Wait;
        }
        if now.duration_since(self.since) < self.settle {
            return Verdict::Wait;
        }
        match self.server {
            Some((_, at)) if now.duration_since(at) < SERVER_STILL => Verdict::Wait,
            _ => Verdict::AskServer,
        }
    }

    /// Takes the server's count of all its task runs, made at `now`, after
    /// [`Verdict::AskServer`].
    pub(crate) fn observe_server(&mut self, total: u64, now: Instant) -> Verdict {
        match self.server {
            Some((seen, at)) if seen == total && now.duration_since(at) >= SERVER_STILL => {
                // What goes now needs its own settle time before it is judged.
                self.since = now;
                self.server = None;
                Verdict::SendMissing
            }
            Some((seen, _)) if seen == total => Verdict::Wait,
            Some(_) => {
                // The server is recording others' runs: ours may be queued
                // behind them. Judge again after a settle time.
                self.since = now;
                self.server = None;
                Verdict::Wait
            }
            None => {
                self.server = Some((total, now));
                Verdict::Wait
            }
        }
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

    /// Counts until the watch says to send, with an idle server; the time then.
    fn until_sent(watch: &mut CountWatch, count: u64, t0: Instant, from: u64) -> u64 {
        for second in from..from + 120 {
            let now = at(t0, second);
            match watch.observe(count, now) {
                Verdict::AskServer => {
                    if watch.observe_server(1_000, now) == Verdict::SendMissing {
                        return second;
                    }
                }
                Verdict::Wait => {}
                other => panic!("{other:?} at {second} s"),
            }
        }
        panic!("never sent");
    }

    #[test]
    fn a_count_that_stops_short_sends_the_missing_once_per_settle() {
        let t0 = Instant::now();
        let mut watch = CountWatch::new(10, SETTLE, t0);
        assert_eq!(watch.observe(7, t0), Verdict::Wait);
        assert_eq!(watch.observe(7, at(t0, 14)), Verdict::Wait);
        // Still for the settle time, then the idle server for 5 s more.
        let sent = until_sent(&mut watch, 7, t0, 15);
        assert_eq!(sent, 20);
        // What went again gets its own settle time.
        let again = until_sent(&mut watch, 7, t0, sent + 1);
        assert_eq!(again, sent + SETTLE.as_secs() + 5);
        assert_eq!(watch.observe(10, at(t0, again + 1)), Verdict::Recorded);
        assert_eq!(watch.missing(), 0);
    }

    #[test]
    fn a_server_busy_with_other_runs_holds_the_resend_back() {
        let t0 = Instant::now();
        let mut watch = CountWatch::new(10, SETTLE, t0);
        assert_eq!(watch.observe(7, t0), Verdict::Wait);
        let mut total = 1_000;
        for second in 15..300 {
            let now = at(t0, second);
            if watch.observe(7, now) == Verdict::AskServer {
                // Other runs' task runs keep arriving.
                total += 3;
                assert_eq!(watch.observe_server(total, now), Verdict::Wait);
            }
        }
        // Once the server is idle, the missing go.
        let sent = until_sent(&mut watch, 7, t0, 300);
        assert!(sent <= 300 + SETTLE.as_secs() + 5, "{sent}");
    }

    #[test]
    fn our_own_sending_postpones_the_judgement() {
        let t0 = Instant::now();
        let mut watch = CountWatch::new(10, SETTLE, t0);
        assert_eq!(watch.observe(3, t0), Verdict::Wait);
        watch.sending(at(t0, 20));
        assert_eq!(watch.observe(3, at(t0, 21)), Verdict::Wait);
        assert_eq!(watch.observe(3, at(t0, 34)), Verdict::Wait);
        assert_eq!(watch.observe(3, at(t0, 35)), Verdict::AskServer);
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
