//! Retry policy: which failures are worth another try, how long to wait before it, and how
//! slow an answer may be before it counts as a failure.
//!
//! Owns the policy (how many retries, how long they may take in all), [`Backoff`]: the jittered
//! exponential waits of one request's attempts, drawn from a random source a test can seed
//! (as object_store's `RetryConfig` and `Backoff`), the generic retry loop used for listings,
//! HEADs and MAST calls (each retry is noted, see `note::wait_note`), and the minimum-progress
//! watchdog every response body is read through (`net` reads bodies through it). Ranged body
//! transfers drive a [`Backoff`] themselves because they resume from the last byte received
//! instead of starting over.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

/// Whether an error is transient (5xx, SlowDown, timeouts, resets, short bodies).
pub(crate) trait Transient {
    fn is_transient(&self) -> bool;
    /// Retries worth making for this error when fewer than the policy's: a DNS name that does
    /// not resolve gets one more try (a resolver hiccup), not a minute and a half of them.
    fn retry_limit(&self) -> Option<u32> {
        None
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub max_retries: u32,
    pub base: Duration,
    pub max_delay: Duration,
    /// The watchdog's window: a body must deliver [`MIN_PROGRESS`] bytes in each one.
    pub stall: Duration,
    /// How long one request may keep trying, from its first attempt: a retry whose wait would
    /// end later is not made, however many retries are left.
    pub budget: Duration,
}

/// The time budget of one request by default. Ten retries wait about a minute and a half at
/// most; five minutes leaves room for their attempts too (a HEAD may take up to a minute to
/// time out), while a request against an endpoint that answers each attempt only after a long
/// timeout still gives up in minutes, not in the better part of an hour.
pub(crate) const DEFAULT_BUDGET: Duration = Duration::from_secs(300);

/// Bytes a response body must deliver per watchdog window (about 550 B/s over 30 s): any real
/// link does far better, while a server dripping a byte a second is caught in one window
/// instead of holding a request (and the run) for as long as it likes.
pub(crate) const MIN_PROGRESS: u64 = 16 << 10;

/// The watchdog window by default. Thirty seconds lets a congested link recover; a body that
/// delivers nearly nothing for that long is retried on a new connection.
pub(crate) const DEFAULT_STALL: Duration = Duration::from_secs(30);

impl Default for RetryPolicy {
    /// Ten retries spanning about a minute and a half in total: long enough to ride out an
    /// S3 SlowDown episode or a MAST restart, short enough that a dead endpoint fails the run.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 10,
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(20),
            stall: DEFAULT_STALL,
            budget: DEFAULT_BUDGET,
        }
    }
}

/// What a failed connection says about the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outlook {
    /// A reset, a timeout, a refused connection: worth the usual retries.
    Retry,
    /// The host name did not resolve: one more try (a resolver hiccup), then give up.
    OnceMore,
    /// It will fail the same way every time (TLS to a plain-HTTP server, a bad certificate, a
    /// redirect loop): give up at once.
    Never,
}

/// Read a transport error's cause chain. The HTTP stacks (reqwest, hyper, the AWS SDK, rustls)
/// wrap these causes in their own types, so the chain's words are what they have in common.
pub(crate) fn outlook(err: &(dyn std::error::Error + 'static)) -> Outlook {
    let mut words = String::new();
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            if r.is_redirect() {
                return Outlook::Never;
            }
        }
        words.push_str(&e.to_string().to_ascii_lowercase());
        words.push('\n');
        next = e.source();
    }
    const TLS: [&str; 6] = [
        "invalidcontenttype",
        "corrupt message",
        "invalid peer certificate",
        "handshakefailure",
        "wrong version number",
        "certificate verify failed",
    ];
    const DNS: [&str; 5] = [
        "dns error",
        "failed to lookup address",
        "name or service not known",
        "no such host",
        "nodename nor servname",
    ];
    if TLS.iter().any(|w| words.contains(w)) || words.contains("too many redirects") {
        Outlook::Never
    } else if DNS.iter().any(|w| words.contains(w)) {
        Outlook::OnceMore
    } else {
        Outlook::Retry
    }
}

