//! Retry policy: which failures are worth another try, and how long to wait before it.
//!
//! Owns jittered exponential backoff and the generic retry loop used for listings, HEADs and
//! MAST calls. Ranged body transfers use [`RetryPolicy::backoff`] directly because they resume
//! from the last byte received instead of starting over.

use std::future::Future;
use std::time::Duration;

/// Whether an error is transient (5xx, SlowDown, timeouts, resets, short bodies).
pub trait Transient {
    fn is_transient(&self) -> bool;
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Ten retries spanning about a minute and a half in total: long enough to ride out an
    /// S3 SlowDown episode or a MAST restart, short enough that a dead endpoint fails the run.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 10,
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// "Full jitter" backoff (AWS architecture blog): uniform in [0, min(max, base * 2^attempt)],
    /// so that many clients retrying at once spread out instead of hammering in step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        cap.mul_f64(fastrand::f64())
    }

    /// Run `op` until it succeeds, fails permanently, or retries run out.
    pub async fn run<T, E, F, Fut>(&self, mut op: F) -> Result<T, E>
    where
        E: Transient,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if e.is_transient() && attempt < self.max_retries => {
                    tokio::time::sleep(self.backoff(attempt)).await;
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

    #[derive(Debug)]
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
        }
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
