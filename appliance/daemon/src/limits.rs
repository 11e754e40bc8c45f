//! Per-key rate limiting (token buckets) and correlation-id validation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimitConfig;

/// Token buckets keyed by principal id.
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Most principals tracked before idle buckets are dropped.
const MAX_BUCKETS: usize = 65_536;

impl RateLimiter {
    /// Builds a limiter.
    #[must_use]
    pub fn new(config: RateLimitConfig) -> Self {
        Self { config, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`; `Err(ms)` says how long until one is available.
    ///
    /// # Errors
    /// Milliseconds to wait.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let rate = f64::from(self.config.requests_per_second);
        let burst = f64::from(self.config.burst);
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else { return Err(1000) };
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            buckets.retain(|_, (tokens, at)| *tokens < burst || now.duration_since(*at).as_secs() < 60);
        }
        let (tokens, last) = buckets.entry(key.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / rate * 1000.0).ceil();
            // The wait is at most 1000 / rate ms, far inside u64.
            Err(wait.max(1.0) as u64)
        }
    }
}

/// Validates an `x-correlation-id` value: 1..=128 RFC 7230 token characters.
#[must_use]
pub fn valid_correlation_id(value: &str) -> bool {
    let value = value.trim();
    !value.is_empty()
        && value.len() <= 128
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refuses() {
        let limiter = RateLimiter::new(RateLimitConfig { requests_per_second: 1, burst: 3 });
        for _ in 0..3 {
            limiter.check("k").unwrap();
        }
        assert!(limiter.check("k").is_err());
        limiter.check("other").unwrap();
    }

    #[test]
    fn correlation_ids() {
        assert!(valid_correlation_id("abc-123_x.y"));
        assert!(!valid_correlation_id(""));
        assert!(!valid_correlation_id("has space"));
        assert!(!valid_correlation_id(&"a".repeat(129)));
    }
}
