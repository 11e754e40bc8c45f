#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance (issue 7, points 1–3): the generated authorization matrix over the real
//! daemon, the API key lifecycle with a secret-leak sweep, and mTLS client certificates.

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{binary, Daemon, DaemonOptions};

const OWN_TENANT: u64 = 1;
const OTHER_TENANT: u64 = 2;
const OWN_NS: u64 = 1;
const OTHER_NS: u64 = 2;

/// One row of `dg-appliance policy --json`.
pub(crate) struct Row {
    name: String,
    scope: String,
    roles: Vec<String>,
}

pub(crate) fn policy_table() -> Vec<Row> {
    let out = Command::new(binary()).args(["policy", "--json"]).output().unwrap();
    assert!(out.status.success());
    let table: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    table
        .into_iter()
        .map(|row| Row {
            name: row["name"].as_str().unwrap().to_string(),
            scope: row["scope"].as_str().unwrap().to_string(),
            roles: row["roles"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect(),
        })
        .collect()
}

/// A caller of the matrix: its role, token and bindings.
pub(crate) struct Caller {
    pub(crate) role: String,
    pub(crate) token: String,
    pub(crate) tenant: Option<u64>,
    pub(crate) namespaces: Vec<u64>,
}

/// What the policy table says for a caller and a target.
fn expected(row: &Row, caller: &Caller, tenant: u64, namespace: u64) -> bool {
    if !row.roles.contains(&caller.role) {
        return false;
    }
    match row.scope.as_str() {
        "public" => true,
        _ if caller.role == "org_admin" => true,
        "org" => caller.tenant.is_none(),
        "tenant" => caller.tenant == Some(tenant),
        "namespace" => {
            caller.tenant == Some(tenant) && (caller.namespaces.is_empty() || caller.namespaces.contains(&namespace))
        }
        other => panic!("unknown scope {other}"),
    }
}

fn spec(tenant: u64, namespace: u64) -> Value {
    let mut spec = support::sample_spec(&format!("m-{tenant}-{namespace}"));
    spec["default_tenant_id"] = json!(tenant);
    spec["namespace_id"] = json!(namespace);
    spec
}

/// Arguments that reach each operation's authorization for a target.
fn arguments(name: &str, t: u64, ns: u64, victims: &HashMap<u64, String>) -> Value {
    let time = json!({"kind": "logical", "value": 5});
    match name {
        "scenario_define" => json!({"spec": spec(t, ns)}),
        "scenario_start" => {
            json!({"scenario_id": "none", "run_config": {"tenant_id": t, "namespace_id": ns, "run_id": "r",
            "scenario_id": "none", "dispatch_targets": [], "policy_tags": []}, "started_at": time, "issue_entry_packets": false})
        }
        "scenario_status" => {
            json!({"scenario_id": "none", "request": {"run_id": "r", "tenant_id": t, "namespace_id": ns,
            "requested_at": time, "correlation_id": null}})
        }
        "scenario_next" => json!({"scenario_id": "none", "request": {"run_id": "r", "tenant_id": t, "namespace_id": ns,
            "trigger_id": "x", "agent_id": "a", "time": time, "correlation_id": null}}),
        "scenario_submit" => {
            json!({"scenario_id": "none", "request": {"run_id": "r", "tenant_id": t, "namespace_id": ns,
            "submission_id": "s", "payload": {"kind": "json", "value": {}}, "content_type": "application/json",
            "submitted_at": time, "correlation_id": null}})
        }
        "scenario_trigger" => {
            json!({"scenario_id": "none", "trigger": {"trigger_id": "t", "tenant_id": t, "namespace_id": ns,
            "run_id": "r", "kind": "tick", "time": time, "source_id": "c", "payload": null, "correlation_id": null}})
        }
        "evidence_query" => json!({"query": {"provider_id": "time", "check_id": "now"}, "context": {"tenant_id": t,
            "namespace_id": ns, "run_id": "r", "scenario_id": "none", "stage_id": "s", "trigger_id": "q", "trigger_time": time,
            "correlation_id": null}}),
        "runpack_export" => json!({"scenario_id": "none", "tenant_id": t, "namespace_id": ns, "run_id": "r",
            "generated_at": time, "include_verification": false}),
        "runpack_verify" => json!({"runpack_dir": format!("{t}/{ns}/r"), "manifest_path": "manifest.json"}),
        "providers_list" => json!({}),
        "provider_contract_get" => json!({"provider_id": "time"}),
        "provider_check_schema_get" => json!({"provider_id": "time", "check_id": "after"}),
        "schemas_register" => json!({"record": {"tenant_id": t, "namespace_id": ns, "schema_id": "m", "version": "1",
            "schema": {"type": "object"}, "description": null, "created_at": {"kind": "unix_millis", "value": 1}}}),
        "schemas_list" => json!({"tenant_id": t, "namespace_id": ns, "limit": 5}),
        "schemas_get" => json!({"tenant_id": t, "namespace_id": ns, "schema_id": "m", "version": "1"}),
        "scenarios_list" => json!({"tenant_id": t, "namespace_id": ns}),
        "precheck" => json!({"tenant_id": t, "namespace_id": ns, "scenario_id": "none",
            "data_shape": {"schema_id": "m", "version": "1"}, "payload": {}}),
        "decision_gate_docs_search" => json!({"query": "gates", "max_sections": 1}),
        "runpack_download" => Value::Null,
        // Admin operations, chosen so that allowed calls leave the fixture usable.
        "tenant_create" => json!({"tenant_id": 100 + t, "name": format!("matrix-{t}")}),
        "tenant_list" => json!({}),
        "tenant_disable" => json!({"tenant_id": t, "enable": true}),
        "tenant_delete" => json!({"tenant_id": t}),
        "namespace_create" => json!({"tenant_id": t, "namespace_id": 50 + ns, "name": "matrix"}),
        "namespace_list" => json!({"tenant_id": t}),
        "namespace_disable" => json!({"tenant_id": t, "namespace_id": ns, "enable": true}),
        "namespace_delete" => json!({"tenant_id": t, "namespace_id": 99}),
        "key_issue" => json!({"role": "service", "tenant_id": t, "namespaces": [ns], "label": "matrix"}),
        "key_list" => json!({"tenant_id": t}),
        "key_revoke" | "key_rotate" => {
            let mut args = json!({"key_id": victims[&t]});
            if name == "key_rotate" {
                args["overlap_ms"] = json!(1);
            }
            args
        }
        "oidc_subject_set" => json!({"subject": format!("oidc:https://idp.matrix#s-{t}-{ns}"), "role": "service",
            "tenant_id": t, "namespaces": [ns], "label": "matrix"}),
        "oidc_subject_list" => json!({"tenant_id": t}),
        "oidc_subject_delete" => json!({"subject": format!("oidc:https://idp.matrix#gone-{t}"), "tenant_id": t}),
        "audit_verify" => json!({}),
        "audit_export" => json!({"since_ms": 0}),
        "usage_report" => json!({"tenant_id": t}),
        "run_list" => json!({"tenant_id": t, "namespace_id": ns}),
        "run_get" => json!({"tenant_id": t, "namespace_id": ns, "run_id": "r"}),
        "scenario_get" => json!({"tenant_id": t, "namespace_id": ns, "scenario_id": "none"}),
        "audit_list" => json!({"limit": 5}),
        other => panic!("no arguments for {other}; add them when adding an operation"),
    }
}

/// Sends one matrix cell; returns whether it was authorized (not -32003 / 403).
fn send(daemon: &Daemon, name: &str, args: Value, token: &str, correlation: &str, t: u64, ns: u64) -> bool {
    let auth = format!("Bearer {token}");
    if name == "runpack_download" {
        let response = daemon
            .agent
            .get(&format!("{}/runpacks/{t}/{ns}/r.tar.zst", daemon.base))
            .set("authorization", &auth)
            .set("x-correlation-id", correlation)
            .call();
        let status = match response {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r.status(),
            Err(err) => panic!("{err}"),
        };
        assert!(status == 403 || status == 404, "download status {status}");
        return status != 403;
    }
    let method = if support_is_tool(name) { "tools/call".to_string() } else { format!("admin/{name}") };
    let params = if support_is_tool(name) { json!({"name": name, "arguments": args}) } else { args };
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (status, _, text, _) = daemon.post_raw(
        "/rpc",
        body.to_string().as_bytes(),
        &[("authorization", &auth), ("x-correlation-id", correlation)],
    );
    let reply: Value = serde_json::from_str(&text).unwrap();
    let code = reply["error"]["code"].as_i64();
    assert_ne!(code, Some(-32001), "{name}: authentication failed: {text}");
    assert_ne!(code, Some(-32602), "{name}: matrix arguments must parse: {text}");
    assert_ne!(code, Some(-32601), "{name}: unknown method: {text}");
    if code == Some(-32003) {
        assert_eq!(status, 403);
        assert_eq!(reply["error"]["message"], "unauthorized", "denials reveal nothing");
        false
    } else {
        true
    }
}

/// Whether `name` is a tool (`tools/call`) or an admin operation (`admin/<name>`): the
/// operation table says.
fn support_is_tool(name: &str) -> bool {
    dg_identity::Operation::tool(name).is_some()
}

fn issue(daemon: &Daemon, args: Value) -> (String, String) {
    let issued = daemon.admin("key_issue", args).unwrap();
    (issued["key"]["key_id"].as_str().unwrap().to_string(), issued["token"].as_str().unwrap().to_string())
}

/// Audit entries (parsed) of an export taken through the admin API.
pub(crate) fn audit_entries(daemon: &Daemon) -> Vec<Value> {
    let export = daemon.admin("audit_export", json!({"since_ms": 0})).unwrap();
    export["jsonl"]
        .as_str()
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["type"] == "entry")
        .map(|line| line["entry"].clone())
        .collect()
}

