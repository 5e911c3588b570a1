//! A token bucket: the request-rate quota of one connector on one instance.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub(super) struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket: a connector's first requests are never throttled.
    pub(super) fn full(burst: f64, now: Instant) -> Self {
        TokenBucket {
            tokens: burst,
            refilled: now,
        }
    }

    /// Takes one token, or tells how long until there is one.
    pub(super) fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        self.tokens = self.level(rate, burst, now);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }

    /// The tokens there are at `now`.
    pub(super) fn level(&self, rate: f64, burst: f64, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_token_per_interval() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(3.0, start);
        for _ in 0..3 {
            assert_eq!(bucket.take(10.0, 3.0, start), Ok(()));
        }
        let wait = bucket.take(10.0, 3.0, start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        let later = start + Duration::from_millis(100);
        assert_eq!(bucket.take(10.0, 3.0, later), Ok(()));
        assert!(bucket.take(10.0, 3.0, later).is_err());
    }

    #[test]
    fn refill_stops_at_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(2.0, start);
        bucket.take(1.0, 2.0, start).unwrap();
        let much_later = start + Duration::from_secs(3600);
        assert_eq!(bucket.level(1.0, 2.0, much_later), 2.0);
    }
}
