//! Signing keys in an HSM token, against a real PKCS#11 module: Debian's SoftHSM2 with a
//! token directory of the test's own (`SOFTHSM2_CONF`). A runpack and a backup signed by a
//! token key, a key rotation made in the token, both verified offline with nothing but the
//! public ring; the private keys sensitive and never extractable; no key file written; a
//! wrong PIN and a missing token refused at start with a clear message. The daemon reaches
//! the token through its helper (`dg-appliance-pkcs11`, built beside the test binary).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use serde_json::{json, Value};

use crate::support::{binary, free_port, sample_spec, Daemon, DaemonOptions};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "246810";

/// A SoftHSM2 token in a temporary directory.
struct Token {
    dir: tempfile::TempDir,
    conf: PathBuf,
    pin_file: PathBuf,
}

impl Token {
    fn new(label: &str) -> Self {
        assert!(Path::new(MODULE).exists(), "the HSM tests need Debian's softhsm2 (.ci/run installs it)");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", "135791"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let pin_file = dir.path().join("pin");
        write_secret(&pin_file, PIN);
        Self { dir, conf, pin_file }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![("SOFTHSM2_CONF".to_string(), self.conf.display().to_string())]
    }

    fn config(&self, label: &str, pin_file: &Path) -> String {
        format!(
            "{}\n[signing]\nbackend = \"pkcs11\"\n[signing.pkcs11]\nmodule = \"{MODULE}\"\ntoken_label = \"{label}\"\npin_file = \"{}\"\nhelper = \"{}\"\n",
            dg_appliance::config::DEFAULT_CONFIG,
            pin_file.display(),
            helper().display()
        )
    }

    /// Every private key in the token: (CKA_ID as text, sensitive, extractable,
    /// never-extractable, whether its value can be read).
    fn private_keys(&self) -> Vec<(String, bool, bool, bool, bool)> {
        std::env::set_var("SOFTHSM2_CONF", &self.conf);
        let context = Pkcs11::new(MODULE).unwrap();
        context.initialize(CInitializeArgs::OsThreads).unwrap();
        let slot = context.get_slots_with_token().unwrap()[0];
        let session = context.open_ro_session(slot).unwrap();
        session.login(UserType::User, Some(&AuthPin::new(PIN.to_string()))).unwrap();
        let keys = session.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]).unwrap();
        keys.into_iter()
            .map(|key| {
                let attributes = session
                    .get_attributes(
                        key,
                        &[
                            AttributeType::Id,
                            AttributeType::Sensitive,
                            AttributeType::Extractable,
                            AttributeType::NeverExtractable,
                        ],
                    )
                    .unwrap();
                let mut row = (String::new(), false, true, false, false);
                for attribute in attributes {
                    match attribute {
                        Attribute::Id(id) => row.0 = String::from_utf8_lossy(&id).into_owned(),
                        Attribute::Sensitive(v) => row.1 = v,
                        Attribute::Extractable(v) => row.2 = v,
                        Attribute::NeverExtractable(v) => row.3 = v,
                        _ => {}
                    }
                }
                row.4 = session.get_attributes(key, &[AttributeType::Value]).is_ok_and(|v| !v.is_empty());
                row
            })
            .collect()
    }
}

/// The helper the workspace build made (cargo builds it for its own integration test),
/// beside this test binary's directory: target/<profile>/dg-appliance-pkcs11.
fn helper() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let helper = exe.parent().and_then(Path::parent).unwrap().join("dg-appliance-pkcs11");
    assert!(helper.is_file(), "{} is missing: cargo test --workspace builds it", helper.display());
    helper
}

fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn cli(args: &[&str], extra: &[&Path], token: &Token) -> std::process::Output {
    let mut command = Command::new(binary());
    command.args(args);
    for path in extra {
        command.arg(path);
    }
    command.envs(token.env()).output().unwrap()
}

fn ring(daemon_data: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(daemon_data.join("keys/keyring.json")).unwrap()).unwrap()
}

