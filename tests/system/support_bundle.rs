#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The support bundle (operations issue, point 3): on an appliance with API keys, its own
//! TLS key, signing keys and a backup passphrase, the bundle holds none of those secrets
//! (every file searched for each secret and its hex and base64 forms), holds what support
//! needs (a live /metrics snapshot, store check, audit verify, the scrubbed log tail), and
//! verifies offline; a changed member or a foreign key is refused.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde_json::json;

use crate::support::{self, Daemon, DaemonOptions};

fn forms(secret: &[u8]) -> Vec<String> {
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut out = vec![String::from_utf8_lossy(secret).to_string(), hex::encode(secret), hex::encode_upper(secret)];
    out.extend(engines.iter().map(|engine| engine.encode(secret)));
    out.retain(|form| form.len() >= 16);
    out
}

fn members(bundle: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(bundle).unwrap();
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().to_string();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        out.insert(name, content);
    }
    out
}

fn cli(args: &[&str], extra: &[&Path]) -> std::process::Output {
    let mut command = Command::new(support::binary());
    command.args(args);
    for path in extra {
        command.arg(path);
    }
    command.output().unwrap()
}

#[test]
fn the_support_bundle_holds_no_secret_and_verifies_offline() {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let default = cli(&["config", "default"], &[]).stdout;
    let config = format!(
        "{}\n[tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
        String::from_utf8(default).unwrap(),
        cert.display(),
        key.display()
    );
    let daemon = Daemon::start_with(DaemonOptions {
        config: Some(config.clone()),
        server_ca: Some(cert.clone()),
        ..Default::default()
    });
    let config_path = daemon.dir.path().join("config.toml");
    let data = daemon.data_dir();
    let service = daemon.admin("key_issue", json!({"role": "service", "tenant_id": 2, "namespaces": [3]})).unwrap()
        ["token"]
        .as_str()
        .unwrap()
        .to_string();
    daemon.tool("providers_list", json!({})).unwrap();

    // A backup with secrets, under a passphrase.
    let passphrase = "correct horse battery staple 7391";
    let out = Command::new(support::binary())
        .args(["backup", "create", "--include-secrets", "--to"])
        .arg(dir.path().join("backups"))
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&config_path)
        .env("DG_BACKUP_PASSPHRASE", passphrase)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A log as journald would keep it: the first start printed the admin key.
    let log = dir.path().join("daemon.log");
    let pem = generated.key_pair.serialize_pem();
    std::fs::write(
        &log,
        format!(
            "dg-appliance listening on https://127.0.0.1:8443\nFirst admin API key (shown once):\n{}\nauthorization=\"Bearer {service}\"\n{pem}request done\n",
            daemon.key
        ),
    )
    .unwrap();
    let key_file = dir.path().join("scrape.key");
    std::fs::write(&key_file, &daemon.key).unwrap();

    let bundle = dir.path().join("bundle.tar");
    let out = Command::new(support::binary())
        .args(["support-bundle", "--out"])
        .arg(&bundle)
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&config_path)
        .arg("--log-file")
        .arg(&log)
        .arg("--metrics-url")
        .arg(format!("{}/metrics", daemon.base))
        .arg("--metrics-key-file")
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let files = members(&bundle);
    for expected in [
        "version.json",
        "config.toml",
        "metrics.txt",
        "store-check.json",
        "audit-verify.json",
        "registry.json",
        "system.json",
        "log-tail.txt",
        "unit-status.txt",
        "manifest.json",
        "manifest.sig",
    ] {
        assert!(files.contains_key(expected), "{expected} missing: {:?}", files.keys());
    }
    let text = |name: &str| String::from_utf8_lossy(&files[name]).to_string();
    assert!(text("metrics.txt").contains("dg_requests_total"), "a live snapshot: {}", text("metrics.txt"));
    assert!(text("store-check.json").contains("documents_checked"));
    assert!(text("log-tail.txt").contains("request done") && text("log-tail.txt").contains("<redacted>"));
    assert!(text("registry.json").contains("\"api_keys\": 2"), "{}", text("registry.json"));

    // No secret, in any form, in any file.
    let signing_key = std::fs::read_to_string(data.join("keys/active.key")).unwrap();
    let signing_seed = hex::decode(signing_key.trim()).unwrap();
    let der = generated.key_pair.serialize_der();
    let pem_body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut secrets: Vec<(String, Vec<String>)> = vec![
        ("admin key".into(), forms(daemon.key.as_bytes())),
        ("service key".into(), forms(service.as_bytes())),
        ("passphrase".into(), forms(passphrase.as_bytes())),
        ("signing key".into(), [forms(signing_key.trim().as_bytes()), forms(&signing_seed)].concat()),
        (
            "TLS key".into(),
            [forms(&der), pem_body.iter().map(|l| (*l).to_string()).filter(|l| l.len() >= 16).collect()].concat(),
        ),
    ];
    secrets.retain(|(_, forms)| !forms.is_empty());
    for (name, content) in &files {
        let content = String::from_utf8_lossy(content);
        for (what, forms) in &secrets {
            for form in forms {
                assert!(!content.contains(form.as_str()), "{name} holds the {what} ({form})");
            }
        }
    }

    // Offline verification with nothing but the public ring; a changed member is refused.
    let ring = dir.path().join("ring.json");
    std::fs::write(&ring, cli(&["keys", "show-public", "--data-dir"], &[&data]).stdout).unwrap();
    let verified = cli(&["support-bundle", "--verify"], &[&bundle, Path::new("--pubkey"), &ring]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    let mut changed = files.clone();
    changed.insert("config.toml".into(), b"[server]\nlisten = \"0.0.0.0:1\"\n".to_vec());
    let tampered = dir.path().join("tampered.tar");
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in &changed {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        builder.append_data(&mut header, name, bytes.as_slice()).unwrap();
    }
    std::fs::write(&tampered, builder.into_inner().unwrap()).unwrap();
    let refused = cli(&["support-bundle", "--verify"], &[&tampered, Path::new("--pubkey"), &ring]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("config.toml was changed"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let other = tempfile::tempdir().unwrap();
    let other_data = other.path().join("data");
    let _ = cli(&["keys", "show-public", "--data-dir"], &[&other_data]);
    let other_ring = other.path().join("ring.json");
    std::fs::write(&other_ring, cli(&["keys", "show-public", "--data-dir"], &[&other_data]).stdout).unwrap();
    let foreign = cli(&["support-bundle", "--verify"], &[&bundle, Path::new("--pubkey"), &other_ring]);
    assert!(!foreign.status.success(), "verified with another appliance's key");
}