#[test]
fn every_operation_role_and_scope_is_decided_as_the_policy_table_says_and_audited_once() {
    let table = policy_table();
    assert!(table.len() >= 34, "18 tools, the download and the admin operations");
    // The table itself, spot-checked by hand: these are product decisions.
    let row = |name: &str| table.iter().find(|r| r.name == name).unwrap();
    assert!(!row("scenario_start").roles.contains(&"auditor".to_string()));
    assert!(row("scenario_status").roles.contains(&"auditor".to_string()));
    assert!(!row("key_issue").roles.contains(&"service".to_string()));
    assert_eq!(row("tenant_create").roles, vec!["org_admin"]);
    assert!(table.iter().all(|r| r.roles.contains(&"org_admin".to_string())));

    let daemon = Daemon::start();
    daemon.register(OWN_TENANT, OTHER_NS);
    daemon.register(OTHER_TENANT, OWN_NS);
    daemon.register(OTHER_TENANT, OTHER_NS);
    let mut callers =
        vec![Caller { role: "org_admin".into(), token: daemon.key.clone(), tenant: None, namespaces: vec![] }];
    for (role, namespaces) in [("tenant_admin", vec![]), ("auditor", vec![]), ("service", vec![OWN_NS])] {
        let (_, token) = issue(&daemon, json!({"role": role, "tenant_id": OWN_TENANT, "namespaces": namespaces}));
        callers.push(Caller { role: role.into(), token, tenant: Some(OWN_TENANT), namespaces });
    }
    assert_matrix(&daemon, &table, &callers);
}

