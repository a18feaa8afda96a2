//! Hedged GETs for the tail: a GET whose answer is far later than its peers' is sent once
//! more, and the first answer wins.
//!
//! Owns the record of recent first-byte times (a GET's answer, headers only: the body's pace
//! is the link's, not the server's), the threshold past which a GET is hedged, and the budget
//! that keeps hedges a small fraction of all GETs. It does not send anything (`s3` races the
//! two requests and drops the loser) and does not hedge while the run is being throttled
//! (`throttle`): a second request then would only add to what S3 asked us to cut.
//!
//! Why: S3 answers most GETs in tens of milliseconds and a few many times later; AWS's
//! guidance is to re-request the slowest ~5%. A small file's whole cost is its first byte,
//! so one slow answer among the last files of a run holds the run for its length.
//!
//! Times are seconds, given as arguments ([`Tail`] is tested without clocks).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// First-byte times kept: enough for a stable percentile, recent enough to follow the server.
const WINDOW: usize = 200;
/// No hedging before this many answers were seen: a percentile of a handful means nothing.
const MIN_SAMPLES: usize = 16;
/// A GET is hedged once it has waited this many times the 90th percentile of its peers...
const FACTOR: f64 = 2.0;
/// ...and never sooner than this: on a loopback or LAN server the percentile is a millisecond
/// or two, and a hedge there would only double the requests of an ordinary scheduling hiccup.
const FLOOR: f64 = 0.05;
/// Hedges are at most this fraction of GETs (AWS: the slowest ~5%), plus [`BURST`].
const MAX_FRACTION: f64 = 0.05;
const BURST: f64 = 2.0;

/// The tail model: recent first-byte times and the hedge budget.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    recent: VecDeque<f64>,
    requests: u64,
    hedges: u64,
}

impl Tail {
    /// A GET was sent (hedges are counted against these).
    pub(crate) fn sent(&mut self) {
        self.requests += 1;
    }

    /// A GET was answered `secs` after it was sent.
    pub(crate) fn answered(&mut self, secs: f64) {
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(secs);
    }

    /// How long a GET may wait for its answer before it is hedged (`None`: too few seen yet).
    pub(crate) fn threshold(&self) -> Option<f64> {
        if self.recent.len() < MIN_SAMPLES {
            return None;
        }
        let mut times: Vec<f64> = self.recent.iter().copied().collect();
        let at = (times.len() * 9 / 10).min(times.len() - 1);
        let (_, &mut p90, _) = times.select_nth_unstable_by(at, f64::total_cmp);
        Some((FACTOR * p90).max(FLOOR))
    }

    /// Take one hedge from the budget, if it has one.
    pub(crate) fn take(&mut self) -> bool {
        let ok = (self.hedges + 1) as f64 <= MAX_FRACTION * self.requests as f64 + BURST;
        if ok {
            self.hedges += 1;
        }
        ok
    }

    #[cfg(test)]
    fn hedges(&self) -> u64 {
        self.hedges
    }
}

/// The run's tail model, shared by every GET.
#[derive(Debug, Default)]
pub(crate) struct Hedge {
    tail: Mutex<Tail>,
}

impl Hedge {
    pub(crate) fn sent(&self) {
        self.tail.lock().unwrap().sent();
    }

    pub(crate) fn answered(&self, after: Duration) {
        self.tail.lock().unwrap().answered(after.as_secs_f64());
    }

    pub(crate) fn threshold(&self) -> Option<Duration> {
        self.tail
            .lock()
            .unwrap()
            .threshold()
            .map(Duration::from_secs_f64)
    }

    pub(crate) fn take(&self) -> bool {
        self.tail.lock().unwrap().take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_threshold_until_enough_answers() {
        let mut t = Tail::default();
        for _ in 0..MIN_SAMPLES - 1 {
            t.answered(0.03);
        }
        assert_eq!(t.threshold(), None);
        t.answered(0.03);
        assert!(t.threshold().is_some());
    }

    #[test]
    fn the_threshold_is_twice_the_90th_percentile_with_a_floor() {
        let mut t = Tail::default();
        // S3-like: 15-60 ms, and 3% of answers 10x later.
        for i in 0..100 {
            let base = 0.015 + 0.045 * f64::from(i) / 99.0;
            t.answered(if i % 33 == 0 { base * 10.0 } else { base });
        }
        let th = t.threshold().unwrap();
        assert!((0.1..0.13).contains(&th), "{th}");
        // A loopback server answering in a millisecond: the floor.
        let mut t = Tail::default();
        for _ in 0..100 {
            t.answered(0.001);
        }
        assert_eq!(t.threshold(), Some(FLOOR));
    }

    #[test]
    fn the_window_follows_the_server() {
        let mut t = Tail::default();
        for _ in 0..WINDOW {
            t.answered(1.0);
        }
        for _ in 0..WINDOW {
            t.answered(0.04);
        }
        assert!(t.threshold().unwrap() < 0.1);
    }

    #[test]
    fn hedges_stay_a_small_fraction_of_requests() {
        let mut t = Tail::default();
        let mut granted = 0;
        for _ in 0..1000 {
            t.sent();
            // Every GET asks for a hedge (a server slow on all of them): 5% get one.
            if t.take() {
                granted += 1;
            }
        }
        assert_eq!(granted, 52);
        assert_eq!(t.hedges(), 52);
    }
}
