#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Runpacks on S3 (`[runpacks] backend = "s3"`) against a real SeaweedFS on loopback: the
//! signed bundle round trip and offline verification, the reference runpacks byte for byte
//! beside the filesystem store, Object Lock (compliance, governance, legal hold) enforced by
//! the server and recorded in the audit entry, hostile names refused before any request,
//! tampering detected, the store killed mid-upload, and encryption (SSE-S3, SSE-C over TLS
//! with the site's CA, and refusal to store plaintext).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use serde_json::{json, Value};

use crate::runpacks::{download, offline_verify, show_public as public_ring};
use crate::support::seaweed::Seaweed;
use crate::support::{binary, sample_spec, Daemon, DaemonOptions};

/// The appliance's `[runpacks]` section for `endpoint`/`bucket`, plus `extra` lines inside
/// `[runpacks.s3]` and any further tables after it.
fn s3_config(endpoint: &str, bucket: &str, credentials: &Path, extra: &str) -> String {
    let default = Command::new(binary()).args(["config", "default"]).output().unwrap().stdout;
    format!(
        "{}\n[runpacks]\nbackend = \"s3\"\n[runpacks.s3]\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\n{}\
         credentials_file = \"{}\"\ntimeout_s = 20\n{extra}\n",
        String::from_utf8(default).unwrap(),
        if extra.contains("prefix = ") { "" } else { "prefix = \"dg\"\n" },
        credentials.display()
    )
}

fn start_daemon(config: String) -> Daemon {
    Daemon::start_with(DaemonOptions { config: Some(config), ..DaemonOptions::default() })
}

/// Defines the sample scenario, starts run `run` in tenant 2 / namespace 3 and ticks it once.
fn seed_run(daemon: &Daemon, scenario: &str, run: &str) {
    daemon.tool("scenario_define", json!({"spec": sample_spec(scenario)})).unwrap();
    start_and_tick(daemon, scenario, run, 2);
}

fn start_and_tick(daemon: &Daemon, scenario: &str, run: &str, tenant: u64) {
    daemon
        .tool(
            "scenario_start",
            json!({"scenario_id": scenario, "run_config": {"tenant_id": tenant, "namespace_id": 3,
            "run_id": run, "scenario_id": scenario, "dispatch_targets": [], "policy_tags": []},
            "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": true}),
        )
        .unwrap();
    daemon
        .tool(
            "scenario_trigger",
            json!({"scenario_id": scenario, "trigger": {"trigger_id": "t", "tenant_id": tenant,
            "namespace_id": 3, "run_id": run, "kind": "tick", "time": {"kind": "logical", "value": 9}, "source_id": "x",
            "payload": null, "correlation_id": null}}),
        )
        .unwrap();
}

fn export(daemon: &Daemon, scenario: &str, tenant: u64, run: &str) -> Result<Value, Value> {
    daemon.tool(
        "runpack_export",
        json!({"scenario_id": scenario, "tenant_id": tenant, "namespace_id": 3, "run_id": run,
            "generated_at": {"kind": "logical", "value": 10}, "include_verification": true}),
    )
}

/// The members of a bundle (not verified: the comparison is the point).
pub(crate) fn members(bundle: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let (_, files) =
        dg_storage::bundle::inspect_unverified(bundle, dg_storage::bundle::BundleLimits::default()).unwrap();
    files
}

fn export_entry(daemon: &Daemon) -> Value {
    crate::authz::audit_entries(daemon)
        .into_iter()
        .rev()
        .find(|entry| entry["action"] == "tool_call" && entry["target"] == "runpack_export" && entry["outcome"] == "ok")
        .expect("an audited export")
}

/// `key=value` from an export's audit reason.
fn detail<'a>(reason: &'a str, key: &str) -> &'a str {
    reason
        .split(' ')
        .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {reason:?}"))
}

