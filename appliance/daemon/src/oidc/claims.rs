//! A verified token's claims → the appliance principal: `iss` and `sub` make the stable
//! subject id recorded in every audit entry; role, tenant and namespaces come from the
//! configured claims. A token that maps to no role is refused, never given a default.

use dg_identity::{Principal, Role};
use serde_json::Value;

use super::settings::OidcSettings;

/// Longest `sub` accepted.
pub const MAX_SUBJECT_BYTES: usize = 255;
/// Most namespaces one token may name.
pub const MAX_NAMESPACES: usize = 256;

/// The principal id of a subject: `oidc:<iss>#<sub>` (an issuer URL has no fragment, so
/// the two parts never run together).
#[must_use]
pub fn subject_id(issuer: &str, subject: &str) -> String {
    format!("oidc:{issuer}#{subject}")
}

/// Whether `sub` is one the appliance records: non-empty, bounded, no control characters.
#[must_use]
pub fn subject_acceptable(subject: &str) -> bool {
    !subject.is_empty() && subject.len() <= MAX_SUBJECT_BYTES && !subject.chars().any(char::is_control)
}

/// The principal the claims map to.
///
/// # Errors
/// Why the token maps to no principal (for the log; the caller answers `403`).
pub fn principal(settings: &OidcSettings, claims: &Value, id: String) -> Result<Principal, String> {
    let role = role(settings, claims)?;
    let tenant = match lookup(claims, &settings.tenant_claim) {
        None | Some(Value::Null) => None,
        Some(value) => {
            Some(number(value).ok_or_else(|| format!("claim {} is not a tenant id", settings.tenant_claim))?)
        }
    };
    let namespaces = match lookup(claims, &settings.namespaces_claim) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= MAX_NAMESPACES => items
            .iter()
            .map(|item| {
                number(item).ok_or_else(|| format!("claim {} holds a non-numeric id", settings.namespaces_claim))
            })
            .collect::<Result<Vec<u64>, String>>()?,
        Some(value) => {
            vec![number(value).ok_or_else(|| format!("claim {} is not a namespace list", settings.namespaces_claim))?]
        }
    };
    match (role, tenant) {
        (Role::OrgAdmin, Some(_)) => Err("org_admin is organisation-wide: the token must not name a tenant".into()),
        (Role::OrgAdmin, None) => Ok(Principal { id, role, tenant: None, namespaces: Vec::new() }),
        (_, None) => Err(format!("role {} needs a tenant (claim {})", role.as_str(), settings.tenant_claim)),
        (Role::Service, Some(_)) if namespaces.is_empty() => {
            Err(format!("role service needs its namespaces (claim {})", settings.namespaces_claim))
        }
        (_, Some(tenant)) => Ok(Principal { id, role, tenant: Some(tenant), namespaces }),
    }
}

fn role(settings: &OidcSettings, claims: &Value) -> Result<Role, String> {
    let values: Vec<&str> = match lookup(claims, &settings.role_claim) {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut roles: Vec<Role> = values
        .iter()
        .filter_map(|value| value.strip_prefix(settings.role_prefix.as_str()))
        .filter_map(Role::parse)
        .collect();
    roles.sort();
    roles.dedup();
    match roles.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("claim {} names no appliance role", settings.role_claim)),
        _ => Err(format!("claim {} names several appliance roles; a subject has one", settings.role_claim)),
    }
}

/// A claim by dotted path (`realm_access.roles`).
fn lookup<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |value, key| value.get(key))
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> OidcSettings {
        toml::from_str("issuer = \"https://idp\"\naudiences = [\"dg\"]\nrole_claim = \"realm_access.roles\"\nrole_prefix = \"dg-\"")
            .unwrap()
    }

    #[test]
    fn claims_map_to_a_principal_or_to_a_reason() {
        let s = settings();
        let service =
            json!({"realm_access": {"roles": ["offline", "dg-service"]}, "dg_tenant": "1", "dg_namespaces": [2]});
        let p = principal(&s, &service, "x".into()).unwrap();
        assert_eq!((p.role, p.tenant, p.namespaces), (Role::Service, Some(1), vec![2]));
        for refused in [
            json!({"realm_access": {"roles": ["offline"]}, "dg_tenant": 1}),
            json!({"realm_access": {"roles": ["dg-auditor", "dg-service"]}, "dg_tenant": 1, "dg_namespaces": [2]}),
            json!({"realm_access": {"roles": ["dg-org_admin"]}, "dg_tenant": 1}),
            json!({"realm_access": {"roles": ["dg-auditor"]}}),
            json!({"realm_access": {"roles": ["dg-service"]}, "dg_tenant": 1}),
            json!({"realm_access": {"roles": ["service"]}, "dg_tenant": 1, "dg_namespaces": [2]}),
        ] {
            assert!(principal(&s, &refused, "x".into()).is_err(), "{refused}");
        }
    }
}
