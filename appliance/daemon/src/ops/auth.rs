//! Authentication: turns an `Authorization` header (or a mapped client certificate)
//! into a [`Principal`]. What the principal may do is decided by `dg_identity::policy`.

use dg_identity::keys;
pub use dg_identity::{Principal, Role};
use dg_storage::{ApiKeyRecord, Store};

use crate::wire::{code, WireError};

/// Authenticates an `Authorization` header value.
///
/// # Errors
/// `-32001` for a missing, malformed, unknown, revoked or expired key (one answer for
/// all, so a caller learns nothing about which keys exist).
pub fn authenticate(store: &Store, header: Option<&str>, now_ms: i64) -> Result<Principal, WireError> {
    let unauthenticated = || WireError::new(code::UNAUTHENTICATED, "unauthenticated");
    let token = header.and_then(keys::bearer_token).ok_or_else(unauthenticated)?;
    keys::parse(token).map_err(|_| unauthenticated())?;
    let record: ApiKeyRecord = store.find_api_key(&keys::token_hash(token))?.ok_or_else(unauthenticated)?;
    if !key_usable(&record, now_ms) {
        return Err(unauthenticated());
    }
    let role = Role::parse(&record.role).ok_or_else(unauthenticated)?;
    Ok(Principal { id: record.key_id, role, tenant: record.tenant_id, namespaces: record.namespaces })
}

/// Whether a key is neither revoked nor expired at `now_ms`.
#[must_use]
pub fn key_usable(record: &ApiKeyRecord, now_ms: i64) -> bool {
    !(record.revoked_at_ms.is_some_and(|at| at <= now_ms) || record.expires_at_ms.is_some_and(|at| at <= now_ms))
}