fn export_and_download(daemon: &Daemon, run: &str, into: &Path) -> PathBuf {
    let start = json!({"scenario_id": "hsm", "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": run,
        "scenario_id": "hsm", "dispatch_targets": [], "policy_tags": []},
        "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false});
    daemon.tool("scenario_start", start).unwrap();
    let export = json!({"scenario_id": "hsm", "tenant_id": 2, "namespace_id": 3, "run_id": run,
        "generated_at": {"kind": "logical", "value": 10}, "include_verification": false});
    daemon.tool("runpack_export", export).unwrap();
    let response = daemon
        .agent
        .get(&format!("{}/runpacks/2/3/{run}.tar.zst", daemon.base))
        .set("authorization", &format!("Bearer {}", daemon.key))
        .call()
        .unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).unwrap();
    let path = into.join(format!("{run}.tar.zst"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn verify_bundle(bundle: &Path, ring_file: &Path) -> Value {
    let out = Command::new(binary())
        .args(["runpack", "verify", "--json", "--pubkey"])
        .arg(ring_file)
        .arg(bundle)
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn runpacks_and_backups_are_signed_in_the_token_rotated_there_and_verified_with_the_ring_alone() {
    let token = Token::new("dg-test");
    let config = token.config("dg-test", &token.pin_file);
    let mut daemon =
        Daemon::start_with(DaemonOptions { config: Some(config.clone()), env: token.env(), ..Default::default() });
    let data = daemon.data_dir();
    assert!(!data.join("keys/active.key").exists(), "no private key file with the pkcs11 backend");
    let first = ring(&data)["keys"][0]["key_id"].as_str().unwrap().to_string();
    daemon.tool("scenario_define", json!({"spec": sample_spec("hsm")})).unwrap();
    let work = tempfile::tempdir().unwrap();
    let bundle_one = export_and_download(&daemon, "hsm-1", work.path());
    let ring_file = work.path().join("ring.json");
    std::fs::copy(data.join("keys/keyring.json"), &ring_file).unwrap();
    let report = verify_bundle(&bundle_one, &ring_file);
    assert_eq!(report["key_id"], first.as_str(), "{report}");

    // A backup taken while the daemon runs, signed in the token by the CLI's own session.
    let config_file = work.path().join("config.toml");
    std::fs::write(&config_file, &config).unwrap();
    let usb = work.path().join("usb");
    std::fs::create_dir(&usb).unwrap();
    let out = cli(
        &["backup", "create", "--to"],
        &[&usb, Path::new("--data-dir"), &data, Path::new("--config"), &config_file],
        &token,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let backup = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());

    // Rotation makes the new key in the token.
    assert!(daemon.terminate(Duration::from_secs(20)).is_some());
    let out = cli(&["keys", "rotate", "--data-dir"], &[&data, Path::new("--config"), &config_file], &token);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keys = ring(&data)["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    let second = keys[1]["key_id"].as_str().unwrap().to_string();
    assert!(keys[0]["retired_at_ms"].is_i64() && keys[1]["retired_at_ms"].is_null());
    // The offline export signs in the token too, with its active key; without the
    // configuration that names the token it refuses (there is no key file to use).
    let offline = work.path().join("offline.tar.zst");
    let export = ["runpack", "export", "--tenant", "2", "--namespace", "3", "--run-id", "hsm-1", "--out"];
    let out = cli(&export, &[&offline, Path::new("--data-dir"), &data, Path::new("--config"), &config_file], &token);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::copy(data.join("keys/keyring.json"), &ring_file).unwrap();
    assert_eq!(verify_bundle(&offline, &ring_file)["key_id"], second.as_str());
    let out = cli(&export, &[&work.path().join("refused.tar.zst"), Path::new("--data-dir"), &data], &token);
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && refused.contains("no active.key") && refused.contains("--config"), "{refused}");
    // A configuration naming another token (one that does not hold the ring's active key)
    // is refused, and no key is made there: the ring stays as it was.
    let other = Token::new("dg-other");
    let other_config = work.path().join("other.toml");
    std::fs::write(&other_config, other.config("dg-other", &other.pin_file)).unwrap();
    let ring_before = std::fs::read(data.join("keys/keyring.json")).unwrap();
    let out = cli(
        &export,
        &[&work.path().join("other.tar.zst"), Path::new("--data-dir"), &data, Path::new("--config"), &other_config],
        &other,
    );
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && refused.contains(&format!("active key {second} is not in")), "{refused}");
    assert!(other.private_keys().is_empty(), "no key made in the other token");
    assert_eq!(std::fs::read(data.join("keys/keyring.json")).unwrap(), ring_before, "the ring is unchanged");
    let dir = daemon.into_dir();
    let daemon = Daemon::start_with(DaemonOptions {
        config: Some(config),
        env: token.env(),
        dir: Some(dir),
        bare: true,
        ..Default::default()
    });
    let bundle_two = export_and_download(&daemon, "hsm-2", work.path());
    std::fs::copy(data.join("keys/keyring.json"), &ring_file).unwrap();
    assert_eq!(verify_bundle(&bundle_two, &ring_file)["key_id"], second.as_str());
    assert_eq!(verify_bundle(&bundle_one, &ring_file)["key_id"], first.as_str(), "the old bundle still verifies");
    let out = Command::new(binary())
        .args(["backup", "verify", "--json", "--pubkey"])
        .arg(&ring_file)
        .arg(&backup)
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // The keys are in the token, sensitive and never extractable; none is a file.
    let held = token.private_keys();
    assert_eq!(held.len(), 2, "{held:?}");
    for (id, sensitive, extractable, never_extractable, readable) in &held {
        assert!([first.as_str(), second.as_str()].contains(&id.as_str()), "{id}");
        assert!(*sensitive && !*extractable && *never_extractable && !*readable, "{id}: {held:?}");
    }
    assert!(!data.join("keys/active.key").exists());
    let files: Vec<String> = std::fs::read_dir(data.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["keyring.json"], "only the public ring is in the key directory");
}

/// Starts `serve` and waits (at most 30 s) for it to exit; returns (exit code, stderr, the
/// directory holding its data directory `data`).
fn refused_start(config: &str, token: &Token) -> (Option<i32>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.toml");
    std::fs::write(&config_file, config).unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&config_file)
        .envs(token.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon started although it should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr, dir)
}

#[test]
fn a_wrong_pin_and_a_missing_token_refuse_the_start_and_write_no_key() {
    let token = Token::new("dg-test");
    let wrong = token.dir.path().join("wrong-pin");
    write_secret(&wrong, "000000");
    let (code, said, dir) = refused_start(&token.config("dg-test", &wrong), &token);
    assert_ne!(code, Some(0));
    assert!(said.contains("login refused") && said.contains("pin_file"), "{said}");
    let keys = dir.path().join("data/keys");
    assert!(!keys.join("active.key").exists() && !keys.join("keyring.json").exists());
    let (code, said, dir) = refused_start(&token.config("not-there", &token.pin_file), &token);
    assert_ne!(code, Some(0));
    assert!(said.contains("no PKCS#11 token labelled \"not-there\""), "{said}");
    assert!(!dir.path().join("data/keys/active.key").exists());
    // A PIN file others may read is refused before the token is asked.
    let open = token.dir.path().join("open-pin");
    std::fs::write(&open, PIN).unwrap();
    let (code, said, _) = refused_start(&token.config("dg-test", &open), &token);
    assert_ne!(code, Some(0));
    assert!(said.contains("chmod 600"), "{said}");
}
