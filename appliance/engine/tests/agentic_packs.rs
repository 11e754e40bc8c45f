#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance 2: each agentic scenario pack reproduces its expected runpack root hash,
//! with the provider configuration the reference harness used (json rooted at the
//! pack's fixtures as `agentic_<id>`, env overrides from env.json, logical time, and an
//! http stub on a loopback port derived from the scenario id).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::num::NonZeroU64;
use std::path::Path;
use std::thread;

use dg_engine::control_plane::{DisclosurePolicy, PolicyDecision};
use dg_engine::runpack::{build_runpack, ExportOptions, RunpackSecurity};
use dg_engine::spec::{PacketPayload, ScenarioSpec};
use dg_engine::state::{DispatchTarget, PacketEnvelope, RunConfig, StatusRequest, TriggerEvent};
use dg_engine::time::Timestamp;
use dg_engine::{hash_bytes, ControlPlane, EngineConfig};
use dg_providers::env::EnvProviderConfig;
use dg_providers::http::HttpProviderConfig;
use dg_providers::json::JsonProviderConfig;
use dg_providers::time::TimeProviderConfig;
use dg_providers::BuiltinProviders;
use serde_json::Value;

/// Port the reference harness binds its stub to: 20000 + sha256(id)[..8] mod 20000.
fn stub_port(scenario_id: &str) -> u16 {
    let digest = hash_bytes(scenario_id.as_bytes());
    let seed = u32::from_str_radix(&digest.value[..8], 16).unwrap();
    u16::try_from(20000 + seed % 20000).unwrap()
}

/// A minimal HTTP/1.1 stub serving the two documents the packs fetch; it answers a
/// bounded number of requests and stops.
fn spawn_stub(port: u16, max_requests: usize) -> thread::JoinHandle<()> {
    // The port is fixed (the expected hashes contain the URL), so it cannot move when
    // another process holds it for a moment: retry for up to 5 s.
    let mut attempts = 0;
    let listener = loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => break listener,
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse && attempts < 50 => {
                attempts += 1;
                thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(err) => panic!("bind the reference stub port {port}: {err}"),
        }
    };
    thread::spawn(move || {
        for stream in listener.incoming().take(max_requests) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
            }
            let body = if request_line.contains("/artifact.json") {
                r#"{"artifact_id":"build-123","sha256":"sha256:deadbeef"}"#
            } else {
                r#"{"value":"ok"}"#
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).unwrap();
        }
    })
}

fn replace_placeholder(value: &Value, base: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace("{{HTTP_BASE_URL}}", base)),
        Value::Array(items) => Value::Array(items.iter().map(|v| replace_placeholder(v, base)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), replace_placeholder(v, base))).collect())
        }
        other => other.clone(),
    }
}

/// The reference harness's `deny_restricted` static policy: deny packets tagged `restricted`.
struct DenyRestricted;

impl DisclosurePolicy for DenyRestricted {
    fn authorize(
        &self,
        _: &DispatchTarget,
        envelope: &PacketEnvelope,
        _: &PacketPayload,
    ) -> Result<PolicyDecision, String> {
        Ok(if envelope.visibility.policy_tags.iter().any(|t| t == "restricted") {
            PolicyDecision::Deny
        } else {
            PolicyDecision::Permit
        })
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn run_pack(pack: &Path) -> (String, String) {
    let id = pack.file_name().unwrap().to_string_lossy().to_string();
    let fixtures = pack.join("fixtures");
    let env_overrides: BTreeMap<String, String> =
        serde_json::from_value(read_json(&fixtures.join("env.json"))).unwrap();
    let mut env = EnvProviderConfig::default();
    if !env_overrides.is_empty() {
        env.allowlist = Some(env_overrides.keys().cloned().collect());
        env.overrides = Some(env_overrides);
    }
    let raw_spec = read_json(&pack.join("spec.json"));
    let uses_http = raw_spec.to_string().contains("{{HTTP_BASE_URL}}");
    let port = stub_port(&id);
    let base = format!("http://127.0.0.1:{port}");
    let mut providers = BuiltinProviders::default()
        .with_time(TimeProviderConfig { allow_logical: true })
        .with_env(env)
        .with_json(JsonProviderConfig {
            root: fixtures,
            root_id: format!("agentic_{id}"),
            max_bytes: 1 << 20,
            allow_yaml: false,
        })
        .unwrap();
    let stub = uses_http.then(|| {
        providers = std::mem::take(&mut providers)
            .with_http(HttpProviderConfig {
                allow_http: true,
                timeout_ms: 2000,
                max_response_bytes: 1 << 20,
                allowed_hosts: Some(vec!["127.0.0.1".into()]),
                user_agent: "dg-agentic".into(),
                ..HttpProviderConfig::default()
            })
            .unwrap();
        spawn_stub(port, raw_spec.to_string().matches("{{HTTP_BASE_URL}}").count())
    });
    let spec: ScenarioSpec = serde_json::from_value(replace_placeholder(&raw_spec, &base)).unwrap();
    let run_config: RunConfig = serde_json::from_value(read_json(&pack.join("run_config.json"))).unwrap();
    let trigger: TriggerEvent = serde_json::from_value(read_json(&pack.join("trigger.json"))).unwrap();
    let config = EngineConfig::default();
    let policy = DenyRestricted;
    let mut engine = ControlPlane::new(&spec, &config, &providers).unwrap().with_availability(&providers);
    if id == "agentic-policy-collision" {
        engine = engine.with_policy(&policy);
    }
    let mut state = engine.start_run(run_config.clone(), Timestamp::Logical(1), false).unwrap();
    engine.trigger(&mut state, &trigger).unwrap();
    let status = engine
        .status(
            &mut state,
            &StatusRequest {
                run_id: run_config.run_id.clone(),
                tenant_id: run_config.tenant_id,
                namespace_id: run_config.namespace_id,
                requested_at: Timestamp::Logical(3),
                correlation_id: None,
            },
        )
        .unwrap();
    if let Some(stub) = stub {
        stub.join().unwrap();
    }
    let options = ExportOptions {
        generated_at: Timestamp::Logical(10),
        include_verification: false,
        anchor_policy: None,
        security: Some(RunpackSecurity { dev_permissive: false, namespace_authority: "dg_registry".into() }),
    };
    let runpack = build_runpack(&spec, &state, &options).unwrap();
    assert_eq!(state.tenant_id, NonZeroU64::MIN);
    (runpack.manifest.integrity.root_hash.value, status.status.as_str().to_string())
}

#[test]
fn agentic_packs_reproduce_expected_root_hashes() {
    let Some(shared) = support::shared_dir() else { return };
    let base = shared.join("fixtures/agentic");
    let mut packs: Vec<_> = std::fs::read_dir(&base).unwrap().map(|e| e.unwrap().path()).collect();
    packs.sort();
    assert_eq!(packs.len(), 6);
    let mut failures = Vec::new();
    for pack in packs {
        let expected = std::fs::read_to_string(pack.join("expected/runpack_root_hash.txt")).unwrap().trim().to_string();
        let (root, status) = run_pack(&pack);
        if root != expected {
            failures.push(format!("{}: expected {expected}, got {root} (status {status})", pack.display()));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
