//! Authentication: turns an `Authorization` header (or a mapped client certificate)
//! into a [`Principal`]. What the principal may do is decided by `dg_identity::policy`.

use dg_identity::keys;
pub use dg_identity::{Principal, Role};
use dg_storage::subjects::OidcSubjectRecord;
use dg_storage::{ApiKeyRecord, StateStore};

use crate::oidc::OidcVerifier;
use crate::wire::{code, WireError};

/// Authenticates an `Authorization` header value: an API key (recognised by its prefix),
/// or, when `[auth.oidc]` is configured, a bearer JWT from the site's provider.
///
/// # Errors
/// `-32001` for a missing, malformed, unknown, revoked or expired key or a refused token
/// (one answer for all, so a caller learns nothing about which keys exist); `-32003` for
/// a valid token whose claims map to no role.
pub fn authenticate(
    store: &dyn StateStore,
    oidc: Option<&OidcVerifier>,
    header: Option<&str>,
    now_ms: i64,
) -> Result<Principal, WireError> {
    let unauthenticated = || WireError::new(code::UNAUTHENTICATED, "unauthenticated");
    let token = header.and_then(keys::bearer_token).ok_or_else(unauthenticated)?;
    if keys::parse(token).is_err() {
        return match oidc {
            Some(verifier) if OidcVerifier::looks_like_jwt(token) || token.len() > crate::oidc::MAX_TOKEN_BYTES => {
                let now_s = u64::try_from(now_ms / 1000).unwrap_or(0);
                let verified =
                    verifier.verify(token, now_s, std::time::Instant::now()).map_err(|_| unauthenticated())?;
                // The mapping table wins over the token's claims.
                let principal = match store.find_oidc_subject(&verified.subject)? {
                    Some(mapped) => mapped_principal(&mapped),
                    None => verified.from_claims,
                };
                verifier
                    .settle(&verified.subject, principal)
                    .map_err(|_| WireError::new(code::UNAUTHORIZED, "the token's subject maps to no role"))
            }
            _ => Err(unauthenticated()),
        };
    }
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

/// The principal an administrator mapped a subject to.
///
/// # Errors
/// The mapping names an unknown role.
pub fn mapped_principal(record: &OidcSubjectRecord) -> Result<Principal, String> {
    let role =
        Role::parse(&record.role).ok_or_else(|| format!("the mapping names an unknown role {:?}", record.role))?;
    Ok(Principal { id: record.subject.clone(), role, tenant: record.tenant_id, namespaces: record.namespaces.clone() })
}
