//! Helpers shared by the storage integration tests.

use dg_storage::audit::AuditEvent;

/// The audit entry of a service key's `scenario_next` call number `n`, for `tenant`.
pub fn tool_call_event(n: u64, tenant: u64) -> AuditEvent {
    AuditEvent {
        principal: format!("key-{n}"),
        role: Some("service".into()),
        tenant_id: Some(tenant),
        namespace_id: Some(1),
        action: "tool_call".into(),
        target: "scenario_next".into(),
        outcome: "ok".into(),
        reason: String::new(),
        request_id: format!("req-{n}"),
        request_sha256: Some("ab".repeat(32)),
        response_sha256: None,
    }
}
