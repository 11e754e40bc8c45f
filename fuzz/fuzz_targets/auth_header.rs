//! Fuzz target: the Authorization header and API key parsers must never panic, and
//! whatever they accept must have the key format's exact shape and checksum; the policy
//! decision must never panic and never allow what the role table forbids.
#![no_main]

use dg_identity::keys::{bearer_token, parse, KEY_PREFIX};
use dg_identity::policy::POLICY;
use dg_identity::{decide, Principal, Role, Target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(token) = bearer_token(&text) {
        assert!(!token.is_empty() && token.len() <= text.len());
        if let Ok(key_id) = parse(token) {
            assert!(token.starts_with(KEY_PREFIX));
            assert_eq!(key_id.len(), 16);
            assert_eq!(token.len(), KEY_PREFIX.len() + 16 + 1 + 64 + 1 + 8);
        }
    }
    let _ = parse(&text);
    if data.len() >= 6 {
        let role = Role::ALL[usize::from(data[0]) % Role::ALL.len()];
        let row = &POLICY[usize::from(data[1]) % POLICY.len()];
        let principal = Principal {
            id: "fuzz".into(),
            role,
            tenant: (data[2] % 3 != 0).then_some(u64::from(data[2] % 3)),
            namespaces: (0..data[3] % 3).map(u64::from).collect(),
        };
        let target = Target {
            tenant: (data[4] % 3 != 0).then_some(u64::from(data[4] % 3)),
            namespace: (data[5] % 3 != 0).then_some(u64::from(data[5] % 3)),
        };
        let decision = decide(&principal, row.operation, target);
        if !row.roles.contains(&role) {
            assert!(!decision.allowed);
        }
        if decision.allowed && principal.role != Role::OrgAdmin && principal.tenant.is_some() && row.scope != dg_identity::policy::ScopeKind::Public {
            assert_eq!(target.tenant, principal.tenant, "a tenant-bound principal left its tenant");
        }
    }
});
