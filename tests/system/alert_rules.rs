#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The shipped Prometheus rules (operations issue, point 2): `promtool check rules` and
//! `promtool test rules` pass (each alert fired from synthetic series and silent on healthy
//! ones, `dg-appliance.rules.test.yml`); every series the rules read is one the daemon
//! exports (`docs/metrics.md`, which another test checks against a live daemon); every
//! alert has its runbook.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn promtool(args: &[&str]) -> Option<(bool, String)> {
    let dir = root().join("packaging/prometheus");
    match Command::new("promtool").args(args).current_dir(&dir).output() {
        Ok(out) => Some((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
        )),
        Err(_) if std::env::var_os("CI").is_none() => None,
        Err(err) => panic!("promtool (Debian prometheus) is required in CI: {err}"),
    }
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_fire_and_silence_each_alert() {
    let Some((ok, text)) = promtool(&["check", "rules", "dg-appliance.rules.yml"]) else {
        eprintln!("promtool not installed: skipped (CI installs Debian's prometheus)");
        return;
    };
    assert!(ok, "{text}");
    let (ok, text) = promtool(&["test", "rules", "dg-appliance.rules.test.yml"]).unwrap();
    assert!(ok && text.contains("SUCCESS"), "{text}");
}

#[test]
fn the_rules_read_only_exported_series_and_every_alert_has_a_runbook_and_a_test() {
    let rules = std::fs::read_to_string(root().join("packaging/prometheus/dg-appliance.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(root().join("packaging/prometheus/dg-appliance.rules.test.yml")).unwrap();
    let metrics_doc = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    let runbooks = std::fs::read_to_string(root().join("docs/runbooks.md")).unwrap();
    let documented: BTreeSet<String> = metrics_doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `").or_else(|| line.strip_prefix("- `")))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_string)
        .collect();
    let mut used = BTreeSet::new();
    for line in rules.lines().filter(|l| l.trim_start().starts_with("expr:")) {
        let bytes = line.as_bytes();
        let mut i = 0;
        while let Some(start) = line[i..].find("dg_").map(|p| p + i) {
            let end = line[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(line.len(), |p| p + start);
            let preceded_by_colon = start > 0 && bytes[start - 1] == b':';
            if !preceded_by_colon {
                let name = &line[start..end];
                let family = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix).filter(|base| documented.contains(*base)))
                    .unwrap_or(name);
                used.insert(family.to_string());
            }
            i = end;
        }
    }
    assert!(used.len() >= 8, "{used:?}");
    let unknown: Vec<_> = used.iter().filter(|name| !documented.contains(*name)).collect();
    assert!(unknown.is_empty(), "the rules read series the daemon does not export: {unknown:?}");
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for alert in &alerts {
        assert!(tests.contains(&format!("alertname: {alert}")), "{alert} has no promtool unit test");
    }
    assert_eq!(rules.matches("runbook: \"docs/runbooks.md#").count(), alerts.len(), "every alert names its runbook");
    for anchor in rules.lines().filter_map(|l| l.split("docs/runbooks.md#").nth(1)) {
        let anchor = anchor.trim_end_matches('"');
        let heading = runbooks
            .lines()
            .filter_map(|l| l.strip_prefix("## "))
            .any(|h| h.to_lowercase().replace(' ', "") == anchor || h.to_lowercase() == anchor);
        assert!(heading, "docs/runbooks.md has no section for #{anchor}");
    }
}

#[test]
fn the_series_the_alerts_read_are_live_on_a_running_daemon() {
    use crate::support::{self, Daemon};
    use serde_json::json;
    let daemon = Daemon::start();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert_eq!(daemon.metric("dg_backup_last_success_timestamp_seconds"), Some(0.0), "never backed up");
    let backups = daemon.dir.path().join("backups");
    let out = Command::new(support::binary())
        .args(["backup", "create", "--to"])
        .arg(&backups)
        .arg("--data-dir")
        .arg(daemon.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let backed_up = daemon.metric("dg_backup_last_success_timestamp_seconds").unwrap();
    assert!((backed_up - now).abs() < 120.0, "{backed_up} vs {now}");
    let expiry = daemon.metric("dg_tls_certificate_expiry_timestamp_seconds").unwrap();
    assert!(expiry > now + 14.0 * 86400.0, "the self-signed certificate's expiry: {expiry}");
    let free = daemon.metric("dg_data_dir_free_bytes").unwrap();
    let capacity = daemon.metric("dg_data_dir_capacity_bytes").unwrap();
    assert!(free > 0.0 && capacity >= free, "{free} of {capacity}");
    daemon.tool("scenario_define", json!({"spec": support::sample_spec("slo")})).unwrap();
    daemon
        .tool(
            "scenario_start",
            json!({"scenario_id": "slo", "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": "r1",
                "scenario_id": "slo", "dispatch_targets": [], "policy_tags": []},
                "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false}),
        )
        .unwrap();
    assert_eq!(daemon.metric("dg_decision_duration_seconds_count{tool=\"scenario_start\"}"), Some(1.0));
    assert_eq!(daemon.metric("dg_clock_steps_total{direction=\"backward\"}"), Some(0.0));
    assert_eq!(daemon.get("/readyz").0, 200);
}