/// Every operation of the policy table, for each caller, on its own and another tenant
/// and namespace: decided as the table says, and audited with exactly one decision each.
/// The daemon has tenants 1 and 2 with namespaces 1 and 2 registered.
pub(crate) fn assert_matrix(daemon: &Daemon, table: &[Row], callers: &[Caller]) {
    let victims: HashMap<u64, String> = [OWN_TENANT, OTHER_TENANT]
        .into_iter()
        .map(|t| (t, issue(daemon, json!({"role": "service", "tenant_id": t})).0))
        .collect();

    let mut cells = BTreeMap::new();
    let mut mismatches = Vec::new();
    for row in table {
        for caller in callers {
            for tenant in [OWN_TENANT, OTHER_TENANT] {
                for namespace in [OWN_NS, OTHER_NS] {
                    let correlation = format!("m{}", cells.len());
                    let args = arguments(&row.name, tenant, namespace, &victims);
                    let allowed = send(daemon, &row.name, args, &caller.token, &correlation, tenant, namespace);
                    let want = expected(row, caller, tenant, namespace);
                    if allowed != want {
                        mismatches.push(format!(
                            "{} as {} on {tenant}/{namespace}: allowed={allowed}",
                            row.name, caller.role
                        ));
                    }
                    cells.insert(correlation, want);
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "decisions differ from the policy table:\n{}", mismatches.join("\n"));
    assert_eq!(cells.len(), table.len() * callers.len() * 4);
    assert!(cells.values().any(|a| *a) && cells.values().any(|a| !*a));

    // Exactly one authorization event per request, with the decided outcome.
    let mut decisions: HashMap<String, Vec<String>> = HashMap::new();
    for entry in audit_entries(daemon) {
        if entry["action"] == "authz" {
            decisions
                .entry(entry["request_id"].as_str().unwrap().to_string())
                .or_default()
                .push(entry["outcome"].as_str().unwrap().to_string());
        }
    }
    for (correlation, allowed) in &cells {
        let found = decisions.get(correlation).cloned().unwrap_or_default();
        assert_eq!(found.len(), 1, "{correlation}: {found:?}");
        assert_eq!(found[0], if *allowed { "allow" } else { "deny" }, "{correlation}");
    }
}

fn call_with(daemon: &Daemon, token: &str, name: &str, args: Value) -> (u16, Value) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}});
    let (status, _, text, _) =
        daemon.post_raw("/rpc", body.to_string().as_bytes(), &[("authorization", &format!("Bearer {token}"))]);
    (status, serde_json::from_str(&text).unwrap())
}

