#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Billing (operations issue, point 4): a scripted month (November 2026, the process's
//! clock shifted there; the machine's is untouched) of usage for three tenants on three
//! plans produces exactly the hand-computed CSV; a tenant past a `block` entitlement is
//! refused before its run exists, with the quota decision audited; the month exported
//! twice by the CLI is byte-identical, signature included.

use std::process::Command;

use dg_appliance::cli::DataDirArgs;
use dg_appliance::ops::request;
use dg_identity::{Operation, Principal, Role};
use serde_json::{json, Value};

const PLANS: &str = r#"
[billing]
currency = "EUR"
[billing.plans.basic.entitlements]
runs_started = { included = 2, overage = "block" }
tool_calls = { included = 4, overage = "flag" }
[billing.plans.pro.entitlements]
tool_calls = { included = 3, overage = "price", unit_price_micros = 1500 }
[billing.plans.starter.entitlements]
runs_started = { included = 1, overage = "price", unit_price_micros = 2000000 }
tool_calls = { included = 10, overage = "flag" }
[billing.tenant_plans]
"1" = "basic"
"2" = "pro"
"3" = "starter"
"#;

const EXPECTED: &str = "\
period,tenant_id,plan,counter,included,used,overage,rule,unit_price_micros,overage_price_micros,flagged,currency
2026-11,1,basic,tool_calls,4,5,1,flag,0,0,true,EUR
2026-11,1,basic,runs_started,2,2,0,block,0,0,false,EUR
2026-11,1,basic,evidence_queries,,0,0,none,0,0,false,EUR
2026-11,1,basic,runpack_exports,,0,0,none,0,0,false,EUR
2026-11,1,basic,schemas_written,,0,0,none,0,0,false,EUR
2026-11,1,basic,registry_entries,,1,0,none,0,0,false,EUR
2026-11,1,basic,storage_bytes,,0,0,none,0,0,false,EUR
2026-11,2,pro,tool_calls,3,5,2,price,1500,3000,true,EUR
2026-11,2,pro,runs_started,,4,0,none,0,0,false,EUR
2026-11,2,pro,evidence_queries,,0,0,none,0,0,false,EUR
2026-11,2,pro,runpack_exports,,0,0,none,0,0,false,EUR
2026-11,2,pro,schemas_written,,0,0,none,0,0,false,EUR
2026-11,2,pro,registry_entries,,1,0,none,0,0,false,EUR
2026-11,2,pro,storage_bytes,,0,0,none,0,0,false,EUR
2026-11,3,starter,tool_calls,10,3,0,flag,0,0,false,EUR
2026-11,3,starter,runs_started,1,2,1,price,2000000,2000000,true,EUR
2026-11,3,starter,evidence_queries,,0,0,none,0,0,false,EUR
2026-11,3,starter,runpack_exports,,0,0,none,0,0,false,EUR
2026-11,3,starter,schemas_written,,0,0,none,0,0,false,EUR
2026-11,3,starter,registry_entries,,1,0,none,0,0,false,EUR
2026-11,3,starter,storage_bytes,,0,0,none,0,0,false,EUR
";

/// 2026-11-10T12:00:00Z.
const MID_NOVEMBER_MS: i64 = 1_794_312_000_000;

fn spec(tenant: u64) -> Value {
    json!({"spec": {"scenario_id": "bill", "namespace_id": 1, "spec_version": "1", "default_tenant_id": tenant,
        "policies": [], "schemas": [], "conditions": [],
        "stages": [{"stage_id": "s", "entry_packets": [], "gates": [], "advance_to": {"kind": "terminal"},
                    "timeout": null, "on_timeout": "fail"}]}})
}

