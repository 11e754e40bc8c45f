//! The key cache and its refresh policy:
//! - keys older than `refresh_interval_s` are fetched again on their next use, and an
//!   unknown `kid` asks for a fetch too (a rotated provider's new key is found);
//! - at most one fetch per `min_refresh_interval_s`, whoever asks (a flood of random
//!   `kid`s costs the provider one request per interval);
//! - when fetches fail, the keys last fetched keep serving until `max_key_age_s` after that
//!   fetch; past it no key is used and every token is refused (fail closed) until the
//!   provider answers again;
//! - a JWKS file is read again when it changed (checked at most once per
//!   `min_refresh_interval_s`) and never ages out: it is the operator's own copy.
//!
//! A fetch runs outside the lock: tokens keep being checked against the current keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::keys::{parse_jwks, VerifyKey};
use super::source::{Fetched, KeySource};

/// Why no key was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// No key has this `kid` (after a fetch, if one was allowed).
    UnknownKid,
    /// The keys are older than their maximum age and the provider did not answer.
    KeysExpired,
}

/// Fetch counters for `/metrics`.
#[derive(Debug, Default)]
pub struct FetchCounters {
    /// Fetches that installed a key set (or found the file unchanged).
    pub ok: AtomicU64,
    /// Fetches that failed (unreachable, bad TLS, bad document).
    pub failed: AtomicU64,
}

struct State {
    keys: HashMap<String, Arc<VerifyKey>>,
    /// When the keys were last fetched successfully.
    fetched_at: Option<Instant>,
    /// When a fetch was last started, successful or not.
    attempted_at: Option<Instant>,
}

/// The cache.
pub struct KeyCache {
    source: KeySource,
    refresh_every: Duration,
    max_age: Option<Duration>,
    min_interval: Duration,
    state: Mutex<State>,
    /// Fetch outcomes.
    pub counters: FetchCounters,
}

impl KeyCache {
    /// A cache over `source`; `max_age` `None` means keys never age out (a file).
    #[must_use]
    pub fn new(source: KeySource, refresh_every: Duration, max_age: Option<Duration>, min_interval: Duration) -> Self {
        Self {
            source,
            refresh_every,
            max_age,
            min_interval,
            state: Mutex::new(State { keys: HashMap::new(), fetched_at: None, attempted_at: None }),
            counters: FetchCounters::default(),
        }
    }

    /// The key with `kid`, fetching first when the keys are due or the `kid` is unknown
    /// (within the fetch budget).
    ///
    /// # Errors
    /// [`Missing`].
    pub fn key(&self, kid: &str, now: Instant) -> Result<Arc<VerifyKey>, Missing> {
        let should_fetch = {
            let Ok(mut state) = self.state.lock() else { return Err(Missing::KeysExpired) };
            let due = state.fetched_at.is_none_or(|at| now.duration_since(at) >= self.refresh_every);
            let wanted = due || !state.keys.contains_key(kid);
            let allowed = state.attempted_at.is_none_or(|at| now.duration_since(at) >= self.min_interval);
            if wanted && allowed {
                state.attempted_at = Some(now);
            }
            wanted && allowed
        };
        if should_fetch {
            self.fetch(now);
        }
        let Ok(state) = self.state.lock() else { return Err(Missing::KeysExpired) };
        let fresh = match (state.fetched_at, self.max_age) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(at), Some(max_age)) => now.duration_since(at) < max_age,
        };
        if !fresh {
            return Err(Missing::KeysExpired);
        }
        state.keys.get(kid).cloned().ok_or(Missing::UnknownKid)
    }

    /// Fetches now (at start-up, so the first token does not wait for the provider).
    pub fn prime(&self, now: Instant) {
        if let Ok(mut state) = self.state.lock() {
            state.attempted_at = Some(now);
        }
        self.fetch(now);
    }

    /// How many keys are held.
    #[must_use]
    pub fn key_count(&self) -> usize {
        self.state.lock().map(|s| s.keys.len()).unwrap_or(0)
    }

    fn fetch(&self, now: Instant) {
        let outcome = self.source.fetch().and_then(|fetched| match fetched {
            Fetched::Unchanged => Ok(None),
            Fetched::Document(bytes) => parse_jwks(&bytes).map(Some),
        });
        let Ok(mut state) = self.state.lock() else { return };
        match outcome {
            Ok(Some((keys, skipped))) => {
                tracing::info!(source = %self.source.describe(), keys = keys.len(), skipped, "OIDC signing keys loaded");
                state.keys = keys;
                state.fetched_at = Some(now);
                self.counters.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => {
                state.fetched_at = Some(now);
                self.counters.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(message) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                let age = state.fetched_at.map(|at| now.duration_since(at).as_secs());
                let expired = match (state.fetched_at, self.max_age) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(at), Some(max)) => now.duration_since(at) >= max,
                };
                if expired {
                    tracing::error!(source = %self.source.describe(), error = %message, age_s = ?age,
                        "OIDC signing keys could not be fetched and none are current: bearer tokens are refused until the provider answers");
                } else {
                    tracing::warn!(source = %self.source.describe(), error = %message, age_s = ?age,
                        "OIDC signing keys could not be fetched; the cached keys serve until their maximum age");
                }
            }
        }
    }
}