/// Sleeps until `deadline` (at once if it has passed).
fn sleep_until(deadline: Instant) {
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
}

fn works(daemon: &Daemon, token: &str) -> bool {
    let (status, reply) = call_with(daemon, token, "scenarios_list", json!({"tenant_id": 2, "namespace_id": 3}));
    match status {
        200 => true,
        401 => {
            assert_eq!(reply["error"]["code"], -32001);
            false
        }
        other => panic!("unexpected status {other}: {reply}"),
    }
}

#[test]
fn key_lifecycle_issue_rotate_revoke_expire_and_no_secret_leaks() {
    let mut daemon = Daemon::start();
    let data = daemon.data_dir();
    // Issue through the CLI (the daemon keeps serving meanwhile).
    let out = Command::new(binary())
        .args([
            "keys",
            "issue",
            "--role",
            "service",
            "--tenant",
            "2",
            "--namespace",
            "3",
            "--label",
            "ci",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let issued: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = issued["token"].as_str().unwrap().to_string();
    let first_id = issued["key"]["key_id"].as_str().unwrap().to_string();
    assert!(first.starts_with("dgk_") && first.contains(&first_id));
    assert!(works(&daemon, &first));

    // Rotate with a short overlap: both work, then only the new one. (The overlap is
    // long enough that a slow CI machine still checks inside it. The daemon starts it
    // while answering, so it ends at most 3 s after the answer: the wait counts from there.)
    let rotated = daemon.admin("key_rotate", json!({"key_id": first_id, "overlap_ms": 3000})).unwrap();
    let answered = Instant::now();
    let second = rotated["token"].as_str().unwrap().to_string();
    let second_id = rotated["key"]["key_id"].as_str().unwrap().to_string();
    assert!(works(&daemon, &first) && works(&daemon, &second));
    sleep_until(answered + Duration::from_millis(3200));
    assert!(!works(&daemon, &first), "the old key fails after the overlap");
    assert!(works(&daemon, &second));

    // Revoke: fails at once.
    let out = Command::new(binary()).args(["keys", "revoke", &second_id, "--data-dir"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!works(&daemon, &second), "a revoked key fails at once");

    // Expire.
    let (_, third) = issue(&daemon, json!({"role": "service", "tenant_id": 2, "expires_in_ms": 3000}));
    let answered = Instant::now();
    assert!(works(&daemon, &third));
    sleep_until(answered + Duration::from_millis(3200));
    assert!(!works(&daemon, &third), "an expired key fails");

    // A listed key never carries a secret.
    let listed = Command::new(binary()).args(["keys", "list", "--json", "--data-dir"]).arg(&data).output().unwrap();
    assert!(listed.status.success());

    // Sweep: no secret in logs, metrics, audit or the database files.
    let (_, metrics) = daemon.get_authed("/metrics");
    let audit = daemon.admin("audit_export", json!({"since_ms": 0})).unwrap()["jsonl"].as_str().unwrap().to_string();
    daemon.terminate(Duration::from_secs(10)).expect("daemon stops");
    let logs: Vec<String> = daemon.stderr.try_iter().collect();
    assert!(!logs.is_empty());
    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        ("logs".into(), logs.join("\n").into_bytes()),
        ("metrics".into(), metrics.into_bytes()),
        ("audit".into(), audit.into_bytes()),
        ("key list".into(), listed.stdout),
    ];
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("state.db") || name.contains("audit") {
            haystacks.push((name, std::fs::read(&path).unwrap()));
        }
    }
    assert!(haystacks.iter().any(|(name, _)| name == "state.db"), "the database file was swept");
    for token in [&first, &second, &third] {
        let secret = token.split('_').nth(2).unwrap();
        assert_eq!(secret.len(), 64);
        for (name, bytes) in &haystacks {
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.contains(secret), "a key secret leaked into {name}");
        }
    }
}

