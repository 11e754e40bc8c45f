//! The admin UI's sessions, held server-side. The browser holds only an opaque random id
//! (256 bits, in a `__Host-` cookie); the table keeps its sha256, never the id itself, and
//! never the API key: only the key's hash, so each request re-reads the key's record and a
//! revoked or expired key ends its sessions at once. Sessions end after an idle and an
//! absolute timeout and on sign-out. The table is bounded (`max_sessions`, and
//! [`MAX_PER_PRINCIPAL`] per key): past it a new sign-in is refused, no one is evicted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dg_crypto::Sha256;

/// Sessions one principal may hold at once.
pub const MAX_PER_PRINCIPAL: usize = 16;

/// How a signed-in browser proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API key: the sha256 of its token (as the key table stores it).
    ApiKey {
        /// `dg_identity::keys::token_hash` of the token.
        token_sha256: String,
    },
    /// An ID token from the site's identity provider, checked at sign-in: its subject (the
    /// mapping table is read again on every request and wins) and the principal its
    /// claims gave.
    Oidc {
        /// `oidc:<iss>#<sub>`.
        subject: String,
        /// The principal from the token's claims (used while the subject is not mapped).
        from_claims: dg_identity::Principal,
    },
}

/// One session as a request sees it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The principal's id when it signed in (for the audit log and the per-key bound).
    pub principal_id: String,
    /// What is re-checked on every request.
    pub credential: Credential,
    /// The token every state-changing form carries (checked server-side).
    pub csrf_token: String,
    created: Instant,
    last_seen: Instant,
}

/// Why a sign-in could not get a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The table holds `max_sessions`.
    Table,
    /// This principal holds [`MAX_PER_PRINCIPAL`].
    Principal,
}

impl Full {
    /// Why, for the sign-in page and the audit entry.
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::Table => "the session table is full",
            Self::Principal => "this principal holds the most sessions allowed",
        }
    }
}

/// The session table.
pub struct Sessions {
    by_id_sha256: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    absolute: Duration,
    max_sessions: usize,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    dg_crypto::fill_random(&mut bytes);
    hex::encode(bytes)
}

fn key_of(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes())
}

impl Sessions {
    /// An empty table.
    #[must_use]
    pub fn new(idle: Duration, absolute: Duration, max_sessions: usize) -> Self {
        Self { by_id_sha256: Mutex::new(HashMap::new()), idle, absolute, max_sessions }
    }

    fn live(&self, session: &Session, now: Instant) -> bool {
        now.duration_since(session.last_seen) < self.idle && now.duration_since(session.created) < self.absolute
    }

    /// Opens a session; returns its id (for the cookie, shown nowhere else) and its CSRF
    /// token.
    ///
    /// # Errors
    /// [`Full`] when the table or the principal's share of it is full.
    pub fn open(&self, principal_id: &str, credential: Credential, now: Instant) -> Result<(String, Session), Full> {
        let Ok(mut table) = self.by_id_sha256.lock() else { return Err(Full::Table) };
        table.retain(|_, session| self.live(session, now));
        if table.len() >= self.max_sessions {
            return Err(Full::Table);
        }
        if table.values().filter(|s| s.principal_id == principal_id).count() >= MAX_PER_PRINCIPAL {
            return Err(Full::Principal);
        }
        let id = random_hex();
        let session = Session {
            principal_id: principal_id.to_string(),
            credential,
            csrf_token: random_hex(),
            created: now,
            last_seen: now,
        };
        table.insert(key_of(&id), session.clone());
        Ok((id, session))
    }

    /// The live session with this id (and marks it used), else `None` (an expired one is
    /// removed).
    pub fn touch(&self, id: &str, now: Instant) -> Option<Session> {
        if id.len() != 64 {
            return None;
        }
        let key = key_of(id);
        let mut table = self.by_id_sha256.lock().ok()?;
        let live = table.get(&key).is_some_and(|session| self.live(session, now));
        if !live {
            table.remove(&key);
            return None;
        }
        let session = table.get_mut(&key)?;
        session.last_seen = now;
        Some(session.clone())
    }

    /// Ends a session (sign-out, or its key no longer works). Returns whether it existed.
    pub fn end(&self, id: &str) -> bool {
        self.by_id_sha256.lock().is_ok_and(|mut table| table.remove(&key_of(id)).is_some())
    }

    /// Sessions open now (expired ones not counted).
    pub fn open_count(&self, now: Instant) -> usize {
        self.by_id_sha256.lock().map_or(0, |table| table.values().filter(|s| self.live(s, now)).count())
    }
}

/// Compares two tokens in time independent of where they differ.
#[must_use]
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Credential {
        Credential::ApiKey { token_sha256: "h".into() }
    }

    #[test]
    fn sessions_expire_when_idle_and_absolutely_and_end_on_sign_out() {
        let sessions = Sessions::new(Duration::from_secs(10), Duration::from_secs(30), 8);
        let t0 = Instant::now();
        let (id, session) = sessions.open("k1", key(), t0).unwrap();
        assert_eq!(id.len(), 64);
        assert_eq!(session.csrf_token.len(), 64);
        assert_ne!(id, session.csrf_token);
        assert!(sessions.touch(&id, t0 + Duration::from_secs(9)).is_some());
        assert!(sessions.touch(&id, t0 + Duration::from_secs(18)).is_some(), "use keeps it alive");
        assert!(sessions.touch(&id, t0 + Duration::from_secs(29)).is_none(), "idle 11 s");
        let (id, _) = sessions.open("k1", key(), t0).unwrap();
        for s in (5..30).step_by(5) {
            assert!(sessions.touch(&id, t0 + Duration::from_secs(s)).is_some());
        }
        assert!(sessions.touch(&id, t0 + Duration::from_secs(31)).is_none(), "absolute timeout");
        let (id, _) = sessions.open("k1", key(), t0).unwrap();
        assert!(sessions.end(&id));
        assert!(sessions.touch(&id, t0).is_none());
        assert!(sessions.touch("not-a-session", t0).is_none());
    }

    #[test]
    fn the_table_is_bounded_and_full_refuses_instead_of_evicting() {
        let sessions = Sessions::new(Duration::from_secs(10), Duration::from_secs(30), 20);
        let t0 = Instant::now();
        let mine: Vec<String> = (0..MAX_PER_PRINCIPAL).map(|_| sessions.open("k1", key(), t0).unwrap().0).collect();
        assert_eq!(sessions.open("k1", key(), t0).unwrap_err(), Full::Principal);
        for i in 0..(20 - MAX_PER_PRINCIPAL) {
            sessions.open(&format!("other{i}"), key(), t0).unwrap();
        }
        assert_eq!(sessions.open("k2", key(), t0).unwrap_err(), Full::Table);
        assert!(mine.iter().all(|id| sessions.touch(id, t0).is_some()), "nobody was evicted");
        // Expired sessions make room.
        assert!(sessions.open("k2", key(), t0 + Duration::from_secs(11)).is_ok());
    }

    #[test]
    fn tokens_compare_by_content() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
    }
}
