#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance (issue 6): a backup taken under load restores to a consistent prefix that
//! passes `store check`; the corruption matrix is detected by `backup verify` and refused
//! by `restore` with distinct exit codes; SIGKILL at each restore step leaves a data
//! directory the appliance starts on; the restored appliance serves the same runs,
//! scenarios, schemas and runpacks.

use crate::support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dg_storage::backup::Index;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::{binary, sample_spec, Client, Daemon, DaemonOptions};

const CORRUPT: i32 = 10;
const WRONG_KEY: i32 = 11;
const INCOMPLETE: i32 = 12;
const UNREADABLE: i32 = 13;
const WRONG_PASSPHRASE: i32 = 14;

fn start_args(run_id: &str) -> Value {
    json!({"scenario_id": "bk", "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": run_id, "scenario_id": "bk",
           "dispatch_targets": [], "policy_tags": []}, "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false})
}

fn run_cli(args: &[&str], extra: &[&Path]) -> Output {
    let mut command = Command::new(binary());
    command.args(args);
    for path in extra {
        command.arg(path);
    }
    command.output().unwrap()
}

/// `backup create` of a data directory; returns the new backup directory.
fn create(data: &Path, to: &Path, part_size: u64) -> PathBuf {
    let out = Command::new(binary())
        .args(["backup", "create", "--part-size", &part_size.to_string(), "--to"])
        .arg(to)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn ring_of(data: &Path, into: &Path) -> PathBuf {
    let ring = into.join("ring.json");
    std::fs::write(&ring, run_cli(&["keys", "show-public", "--data-dir"], &[data]).stdout).unwrap();
    ring
}

fn verify_code(backup: &Path, ring: &Path) -> i32 {
    let out = Command::new(binary())
        .args(["backup", "verify", "--json", "--pubkey"])
        .arg(ring)
        .arg(backup)
        .env_clear()
        .output()
        .unwrap();
    out.status.code().unwrap()
}

fn restore_code(backup: &Path, ring: &Path, data: &Path) -> i32 {
    let out = Command::new(binary())
        .args(["backup", "restore", "--force", "--pubkey"])
        .arg(ring)
        .arg(backup)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    out.status.code().unwrap()
}

fn digest_tree(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap().path();
            if entry.is_dir() {
                stack.push(entry);
            } else {
                let name = entry.strip_prefix(dir).unwrap().to_string_lossy().to_string();
                out.push((name, hex::encode(Sha256::digest(std::fs::read(&entry).unwrap()))));
            }
        }
    }
    out.sort();
    out
}

/// A daemon with a scenario, a few runs, a schema and an exported runpack.
fn populated() -> Daemon {
    let daemon = Daemon::start();
    daemon.tool("scenario_define", json!({"spec": sample_spec("bk")})).unwrap();
    for n in 0..5 {
        daemon.tool("scenario_start", start_args(&format!("seed-{n}"))).unwrap();
    }
    daemon
        .tool(
            "schemas_register",
            json!({"record": {"tenant_id": 2, "namespace_id": 3, "schema_id": "shape", "version": "1",
            "schema": {"type": "object"}, "description": "d", "created_at": {"kind": "unix_millis", "value": 1}}}),
        )
        .unwrap();
    daemon
        .tool(
            "runpack_export",
            json!({"scenario_id": "bk", "tenant_id": 2, "namespace_id": 3, "run_id": "seed-0",
            "generated_at": {"kind": "logical", "value": 3}, "include_verification": true}),
        )
        .unwrap();
    daemon
}

fn status(daemon: &Daemon, run_id: &str) -> Result<Value, Value> {
    daemon.tool(
        "scenario_status",
        json!({"scenario_id": "bk", "request": {"run_id": run_id, "tenant_id": 2, "namespace_id": 3,
        "requested_at": {"kind": "logical", "value": 2}, "correlation_id": null}}),
    )
}

