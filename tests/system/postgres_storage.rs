//! `[storage] backend = "postgres"` from the operator's side: `config check` names every
//! wrong setting with its key, `store migrate` brings a real database (a throwaway cluster)
//! to this build's schema, also with several nodes migrating at once, and two daemons over
//! one database share scenarios, runs and one audit chain (and the offline runpack export
//! reads from it).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::binary;
use crate::support::postgres::{Postgres, USER};

/// The embedded default with `storage` appended.
fn config_with(dir: &Path, storage: &str) -> std::path::PathBuf {
    let default = Command::new(binary()).args(["config", "default"]).output().unwrap();
    assert!(default.status.success());
    let path = dir.join("config.toml");
    std::fs::write(&path, format!("{}\n{storage}\n", String::from_utf8(default.stdout).unwrap())).unwrap();
    path
}

fn run(args: &[&str], config: &Path, data: &Path) -> Output {
    Command::new(binary()).args(args).arg("--config").arg(config).arg("--data-dir").arg(data).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn config_check_names_every_wrong_postgres_setting() {
    let dir = tempfile::tempdir().unwrap();
    let loose = dir.path().join("loose-password");
    std::fs::write(&loose, "secret\n").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cases = [
        ("[storage]\nbackend = \"postgres\"", "storage.postgres", "needs a [storage.postgres] section"),
        (
            "[storage.postgres]\nurl = \"postgresql://dg@127.0.0.1/dg\"\ntls = \"disable\"",
            "storage.backend",
            "backend is \"sqlite\"",
        ),
        (
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://dg:hunter2@127.0.0.1/dg\"\ntls = \"disable\"",
            "storage.postgres.url",
            "holds a password",
        ),
        (
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://dg@db.example/dg\"\ntls = \"disable\"",
            "storage.postgres.tls",
            "plain connections are allowed only",
        ),
        (
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://dg@db.example/dg\"",
            "storage.postgres.ca_file",
            "needs the CA bundle",
        ),
        (
            &format!(
                "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://dg@127.0.0.1/dg\"\ntls = \"disable\"\npassword_file = \"{}\"",
                loose.display()
            ),
            "storage.postgres.password_file",
            "chmod 600",
        ),
        (
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://dg@127.0.0.1/dg\"\ntls = \"disable\"\npool_size = 0",
            "storage.postgres.pool_size",
            "1 to 256",
        ),
        (
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"host=127.0.0.1 user=dg\"\ntls = \"disable\"\nsslmode = \"require\"",
            "storage.postgres.sslmode",
            "unknown",
        ),
    ];
    for (storage, key, message) in cases {
        let config = config_with(dir.path(), storage);
        let out = Command::new(binary()).args(["config", "check"]).arg(&config).output().unwrap();
        let said = text(&out);
        assert!(!out.status.success(), "{storage}: accepted");
        assert!(said.contains(key) && said.contains(message), "{storage}: expected {key}: {message}; got {said}");
    }
    let good = config_with(
        dir.path(),
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://dg@127.0.0.1:5432/dg\"\ntls = \"disable\"",
    );
    let out = Command::new(binary()).args(["config", "check"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn store_migrate_brings_a_real_database_to_the_schema_with_nodes_starting_together() {
    let Some(cluster) = Postgres::start() else { return };
    let db = cluster.create_database("appliance");
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        &format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://{USER}@127.0.0.1:{}/{db}\"\ntls = \"disable\"\npassword_file = \"{}\"",
            cluster.port,
            cluster.password_file().display()
        ),
    );
    let data = dir.path().join("data");
    // Three nodes at once: every one succeeds, the schema is made once.
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(binary())
                .args(["store", "migrate", "--config"])
                .arg(&config)
                .arg("--data-dir")
                .arg(&data)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let said: Vec<String> = children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", text(&out));
            text(&out)
        })
        .collect();
    assert_eq!(said.iter().filter(|s| s.contains("version 0 -> 4")).count(), 1, "{said:?}");
    assert_eq!(said.iter().filter(|s| s.contains("version 4, current")).count(), 2, "{said:?}");
    assert_eq!(cluster.psql(&db, "SELECT version FROM dg_meta").trim(), "4");
    // A wrong password is refused with the database's own words.
    std::fs::write(cluster.password_file(), "wrong").unwrap();
    let out = run(&["store", "migrate"], &config, &data);
    assert!(!out.status.success());
    assert!(text(&out).contains("password authentication failed"), "{}", text(&out));
    // The daemon refuses to start with it, in the server's words.
    let out = Command::new(binary())
        .args(["serve", "--plaintext-loopback", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("password authentication failed"), "{}", text(&out));
}

/// The daemon's configuration over database `db` of `cluster`.
fn postgres_config(cluster: &Postgres, db: &str) -> String {
    let default = Command::new(binary()).args(["config", "default"]).output().unwrap();
    format!(
        "{}\n[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://{USER}@127.0.0.1:{}/{db}\"\ntls = \"disable\"\npassword_file = \"{}\"\npool_size = 4\n",
        String::from_utf8(default.stdout).unwrap(),
        cluster.port,
        cluster.password_file().display()
    )
}

fn start_args(scenario: &str, run: &str) -> serde_json::Value {
    serde_json::json!({"scenario_id": scenario, "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": run,
        "scenario_id": scenario, "dispatch_targets": [], "policy_tags": []},
        "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false})
}

fn next_args(run: &str, step: u64) -> serde_json::Value {
    serde_json::json!({"scenario_id": "pg",
        "request": {"run_id": run, "tenant_id": 2, "namespace_id": 3, "trigger_id": format!("{run}-t{step}"), "agent_id": "a",
                    "time": {"kind": "logical", "value": 10 + step}, "correlation_id": null}})
}

#[test]
fn two_nodes_over_one_postgres_share_scenarios_runs_and_one_audit_chain() {
    use crate::support::{sample_spec, Daemon, DaemonOptions};
    let Some(cluster) = Postgres::start() else { return };
    let db = cluster.create_database("nodes");
    let config = postgres_config(&cluster, &db);
    let a = Daemon::start_with(DaemonOptions { config: Some(config.clone()), plaintext: true, ..Default::default() });
    a.tool("scenario_define", serde_json::json!({"spec": sample_spec("pg")})).unwrap();
    a.tool("scenario_start", start_args("pg", "r1")).unwrap();
    // Node B: its own data directory with the deployment's signing keys and admin key.
    let b_dir = tempfile::tempdir().unwrap();
    let b_data = b_dir.path().join("data");
    std::fs::create_dir_all(b_data.join("keys")).unwrap();
    for file in ["keys/active.key", "keys/keyring.json", "admin.key"] {
        std::fs::copy(a.data_dir().join(file), b_data.join(file)).unwrap();
    }
    std::fs::set_permissions(&b_data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let b = Daemon::start_with(DaemonOptions {
        config: Some(config.clone()),
        plaintext: true,
        dir: Some(b_dir),
        bare: true,
        ..Default::default()
    });
    // The run started on A advances on B, with the scenario defined on A.
    for step in 0..2 {
        b.tool("scenario_next", next_args("r1", step)).unwrap();
    }
    b.tool("scenario_start", start_args("pg", "r2")).unwrap();
    let status = a
        .tool("scenario_status", serde_json::json!({"scenario_id": "pg",
            "request": {"run_id": "r1", "tenant_id": 2, "namespace_id": 3, "requested_at": {"kind": "logical", "value": 20},
                        "correlation_id": null}}))
        .unwrap();
    assert_eq!(status["status"], "completed", "{status}");
    // A byte changed through psql while the nodes serve: the read is refused as an integrity
    // error, and the node that read it counts it in /metrics.
    let flip =
        "UPDATE runs SET state_json = set_byte(state_json, 15, get_byte(state_json, 15) # 1) WHERE run_id = 'r2'";
    let status_r2 = serde_json::json!({"scenario_id": "pg",
        "request": {"run_id": "r2", "tenant_id": 2, "namespace_id": 3, "requested_at": {"kind": "logical", "value": 20},
                    "correlation_id": null}});
    let failures = |node: &Daemon| node.metric("dg_storage_integrity_failures_total").unwrap_or(0.0);
    assert_eq!(failures(&a), 0.0);
    cluster.psql(&db, flip);
    let refused = a.tool("scenario_status", status_r2.clone()).unwrap_err();
    assert!(refused.to_string().contains("integrity"), "{refused}");
    assert_eq!(failures(&a), 1.0, "counted on the node that read it");
    cluster.psql(&db, flip);
    assert_eq!(a.tool("scenario_status", status_r2).unwrap()["status"], "active", "the byte put back reads again");
    drop(b);
    let a_dir = a.into_dir();
    let a_data = a_dir.path().join("data");
    let config_path = a_dir.path().join("config.toml");
    // One chain for both nodes, verified; every document checked.
    let verified = run(&["audit", "verify"], &config_path, &a_data);
    assert!(verified.status.success() && text(&verified).contains("VERIFIED"), "{}", text(&verified));
    let checked = run(&["store", "check"], &config_path, &a_data);
    assert!(checked.status.success() && text(&checked).contains("store check: ok"), "{}", text(&checked));
    let listed = run(&["store", "list", "--json"], &config_path, &a_data);
    let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(runs.as_array().map(Vec::len), Some(2), "{runs}");
    // The offline export reads the run from PostgreSQL (the node's data directory holds no
    // state database, and the export makes none) and signs with the deployment's key.
    let bundle = a_dir.path().join("r1.tar.zst");
    let exported = run(
        &[
            "runpack",
            "export",
            "--tenant",
            "2",
            "--namespace",
            "3",
            "--run-id",
            "r1",
            "--out",
            &bundle.to_string_lossy(),
        ],
        &config_path,
        &a_data,
    );
    assert!(exported.status.success(), "{}", text(&exported));
    assert!(!a_data.join("state.db").exists(), "no SQLite database made beside a PostgreSQL node");
    let verified = Command::new(binary())
        .args(["runpack", "verify", "--pubkey"])
        .arg(a_data.join("keys/keyring.json"))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(text(&verified).contains("result: VERIFIED"), "{}", text(&verified));
    // And the operator's check finds it too.
    cluster.psql(&db, flip);
    let checked = run(&["store", "check"], &config_path, &a_data);
    assert!(!checked.status.success() && text(&checked).contains("HASH MISMATCH: runs 2/3/r2"), "{}", text(&checked));
}

/// The reference runpacks (`../shared/fixtures/runpacks/golden`) as (fixture directory,
/// scenario, run id, the last trigger): each is replayed on a node and exported.
fn golden_runs() -> Vec<(std::path::PathBuf, serde_json::Value, serde_json::Value, bool)> {
    let Some(shared) = crate::support::shared_dir() else { return Vec::new() };
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(shared.join("fixtures/runpacks/golden"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|dir| dir.join("manifest.json").is_file())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let read = |name: &str| -> serde_json::Value {
                serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
            };
            let (spec, triggers) = (read("artifacts/scenario_spec.json"), read("artifacts/triggers.json"));
            let triggers = triggers.as_array().unwrap();
            let issue = triggers.first().is_some_and(|t| t["event"]["trigger_id"] == "init");
            let last = triggers.last().unwrap()["event"].clone();
            (dir, spec, last, issue)
        })
        .collect()
}

/// Replays every reference run on `daemon` (tenant 1, namespace 1), without exporting.
fn replay_golden(daemon: &crate::support::Daemon) -> usize {
    let runs = golden_runs();
    if !runs.is_empty() {
        daemon.register(1, 1);
    }
    for (_, spec, last, issue) in &runs {
        let scenario = spec["scenario_id"].clone();
        daemon.tool("scenario_define", serde_json::json!({"spec": spec})).unwrap();
        daemon
            .tool(
                "scenario_start",
                serde_json::json!({"scenario_id": scenario, "run_config": {"tenant_id": 1, "namespace_id": 1,
                "run_id": last["run_id"], "scenario_id": scenario, "dispatch_targets": [], "policy_tags": []},
                "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": issue}),
            )
            .unwrap();
        daemon.tool("scenario_trigger", serde_json::json!({"scenario_id": scenario, "trigger": last})).unwrap();
    }
    runs.len()
}

/// Exports every reference run on `daemon` and checks its manifest and artifacts are the
/// fixture's bytes.
fn export_golden_identically(daemon: &crate::support::Daemon, what: &str) {
    for (dir, spec, last, _) in golden_runs() {
        let run = last["run_id"].as_str().unwrap().to_string();
        daemon
            .tool(
                "runpack_export",
                serde_json::json!({"scenario_id": spec["scenario_id"], "tenant_id": 1, "namespace_id": 1, "run_id": run,
                "generated_at": {"kind": "logical", "value": 10}, "include_verification": true}),
            )
            .unwrap();
        let (status, bundle) = crate::runpacks::download(daemon, &format!("/runpacks/1/1/{run}.tar.zst"));
        assert_eq!(status, 200, "{what}");
        let files = crate::s3_runpacks::members(&bundle);
        assert_eq!(
            files["manifest.json"],
            std::fs::read(dir.join("manifest.json")).unwrap(),
            "{what}: {}",
            dir.display()
        );
        for (name, bytes) in files.iter().filter(|(name, _)| name.starts_with("artifacts/")) {
            assert_eq!(&std::fs::read(dir.join(name)).unwrap(), bytes, "{what}: {}: {name}", dir.display());
        }
    }
}

#[test]
fn store_copy_moves_a_single_box_to_postgres_and_back_and_runpacks_export_identically() {
    use crate::support::{sample_spec, Daemon, DaemonOptions};
    let Some(cluster) = Postgres::start() else { return };
    let db = cluster.create_database("copied");
    let export = |daemon: &Daemon| {
        daemon
            .tool(
                "runpack_export",
                serde_json::json!({"scenario_id": "pg", "tenant_id": 2, "namespace_id": 3, "run_id": "r1",
                "generated_at": {"kind": "logical", "value": 30}, "include_verification": true}),
            )
            .unwrap()["manifest"]
            .clone()
    };
    // A single box on SQLite, with a finished run and its runpack.
    let single = Daemon::start_with(DaemonOptions { plaintext: true, ..Default::default() });
    single.tool("scenario_define", serde_json::json!({"spec": sample_spec("pg")})).unwrap();
    single.tool("scenario_start", start_args("pg", "r1")).unwrap();
    for step in 0..2 {
        single.tool("scenario_next", next_args("r1", step)).unwrap();
    }
    let before = export(&single);
    // The reference runs, replayed on the single box and exported only after the copies.
    let golden = replay_golden(&single);
    let single_dir = single.into_dir();
    let single_data = single_dir.path().join("data");
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("postgres.toml");
    std::fs::write(&config, postgres_config(&cluster, &db)).unwrap();
    let copy = |from: String, to: String| {
        let out = Command::new(binary()).args(["store", "copy", "--from", &from, "--to", &to]).output().unwrap();
        assert!(out.status.success() && text(&out).contains("store copy: ok"), "{}", text(&out));
        text(&out)
    };
    let said = copy(format!("sqlite:{}", single_data.display()), format!("postgres:{}", config.display()));
    assert!(said.contains(&format!("runs: {}", 1 + golden)) && said.contains("VERIFIED"), "{said}");
    // Copying into it again is refused: the target is not empty.
    let again = Command::new(binary())
        .args([
            "store",
            "copy",
            "--from",
            &format!("sqlite:{}", single_data.display()),
            "--to",
            &format!("postgres:{}", config.display()),
        ])
        .output()
        .unwrap();
    assert!(!again.status.success() && text(&again).contains("not empty"), "{}", text(&again));
    // A node over the copy exports the same runpack, byte for byte (same root hash, same manifest).
    let node_dir = tempfile::tempdir().unwrap();
    let node_data = node_dir.path().join("data");
    std::fs::create_dir_all(node_data.join("keys")).unwrap();
    for file in ["keys/active.key", "keys/keyring.json", "admin.key"] {
        std::fs::copy(single_data.join(file), node_data.join(file)).unwrap();
    }
    std::fs::set_permissions(&node_data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let node = Daemon::start_with(DaemonOptions {
        config: Some(postgres_config(&cluster, &db)),
        plaintext: true,
        dir: Some(node_dir),
        bare: true,
        ..Default::default()
    });
    assert_eq!(export(&node), before, "the runpack exported after the copy differs");
    export_golden_identically(&node, "exported on PostgreSQL after the copy");
    let node_dir = node.into_dir();
    // And back to a new single box, which checks out.
    let back_dir = tempfile::tempdir().unwrap();
    let back = back_dir.path().join("data");
    std::fs::create_dir_all(back.join("keys")).unwrap();
    for file in ["keys/active.key", "keys/keyring.json"] {
        std::fs::copy(node_dir.path().join("data").join(file), back.join(file)).unwrap();
    }
    copy(format!("postgres:{}", config.display()), format!("sqlite:{}", back.display()));
    let checked = Command::new(binary()).args(["store", "check", "--data-dir"]).arg(&back).output().unwrap();
    assert!(checked.status.success() && text(&checked).contains("store check: ok"), "{}", text(&checked));
    let verified = Command::new(binary()).args(["audit", "verify", "--data-dir"]).arg(&back).output().unwrap();
    assert!(verified.status.success() && text(&verified).contains("VERIFIED"), "{}", text(&verified));
    // A single box over the round trip exports the reference runpacks byte for byte too.
    std::fs::copy(node_dir.path().join("data/admin.key"), back.join("admin.key")).unwrap();
    std::fs::set_permissions(&back, std::fs::Permissions::from_mode(0o700)).unwrap();
    let back_node =
        Daemon::start_with(DaemonOptions { plaintext: true, dir: Some(back_dir), bare: true, ..Default::default() });
    export_golden_identically(&back_node, "exported on SQLite after the round trip");
}

#[test]
fn a_postgres_deployment_is_backed_up_while_serving_and_restored_into_a_new_database_or_sqlite() {
    use crate::support::{sample_spec, Daemon, DaemonOptions};
    let Some(cluster) = Postgres::start() else { return };
    let db = cluster.create_database("served");
    let fresh = cluster.create_database("restored");
    let node = Daemon::start_with(DaemonOptions {
        config: Some(postgres_config(&cluster, &db)),
        plaintext: true,
        ..Default::default()
    });
    node.tool("scenario_define", serde_json::json!({"spec": sample_spec("pg")})).unwrap();
    node.tool("scenario_start", start_args("pg", "r1")).unwrap();
    node.tool("scenario_next", next_args("r1", 0)).unwrap();
    let data = node.data_dir();
    let config = data.parent().unwrap().join("config.toml");
    let work = tempfile::tempdir().unwrap();
    let ring = work.path().join("ring.json");
    let shown = Command::new(binary()).args(["keys", "show-public", "--data-dir"]).arg(&data).output().unwrap();
    assert!(shown.status.success(), "{}", text(&shown));
    std::fs::write(&ring, shown.stdout).unwrap();
    // Made while the node serves (the node keeps answering), verified offline.
    let made = run(&["backup", "create", "--to", work.path().join("usb").to_str().unwrap()], &config, &data);
    assert!(made.status.success(), "{}", text(&made));
    node.tool("scenario_start", start_args("pg", "after-backup")).unwrap();
    let backup = String::from_utf8(made.stdout).unwrap().trim().to_string();
    let verified =
        Command::new(binary()).args(["backup", "verify", &backup, "--json", "--pubkey"]).arg(&ring).output().unwrap();
    assert!(verified.status.success(), "{}", text(&verified));
    let report: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(report["source_backend"], "postgres", "{report}");
    // Into a new PostgreSQL database: the state there, the node's files in its directory.
    let restored_config = work.path().join("restored.toml");
    std::fs::write(&restored_config, postgres_config(&cluster, &fresh)).unwrap();
    let node_dir = work.path().join("node-b");
    let restore = |target: &Path, config: Option<&Path>| {
        let mut command = Command::new(binary());
        command.args(["backup", "restore", &backup, "--pubkey"]).arg(&ring).arg("--data-dir").arg(target);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command.output().unwrap()
    };
    let migrated = Command::new(binary())
        .args(["store", "migrate", "--config"])
        .arg(&restored_config)
        .arg("--data-dir")
        .arg(&node_dir)
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{}", text(&migrated));
    std::fs::remove_dir_all(&node_dir).ok();
    let restored = restore(&node_dir, Some(&restored_config));
    assert!(restored.status.success(), "{}", text(&restored));
    assert!(!node_dir.join("state.db").exists(), "the node keeps no second copy of the state");
    let listed = run(&["store", "list", "--json"], &restored_config, &node_dir);
    let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "the snapshot's run, not the later one: {runs}");
    for check in [&["store", "check"][..], &["audit", "verify"][..]] {
        let out = run(check, &restored_config, &node_dir);
        assert!(out.status.success(), "{check:?}: {}", text(&out));
    }
    // A database that already holds state is refused before anything is touched.
    let again = restore(&work.path().join("node-c"), Some(&restored_config));
    assert_eq!(again.status.code(), Some(15), "{}", text(&again));
    assert!(!work.path().join("node-c").exists());
    // And the same backup makes a single SQLite appliance.
    let single = work.path().join("single");
    let restored = restore(&single, None);
    assert!(restored.status.success(), "{}", text(&restored));
    let checked = Command::new(binary()).args(["store", "check", "--data-dir"]).arg(&single).output().unwrap();
    assert!(checked.status.success() && text(&checked).contains("store check: ok"), "{}", text(&checked));
}

#[test]
fn verify_full_tls_to_the_database_checks_the_servers_certificate_against_ca_file() {
    use crate::support::{Daemon, DaemonOptions};
    // A certificate for 127.0.0.1 (the appliance's own self-signed one) as the server's.
    let minted = Daemon::start_with(DaemonOptions::default());
    let work = tempfile::tempdir().unwrap();
    for name in ["cert.pem", "key.pem"] {
        std::fs::copy(minted.data_dir().join("tls").join(name), work.path().join(name)).unwrap();
    }
    drop(minted);
    let (cert, key) = (work.path().join("cert.pem"), work.path().join("key.pem"));
    let Some(cluster) = Postgres::start_with_tls(&cert, &key) else { return };
    let db = cluster.create_database("tls");
    let tls_config = |ca: &Path| {
        format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://{USER}@127.0.0.1:{}/{db}\"\ntls = \"verify-full\"\nca_file = \"{}\"\npassword_file = \"{}\"\npool_size = 2",
            cluster.port,
            ca.display(),
            cluster.password_file().display()
        )
    };
    let data = work.path().join("data");
    let config = config_with(work.path(), &tls_config(&cert));
    let migrated = run(&["store", "migrate"], &config, &data);
    assert!(migrated.status.success(), "{}\n{}", text(&migrated), cluster.log());
    // A node serving over it: its sessions are TLS in PostgreSQL's own view.
    let default = Command::new(binary()).args(["config", "default"]).output().unwrap();
    let node = Daemon::start_with(DaemonOptions {
        config: Some(format!("{}\n{}\n", String::from_utf8(default.stdout).unwrap(), tls_config(&cert))),
        plaintext: true,
        ..Default::default()
    });
    node.tool("scenario_define", serde_json::json!({"spec": crate::support::sample_spec("tls")})).unwrap();
    let sessions = cluster.psql(
        &db,
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) FROM pg_stat_ssl s
         JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'dg-appliance'",
    );
    let counts: Vec<u32> = sessions.trim().split('|').map(|n| n.parse().unwrap()).collect();
    assert!(counts[0] >= 1 && counts[1] == 0, "the node's sessions (TLS, plain): {sessions}");
    drop(node);
    // Another CA (a second appliance's certificate): refused, naming the certificate.
    let other = Daemon::start_with(DaemonOptions::default());
    let other_ca = work.path().join("other-ca.pem");
    std::fs::copy(other.data_dir().join("tls/cert.pem"), &other_ca).unwrap();
    drop(other);
    let other_dir = tempfile::tempdir().unwrap();
    let refused_config = config_with(other_dir.path(), &tls_config(&other_ca));
    let refused = run(&["store", "migrate"], &refused_config, &data);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).to_lowercase().contains("certificate"), "{}", text(&refused));
}
