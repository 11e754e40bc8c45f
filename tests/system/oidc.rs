#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! OIDC sign-in against a real OpenID provider (panva/oidc-provider on loopback, started
//! and stopped by PID here; `tests/oidc-provider/provider.mjs`): tokens it issues (RS256,
//! ES256, EdDSA) over `/rpc`, `/mcp` and the runpack download, audited with `iss`/`sub`;
//! key rotation and a bounded refresh under a flood of unknown `kid`s; the attack matrix,
//! one named test each, answered 401 with nothing executed; the authorization matrix for
//! mapped tokens; the provider going away and coming back; an air-gapped JWKS file.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::support::{self, Daemon, DaemonOptions};

const AUDIENCE: &str = "urn:dg:appliance";
const SECRET: &str = "client-secret-for-loopback-tests-only-0123456789";

fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc-provider")
}

fn node(args: &[&str]) -> Command {
    let dir = provider_dir();
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "the test provider is not installed: run `npm ci --prefix tests/oidc-provider` (scripts/install-tools.sh does)"
    );
    let mut command = Command::new("node");
    command.arg(dir.join("provider.mjs")).args(args);
    command
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A private JWKS with one key per algorithm, kids `<prefix>-<alg>`.
fn make_keys(dir: &Path, prefix: &str, algs: &[&str]) -> PathBuf {
    let out = dir.join(format!("{prefix}.keys.json"));
    let mut args = vec!["keys", out.to_str().unwrap(), prefix];
    args.extend_from_slice(algs);
    assert!(node(&args).status().unwrap().success());
    out
}

