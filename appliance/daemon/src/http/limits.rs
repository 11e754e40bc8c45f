//! Dual rate limiting (token buckets per API key and per tenant, checked together) and
//! correlation-id validation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimitConfig;

/// One bucket: tokens and the time they were last refilled.
type Bucket = (f64, Instant);

/// Token buckets keyed by principal and by tenant. A request takes one token from its
/// key's bucket and one from its tenant's; it passes only when both have one, so a
/// tenant with many keys cannot exceed the tenant's rate either.
pub struct RateLimiter {
    per_key: RateLimitConfig,
    per_tenant: RateLimitConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Most buckets tracked before idle ones are dropped.
const MAX_BUCKETS: usize = 65_536;

fn refill(bucket: &mut Bucket, config: RateLimitConfig, now: Instant) -> f64 {
    let rate = f64::from(config.requests_per_second);
    bucket.0 = (bucket.0 + now.duration_since(bucket.1).as_secs_f64() * rate).min(f64::from(config.burst));
    bucket.1 = now;
    bucket.0
}

fn wait_ms(tokens: f64, config: RateLimitConfig) -> u64 {
    let wait = ((1.0 - tokens) / f64::from(config.requests_per_second) * 1000.0).ceil();
    // The wait is at most 1000 / rate ms, far inside u64.
    wait.max(1.0) as u64
}

impl RateLimiter {
    /// Builds a limiter.
    #[must_use]
    pub fn new(per_key: RateLimitConfig, per_tenant: RateLimitConfig) -> Self {
        Self { per_key, per_tenant, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key` and one for `tenant` (when the key is tenant-bound);
    /// `Err(ms)` says how long until both have one. A refused request takes nothing.
    ///
    /// # Errors
    /// Milliseconds to wait.
    pub fn check(&self, key: &str, tenant: Option<u64>) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else { return Err(1000) };
        if buckets.len() >= MAX_BUCKETS {
            let (key_burst, tenant_burst) = (f64::from(self.per_key.burst), f64::from(self.per_tenant.burst));
            buckets.retain(|name, (tokens, at)| {
                let burst = if name.starts_with("t:") { tenant_burst } else { key_burst };
                *tokens < burst || now.duration_since(*at).as_secs() < 60
            });
        }
        let key_name = format!("k:{key}");
        let key_tokens = {
            let bucket = buckets.entry(key_name.clone()).or_insert((f64::from(self.per_key.burst), now));
            refill(bucket, self.per_key, now)
        };
        let tenant_name = tenant.map(|t| format!("t:{t}"));
        let tenant_tokens = tenant_name.as_ref().map(|name| {
            let bucket = buckets.entry(name.clone()).or_insert((f64::from(self.per_tenant.burst), now));
            refill(bucket, self.per_tenant, now)
        });
        let key_wait = (key_tokens < 1.0).then(|| wait_ms(key_tokens, self.per_key));
        let tenant_wait = tenant_tokens.filter(|t| *t < 1.0).map(|t| wait_ms(t, self.per_tenant));
        if let Some(wait) = key_wait.max(tenant_wait) {
            return Err(wait);
        }
        for name in std::iter::once(key_name).chain(tenant_name) {
            if let Some(bucket) = buckets.get_mut(&name) {
                bucket.0 -= 1.0;
            }
        }
        Ok(())
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
        let slow = RateLimitConfig { requests_per_second: 1, burst: 3 };
        let limiter = RateLimiter::new(slow, RateLimitConfig { requests_per_second: 1, burst: 5 });
        for _ in 0..3 {
            limiter.check("k", Some(1)).unwrap();
        }
        assert!(limiter.check("k", Some(1)).is_err());
        // A second key of the same tenant has its own bucket but shares the tenant's.
        limiter.check("other", Some(1)).unwrap();
        limiter.check("other", Some(1)).unwrap();
        assert!(limiter.check("other", Some(1)).is_err(), "tenant bucket exhausted");
        limiter.check("third", Some(2)).unwrap();
        limiter.check("org-wide", None).unwrap();
    }

    #[test]
    fn correlation_ids() {
        assert!(valid_correlation_id("abc-123_x.y"));
        assert!(!valid_correlation_id(""));
        assert!(!valid_correlation_id("has space"));
        assert!(!valid_correlation_id(&"a".repeat(129)));
    }
}