#[test]
fn a_backup_under_load_restores_a_consistent_prefix_that_serves_the_same_data() {
    let daemon = populated();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        let client = Client::new(&daemon.base, &daemon.key, &daemon.data_dir().join("tls/cert.pem"));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("load-{n}");
                if let Some(Ok(_)) = client.tool("scenario_start", start_args(&id)) {
                    acknowledged.lock().unwrap().push(id);
                }
                n += 1;
            }
        })
    };
    while acknowledged.lock().unwrap().len() < 30 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let usb = tempfile::tempdir().unwrap();
    let before_backup = acknowledged.lock().unwrap().len();
    let backup = create(&daemon.data_dir(), usb.path(), 4096);
    let after_backup = acknowledged.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > after_backup, "writes continued during and after the backup");
    let ring = ring_of(&daemon.data_dir(), usb.path());
    assert_eq!(verify_code(&backup, &ring), 0);
    let parts = std::fs::read_dir(&backup)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("part-"))
        .count();
    assert!(parts > 1, "small part size splits the archive: {parts}");

    // Restore into a fresh directory on "another machine" and start the appliance on it.
    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    let out = Command::new(binary())
        .args(["backup", "restore", "--pubkey"])
        .arg(&ring)
        .arg(&backup)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let check = run_cli(&["store", "check", "--data-dir"], &[&data]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    // Without --include-secrets the API keys' hashes come back but not the admin.key file:
    // the operator still holds the token.
    std::fs::copy(daemon.data_dir().join("admin.key"), data.join("admin.key")).unwrap();
    let restored = Daemon::start_with(DaemonOptions { dir: Some(target), ..Default::default() });

    // A consistent prefix: every write acknowledged before the backup began is there,
    // and what is there is a prefix of the acknowledged order (the writer is sequential).
    let present: Vec<bool> = acknowledged.iter().map(|id| status(&restored, id).is_ok()).collect();
    let prefix = present.iter().take_while(|p| **p).count();
    assert!(present[prefix..].iter().all(|p| !p), "holes in the restored writes: {present:?}");
    assert!(prefix >= before_backup, "{prefix} < {before_backup}");
    assert!(prefix <= after_backup + 1, "the snapshot cannot hold writes acknowledged after it finished");

    // The same scenarios, schemas, runs and runpacks as the source.
    for (tool, args) in [
        ("scenarios_list", json!({"tenant_id": 2, "namespace_id": 3})),
        ("schemas_list", json!({"tenant_id": 2, "namespace_id": 3, "limit": 10})),
        ("schemas_get", json!({"tenant_id": 2, "namespace_id": 3, "schema_id": "shape", "version": "1"})),
        ("runpack_verify", json!({"runpack_dir": "2/3/seed-0", "manifest_path": "manifest.json"})),
    ] {
        assert_eq!(restored.tool(tool, args.clone()).unwrap(), daemon.tool(tool, args).unwrap(), "{tool}");
    }
    for n in 0..5 {
        let id = format!("seed-{n}");
        assert_eq!(status(&restored, &id).unwrap(), status(&daemon, &id).unwrap());
    }
    assert_eq!(
        digest_tree(&restored.data_dir().join("runpacks")),
        digest_tree(&daemon.data_dir().join("runpacks")),
        "runpack files are identical"
    );
    let (code, _) = restored.get_authed("/runpacks/2/3/seed-0.tar.zst");
    assert_eq!(code, 200);
    let audit = run_cli(&["audit", "verify", "--data-dir"], &[&restored.data_dir()]);
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stdout));
}