#[test]
fn export_download_and_offline_verify_through_s3_and_reference_runpacks_match_the_filesystem_store() {
    let Some(weed) = Seaweed::start() else { return };
    weed.create_bucket("runpacks", false);
    let work = tempfile::tempdir().unwrap();
    let credentials = weed.credentials_file(work.path());
    let s3 = start_daemon(s3_config(&weed.endpoint(), "runpacks", &credentials, ""));
    let fs = Daemon::start();

    // The sample run through both stores.
    for daemon in [&s3, &fs] {
        seed_run(daemon, "s3flow", "r1");
        export(daemon, "s3flow", 2, "r1").unwrap();
    }
    let (status, bundle) = download(&s3, "/runpacks/2/3/r1.tar.zst");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bundle));
    let stored = weed.block_on(weed.client().get_object().bucket("runpacks").key("dg/2/3/r1/runpack.tar.zst").send());
    let stored = weed.block_on(stored.unwrap().body.collect()).unwrap().into_bytes();
    assert_eq!(bundle, stored.to_vec(), "the download is the stored object itself");
    let path = work.path().join("r1.tar.zst");
    std::fs::write(&path, &bundle).unwrap();
    let ring = work.path().join("ring.json");
    public_ring(&s3, &ring);
    let (code, out) = offline_verify(&path, Some(&ring));
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["status"], "pass");
    let verified = s3.tool("runpack_verify", json!({"runpack_dir": "r1", "manifest_path": "manifest.json"})).unwrap();
    assert_eq!(verified["status"], "pass", "{verified}");
    let (_, from_fs) = download(&fs, "/runpacks/2/3/r1.tar.zst");
    let (mut s3_files, mut fs_files) = (members(&bundle), members(&from_fs));
    s3_files.remove("bundle.json");
    fs_files.remove("bundle.json");
    assert_eq!(s3_files, fs_files, "every artifact is byte-identical to the filesystem store's");

    // The reference runpacks, replayed through each store: the artifacts are the fixture's bytes.
    let Some(shared) = crate::support::shared_dir() else { return };
    let golden = shared.join("fixtures/runpacks/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&golden).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    for daemon in [&s3, &fs] {
        daemon.register(1, 1);
    }
    for dir in dirs.iter().filter(|dir| dir.join("manifest.json").is_file()) {
        let spec: Value =
            serde_json::from_slice(&std::fs::read(dir.join("artifacts/scenario_spec.json")).unwrap()).unwrap();
        let triggers: Value =
            serde_json::from_slice(&std::fs::read(dir.join("artifacts/triggers.json")).unwrap()).unwrap();
        let triggers = triggers.as_array().unwrap();
        let last = triggers.last().unwrap()["event"].clone();
        let issue = triggers.first().is_some_and(|t| t["event"]["trigger_id"] == "init");
        let scenario = spec["scenario_id"].as_str().unwrap().to_string();
        let run = last["run_id"].as_str().unwrap().to_string();
        let mut bundles = Vec::new();
        for daemon in [&s3, &fs] {
            daemon.tool("scenario_define", json!({"spec": spec})).unwrap();
            daemon
                .tool(
                    "scenario_start",
                    json!({"scenario_id": scenario, "run_config": {"tenant_id": 1, "namespace_id": 1,
                    "run_id": run, "scenario_id": scenario, "dispatch_targets": [], "policy_tags": []},
                    "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": issue}),
                )
                .unwrap();
            daemon.tool("scenario_trigger", json!({"scenario_id": scenario, "trigger": last})).unwrap();
            daemon
                .tool(
                    "runpack_export",
                    json!({"scenario_id": scenario, "tenant_id": 1, "namespace_id": 1, "run_id": run,
                    "generated_at": {"kind": "logical", "value": 10}, "include_verification": true}),
                )
                .unwrap();
            let (status, bundle) = download(daemon, &format!("/runpacks/1/1/{run}.tar.zst"));
            assert_eq!(status, 200);
            bundles.push(members(&bundle));
        }
        let expected_manifest = std::fs::read(dir.join("manifest.json")).unwrap();
        for files in &bundles {
            assert_eq!(files["manifest.json"], expected_manifest, "{}: manifest", dir.display());
            for (name, bytes) in files.iter().filter(|(name, _)| name.starts_with("artifacts/")) {
                assert_eq!(&std::fs::read(dir.join(name)).unwrap(), bytes, "{}: {name}", dir.display());
            }
        }
        assert_eq!(bundles[0], bundles[1], "{}: S3 and filesystem bundles hold the same bytes", dir.display());
    }
}

