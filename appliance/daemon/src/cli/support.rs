//! `support-bundle`: one signed archive for the vendor. It holds what a support engineer
//! needs (version, the effective configuration with secrets redacted, a `/metrics`
//! snapshot, `store check` and `audit verify`, registry sizes, the log tail, the unit's
//! status, disk and memory figures) and never a token, key, password, passphrase or
//! runpack: the configuration is redacted by key name, log lines are scrubbed of API keys,
//! bearer tokens and PEM blocks, and nothing is read from the key or runpack directories.
//! `manifest.json` lists every file's sha256 and is signed with the appliance's signing
//! key (`manifest.sig`), so `support-bundle --verify` tells, offline, that the bundle came
//! from this appliance unchanged.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dg_crypto::Sha256;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cli::SupportBundleArgs;

/// What a signature over a bundle's manifest is prefixed with.
const CONTEXT: &[u8] = b"dg-appliance support bundle v1\0";
/// The largest bundle `--verify` reads, and the largest member.
const MAX_BUNDLE_BYTES: u64 = 64 * 1024 * 1024;
/// Log lines kept by default.
const DEFAULT_LOG_LINES: usize = 500;

/// The signed list of members.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    created_at_ms: i64,
    appliance_version: String,
    key_id: String,
    files: BTreeMap<String, String>,
}

/// `support-bundle`.
///
/// # Errors
/// A message for the operator.
pub fn run(args: SupportBundleArgs) -> Result<ExitCode, String> {
    match (&args.out, &args.verify) {
        (Some(out), None) => create(&args, out),
        (None, Some(bundle)) => {
            let ring = args.pubkey.as_deref().ok_or("--verify needs --pubkey (dg-appliance keys show-public)")?;
            verify(bundle, ring)
        }
        _ => Err("give --out FILE to make a bundle, or --verify FILE --pubkey RING to check one".into()),
    }
}

fn create(args: &SupportBundleArgs, out: &Path) -> Result<ExitCode, String> {
    let (app, dir, _) = crate::cli::bootstrap::build_app(&args.data)?;
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let text = |value: &Value| serde_json::to_vec_pretty(value).unwrap_or_default();
    files.insert(
        "version.json".into(),
        text(&json!({
            "version": env!("CARGO_PKG_VERSION"),
            "target": format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "schema_version": dg_storage::SCHEMA_VERSION,
        })),
    );
    files.insert("config.toml".into(), redacted_config(&app.config)?.into_bytes());
    files.insert(
        "store-check.json".into(),
        text(&app.store.check().map_or_else(|e| json!({"error": e.to_string()}), |r| json!(r))),
    );
    let audit = app
        .keys
        .ring()
        .map_err(|e| e.to_string())
        .and_then(|ring| app.store.verify_audit(&ring).map_err(|e| e.to_string()));
    files.insert("audit-verify.json".into(), text(&audit.map_or_else(|e| json!({"error": e}), |r| json!(r))));
    files.insert("registry.json".into(), text(&registry_sizes(&app)));
    files.insert("system.json".into(), text(&system_figures(&dir.root)));
    files.insert("metrics.txt".into(), metrics_snapshot(args, &app, &dir.root).into_bytes());
    files.insert("log-tail.txt".into(), log_tail(args).into_bytes());
    files.insert(
        "unit-status.txt".into(),
        command_output("systemctl", &["status", "--no-pager", "dg-appliance"]).into_bytes(),
    );
    let key = app.keys.active().map_err(|err| err.to_string())?;
    app.store.close();

    let manifest = Manifest {
        format: "dg-support-bundle-v1".into(),
        created_at_ms: dg_storage::now_ms(),
        appliance_version: env!("CARGO_PKG_VERSION").into(),
        key_id: key.key_id.clone(),
        files: files.iter().map(|(name, bytes)| (name.clone(), hex::encode(Sha256::digest(bytes)))).collect(),
    };
    let manifest_bytes = dg_engine::canonical_json_bytes(&manifest).map_err(|err| err.to_string())?;
    let mut message = CONTEXT.to_vec();
    message.extend_from_slice(&manifest_bytes);
    let signature = json!({"key_id": key.key_id, "signature": key.sign_hex(&message).map_err(|err| err.to_string())?});
    files.insert("manifest.json".into(), manifest_bytes);
    files.insert("manifest.sig".into(), text(&signature));

    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, name, bytes.as_slice()).map_err(|err| err.to_string())?;
    }
    let archive = builder.into_inner().map_err(|err| err.to_string())?;
    dg_storage::write_atomic(out, &archive, 0o600).map_err(|err| format!("{}: {err}", out.display()))?;
    eprintln!("support bundle written: {} ({} files, signed by {})", out.display(), files.len(), key.key_id);
    Ok(ExitCode::SUCCESS)
}