/// Words for an error message that say what a transport error means, when it is one that will
/// not heal by itself: `""` otherwise.
pub(crate) fn transport_hint(err: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut words = String::new();
    let mut next = Some(err);
    while let Some(e) = next {
        words.push_str(&e.to_string().to_ascii_lowercase());
        next = e.source();
    }
    match outlook(err) {
        Outlook::Never if words.contains("redirect") => " (a redirect loop)",
        Outlook::Never if words.contains("certificate") => {
            " (the TLS certificate is not valid for this host)"
        }
        Outlook::Never => {
            " (the TLS handshake failed: is it a plain-HTTP server? then give an http:// URL)"
        }
        Outlook::OnceMore => " (the host name does not resolve: check it, and the network)",
        Outlook::Retry => "",
    }
}

/// A body that delivered too little within one watchdog window.
#[derive(Debug, thiserror::Error)]
#[error(
    "too slow: {got} bytes in {} s, less than the {min} expected (stalled connection or server)",
    window.as_secs_f64()
)]
pub(crate) struct TooSlow {
    pub got: u64,
    pub min: u64,
    pub window: Duration,
}

/// The minimum-progress watchdog of one response body.
pub(crate) struct Watchdog {
    window: Duration,
    start: Instant,
    got: u64,
}

impl Watchdog {
    pub(crate) fn new(policy: &RetryPolicy) -> Watchdog {
        Watchdog {
            window: policy.stall.max(Duration::from_millis(1)),
            start: Instant::now(),
            got: 0,
        }
    }

    /// The next item of `body`, unless a window passes with fewer than [`MIN_PROGRESS`] bytes.
    pub(crate) async fn next<S, B, E>(
        &mut self,
        body: &mut S,
    ) -> Result<Option<Result<B, E>>, TooSlow>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
    {
        loop {
            let end = self.start + self.window;
            let item = tokio::time::timeout_at(end.into(), body.next()).await;
            if let Ok(Some(Ok(chunk))) = &item {
                self.got += chunk.as_ref().len() as u64;
            }
            if Instant::now() >= end {
                if self.got < MIN_PROGRESS {
                    return Err(TooSlow {
                        got: self.got,
                        min: MIN_PROGRESS,
                        window: self.window,
                    });
                }
                self.start = Instant::now();
                self.got = 0;
            }
            if let Ok(item) = item {
                return Ok(item);
            }
        }
    }
}

/// A request that has not been answered for this long is worth a note (and one every
/// `note::NOTE_INTERVAL` after that).
const NOTE_AFTER: Duration = Duration::from_secs(30);

/// `fut` (a request waiting for its answer), with a note every half minute that it still waits,
/// naming `what`: a server that holds a request for minutes is never silent.
pub(crate) async fn noting<F: Future>(what: &str, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let start = Instant::now();
    loop {
        match tokio::time::timeout(NOTE_AFTER, &mut fut).await {
            Ok(v) => return v,
            Err(_) => crate::note::wait_note(&format!(
                "still waiting for an answer to {what} after {} s",
                start.elapsed().as_secs()
            )),
        }
    }
}

impl RetryPolicy {
    /// "Full jitter" backoff (AWS architecture blog): uniform in [0, min(max, base * 2^attempt)]
    /// for `unit` uniform in [0, 1), so that many clients retrying at once spread out instead of
    /// hammering in step.
    fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        cap.mul_f64(unit)
    }

    /// Retries worth making after `err`.
    fn limit<E: Transient>(&self, err: &E) -> u32 {
        err.retry_limit()
            .map_or(self.max_retries, |l| l.min(self.max_retries))
    }

    /// Run `op` until it succeeds, fails permanently, or retries (or their time) run out.
    pub(crate) async fn run<T, E, F, Fut>(&self, mut op: F) -> Result<T, E>
    where
        E: Transient + std::error::Error + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut backoff = Backoff::new(self);
        loop {
            match op().await {
                Err(e) if backoff.wait(&e).await => {}
                other => return other,
            }
        }
    }
}

/// The attempts of one request: how many were made, since when, and the random source their
/// waits are drawn from.
pub(crate) struct Backoff {
    policy: RetryPolicy,
    rng: fastrand::Rng,
    attempt: u32,
    started: Instant,
}

impl Backoff {
    /// A request's first attempt starts now.
    pub(crate) fn new(policy: &RetryPolicy) -> Backoff {
        Backoff::with_rng(policy, fastrand::Rng::new())
    }

    /// With the random source given (a seeded one makes the waits repeatable).
    pub(crate) fn with_rng(policy: &RetryPolicy, rng: fastrand::Rng) -> Backoff {
        Backoff {
            policy: *policy,
            rng,
            attempt: 0,
            started: Instant::now(),
        }
    }