#[test]
fn object_lock_is_enforced_by_the_server_and_recorded_in_the_audit_entry() {
    let Some(weed) = Seaweed::start() else { return };
    weed.create_bucket("worm", true);
    let work = tempfile::tempdir().unwrap();
    let credentials = weed.credentials_file(work.path());
    let daemon = start_daemon(s3_config(
        &weed.endpoint(),
        "worm",
        &credentials,
        "[runpacks.s3.object_lock]\nmode = \"compliance\"\nretention_days = 1\n\
         [runpacks.s3.tenant_object_lock.5]\nmode = \"governance\"\nretention_days = 1\n\
         [runpacks.s3.tenant_object_lock.6]\nlegal_hold = true\n",
    ));
    let client = weed.client();
    daemon.tool("scenario_define", json!({"spec": sample_spec("worm")})).unwrap();
    let mut versions = Vec::new();
    for tenant in [2u64, 5, 6] {
        if tenant != 2 {
            daemon.register(tenant, 3);
            let mut spec = sample_spec("worm");
            spec["default_tenant_id"] = json!(tenant);
            daemon.tool("scenario_define", json!({"spec": spec})).unwrap();
        }
        start_and_tick(&daemon, "worm", "r1", tenant);
        export(&daemon, "worm", tenant, "r1").unwrap();
        let entry = export_entry(&daemon);
        let reason = entry["reason"].as_str().unwrap().to_string();
        let key = format!("dg/{tenant}/3/r1/runpack.tar.zst");
        assert_eq!(detail(&reason, "bucket"), "worm");
        assert_eq!(detail(&reason, "key"), key);
        let head = weed.block_on(client.head_object().bucket("worm").key(&key).send()).unwrap();
        let version = head.version_id.clone().unwrap();
        assert_eq!(detail(&reason, "version_id"), version, "the audit entry names the stored version");
        match tenant {
            2 | 5 => {
                let mode = if tenant == 2 { "COMPLIANCE" } else { "GOVERNANCE" };
                assert_eq!(detail(&reason, "retention"), mode);
                assert_eq!(head.object_lock_mode.as_ref().map(|m| m.as_str()), Some(mode));
                let until = head.object_lock_retain_until_date.unwrap();
                let audited = detail(&reason, "retain_until");
                let stored = until.fmt(aws_smithy_types::date_time::Format::DateTime).unwrap();
                assert_eq!(audited, stored, "the audit entry carries the retention date the server holds");
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
                assert!((until.secs() - now - 86_400).abs() < 600, "retention_days = 1 → a day from now");
            }
            _ => {
                assert_eq!(detail(&reason, "legal_hold"), "on");
                assert_eq!(head.object_lock_legal_hold_status, Some(aws_sdk_s3::types::ObjectLockLegalHoldStatus::On));
            }
        }
        versions.push((tenant, key, version));
    }
    for (tenant, key, version) in &versions {
        let delete = |bypass: bool| {
            weed.block_on(
                client
                    .delete_object()
                    .bucket("worm")
                    .key(key)
                    .version_id(version)
                    .bypass_governance_retention(bypass)
                    .send(),
            )
            .is_ok()
        };
        let original = weed.block_on(client.get_object().bucket("worm").key(key).version_id(version).send()).unwrap();
        let original = weed.block_on(original.body.collect()).unwrap().into_bytes();
        // Deleting the locked version: refused, with or without bypass-governance
        // (governance mode yields only to an explicit bypass, tested last).
        assert!(!delete(false), "tenant {tenant}: delete without bypass was allowed");
        if *tenant != 5 {
            assert!(!delete(true), "tenant {tenant}: delete with bypass-governance was allowed");
        }
        // An overwrite stores a new version beside the locked one; the locked bytes stay.
        weed.block_on(client.put_object().bucket("worm").key(key).body(ByteStream::from_static(b"overwrite")).send())
            .unwrap();
        let kept = weed.block_on(client.get_object().bucket("worm").key(key).version_id(version).send()).unwrap();
        assert_eq!(weed.block_on(kept.body.collect()).unwrap().into_bytes(), original, "tenant {tenant}");
        if *tenant == 5 {
            assert!(delete(true), "governance yields to an explicit bypass (the difference to compliance)");
        }
    }
}