fn verify(bundle: &Path, ring_path: &Path) -> Result<ExitCode, String> {
    let ring = dg_storage::signing::PublicKeyRing::load(ring_path).map_err(|err| err.to_string())?;
    let bytes = dg_storage::read_bounded(bundle, MAX_BUNDLE_BYTES, dg_storage::Links::Follow)
        .map_err(|err| format!("{}: {err}", bundle.display()))?;
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes.as_slice());
    for entry in archive.entries().map_err(|err| err.to_string())? {
        let mut entry = entry.map_err(|err| err.to_string())?;
        if !entry.header().entry_type().is_file() {
            return Err("the bundle holds something other than plain files".into());
        }
        let name = entry.path().map_err(|err| err.to_string())?.to_string_lossy().to_string();
        let mut content = Vec::new();
        entry.by_ref().take(MAX_BUNDLE_BYTES).read_to_end(&mut content).map_err(|err| err.to_string())?;
        files.insert(name, content);
    }
    let manifest_bytes = files.remove("manifest.json").ok_or("the bundle has no manifest.json")?;
    let signature: Value =
        serde_json::from_slice(&files.remove("manifest.sig").ok_or("the bundle has no manifest.sig")?)
            .map_err(|err| err.to_string())?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|err| err.to_string())?;
    let mut message = CONTEXT.to_vec();
    message.extend_from_slice(&manifest_bytes);
    let key_id = signature["key_id"].as_str().unwrap_or_default();
    if key_id != manifest.key_id {
        return Err("the signature's key is not the one the manifest names".into());
    }
    ring.verify(key_id, &message, signature["signature"].as_str().unwrap_or_default())
        .map_err(|err| format!("signature: {err}"))?;
    for (name, want) in &manifest.files {
        let content = files.remove(name).ok_or_else(|| format!("{name} is listed but missing"))?;
        if hex::encode(Sha256::digest(&content)) != *want {
            return Err(format!("{name} was changed after the bundle was signed"));
        }
    }
    if let Some(extra) = files.keys().next() {
        return Err(format!("{extra} is not in the signed manifest"));
    }
    println!("support bundle verified: {} files, signed by {}", manifest.files.len(), manifest.key_id);
    Ok(ExitCode::SUCCESS)
}

/// The configuration in force as TOML, every value under a secret-looking key replaced.
fn redacted_config(config: &crate::config::Config) -> Result<String, String> {
    let mut value = toml::Value::try_from(config).map_err(|err| err.to_string())?;
    redact(&mut value);
    toml::to_string_pretty(&value).map_err(|err| err.to_string())
}

fn redact(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                let key = key.to_ascii_lowercase();
                let secret = ["password", "secret", "token", "passphrase", "private", "credential"]
                    .iter()
                    .any(|word| key.contains(word))
                    && !(key.ends_with("_file") || key.ends_with("_path") || key.ends_with("_claim"));
                if secret {
                    *item = toml::Value::String("<redacted>".into());
                } else {
                    redact(item);
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn registry_sizes(app: &crate::app::App) -> Value {
    let tenants = app.store.list_tenants().unwrap_or_default();
    let namespaces: usize = tenants.iter().map(|t| app.store.list_namespaces(t.tenant_id).map_or(0, |n| n.len())).sum();
    let keys = app.store.list_api_keys().unwrap_or_default();
    let active = keys.iter().filter(|k| crate::ops::auth::key_usable(k, dg_storage::now_ms())).count();
    json!({"tenants": tenants.len(), "namespaces": namespaces, "api_keys": keys.len(), "api_keys_usable": active,
        "runs_by_status": app.store.count_runs_by_status().unwrap_or_default()})
}

fn system_figures(root: &Path) -> Value {
    let disk = rustix::fs::statvfs(root).ok().map(|s| {
        json!({"free_bytes": s.f_bavail.saturating_mul(s.f_frsize), "capacity_bytes": s.f_blocks.saturating_mul(s.f_frsize)})
    });
    let meminfo = dg_storage::read_text_bounded(Path::new("/proc/meminfo"), 64 * 1024, dg_storage::Links::Follow)
        .unwrap_or_default();
    let memory: BTreeMap<&str, &str> = meminfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, _)| matches!(*key, "MemTotal" | "MemAvailable" | "SwapTotal" | "SwapFree"))
        .map(|(key, value)| (key, value.trim()))
        .collect();
    let uname = rustix::system::uname();
    json!({"data_dir_disk": disk, "memory": memory,
        "kernel": format!("{} {}", uname.sysname().to_string_lossy(), uname.release().to_string_lossy()),
        "cpus": std::thread::available_parallelism().map_or(0, std::num::NonZero::get)})
}

