//! Retry policy: which failures are worth another try, how long to wait before it, and how
//! slow an answer may be before it counts as a failure.
//!
//! Owns jittered exponential backoff, the generic retry loop used for listings, HEADs and MAST
//! calls (each retry is noted, see `note::wait_note`), and the minimum-progress watchdog
//! every response body is read through. Ranged body transfers use [`RetryPolicy::pause`]
//! directly because they resume from the last byte received instead of starting over.

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
}

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

/// A whole (small) body, read through the watchdog.
pub(crate) async fn read_body<S, B, E>(
    policy: &RetryPolicy,
    mut body: S,
) -> Result<Vec<u8>, BodyError<E>>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    let mut dog = Watchdog::new(policy);
    let mut out = Vec::new();
    while let Some(chunk) = dog.next(&mut body).await.map_err(BodyError::TooSlow)? {
        out.extend_from_slice(chunk.map_err(BodyError::Body)?.as_ref());
    }
    Ok(out)
}

#[derive(Debug)]
pub(crate) enum BodyError<E> {
    TooSlow(TooSlow),
    Body(E),
}

impl RetryPolicy {
    /// "Full jitter" backoff (AWS architecture blog): uniform in [0, min(max, base * 2^attempt)],
    /// so that many clients retrying at once spread out instead of hammering in step.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        cap.mul_f64(fastrand::f64())
    }

    /// Whether `err`, after `attempt` retries, is worth another.
    pub(crate) fn should_retry<E: Transient>(&self, err: &E, attempt: u32) -> bool {
        let limit = err
            .retry_limit()
            .map_or(self.max_retries, |l| l.min(self.max_retries));
        err.is_transient() && attempt < limit
    }

    /// Wait before retry `attempt + 1` of what failed with `err`, saying so (at most one such
    /// note every half minute, so that many retrying requests do not flood the terminal).
    pub(crate) fn pause<E>(&self, attempt: u32, err: &E) -> tokio::time::Sleep
    where
        E: Transient + std::error::Error + 'static,
    {
        let wait = self.backoff(attempt);
        let limit = err
            .retry_limit()
            .map_or(self.max_retries, |l| l.min(self.max_retries));
        crate::note::wait_note(&format!(
            "retrying ({} of {limit}) in {:.1} s: {}",
            attempt + 1,
            wait.as_secs_f64(),
            crate::text::chain(err)
        ));
        tokio::time::sleep(wait)
    }

    /// Run `op` until it succeeds, fails permanently, or retries run out.
    pub(crate) async fn run<T, E, F, Fut>(&self, mut op: F) -> Result<T, E>
    where
        E: Transient + std::error::Error + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if self.should_retry(&e, attempt) => {
                    self.pause(attempt, &e).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
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

    #[tokio::test]
    async fn a_dripping_body_is_too_slow_and_a_quick_one_is_not() {
        let drip = futures::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((Ok::<_, std::io::Error>(vec![b'x']), n + 1))
        });
        let err = read_body(&fast(), Box::pin(drip)).await.unwrap_err();
        assert!(matches!(err, BodyError::TooSlow(TooSlow { got, .. }) if got < 20));
        let quick = futures::stream::iter((0..3).map(|_| Ok::<_, std::io::Error>(vec![7u8; 10])));
        let body = read_body(&fast(), quick).await.map_err(|_| ()).unwrap();
        assert_eq!(body.len(), 30);
    }

    #[test]
    fn backoff_is_capped() {
        let p = RetryPolicy::default();
        for a in 0..40 {
            assert!(p.backoff(a) <= p.max_delay);
        }
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