/// A CA, a server certificate and client certificates made for the test with rcgen.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Self { dir, ca, ca_key }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `<name>.pem` and `<name>.key` for a leaf certificate.
    fn leaf(&self, name: &str, common_name: &str, sans: Vec<String>, expired: bool) {
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

fn client_agent(server_ca: &std::path::Path, identity: Option<(&std::path::Path, &std::path::Path)>) -> ureq::Agent {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::fs::read(server_ca).unwrap().as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs =
                rustls_pemfile::certs(&mut std::fs::read(cert).unwrap().as_slice()).map(Result::unwrap).collect();
            let key = rustls_pemfile::private_key(&mut std::fs::read(key).unwrap().as_slice()).unwrap().unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    ureq::AgentBuilder::new().tls_config(Arc::new(config)).timeout(Duration::from_secs(10)).build()
}

/// Calls scenarios_list with no Authorization header; `Err` for a transport failure
/// (refused handshake), else the status and body.
fn certificate_call(agent: &ureq::Agent, base: &str, namespace: u64) -> Result<(u16, Value), String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "scenarios_list", "arguments": {"tenant_id": 1, "namespace_id": namespace}}});
    match agent.post(&format!("{base}/rpc")).set("content-type", "application/json").send_string(&body.to_string()) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            Ok((status, serde_json::from_str(&r.into_string().unwrap()).unwrap()))
        }
        Err(err) => Err(err.to_string()),
    }
}

#[test]
fn client_certificates_are_verified_and_mapped_to_principals() {
    let pki = Pki::new();
    pki.leaf("server", "dg-appliance", vec!["127.0.0.1".into(), "localhost".into()], false);
    pki.leaf("agent", "agent-1", vec![], false);
    pki.leaf("stranger", "stranger", vec![], false);
    pki.leaf("expired", "agent-1", vec![], true);
    let rogue = Pki::new();
    rogue.leaf("agent", "agent-1", vec![], false);

    let config = format!(
        "{}\n[tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\n[tls.client_auth]\nca_path = \"{}\"\nrequired = true\n\n\
         [[tls.client_auth.principals]]\ncommon_name = \"agent-1\"\nrole = \"service\"\ntenant_id = 1\nnamespaces = [1]\n",
        String::from_utf8(Command::new(binary()).args(["config", "default"]).output().unwrap().stdout).unwrap(),
        pki.path("server.pem").display(),
        pki.path("server.key").display(),
        pki.path("ca.pem").display(),
    );
    let check = pki.path("config.toml");
    std::fs::write(&check, &config).unwrap();
    let checked = Command::new(binary()).arg("config").arg("check").arg(&check).output().unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stdout));
    let daemon = Daemon::start_with(DaemonOptions {
        config: Some(config),
        bare: true,
        server_ca: Some(pki.path("ca.pem")),
        ..Default::default()
    });
    let ca = pki.path("ca.pem");

    // A valid certificate is accepted and mapped: its principal reaches its namespace only.
    let agent = client_agent(&ca, Some((&pki.path("agent.pem"), &pki.path("agent.key"))));
    let (status, reply) = certificate_call(&agent, &daemon.base, 1).unwrap();
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = certificate_call(&agent, &daemon.base, 2).unwrap();
    assert_eq!((status, reply["error"]["code"].clone()), (403, json!(-32003)));

    // A verified certificate whose subject is not mapped gets no principal.
    let stranger = client_agent(&ca, Some((&pki.path("stranger.pem"), &pki.path("stranger.key"))));
    let (status, reply) = certificate_call(&stranger, &daemon.base, 1).unwrap();
    assert_eq!((status, reply["error"]["code"].clone()), (401, json!(-32001)));

    // Unknown CA, expired certificate, no certificate: refused at the handshake.
    let refused = [
        ("unknown CA", client_agent(&ca, Some((&rogue.path("agent.pem"), &rogue.path("agent.key"))))),
        ("expired", client_agent(&ca, Some((&pki.path("expired.pem"), &pki.path("expired.key"))))),
        ("no certificate", client_agent(&ca, None)),
    ];
    for (case, agent) in refused {
        let outcome = certificate_call(&agent, &daemon.base, 1);
        assert!(outcome.is_err(), "{case}: accepted: {outcome:?}");
    }

    // The decisions are audited under the certificate's principal.
    let out = Command::new(binary()).args(["audit", "export", "--data-dir"]).arg(daemon.data_dir()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\"principal\":\"cert:agent-1\""), "{text}");
}