#[test]
fn a_bucket_without_object_lock_or_encryption_is_refused_at_start() {
    let Some(weed) = Seaweed::start() else { return };
    weed.create_bucket("plain", false);
    let work = tempfile::tempdir().unwrap();
    let credentials = weed.credentials_file(work.path());
    for (extra, expected) in [
        ("[runpacks.s3.object_lock]\nmode = \"compliance\"\nretention_days = 1\n", "does not have Object Lock enabled"),
        ("require_encryption = true\n", "would encrypt runpacks"),
        ("", "no such bucket"),
    ] {
        let bucket = if extra.is_empty() { "missing" } else { "plain" };
        let config = work.path().join("config.toml");
        std::fs::write(&config, s3_config(&weed.endpoint(), bucket, &credentials, extra)).unwrap();
        let stderr = refused_start(&config);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// A TCP relay in front of the store that counts connections and bytes sent upstream, and
/// can run `on_upstream_bytes` once when more than a threshold has gone up.
struct Relay {
    port: u16,
    connections: Arc<AtomicU64>,
}

impl Relay {
    fn start(upstream: u16, trip: Option<(u64, Box<dyn Fn() + Send + Sync>)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicU64::new(0));
        let counted = connections.clone();
        let sent = Arc::new(AtomicU64::new(0));
        let trip = Arc::new(trip.map(|(limit, action)| (limit, action, std::sync::Once::new())));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(client) = stream else { break };
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let (client_read, server_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (sent, trip) = (sent.clone(), trip.clone());
                std::thread::spawn(move || pump(client_read, server_write, Some((sent, trip))));
                std::thread::spawn(move || pump(server, client, None));
            }
        });
        Self { port, connections }
    }
}

type Trip = Arc<Option<(u64, Box<dyn Fn() + Send + Sync>, std::sync::Once)>>;