/// The public half of a key file (and, when asked, one key's PEM).
fn public_keys(keys: &Path, out: &Path, pem_of: Option<&str>) -> String {
    let mut args = vec!["public", keys.to_str().unwrap(), out.to_str().unwrap()];
    args.extend(pem_of);
    let output = node(&args).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// A compact JWS with exactly this header, signed by the key the header's `signing_kid`
/// (else `kid`) names, or with HMAC over `secret`.
fn forge(dir: &Path, keys: &Path, header: &Value, payload: &Value, secret: Option<&Path>) -> String {
    let n: u64 = rand::random();
    let (h, p) = (dir.join(format!("h-{n:x}.json")), dir.join(format!("p-{n:x}.json")));
    std::fs::write(&h, header.to_string()).unwrap();
    std::fs::write(&p, payload.to_string()).unwrap();
    let mut args = vec!["sign", keys.to_str().unwrap(), h.to_str().unwrap(), p.to_str().unwrap()];
    args.extend(secret.map(|s| s.to_str().unwrap()));
    let output = node(&args).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// A self-signed certificate for 127.0.0.1 (the provider's, and the CA bundle the daemon trusts).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.join("provider-cert.pem"), dir.join("provider-key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// The provider's clients: one service client per algorithm (tenant 1, namespace 2), an
/// auditor, and one whose tokens carry no role.
fn clients() -> Value {
    let service = json!({"dg_role": "service", "dg_tenant": 1, "dg_namespaces": [2]});
    json!([
        {"client_id": "svc-rs256", "client_secret": SECRET, "alg": "RS256", "claims": service},
        {"client_id": "svc-es256", "client_secret": SECRET, "alg": "ES256", "claims": service},
        {"client_id": "svc-eddsa", "client_secret": SECRET, "alg": "EdDSA", "claims": service},
        {"client_id": "auditor", "client_secret": SECRET, "alg": "ES256", "claims": {"dg_role": "auditor", "dg_tenant": 1}},
        {"client_id": "nobody", "client_secret": SECRET, "alg": "ES256", "claims": {"dg_tenant": 1}},
    ])
}

/// The real provider, on a loopback port, stopped by its PID when dropped.
struct Provider {
    child: Option<Child>,
    /// Extra members of the provider's configuration (browser clients, accounts).
    extra: Value,
    port: u16,
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Provider {
    fn start(dir: &Path, keys: &Path) -> Self {
        Self::start_with(dir, keys, json!({}))
    }

    fn start_with(dir: &Path, keys: &Path, extra: Value) -> Self {
        let (cert, key) = certificate(dir);
        let mut provider = Self { child: None, extra, port: support::free_port(), dir: dir.to_path_buf(), cert, key };
        provider.restart(keys);
        provider
    }

    fn issuer(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// (Re)starts on the same port with these signing keys (a rotation, or a return).
    fn restart(&mut self, keys: &Path) {
        self.stop();
        let config = self.dir.join("provider.json");
        let mut body = json!({"port": self.port, "cert": self.cert, "key": self.key, "keys_file": keys,
            "audience": AUDIENCE, "clients": clients()});
        for (name, value) in self.extra.as_object().cloned().unwrap_or_default() {
            body[name] = value;
        }
        std::fs::write(&config, body.to_string()).unwrap();
        let mut child = node(&["serve", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("the provider did not start");
        assert!(line.starts_with("ready "), "{line}");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            support::stop_by_pid(&mut child, Duration::from_secs(10));
        }
    }

    fn agent(&self) -> ureq::Agent {
        support::tls_agent(&self.cert)
    }

    /// An access token for a client (client-credentials grant).
    fn token(&self, client: &str) -> String {
        let response = self
            .agent()
            .post(&format!("{}/token", self.issuer()))
            .send_form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client),
                ("client_secret", SECRET),
                ("scope", "dg"),
            ])
            .unwrap();
        let body: Value = serde_json::from_str(&response.into_string().unwrap()).unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    /// How many JWKS fetches it has answered since it started.
    fn jwks_requests(&self) -> u64 {
        let text = self.agent().get(&format!("{}/test/jwks-requests", self.issuer())).call().unwrap().into_string();
        let body: Value = serde_json::from_str(&text.unwrap()).unwrap();
        body["count"].as_u64().unwrap()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The daemon's configuration: the embedded default with `[auth.oidc]` (discovery from
/// the issuer unless `extra` names a key source) and short key ages for the tests.
fn daemon_config(issuer: &str, ca: &Path, extra: &str) -> String {
    let default = Command::new(support::binary()).args(["config", "default"]).output().unwrap().stdout;
    format!(
        "{}\n[auth.oidc]\nissuer = \"{issuer}\"\naudiences = [\"{AUDIENCE}\"]\nca_file = \"{}\"\nrefresh_interval_s = 2\nmax_key_age_s = 6\nmin_refresh_interval_s = 1\n{extra}",
        String::from_utf8(default).unwrap(),
        ca.display()
    )
}

fn start_daemon(config: String) -> Daemon {
    let daemon = Daemon::start_with(DaemonOptions { config: Some(config), ..Default::default() });
    daemon.register(1, 2);
    daemon
}

/// POSTs a JSON-RPC call with a bearer token: (HTTP status, reply).
fn call(daemon: &Daemon, path: &str, token: &str, method: &str, params: Value) -> (u16, Value) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let auth = format!("Bearer {token}");
    let (status, _, text, _) = daemon.post_raw(path, body.to_string().as_bytes(), &[("authorization", &auth)]);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn tool(daemon: &Daemon, token: &str, name: &str, arguments: Value) -> (u16, Value) {
    call(daemon, "/rpc", token, "tools/call", json!({"name": name, "arguments": arguments}))
}

fn works(daemon: &Daemon, token: &str) -> u16 {
    tool(daemon, token, "providers_list", json!({})).0
}

fn spec(scenario: &str) -> Value {
    let mut spec = support::sample_spec(scenario);
    spec["default_tenant_id"] = json!(1);
    spec["namespace_id"] = json!(2);
    spec
}

fn audit_principals(daemon: &Daemon) -> Vec<String> {
    crate::authz::audit_entries(daemon)
        .iter()
        .map(|entry| entry["principal"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn tokens_from_a_real_provider_work_over_rpc_mcp_and_download_and_are_audited_with_iss_and_sub() {
    let dir = tempfile::tempdir().unwrap();
    let keys = make_keys(dir.path(), "k1", &["RS256", "ES256", "EdDSA"]);
    let provider = Provider::start(dir.path(), &keys);
    let daemon = start_daemon(daemon_config(&provider.issuer(), &provider.cert, ""));
    for (client, alg) in [("svc-rs256", "RS256"), ("svc-es256", "ES256"), ("svc-eddsa", "EdDSA")] {
        let token = provider.token(client);
        let header: Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                token.split('.').next().unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], alg, "the provider signed with {alg}");
        let scenario = format!("oidc-{}", alg.to_lowercase());
        let (status, reply) = tool(&daemon, &token, "scenario_define", json!({"spec": spec(&scenario)}));
        assert_eq!(status, 200, "{reply}");
        let run = format!("run-{}", alg.to_lowercase());
        let start = json!({"scenario_id": scenario, "run_config": {"tenant_id": 1, "namespace_id": 2, "run_id": run,
            "scenario_id": scenario, "dispatch_targets": [], "policy_tags": []},
            "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false});
        let (status, reply) = tool(&daemon, &token, "scenario_start", start);
        assert_eq!(status, 200, "{reply}");
        let export = json!({"scenario_id": scenario, "tenant_id": 1, "namespace_id": 2, "run_id": run,
            "output_dir": run, "generated_at": {"kind": "logical", "value": 10}, "include_verification": false});
        let (status, reply) = tool(&daemon, &token, "runpack_export", export);
        assert_eq!(status, 200, "{reply}");
        // /mcp
        let (status, reply) = call(&daemon, "/mcp", &token, "tools/list", json!({}));
        assert_eq!(status, 200, "{reply}");
        assert!(reply["result"]["tools"].as_array().is_some_and(|t| !t.is_empty()), "{reply}");
        // The runpack download.
        let response = daemon
            .agent
            .get(&format!("{}/runpacks/1/2/{run}.tar.zst", daemon.base))
            .set("authorization", &format!("Bearer {token}"))
            .call()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.header("x-dg-run-id"), Some(run.as_str()));
    }
    let principals = audit_principals(&daemon);
    for client in ["svc-rs256", "svc-es256", "svc-eddsa"] {
        let subject = format!("oidc:{}#{client}", provider.issuer());
        assert!(principals.iter().filter(|p| **p == subject).count() >= 4, "{subject} in {principals:?}");
    }
    assert_eq!(daemon.metric("dg_oidc_tokens_total{answer=\"accepted\"}"), Some(15.0));
    // API keys keep working beside tokens.
    assert!(daemon.tool("providers_list", json!({})).is_ok());
}

#[test]
fn rotated_keys_are_found_with_one_fetch_removed_keys_age_out_and_unknown_kids_cannot_hammer_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    // The provider's clients sign with every algorithm: each key set has one key of each.
    let old_keys = make_keys(dir.path(), "old", &["RS256", "ES256", "EdDSA"]);
    let mut provider = Provider::start(dir.path(), &old_keys);
    let daemon = start_daemon(daemon_config(&provider.issuer(), &provider.cert, ""));
    let old_token = provider.token("svc-es256");
    assert_eq!(works(&daemon, &old_token), 200);

    // The provider rotates: only the new key is published and signs.
    let new_keys = make_keys(dir.path(), "new", &["RS256", "ES256", "EdDSA"]);
    provider.restart(&new_keys);
    let new_token = provider.token("svc-es256");
    std::thread::sleep(Duration::from_millis(1100)); // past min_refresh_interval_s
    let before = provider.jwks_requests();
    assert_eq!(works(&daemon, &new_token), 200, "the new key is found");
    assert_eq!(provider.jwks_requests() - before, 1, "with exactly one fetch");
    // The removed key's tokens are refused once the keys are refetched (refresh_interval_s).
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(works(&daemon, &new_token), 200);
    assert_eq!(works(&daemon, &old_token), 401, "the removed key is gone");

    // A flood of tokens with random kids: at most one fetch per min_refresh_interval_s.
    let payload = json!({"iss": provider.issuer(), "aud": AUDIENCE, "sub": "flood", "iat": now_s(), "exp": now_s() + 120,
        "dg_role": "service", "dg_tenant": 1, "dg_namespaces": [2]});
    let forged: Vec<String> = (0..4)
        .map(|i| {
            forge(
                dir.path(),
                &new_keys,
                &json!({"alg": "ES256", "kid": format!("rnd-{i}"), "signing_kid": "new-es256"}),
                &payload,
                None,
            )
        })
        .collect();
    let before = provider.jwks_requests();
    let started = Instant::now();
    let mut sent = 0;
    // Three seconds, and at least 100 requests (a starved client, as on a busy machine,
    // keeps going up to 20 s): one JWKS fetch per second at most, however long it lasts.
    while started.elapsed() < Duration::from_secs(3) || (sent <= 100 && started.elapsed() < Duration::from_secs(20)) {
        for token in &forged {
            // 429 once the address has failed 20 times a minute: still checked first.
            assert!(matches!(works(&daemon, token), 401 | 429));
            sent += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fetches = provider.jwks_requests() - before;
    assert!(sent > 100, "a flood: {sent} requests");
    assert!(
        fetches as f64 <= elapsed.ceil() + 1.0,
        "{fetches} fetches for {sent} unknown kids in {elapsed:.1} s (one per second at most)"
    );
    assert_eq!(works(&daemon, &new_token), 200, "valid tokens are served throughout");
}

#[test]
fn with_the_provider_down_cached_keys_serve_until_their_maximum_age_then_requests_fail_closed_and_service_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let keys = make_keys(dir.path(), "k1", &["RS256", "ES256", "EdDSA"]);
    let mut provider = Provider::start(dir.path(), &keys);
    let daemon = start_daemon(daemon_config(&provider.issuer(), &provider.cert, ""));
    let token = provider.token("svc-rs256");
    assert_eq!(works(&daemon, &token), 200);
    let fetched_at = Instant::now();
    provider.stop();
    // Past refresh_interval_s the daemon tries and fails, and the cached keys still serve.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(works(&daemon, &token), 200, "cached keys serve while younger than max_key_age_s");
    // Past max_key_age_s (6 s after the last fetch): fail closed.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(fetched_at.elapsed()) + Duration::from_millis(1200));
    let (status, reply) = tool(&daemon, &token, "providers_list", json!({}));
    assert_eq!(status, 401, "{reply}");
    assert!(daemon.metric("dg_oidc_jwks_fetches_total{result=\"failed\"}").unwrap() >= 1.0);
    assert!(daemon.metric("dg_oidc_tokens_total{answer=\"keys_expired\"}").unwrap() >= 1.0);
    let mut said = String::new();
    while let Ok(line) = daemon.stderr.try_recv() {
        said.push_str(&line);
        said.push('\n');
    }
    assert!(said.contains("bearer tokens are refused until the provider answers"), "a clear log line:\n{said}");
    // The provider returns: served again without a restart.
    provider.restart(&keys);
    std::thread::sleep(Duration::from_millis(1100));
    let fresh = provider.token("svc-es256");
    assert_eq!(works(&daemon, &fresh), 200);
    assert_eq!(works(&daemon, &token), 200);
}

#[test]
fn an_air_gapped_jwks_file_validates_tokens_and_replacing_it_rotates_keys_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_keys(dir.path(), "file1", &["EdDSA"]);
    let second = make_keys(dir.path(), "file2", &["RS256"]);
    let jwks = dir.path().join("jwks.json");
    public_keys(&first, &jwks, None);
    let issuer = "https://idp.site.invalid/realms/dg";
    let (ca, _) = certificate(dir.path());
    let config = daemon_config(issuer, &ca, &format!("jwks_file = \"{}\"\n", jwks.display()));
    let daemon = start_daemon(config);
    let payload = json!({"iss": issuer, "aud": AUDIENCE, "sub": "operator-7", "iat": now_s(), "exp": now_s() + 600,
        "dg_role": "service", "dg_tenant": 1, "dg_namespaces": [2]});
    let one =
        forge(dir.path(), &first, &json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "file1-eddsa"}), &payload, None);
    let two = forge(dir.path(), &second, &json!({"alg": "RS256", "typ": "JWT", "kid": "file2-rs256"}), &payload, None);
    assert_eq!(works(&daemon, &one), 200);
    assert_eq!(works(&daemon, &two), 401, "not yet carried in");
    // The operator carries in the next key set: replaced atomically, picked up without a restart.
    let staged = dir.path().join("jwks.json.new");
    public_keys(&second, &staged, None);
    std::fs::rename(&staged, &jwks).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(works(&daemon, &two), 200, "the new file's key is used");
    assert_eq!(works(&daemon, &one), 401, "the old file's key is gone");
    assert!(audit_principals(&daemon).contains(&format!("oidc:{issuer}#operator-7")));
}

#[test]
fn mapped_tokens_pass_the_authorization_matrix_and_a_token_with_no_role_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = make_keys(dir.path(), "k1", &["RS256", "ES256", "EdDSA"]);
    let provider = Provider::start(dir.path(), &keys);
    let daemon = start_daemon(daemon_config(&provider.issuer(), &provider.cert, ""));
    daemon.register(2, 1);
    daemon.register(2, 2);
    let callers = vec![
        crate::authz::Caller {
            role: "service".into(),
            token: provider.token("svc-es256"),
            tenant: Some(1),
            namespaces: vec![2],
        },
        crate::authz::Caller {
            role: "auditor".into(),
            token: provider.token("auditor"),
            tenant: Some(1),
            namespaces: vec![],
        },
    ];
    crate::authz::assert_matrix(&daemon, &crate::authz::policy_table(), &callers);

    let nobody = provider.token("nobody");
    let (status, reply) = tool(&daemon, &nobody, "providers_list", json!({}));
    assert_eq!(status, 403, "{reply}");
    assert_eq!(daemon.metric("dg_oidc_tokens_total{answer=\"no_role\"}"), Some(1.0));
}

/// One attack: a daemon trusting the provider, a token built by `make`, answered 401 with
/// nothing executed (the scenario it tries to define does not exist afterwards) and
/// counted in the audited failure summary.
struct Attack {
    dir: tempfile::TempDir,
    provider: Provider,
    daemon: Daemon,
    keys: PathBuf,
}

impl Attack {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = make_keys(dir.path(), "k1", &["RS256", "ES256", "EdDSA"]);
        let provider = Provider::start(dir.path(), &keys);
        let daemon = start_daemon(daemon_config(&provider.issuer(), &provider.cert, ""));
        Self { dir, provider, daemon, keys }
    }

    /// Claims a real token of an org admin would carry.
    fn claims(&self) -> Value {
        json!({"iss": self.provider.issuer(), "aud": AUDIENCE, "sub": "mallory", "iat": now_s(), "exp": now_s() + 300,
            "dg_role": "org_admin"})
    }

    fn forge(&self, header: Value, payload: Value) -> String {
        forge(self.dir.path(), &self.keys, &header, &payload, None)
    }

    fn refused(&self, token: &str) {
        let scenario = format!("attack-{:x}", rand::random::<u32>());
        let (status, reply) = tool(&self.daemon, token, "scenario_define", json!({"spec": spec(&scenario)}));
        assert_eq!(status, 401, "{reply}");
        assert_eq!(reply["error"]["code"], -32001, "{reply}");
        let listed = self.daemon.tool("scenarios_list", json!({"tenant_id": 1, "namespace_id": 2})).unwrap();
        assert!(!listed.to_string().contains(&scenario), "nothing was defined: {listed}");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let export = self.daemon.admin("audit_export", json!({"since_ms": 0})).unwrap();
            if export["jsonl"].as_str().unwrap().contains("\"auth_failures\"") {
                break;
            }
            assert!(Instant::now() < deadline, "the failure was not audited");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn control_a_token_signed_with_the_providers_key_and_right_claims_is_accepted() {
    // Without this the attack tests could pass for the wrong reason.
    let attack = Attack::new();
    let token = attack.forge(json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1-es256"}), attack.claims());
    assert_eq!(works(&attack.daemon, &token), 200);
}

#[test]
fn attack_alg_none() {
    let attack = Attack::new();
    attack.refused(&attack.forge(json!({"alg": "none", "kid": "k1-es256"}), attack.claims()));
}

#[test]
fn attack_hs256_signed_with_the_providers_public_key_as_secret() {
    let attack = Attack::new();
    let public = attack.dir.path().join("public.json");
    let pem = public_keys(&attack.keys, &public, Some("k1-rs256"));
    let secret = attack.dir.path().join("public.pem");
    std::fs::write(&secret, pem).unwrap();
    let token = forge(
        attack.dir.path(),
        &attack.keys,
        &json!({"alg": "HS256", "kid": "k1-rs256"}),
        &attack.claims(),
        Some(&secret),
    );
    attack.refused(&token);
}

#[test]
fn attack_expired() {
    let attack = Attack::new();
    let mut claims = attack.claims();
    claims["iat"] = json!(now_s() - 900);
    claims["exp"] = json!(now_s() - 600);
    attack.refused(&attack.forge(json!({"alg": "ES256", "kid": "k1-es256"}), claims));
}

#[test]
fn attack_not_yet_valid() {
    let attack = Attack::new();
    let mut claims = attack.claims();
    claims["nbf"] = json!(now_s() + 600);
    attack.refused(&attack.forge(json!({"alg": "ES256", "kid": "k1-es256"}), claims));
}

#[test]
fn attack_issued_in_the_future() {
    let attack = Attack::new();
    let mut claims = attack.claims();
    claims["iat"] = json!(now_s() + 600);
    claims["exp"] = json!(now_s() + 900);
    attack.refused(&attack.forge(json!({"alg": "ES256", "kid": "k1-es256"}), claims));
}

#[test]
fn attack_wrong_issuer() {
    let attack = Attack::new();
    let mut claims = attack.claims();
    claims["iss"] = json!("https://127.0.0.1:1");
    attack.refused(&attack.forge(json!({"alg": "ES256", "kid": "k1-es256"}), claims));
}

#[test]
fn attack_wrong_audience() {
    let attack = Attack::new();
    let mut claims = attack.claims();
    claims["aud"] = json!("urn:another:service");
    attack.refused(&attack.forge(json!({"alg": "ES256", "kid": "k1-es256"}), claims));
}

#[test]
fn attack_a_valid_token_from_a_second_provider_with_the_same_kid() {
    let attack = Attack::new();
    let other = tempfile::tempdir().unwrap();
    let other_keys = make_keys(other.path(), "k1", &["ES256"]);
    let token = forge(other.path(), &other_keys, &json!({"alg": "ES256", "kid": "k1-es256"}), &attack.claims(), None);
    attack.refused(&token);
}

#[test]
fn attack_kid_with_path_or_sql_characters() {
    let attack = Attack::new();
    for kid in ["../../../../etc/passwd", "k1-es256' OR '1'='1", "k1-es256/../k1-es256"] {
        let token = attack.forge(json!({"alg": "ES256", "kid": kid, "signing_kid": "k1-es256"}), attack.claims());
        attack.refused(&token);
    }
}

#[test]
fn attack_jku_and_x5u_pointing_elsewhere_are_never_fetched() {
    let attack = Attack::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let elsewhere = format!("https://{}/jwks", listener.local_addr().unwrap());
    let evil = make_keys(attack.dir.path(), "evil", &["ES256"]);
    for header in [
        json!({"alg": "ES256", "kid": "evil-es256", "jku": elsewhere}),
        json!({"alg": "ES256", "kid": "evil-es256", "x5u": elsewhere}),
    ] {
        let token = forge(attack.dir.path(), &evil, &header, &attack.claims(), None);
        attack.refused(&token);
    }
    assert!(listener.accept().is_err(), "the daemon connected to the jku/x5u address");
}

#[test]
fn attack_critical_header() {
    let attack = Attack::new();
    let token =
        attack.forge(json!({"alg": "ES256", "kid": "k1-es256", "crit": ["dg-ext"], "dg-ext": true}), attack.claims());
    attack.refused(&token);
}

#[test]
fn attack_tampered_payload() {
    let attack = Attack::new();
    let real = attack.provider.token("svc-es256");
    let parts: Vec<&str> = real.split('.').collect();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&base64::Engine::decode(&engine, parts[1]).unwrap()).unwrap();
    claims["dg_role"] = json!("org_admin");
    claims.as_object_mut().unwrap().remove("dg_tenant");
    let tampered = format!("{}.{}.{}", parts[0], base64::Engine::encode(&engine, claims.to_string()), parts[2]);
    assert_eq!(works(&attack.daemon, &real), 200, "the untampered token works");
    attack.refused(&tampered);
}

#[test]
fn attack_a_token_100_kib_long_is_refused_before_parsing_without_memory_growth() {
    let attack = Attack::new();
    let huge = format!("eyJ{}.{}.{}", "A".repeat(50 * 1024), "B".repeat(50 * 1024), "C".repeat(400));
    attack.refused(&huge);
    let pid = attack.daemon.child.id();
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    for _ in 0..50 {
        works(&attack.daemon, &huge);
    }
    let before = rss();
    for _ in 0..300 {
        works(&attack.daemon, &huge);
    }
    let after = rss();
    assert!(after < before + 8 * 1024, "RSS grew from {before} KiB to {after} KiB");
    // Refused from the header's length (8 KiB), before any base64 or JSON is decoded: the
    // JWT checker never saw one of them.
    let parsed: f64 = ["malformed", "algorithm", "header", "unknown_key", "signature", "claims"]
        .iter()
        .map(|answer| attack.daemon.metric(&format!("dg_oidc_tokens_total{{answer=\"{answer}\"}}")).unwrap())
        .sum();
    assert_eq!(parsed, 0.0);
    let failures = attack.daemon.metric("dg_auth_failures_total{answer=\"unauthenticated\"}").unwrap()
        + attack.daemon.metric("dg_auth_failures_total{answer=\"throttled\"}").unwrap();
    assert!(failures >= 351.0, "{failures}");
}

#[test]
fn the_subject_mapping_wins_over_claims_and_is_managed_by_admin_operations_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let keys = make_keys(dir.path(), "k1", &["RS256", "ES256", "EdDSA"]);
    let provider = Provider::start(dir.path(), &keys);
    let daemon = start_daemon(daemon_config(&provider.issuer(), &provider.cert, ""));
    daemon.register(2, 1);
    let nobody = provider.token("nobody");
    let service = provider.token("svc-es256");
    let list = json!({"tenant_id": 1, "namespace_id": 2});
    assert_eq!(tool(&daemon, &nobody, "scenarios_list", list.clone()).0, 403, "no role in its claims");

    // Mapped by an administrator: the subject is an auditor of tenant 1 (reads, never writes).
    let subject = |client: &str| format!("oidc:{}#{client}", provider.issuer());
    daemon
        .admin(
            "oidc_subject_set",
            json!({"subject": subject("nobody"), "role": "auditor", "tenant_id": 1, "label": "ops"}),
        )
        .unwrap();
    assert_eq!(tool(&daemon, &nobody, "scenarios_list", list.clone()).0, 200);
    assert_eq!(tool(&daemon, &nobody, "scenario_define", json!({"spec": spec("mapped")})).0, 403);
    // The mapping wins over the token's own claims (service in tenant 1).
    assert_eq!(tool(&daemon, &service, "scenario_define", json!({"spec": spec("before")})).0, 200);
    daemon
        .admin("oidc_subject_set", json!({"subject": subject("svc-es256"), "role": "auditor", "tenant_id": 1}))
        .unwrap();
    assert_eq!(tool(&daemon, &service, "scenario_define", json!({"spec": spec("after")})).0, 403);

    // A tenant admin maps into its own tenant only, never to org_admin, and cannot take
    // over a subject mapped elsewhere.
    let tenant_admin = daemon.admin("key_issue", json!({"role": "tenant_admin", "tenant_id": 2})).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let admin_call =
        |method: &str, params: Value| call(&daemon, "/rpc", &tenant_admin, &format!("admin/{method}"), params);
    let (status, _) = admin_call("oidc_subject_set", json!({"subject": subject("x"), "role": "org_admin"}));
    assert_eq!(status, 403);
    let (status, _) =
        admin_call("oidc_subject_set", json!({"subject": subject("svc-es256"), "role": "auditor", "tenant_id": 2}));
    assert_eq!(status, 403, "mapped in tenant 1: not tenant 2's to take");
    let (status, _) = admin_call("oidc_subject_delete", json!({"subject": subject("svc-es256"), "tenant_id": 1}));
    assert_eq!(status, 403);
    let (_, reply) = admin_call("oidc_subject_delete", json!({"subject": subject("svc-es256"), "tenant_id": 2}));
    assert_eq!(reply["error"]["code"], -32004, "not found in tenant 2, like one that does not exist: {reply}");
    let (status, reply) =
        admin_call("oidc_subject_set", json!({"subject": "not-a-subject", "role": "auditor", "tenant_id": 2}));
    assert_eq!(status, 400, "{reply}");

    // The CLI lists and removes mappings; the subject falls back to its claims.
    let cli = |args: &[&str]| {
        let out = Command::new(support::binary()).args(args).arg("--data-dir").arg(daemon.data_dir()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let listed: Value = serde_json::from_str(&cli(&["subjects", "list", "--tenant", "1", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    cli(&["subjects", "delete", &subject("svc-es256"), "--tenant", "1"]);
    assert_eq!(tool(&daemon, &service, "scenario_define", json!({"spec": spec("again")})).0, 200);
    let audit = daemon.admin("audit_export", json!({"since_ms": 0})).unwrap();
    assert!(audit["jsonl"].as_str().unwrap().contains("oidc_subject_set"), "mapping changes are audited");
}

#[test]
fn config_check_refuses_none_hmac_plain_http_and_unbounded_settings() {
    let dir = tempfile::tempdir().unwrap();
    let default = Command::new(support::binary()).args(["config", "default"]).output().unwrap().stdout;
    let config = format!(
        "{}\n[auth.oidc]\nissuer = \"http://idp.example\"\naudiences = []\nalgorithms = [\"RS256\", \"none\", \"HS256\"]\nleeway_s = 3600\njwks_url = \"http://idp.example/jwks\"\njwks_file = \"/etc/jwks.json\"\n",
        String::from_utf8(default).unwrap()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(support::binary()).args(["config", "check"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    for expected in [
        "auth.oidc.issuer",
        "auth.oidc.audiences",
        "\"none\" is not accepted",
        "\"HS256\" is not accepted",
        "auth.oidc.leeway_s",
        "auth.oidc.jwks_url",
        "auth.oidc.jwks_file",
    ] {
        assert!(text.contains(expected), "{expected} not reported:\n{text}");
    }
}

/// The admin UI's sign-in with the provider in a real browser: authorization code with
/// PKCE through the provider's login page, the ID token checked and its claims mapped; a
/// service account is refused; a callback the daemon did not begin is refused.
#[test]
fn the_admin_ui_signs_in_with_the_provider_in_a_real_browser() {
    use crate::support::browser::Browser;
    use fantoccini::Locator;
    let dir = tempfile::tempdir().unwrap();
    let keys = make_keys(dir.path(), "ui", &["RS256", "ES256"]);
    let port = support::free_port();
    let redirect = format!("https://127.0.0.1:{port}/ui/oidc/callback");
    let provider = Provider::start_with(
        dir.path(),
        &keys,
        json!({
            "ui_clients": [{"client_id": "dg-ui", "redirect_uri": redirect, "alg": "ES256"}],
            "accounts": {
                "alice": {"dg_role": "tenant_admin", "dg_tenant": 1},
                "robot": {"dg_role": "service", "dg_tenant": 1, "dg_namespaces": [2]},
            },
        }),
    );
    let extra = format!(
        "[ui.oidc]\nclient_id = \"dg-ui\"\nredirect_uri = \"{redirect}\"\nscopes = [\"openid\", \"dg_roles\"]\n"
    );
    let config = daemon_config(&provider.issuer(), &provider.cert, &extra);
    let daemon = Daemon::start_with(DaemonOptions { config: Some(config), port: Some(port), ..Default::default() });
    daemon.register(1, 2);
    let daemon_cert = daemon.data_dir().join("tls/cert.pem");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sign_in_as = |login: &'static str| {
        let (daemon, provider_cert, daemon_cert) = (&daemon, &provider.cert, &daemon_cert);
        async move {
            let browser = Browser::start_trusting(&[daemon_cert, provider_cert]).await;
            browser.open(&format!("{}/ui/sign-in", daemon.base)).await;
            let link = browser.client.find(Locator::LinkText("Sign in with the identity provider")).await.unwrap();
            browser.click_and_load(link).await;
            let url = browser.client.current_url().await.unwrap();
            assert_eq!(url.port(), Some(provider.port), "at the provider's login page: {url}");
            browser.client.find(Locator::Css("input[name=login]")).await.unwrap().send_keys(login).await.unwrap();
            browser.client.find(Locator::Css("input[name=password]")).await.unwrap().send_keys("any").await.unwrap();
            let submit = browser.client.find(Locator::Css("button[type=submit]")).await.unwrap();
            browser.click_and_load(submit).await;
            // The provider asks for consent once per client.
            if let Ok(button) = browser.client.find(Locator::Css("button[type=submit]")).await {
                if browser.client.current_url().await.unwrap().port() == Some(provider.port) {
                    browser.click_and_load(button).await;
                }
            }
            // Back at the daemon: the callback's page moves on to the runs by itself.
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let url = browser.client.current_url().await.unwrap();
                if url.port() == Some(port) && (url.path() == "/ui/runs" || url.path() == "/ui/sign-in") {
                    break;
                }
                if url.port() == Some(port) && url.path() == "/ui/oidc/callback" {
                    let text = browser.main_text().await;
                    if !text.contains("Signed in") {
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "stuck at {url}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            browser
        }
    };
    runtime.block_on(async {
        let browser = sign_in_as("alice").await;
        let url = browser.client.current_url().await.unwrap();
        assert_eq!(url.path(), "/ui/runs", "signed in: {url} {}", browser.main_text().await);
        browser.open(&format!("{}/ui/account", daemon.base)).await;
        let text = browser.main_text().await;
        let subject = format!("oidc:{}#alice", provider.issuer());
        assert!(text.contains(&subject) && text.contains("tenant_admin"), "{text}");
        let (_, secure, http_only, same_site) = browser.session_cookie().await.unwrap();
        assert!(secure && http_only && same_site == "Strict");
        browser.screenshot("oidc-signed-in").await;
        browser.stop().await;

        let browser = sign_in_as("robot").await;
        let text = browser.main_text().await;
        assert!(text.contains("service principals may not sign in"), "{text}");
        assert!(browser.session_cookie().await.is_none());
        browser.stop().await;
    });
    // A callback this daemon did not begin (no state cookie, unknown state) is refused.
    let agent = support::tls_agent(&daemon_cert);
    let status = match agent.get(&format!("{}/ui/oidc/callback?code=stolen&state=forged", daemon.base)).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r.status(),
        Err(err) => panic!("{err}"),
    };
    assert_eq!(status, 403);
    let entries = crate::authz::audit_entries(&daemon);
    let sign_ins: Vec<(String, String, String)> = entries
        .iter()
        .filter(|e| e["action"] == "ui_sign_in")
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (field("principal"), field("outcome"), field("reason"))
        })
        .collect();
    let alice = format!("oidc:{}#alice", provider.issuer());
    let robot = format!("oidc:{}#robot", provider.issuer());
    assert!(sign_ins.contains(&(alice, "ok".into(), "oidc".into())), "{sign_ins:?}");
    assert!(sign_ins.iter().any(|(p, o, _)| *p == robot && o == "deny"), "{sign_ins:?}");
    assert!(sign_ins.iter().any(|(_, o, r)| o == "deny" && r.contains("not begun in this browser")), "{sign_ins:?}");
}