    /// How long to wait before trying again after `err`, or `None` when `err` is final: not
    /// transient, its retries spent, or the wait would end past the time budget.
    pub(crate) fn next<E: Transient>(&mut self, err: &E) -> Option<Duration> {
        if !err.is_transient() || self.attempt >= self.policy.limit(err) {
            return None;
        }
        let wait = self.policy.delay(self.attempt, self.rng.f64());
        if self.started.elapsed() + wait > self.policy.budget {
            return None;
        }
        self.attempt += 1;
        Some(wait)
    }

    /// Wait before the next attempt after `err`, saying so (at most one such note every half
    /// minute, so that many retrying requests do not flood the terminal); `false`, at once,
    /// when `err` is final.
    pub(crate) async fn wait<E>(&mut self, err: &E) -> bool
    where
        E: Transient + std::error::Error + 'static,
    {
        let Some(wait) = self.next(err) else {
            return false;
        };
        crate::note::wait_note(&format!(
            "retrying ({} of {}) in {:.1} s: {}",
            self.attempt,
            self.policy.limit(err),
            wait.as_secs_f64(),
            crate::text::chain(err)
        ));
        tokio::time::sleep(wait).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("e")]
    struct E(bool);
    impl Transient for E {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            stall: Duration::from_millis(200),
            budget: Duration::from_secs(60),
        }
    }

    #[test]
    fn transport_errors_that_will_not_heal_are_told_apart() {
        use std::io::{Error, ErrorKind};
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Wrap(#[source] Error);
        let dns = Wrap(Error::other(
            "dns error: failed to lookup address information: Name or service not known",
        ));
        assert_eq!(outlook(&dns), Outlook::OnceMore);
        let tls = Wrap(Error::new(
            ErrorKind::InvalidData,
            "received corrupt message of type InvalidContentType",
        ));
        assert_eq!(outlook(&tls), Outlook::Never);
        assert!(transport_hint(&tls).contains("plain-HTTP"));
        let reset = Wrap(Error::new(ErrorKind::ConnectionReset, "connection reset"));
        assert_eq!(outlook(&reset), Outlook::Retry);
        assert_eq!(transport_hint(&reset), "");
    }

    #[test]
    fn waits_are_capped_jittered_and_repeatable_from_a_seed() {
        let p = RetryPolicy {
            max_retries: 40,
            budget: Duration::from_secs(3600),
            ..RetryPolicy::default()
        };
        let waits = |seed| {
            let mut b = Backoff::with_rng(&p, fastrand::Rng::with_seed(seed));
            (0..40)
                .map(|_| b.next(&E(true)).unwrap())
                .collect::<Vec<_>>()
        };
        let a = waits(7);
        assert_eq!(a, waits(7), "the same seed, the same waits");
        assert_ne!(a, waits(8), "the waits are drawn, not fixed");
        for (attempt, w) in a.iter().enumerate() {
            let cap = p.base * 2u32.pow(attempt.min(20) as u32);
            assert!(*w <= cap.min(p.max_delay), "attempt {attempt}: {w:?}");
        }
        // Spread out: not every late wait is at its cap.
        assert!(a[20..].iter().any(|w| *w < p.max_delay / 2));
    }

    #[test]
    fn retries_stop_when_spent_final_or_out_of_time() {
        let p = fast();
        let mut b = Backoff::with_rng(&p, fastrand::Rng::with_seed(1));
        assert!((0..3).all(|_| b.next(&E(true)).is_some()));
        assert_eq!(b.next(&E(true)), None, "three retries, then no more");
        let mut b = Backoff::with_rng(&p, fastrand::Rng::with_seed(1));
        assert_eq!(b.next(&E(false)), None, "a permanent error is final");
        let spent = RetryPolicy {
            budget: Duration::ZERO,
            base: Duration::from_secs(1),
            ..p
        };
        let mut b = Backoff::with_rng(&spent, fastrand::Rng::with_seed(1));
        assert_eq!(b.next(&E(true)), None, "no time left for a wait");
    }

    #[tokio::test]
    async fn transient_errors_are_retried_then_given_up() {
        let mut calls = 0;
        let r: Result<(), E> = fast()
            .run(|| {
                calls += 1;
                async { Err(E(true)) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 4);

        let mut calls = 0;
        let r: Result<(), E> = fast()
            .run(|| {
                calls += 1;
                async { Err(E(false)) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "permanent errors are not retried");

        let mut calls = 0;
        let r: Result<u32, E> = fast()
            .run(|| {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(E(true))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 3);
    }
}