fn start(tenant: u64, run: &str) -> Value {
    json!({"scenario_id": "bill", "run_config": {"tenant_id": tenant, "namespace_id": 1, "run_id": run,
        "scenario_id": "bill", "dispatch_targets": [], "policy_tags": []},
        "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false})
}

fn status(tenant: u64, run: &str) -> Value {
    json!({"scenario_id": "bill", "request": {"run_id": run, "tenant_id": tenant, "namespace_id": 1,
        "requested_at": {"kind": "logical", "value": 2}, "correlation_id": null}})
}

#[test]
fn a_scripted_month_on_three_plans_exports_the_hand_computed_csv_twice_identically() {
    // The month happens in November 2026 (before anything is written: record times never go back).
    dg_storage::shift_wall_clock_for_tests(MID_NOVEMBER_MS - dg_storage::now_ms());
    let dir = tempfile::tempdir().unwrap();
    let default = Command::new(env!("CARGO_BIN_EXE_dg-appliance")).args(["config", "default"]).output().unwrap().stdout;
    let config = dir.path().join("config.toml");
    std::fs::write(&config, String::from_utf8(default).unwrap() + PLANS).unwrap();
    let data = dir.path().join("data");
    let (app, _, _) = dg_appliance::cli::bootstrap::build_app(&DataDirArgs {
        data_dir: Some(data.clone()),
        config: Some(config.clone()),
    })
    .unwrap();
    for tenant in [2u64, 3] {
        app.store.create_tenant(tenant, &format!("t{tenant}"), &std::collections::BTreeMap::new()).unwrap();
    }
    for tenant in [1u64, 2, 3] {
        if app.store.list_namespaces(tenant).unwrap().is_empty() {
            app.store.create_namespace(tenant, 1, "n").unwrap();
        }
    }
    let mut n = 0;
    let mut tool = |tenant: u64, operation: Operation, args: Value| {
        n += 1;
        let service =
            Principal { id: format!("svc-{tenant}"), role: Role::Service, tenant: Some(tenant), namespaces: vec![1] };
        request::call(&app, &service, format!("req-{n}"), operation, args, dg_appliance::ops::tools::call_tool)
    };
    // Tenant 1, basic: 2 runs included, blocked past them; 4 tool calls included, flagged past.
    tool(1, Operation::ScenarioDefine, spec(1)).unwrap();
    tool(1, Operation::ScenarioStart, start(1, "r1")).unwrap();
    tool(1, Operation::ScenarioStart, start(1, "r2")).unwrap();
    let refused = tool(1, Operation::ScenarioStart, start(1, "r3")).unwrap_err();
    assert_eq!(refused.code, -32003, "the quota error: {refused:?}");
    tool(1, Operation::ScenarioStatus, status(1, "r1")).unwrap();
    tool(1, Operation::ScenarioStatus, status(1, "r2")).unwrap();
    // Tenant 2, pro: 3 tool calls included, each one over priced at 1500 micro-EUR.
    tool(2, Operation::ScenarioDefine, spec(2)).unwrap();
    for run in ["a1", "a2", "a3", "a4"] {
        tool(2, Operation::ScenarioStart, start(2, run)).unwrap();
    }
    // Tenant 3, starter: 1 run included, each one over priced at 2 EUR.
    tool(3, Operation::ScenarioDefine, spec(3)).unwrap();
    tool(3, Operation::ScenarioStart, start(3, "b1")).unwrap();
    tool(3, Operation::ScenarioStart, start(3, "b2")).unwrap();

    // Refused before mutation: no run r3, and the decision names the quota.
    let scope = dg_storage::Scope { tenant_id: 1, namespace_id: 1 };
    assert!(app.store.get_run(scope, "r3").unwrap().is_none(), "the blocked start changed nothing");
    assert!(app.store.get_run(scope, "r2").unwrap().is_some());
    let denied = app.store.audit_entries(1).unwrap().into_iter().find(|e| e.event.request_id == "req-4").unwrap();
    assert!(denied.event.reason.contains("quota runs_started exceeded"), "{:?}", denied.event);

    // In-process, from the stored period totals: exactly the hand-computed figures.
    let tenants: Vec<u64> = app.store.list_tenants().unwrap().into_iter().map(|t| t.tenant_id).collect();
    let totals = app.store.usage_for_period("2026-11").unwrap();
    let csv = dg_appliance::billing::export(
        &app.config.billing,
        "2026-11",
        &tenants,
        &totals,
        dg_appliance::billing::Format::Csv,
    );
    assert_eq!(String::from_utf8(csv).unwrap(), EXPECTED);
    app.store.close();
    drop(app);

    // The CLI (the real clock: November is closed), twice: byte-identical, signature too.
    let export = |name: &str| {
        let out = dir.path().join(name);
        let done = Command::new(env!("CARGO_BIN_EXE_dg-appliance"))
            .args(["usage", "export", "--period", "2026-11", "--format", "csv", "--out"])
            .arg(&out)
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
        (std::fs::read(&out).unwrap(), std::fs::read(format!("{}.sig", out.display())).unwrap())
    };
    let (first, first_sig) = export("first.csv");
    let (second, second_sig) = export("second.csv");
    assert_eq!(String::from_utf8(first.clone()).unwrap(), EXPECTED);
    assert_eq!(first, second, "the same period exported twice");
    assert_eq!(first_sig, second_sig);
    let sig: Value = serde_json::from_slice(&first_sig).unwrap();
    let ring = Command::new(env!("CARGO_BIN_EXE_dg-appliance"))
        .args(["keys", "show-public", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap()
        .stdout;
    let ring = dg_storage::signing::PublicKeyRing::parse(&String::from_utf8(ring).unwrap()).unwrap();
    let mut message = dg_appliance::billing::EXPORT_CONTEXT.to_vec();
    message.extend_from_slice(&first);
    ring.verify(sig["key_id"].as_str().unwrap(), &message, sig["signature"].as_str().unwrap()).unwrap();
    // JSONL too.
    let jsonl = Command::new(env!("CARGO_BIN_EXE_dg-appliance"))
        .args(["usage", "export", "--period", "2026-11", "--format", "jsonl", "--out"])
        .arg(dir.path().join("m.jsonl"))
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(jsonl.status.success());
    let lines = std::fs::read_to_string(dir.path().join("m.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 21);
    assert!(lines.contains(r#""overage_price_micros":2000000"#), "{lines}");
}