/// The members of a backup, in archive order.
pub(crate) fn unpack(backup: &Path, index: &Index) -> Vec<(String, Vec<u8>)> {
    let mut compressed = Vec::new();
    for part in &index.body.parts {
        compressed.extend(std::fs::read(backup.join(&part.name)).unwrap());
    }
    let plain = zstd::decode_all(compressed.as_slice()).unwrap();
    let mut archive = tar::Archive::new(plain.as_slice());
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

/// Re-packs members (as given), re-splits them and re-signs the index with `key`,
/// listing the members in `listed` (so the index can disagree with the archive).
pub(crate) fn repack(
    backup: &Path,
    members: &[(String, Vec<u8>)],
    listed: Vec<dg_storage::backup::Member>,
    key: &dg_storage::signing::ActiveKey,
) {
    let mut index: Index = serde_json::from_slice(&std::fs::read(backup.join("backup.json")).unwrap()).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        builder.append_data(&mut header, name, bytes.as_slice()).unwrap();
    }
    let compressed = zstd::encode_all(builder.into_inner().unwrap().as_slice(), 3).unwrap();
    for part in &index.body.parts {
        std::fs::remove_file(backup.join(&part.name)).unwrap();
    }
    index.body.parts = compressed
        .chunks(4096)
        .enumerate()
        .map(|(n, chunk)| {
            let name = format!("part-{n:03}.tar.zst");
            std::fs::write(backup.join(&name), chunk).unwrap();
            dg_storage::backup::Part { name, size: chunk.len() as u64, sha256: hex::encode(Sha256::digest(chunk)) }
        })
        .collect();
    index.body.members = listed;
    index.body.key_id = key.key_id.clone();
    let signed = index.body.sign(key).unwrap();
    std::fs::write(backup.join("backup.json"), serde_json::to_vec_pretty(&signed).unwrap()).unwrap();
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A change made to a copy of a good backup.
type Mutation = Box<dyn Fn(&Path)>;

#[test]
fn every_corruption_is_detected_by_verify_and_refused_by_restore() {
    let daemon = populated();
    let usb = tempfile::tempdir().unwrap();
    let good = create(&daemon.data_dir(), usb.path(), 4096);
    let other = create(&daemon.data_dir(), &usb.path().join("other"), 4096);
    let ring = ring_of(&daemon.data_dir(), usb.path());
    assert_eq!(verify_code(&good, &ring), 0);
    let index: Index = serde_json::from_slice(&std::fs::read(good.join("backup.json")).unwrap()).unwrap();
    let parts: Vec<String> = index.body.parts.iter().map(|p| p.name.clone()).collect();
    assert!(parts.len() >= 2, "several parts: {parts:?}");
    let members = unpack(&good, &index);
    assert_eq!(members.len(), index.body.members.len());
    let key = dg_storage::signing::KeyStore::open(&daemon.data_dir().join("keys")).unwrap().active().unwrap();
    let stranger = dg_storage::signing::KeyStore::open(&usb.path().join("stranger-keys")).unwrap().active().unwrap();

    // A live data directory to refuse restores into; it must never change.
    let victim_dir = populated().into_dir();
    let victim_data = victim_dir.path().join("data");
    let before = digest_tree(&victim_data);

    let mut cases: Vec<(String, Mutation, i32)> = Vec::new();
    for (n, (name, _)) in members.iter().enumerate() {
        let (members, listed, key) = (members.clone(), index.body.members.clone(), key.clone());
        cases.push((
            format!("flip a byte of member {name} (re-signed)"),
            Box::new(move |dir: &Path| {
                let mut members = members.clone();
                let middle = members[n].1.len() / 2;
                members[n].1[middle] ^= 0x01;
                repack(dir, &members, listed.clone(), &key);
            }),
            CORRUPT,
        ));
    }
    {
        let (members, listed, key) = (members.clone(), index.body.members.clone(), key.clone());
        cases.push((
            "drop a member (re-signed)".into(),
            Box::new(move |dir: &Path| {
                let mut fewer = members.clone();
                fewer.remove(1);
                repack(dir, &fewer, listed.clone(), &key);
            }),
            CORRUPT,
        ));
    }
    for part in &parts {
        let flipped = part.clone();
        cases.push((
            format!("flip a byte of {part}"),
            Box::new(move |dir: &Path| {
                let part = &flipped;
                let mut bytes = std::fs::read(dir.join(part)).unwrap();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x80;
                std::fs::write(dir.join(part), bytes).unwrap();
            }),
            CORRUPT,
        ));
        for keep in [0.0, 0.5, 0.99] {
            let cut = part.clone();
            cases.push((
                format!("truncate {part} to {keep}"),
                Box::new(move |dir: &Path| {
                    let bytes = std::fs::read(dir.join(&cut)).unwrap();
                    std::fs::write(dir.join(&cut), &bytes[..(bytes.len() as f64 * keep) as usize]).unwrap();
                }),
                CORRUPT,
            ));
        }
        let dropped = part.clone();
        cases.push((
            format!("drop {part}"),
            Box::new(move |dir: &Path| std::fs::remove_file(dir.join(&dropped)).unwrap()),
            INCOMPLETE,
        ));
    }
    {
        let (a, b) = (parts[0].clone(), parts[1].clone());
        cases.push((
            "reorder the first two parts".into(),
            Box::new(move |dir: &Path| {
                std::fs::rename(dir.join(&a), dir.join("tmp")).unwrap();
                std::fs::rename(dir.join(&b), dir.join(&a)).unwrap();
                std::fs::rename(dir.join("tmp"), dir.join(&b)).unwrap();
            }),
            CORRUPT,
        ));
        let (first, other) = (parts[0].clone(), other.clone());
        cases.push((
            "a part from another backup".into(),
            Box::new(move |dir: &Path| {
                std::fs::copy(other.join(&first), dir.join(&first)).unwrap();
            }),
            CORRUPT,
        ));
    }
    {
        let (members, listed) = (members.clone(), index.body.members.clone());
        let stranger = stranger.clone();
        cases.push((
            "signed with another key".into(),
            Box::new(move |dir: &Path| repack(dir, &members, listed.clone(), &stranger)),
            WRONG_KEY,
        ));
    }
    cases.push((
        "index replaced by garbage".into(),
        Box::new(|dir: &Path| std::fs::write(dir.join("backup.json"), b"not json").unwrap()),
        UNREADABLE,
    ));

    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (n, (case, mutate, expected)) in cases.iter().enumerate() {
        let dir = scratch.path().join(format!("case-{n}"));
        copy_dir(&good, &dir);
        mutate(&dir);
        let verified = verify_code(&dir, &ring);
        let restored = restore_code(&dir, &ring, &victim_data);
        if verified != *expected || restored != *expected {
            failures.push(format!("{case}: verify {verified}, restore {restored}, expected {expected}"));
        }
        assert_eq!(digest_tree(&victim_data), before, "{case}: a refused restore changed the data directory");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let leftovers: Vec<_> =
        std::fs::read_dir(victim_data.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(leftovers.iter().all(|n| !n.to_string_lossy().contains(".restore-")), "{leftovers:?}");
}

#[test]
fn secrets_are_encrypted_and_need_the_passphrase() {
    let daemon = populated();
    let usb = tempfile::tempdir().unwrap();
    let pass = usb.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let out = Command::new(binary())
        .args(["backup", "create", "--include-secrets", "--passphrase-file"])
        .arg(&pass)
        .arg("--to")
        .arg(usb.path().join("b"))
        .arg("--data-dir")
        .arg(daemon.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let backup = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let ring = ring_of(&daemon.data_dir(), usb.path());
    // The private signing key is not readable in the parts.
    let active = std::fs::read_to_string(daemon.data_dir().join("keys/active.key")).unwrap();
    let index: Index = serde_json::from_slice(&std::fs::read(backup.join("backup.json")).unwrap()).unwrap();
    for (name, bytes) in unpack(&backup, &index) {
        assert!(!String::from_utf8_lossy(&bytes).contains(active.trim()), "{name} holds the private key in clear");
    }
    let wrong = usb.path().join("wrong");
    std::fs::write(&wrong, "wrong\n").unwrap();
    let out = Command::new(binary())
        .args(["backup", "verify", "--pubkey"])
        .arg(&ring)
        .arg(&backup)
        .arg("--passphrase-file")
        .arg(&wrong)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(WRONG_PASSPHRASE));
    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    let out = Command::new(binary())
        .args(["backup", "restore", "--pubkey"])
        .arg(&ring)
        .arg(&backup)
        .arg("--passphrase-file")
        .arg(&pass)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(data.join("keys/active.key")).unwrap(), active, "the signing key came back");
    assert_eq!(
        std::fs::read_to_string(data.join("admin.key")).unwrap(),
        std::fs::read_to_string(daemon.data_dir().join("admin.key")).unwrap()
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("keys/active.key")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// Whether `serve` starts on a data directory (then stops it).
fn starts_on(data: &Path) -> bool {
    let mut child = Command::new(binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", support::free_port()), "--data-dir"])
        .arg(data)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 512];
    let started = loop {
        let n = stderr.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break false;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if seen.contains("listening on") {
            break true;
        }
    };
    let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::Term);
    let _ = child.wait();
    started
}

#[test]
fn a_restore_killed_at_any_step_leaves_a_directory_the_appliance_starts_on() {
    let daemon = populated();
    let usb = tempfile::tempdir().unwrap();
    let backup = create(&daemon.data_dir(), usb.path(), 8192);
    let ring = ring_of(&daemon.data_dir(), usb.path());
    // After the backup, the live directory gets a run the backup does not have.
    daemon.tool("scenario_start", start_args("after-backup")).unwrap();
    let mut daemon = daemon;
    daemon.terminate(Duration::from_secs(10)).unwrap();
    let admin_key = daemon.key.clone();
    let dir = daemon.into_dir();
    let data = dir.path().join("data");
    for step in ["extracting", "staged", "exchanged"] {
        let mut child = Command::new(binary())
            .args(["backup", "restore", "--force", "--pubkey"])
            .arg(&ring)
            .arg(&backup)
            .arg("--data-dir")
            .arg(&data)
            .env("DG_RESTORE_PAUSE_AT", step)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 256];
        while !seen.contains("paused at") {
            let n = stderr.read(&mut buf).unwrap();
            assert!(n > 0, "restore ended before pausing at {step}: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let parent = data.parent().unwrap();
        // The appliance starts on the data directory and it passes the store check.
        assert!(starts_on(&data), "{step}: the appliance does not start");
        let check = run_cli(&["store", "check", "--data-dir"], &[&data]);
        assert!(check.status.success(), "{step}: {}", String::from_utf8_lossy(&check.stdout));
        let previous_intact = |dir: &Path| {
            let out = run_cli(&["store", "list", "--json", "--data-dir"], &[dir]);
            String::from_utf8_lossy(&out.stdout).contains("after-backup")
        };
        if step == "exchanged" {
            // Past the commit point: the restored directory is in place, and the previous
            // one is kept intact beside it.
            assert!(!previous_intact(&data), "{step}: the restored directory is in place");
            let kept: Vec<PathBuf> = std::fs::read_dir(parent)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".data.restore-"))
                .collect();
            assert_eq!(kept.len(), 1, "{step}: {kept:?}");
            assert!(previous_intact(&kept[0]), "{step}: the previous directory is intact");
        } else {
            assert!(previous_intact(&data), "{step}: the previous directory is untouched");
        }
    }
    // A later restore keeps the previous directory found beside it and cleans the rest.
    let out = Command::new(binary())
        .args(["backup", "restore", "--force", "--pubkey"])
        .arg(&ring)
        .arg(&backup)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names: Vec<String> = std::fs::read_dir(data.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.iter().any(|n| n.starts_with(".data.pre-restore-")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with(".data.restore-")), "{names:?}");
    std::fs::write(data.join("admin.key"), &admin_key).unwrap();
    // A secret the daemon reads must be the owner's alone (it refuses to start otherwise).
    std::fs::set_permissions(data.join("admin.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let served = Daemon::start_with(DaemonOptions { dir: Some(dir), ..Default::default() });
    assert!(status(&served, "seed-1").is_ok());
    assert!(status(&served, "after-backup").is_err(), "the backup's state is served");
}