fn pump(mut from: TcpStream, mut to: TcpStream, upstream: Option<(Arc<AtomicU64>, Trip)>) {
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((sent, trip)) = &upstream {
            let total = sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if let Some((limit, action, once)) = trip.as_ref() {
                if total > *limit {
                    once.call_once(action);
                }
            }
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

#[test]
fn hostile_names_are_refused_before_any_request_reaches_the_store() {
    let Some(weed) = Seaweed::start() else { return };
    weed.create_bucket("runpacks", false);
    let relay = Relay::start(weed.s3_port, None);
    let work = tempfile::tempdir().unwrap();
    let credentials = weed.credentials_file(work.path());
    let endpoint = format!("http://127.0.0.1:{}", relay.port);
    let daemon = start_daemon(s3_config(&endpoint, "runpacks", &credentials, ""));
    seed_run(&daemon, "hostile", "r1");
    let before = relay.connections.load(Ordering::SeqCst);
    assert!(before >= 1, "the start-up check went through the relay");
    // The filesystem store's corpus (tests/system/runpack_names.rs, storage/tests/runpack_store.rs).
    let long = "x".repeat(300);
    let corpus = [
        "../escape",
        "a/../../b",
        "",
        "a//b",
        ".",
        "..",
        "a\0b",
        long.as_str(),
        ".staging-1",
        "a\\..\\b",
        "a\nb",
        "\u{202E}gpj.exe",
        "ok/./x",
    ];
    // Idle pooled connections are not requests: wait until nothing is in flight, then count.
    std::thread::sleep(Duration::from_millis(200));
    let before = relay.connections.load(Ordering::SeqCst);
    for name in corpus {
        let refused = daemon.tool(
            "runpack_export",
            json!({"scenario_id": "hostile", "tenant_id": 2, "namespace_id": 3, "run_id": "r1", "output_dir": name,
                "generated_at": {"kind": "logical", "value": 10}, "include_verification": false}),
        );
        assert!(refused.is_err(), "export to {name:?} was accepted");
        let refused = daemon.tool(
            "runpack_verify",
            json!({"runpack_dir": name, "manifest_path": "manifest.json", "tenant_id": 2, "namespace_id": 3}),
        );
        assert!(refused.is_err(), "verify of {name:?} was accepted");
    }
    for path in ["/runpacks/2/3/..%2Fx.tar.zst", "/runpacks/2/3/a%00b.tar.zst", "/runpacks/2/3/.staging-1.tar.zst"] {
        let (status, _) = download(&daemon, path);
        assert!(status >= 400, "{path} answered {status}");
    }
    assert_eq!(relay.connections.load(Ordering::SeqCst), before, "a hostile name reached the store");
    // The relay does carry real requests: a good name goes through.
    export(&daemon, "hostile", 2, "r1").unwrap();
    assert!(relay.connections.load(Ordering::SeqCst) > before || before > 0);
    let (status, _) = download(&daemon, "/runpacks/2/3/r1.tar.zst");
    assert_eq!(status, 200);
}

#[test]
fn a_bundle_altered_in_the_bucket_is_detected_on_download_and_on_verify() {
    let Some(weed) = Seaweed::start() else { return };
    weed.create_bucket("runpacks", true);
    let work = tempfile::tempdir().unwrap();
    let credentials = weed.credentials_file(work.path());
    let daemon = start_daemon(s3_config(&weed.endpoint(), "runpacks", &credentials, ""));
    seed_run(&daemon, "tamper", "r1");
    export(&daemon, "tamper", 2, "r1").unwrap();
    let client = weed.client();
    let key = "dg/2/3/r1/runpack.tar.zst";
    let object = weed.block_on(client.get_object().bucket("runpacks").key(key).send()).unwrap();
    let mut bytes = weed.block_on(object.body.collect()).unwrap().into_bytes().to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    // One byte changed, written as a new version through the store's own API.
    weed.block_on(client.put_object().bucket("runpacks").key(key).body(ByteStream::from(bytes)).send()).unwrap();
    let (status, body) = download(&daemon, "/runpacks/2/3/r1.tar.zst");
    let body = String::from_utf8_lossy(&body).to_string();
    assert!(status >= 400, "an altered bundle was served ({status})");
    assert!(body.contains("integrity"), "{body}");
    let refused =
        daemon.tool("runpack_verify", json!({"runpack_dir": "r1", "manifest_path": "manifest.json"})).unwrap_err();
    assert!(refused.to_string().contains("integrity"), "{refused}");
}

/// A run whose runpack is larger than one 5 MiB part: ticks with incompressible payloads.
fn seed_large_run(daemon: &Daemon, scenario: &str, run: &str) {
    use rand::RngCore as _;
    // The gate waits for a time no tick reaches: every tick is recorded.
    let mut spec = sample_spec(scenario);
    spec["conditions"][0]["query"]["params"]["timestamp"] = json!(1_000_000);
    daemon.tool("scenario_define", json!({"spec": spec})).unwrap();
    daemon
        .tool(
            "scenario_start",
            json!({"scenario_id": scenario, "run_config": {"tenant_id": 2, "namespace_id": 3,
            "run_id": run, "scenario_id": scenario, "dispatch_targets": [], "policy_tags": []},
            "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false}),
        )
        .unwrap();
    let mut noise = vec![0u8; 600 * 1024];
    for tick in 0..12u64 {
        rand::thread_rng().fill_bytes(&mut noise);
        let payload = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &noise);
        daemon
            .tool("scenario_trigger", json!({"scenario_id": scenario, "trigger": {"trigger_id": format!("t{tick}"),
                "tenant_id": 2, "namespace_id": 3, "run_id": run, "kind": "tick",
                "time": {"kind": "logical", "value": 2 + tick}, "source_id": "x", "payload": {"kind": "json", "value": {"noise": payload}},
                "correlation_id": null}}))
            .unwrap();
    }
}

#[test]
fn the_store_killed_mid_upload_fails_retryably_leaves_nothing_visible_and_a_retry_succeeds() {
    let Some(mut weed) = Seaweed::start() else { return };
    weed.create_bucket("runpacks", false);
    let pid = weed.pid();
    // Once 5.5 MiB have gone up (inside the second part), the server is killed.
    let kill: Box<dyn Fn() + Send + Sync> = Box::new(move || {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::Kill);
    });
    let relay = Relay::start(weed.s3_port, Some((5 * 1024 * 1024 + 512 * 1024, kill)));
    let work = tempfile::tempdir().unwrap();
    let credentials = weed.credentials_file(work.path());
    let endpoint = format!("http://127.0.0.1:{}", relay.port);
    let daemon = start_daemon(s3_config(&endpoint, "runpacks", &credentials, "part_size_mib = 5\n"));
    seed_large_run(&daemon, "large", "big");
    let started = Instant::now();
    let failed = match export(&daemon, "large", 2, "big") {
        Err(failed) => failed,
        Ok(_) => {
            let head =
                weed.block_on(weed.client().head_object().bucket("runpacks").key("dg/2/3/big/runpack.tar.zst").send());
            panic!("the export survived the store's death: {:?} bytes stored", head.map(|h| h.content_length));
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(failed["data"]["retryable"], true, "{failed}");
    assert!(failed.to_string().contains("unavailable"), "{failed}");
    assert!(elapsed < Duration::from_secs(20 + 5), "the export took {elapsed:?}, past its 20 s timeout");
    weed.reap();
    weed.launch();
    let client = weed.client();
    let listed = weed.block_on(client.list_objects_v2().bucket("runpacks").prefix("dg/").send()).unwrap();
    assert!(listed.contents().is_empty(), "a partial object is visible: {:?}", listed.contents());
    // The retry succeeds (the relay's trip has fired once), and no unfinished upload is left.
    let exported = export(&daemon, "large", 2, "big").unwrap();
    assert!(exported["storage_uri"].as_str().unwrap().ends_with("/big/"));
    let uploads = weed.block_on(client.list_multipart_uploads().bucket("runpacks").send()).unwrap();
    assert!(uploads.uploads().is_empty(), "unfinished uploads left: {:?}", uploads.uploads());
    let head = weed.block_on(client.head_object().bucket("runpacks").key("dg/2/3/big/runpack.tar.zst").send()).unwrap();
    assert!(head.content_length.unwrap() > 5 * 1024 * 1024, "the bundle went up in parts");
    let (status, bundle) = download(&daemon, "/runpacks/2/3/big.tar.zst");
    assert_eq!(status, 200);
    let path = work.path().join("big.tar.zst");
    std::fs::write(&path, &bundle).unwrap();
    let ring = work.path().join("ring.json");
    public_ring(&daemon, &ring);
    assert_eq!(offline_verify(&path, Some(&ring)).0, 0);
    // Idempotent: exporting again stores no new version.
    let versions = |weed: &Seaweed| {
        weed.block_on(client.list_object_versions().bucket("runpacks").prefix("dg/").send()).unwrap().versions().len()
    };
    let count = versions(&weed);
    export(&daemon, "large", 2, "big").unwrap();
    assert_eq!(versions(&weed), count, "a retried export wrote again");
}

/// A CA and a server certificate for 127.0.0.1, written as PEM files in `dir`.
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "dg test site CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]))];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (dir.join("ca.pem"), dir.join("s3.pem"), dir.join("s3.key"));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[test]
fn sse_s3_and_sse_c_over_tls_are_reported_by_the_store() {
    let work = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(work.path());
    let Some(weed) = Seaweed::start_with_tls(&cert, &key) else { return };
    weed.create_bucket("sealed", false);
    let credentials = weed.credentials_file(work.path());
    let customer = work.path().join("sse-c.key");
    std::fs::write(&customer, base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [42u8; 32])).unwrap();
    std::fs::set_permissions(&customer, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let https = weed.https_endpoint();
    let sse_s3 = start_daemon(s3_config(
        &https,
        "sealed",
        &credentials,
        &format!(
            "ca_file = \"{}\"\nrequire_encryption = true\n[runpacks.s3.encryption]\nmode = \"sse-s3\"\n",
            ca.display()
        ),
    ));
    seed_run(&sse_s3, "sealed", "a");
    export(&sse_s3, "sealed", 2, "a").unwrap();
    assert!(export_entry(&sse_s3)["reason"].as_str().unwrap().contains("encryption=AES256"));
    let client = weed.client();
    let head = weed.block_on(client.head_object().bucket("sealed").key("dg/2/3/a/runpack.tar.zst").send()).unwrap();
    assert_eq!(head.server_side_encryption, Some(aws_sdk_s3::types::ServerSideEncryption::Aes256));
    let (status, _) = download(&sse_s3, "/runpacks/2/3/a.tar.zst");
    assert_eq!(status, 200);

    let sse_c = start_daemon(s3_config(
        &https,
        "sealed",
        &credentials,
        &format!(
            "ca_file = \"{}\"\nprefix = \"c\"\nrequire_encryption = true\n[runpacks.s3.encryption]\nmode = \"sse-c\"\ncustomer_key_file = \"{}\"\n",
            ca.display(),
            customer.display()
        ),
    ));
    seed_run(&sse_c, "sealed", "b");
    export(&sse_c, "sealed", 2, "b").unwrap();
    let key_name = "c/2/3/b/runpack.tar.zst";
    // Without the customer key the store will not even describe the object.
    let refused = weed.block_on(client.get_object().bucket("sealed").key(key_name).send());
    assert!(refused.is_err(), "an SSE-C object was served without its key");
    let (status, bundle) = download(&sse_c, "/runpacks/2/3/b.tar.zst");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bundle));
    assert!(export_entry(&sse_c)["reason"].as_str().unwrap().contains("encryption=sse-c:AES256"));

    // A CA the store's certificate does not chain to: refused at start.
    let (other_ca, _, _) = test_ca(&work.path().join("other").tap_create());
    let config = work.path().join("wrong-ca.toml");
    std::fs::write(
        &config,
        s3_config(&https, "sealed", &credentials, &format!("ca_file = \"{}\"\n", other_ca.display())),
    )
    .unwrap();
    let stderr = refused_start(&config);
    assert!(stderr.contains("bucket sealed"), "{stderr}");
}

/// Starts `serve` with `config` and expects it to refuse: its stderr (bounded wait).
fn refused_start(config: &Path) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .arg("serve")
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", crate::support::free_port()))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            crate::support::stop_by_pid(&mut child, Duration::from_secs(5));
            panic!("the daemon started with {}", config.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    stderr
}

trait TapCreate {
    fn tap_create(self) -> Self;
}

impl TapCreate for PathBuf {
    fn tap_create(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