/// `/metrics` of the running daemon, scraped with the operator's key (never written into
/// the bundle); a note when it cannot be taken.
fn metrics_snapshot(args: &SupportBundleArgs, app: &crate::app::App, root: &Path) -> String {
    let server = &app.config.server;
    let scheme = if server.plaintext_loopback { "http" } else { "https" };
    let url = args.metrics_url.clone().unwrap_or_else(|| format!("{scheme}://{}/metrics", server.listen));
    let key_file = args.metrics_key_file.clone().unwrap_or_else(|| root.join("admin.key"));
    let key = match dg_storage::read_text_bounded(&key_file, 4096, dg_storage::Links::Follow) {
        Ok(key) => key.trim().to_string(),
        Err(err) => {
            return format!(
                "# not taken: no key to scrape /metrics with ({}: {err}); give --metrics-key-file\n",
                key_file.display()
            )
        }
    };
    let ca: PathBuf = app.config.tls.as_ref().map_or_else(|| root.join("tls/cert.pem"), |tls| tls.cert_path.clone());
    let mut builder = ureq::AgentBuilder::new().timeout(std::time::Duration::from_secs(10));
    if scheme == "https" {
        match crate::tls_client::client_config(&ca, None) {
            Ok(config) => builder = builder.tls_config(std::sync::Arc::new(config)),
            Err(err) => return format!("# not taken: {err}\n"),
        }
    }
    match builder.build().get(&url).set("authorization", &format!("Bearer {key}")).call() {
        Ok(response) => {
            let mut text = String::new();
            match response.into_reader().take(8 * 1024 * 1024).read_to_string(&mut text) {
                Ok(_) => text,
                Err(err) => format!("# not taken: {err}\n"),
            }
        }
        Err(err) => format!("# not taken: GET {url}: {err}\n"),
    }
}

/// The last lines of the daemon's log (`--log-file`, else the journal), scrubbed.
fn log_tail(args: &SupportBundleArgs) -> String {
    let lines = args.log_lines.unwrap_or(DEFAULT_LOG_LINES);
    let raw = match &args.log_file {
        Some(path) => match dg_storage::read_bounded(path, 256 * 1024 * 1024, dg_storage::Links::Follow) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).to_string(),
            Err(err) => return format!("# not taken: {}: {err}\n", path.display()),
        },
        None => command_output("journalctl", &["-u", "dg-appliance", "-n", &lines.to_string(), "--no-pager"]),
    };
    let all: Vec<&str> = raw.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = String::new();
    let mut in_pem = false;
    for line in &all[start..] {
        if line.contains("-----BEGIN") {
            in_pem = true;
        }
        if in_pem {
            out.push_str("<redacted PEM line>\n");
            if line.contains("-----END") {
                in_pem = false;
            }
            continue;
        }
        out.push_str(&scrub(line));
        out.push('\n');
    }
    out
}

/// A log line with API keys and bearer tokens replaced.
fn scrub(line: &str) -> String {
    line.split_inclusive(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '=' || c == ',')
        .map(|word| {
            let token =
                word.trim_end_matches(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '=' || c == ',');
            let rest = &word[token.len()..];
            let secret = dg_identity::keys::parse(token).is_ok()
                || (token.starts_with("eyJ") && token.matches('.').count() == 2)
                || token.starts_with("dgk_");
            if secret {
                format!("<redacted>{rest}")
            } else {
                word.to_string()
            }
        })
        .collect()
}

fn command_output(program: &str, args: &[&str]) -> String {
    match std::process::Command::new(program).args(args).output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            text.lines().map(scrub).collect::<Vec<_>>().join("\n") + "\n"
        }
        Err(err) => format!("# not taken: {program}: {err}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_tokens_are_scrubbed_from_log_lines() {
        let issued = dg_identity::keys::issue();
        let line = format!(
            "First admin API key: {} and Bearer eyJhbGciOi.eyJzdWIi.c2ln, key=\"{}\"",
            issued.token, issued.token
        );
        let scrubbed = scrub(&line);
        assert!(!scrubbed.contains(&issued.token) && !scrubbed.contains("eyJzdWIi"), "{scrubbed}");
        assert!(scrubbed.starts_with("First admin API key: <redacted> and Bearer <redacted>"), "{scrubbed}");
    }

    #[test]
    fn secret_looking_keys_are_redacted_but_paths_are_kept() {
        let mut value: toml::Value = toml::from_str(
            "[a]\npassword = \"x\"\npassword_file = \"/etc/p\"\n[b]\nclient_secret = \"y\"\nkey_path = \"/k\"",
        )
        .unwrap();
        redact(&mut value);
        let text = toml::to_string(&value).unwrap();
        assert!(
            !text.contains("\"x\"") && !text.contains("\"y\"") && text.contains("/etc/p") && text.contains("/k"),
            "{text}"
        );
    }
}
