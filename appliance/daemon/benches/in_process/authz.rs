//! Authorization cost against the scenario cycle it guards, measured in one run: a
//! scenario cycle (scenario_start + scenario_next through the daemon's request path:
//! policy, tools, durable state and audit) and, separately, the authorization work of
//! the same two requests (API key authentication, the policy decision and the registry
//! check). The cycle here runs in-process, without HTTP and TLS, so the printed share is
//! an upper bound of what authorization adds to a served cycle. Target: under 5%.

use std::time::Instant;

use dg_appliance::cli::DataDirArgs;
use dg_appliance::ops::auth::authenticate;
use dg_appliance::ops::request::{call, RequestCtx};
use dg_appliance::ops::tools::call_tool;
use dg_identity::{keys, Operation, Principal, Target};
use dg_storage::ApiKeyRecord;
use serde_json::{json, Value};

use crate::support;

fn start_args(run_id: &str) -> Value {
    json!({"scenario_id": "bench", "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": run_id, "scenario_id": "bench",
           "dispatch_targets": [], "policy_tags": []}, "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false})
}

fn next_args(run_id: &str) -> Value {
    json!({"scenario_id": "bench", "request": {"run_id": run_id, "tenant_id": 2, "namespace_id": 3, "trigger_id": "t",
           "agent_id": "a", "time": {"kind": "logical", "value": 9}, "correlation_id": null}})
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs the benchmark and prints its figures.
pub fn run() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _, _) =
        dg_appliance::cli::bootstrap::build_app(&DataDirArgs { data_dir: Some(dir.path().join("data")), config: None })
            .unwrap();
    app.store.create_tenant(2, "bench", &Default::default()).unwrap();
    app.store.create_namespace(2, 3, "bench").unwrap();
    let admin = Principal::local_operator();
    call(
        &app,
        &admin,
        "define".into(),
        Operation::ScenarioDefine,
        json!({"spec": support::sample_spec("bench")}),
        call_tool,
    )
    .unwrap();
    let issued = keys::issue();
    let record = ApiKeyRecord {
        key_id: issued.key_id.clone(),
        label: "bench".into(),
        role: "service".into(),
        tenant_id: Some(2),
        namespaces: vec![3],
        created_at_ms: 0,
        expires_at_ms: None,
        revoked_at_ms: None,
    };
    app.store.put_api_key(&record, &keys::token_hash(&issued.token)).unwrap();
    let header = format!("Bearer {}", issued.token);

    let (mut cycle_us, mut authz_us) = (Vec::new(), Vec::new());
    let mut run = 0u64;
    for _round in 0..7 {
        // Scenario cycles, each request authenticated and authorized as served.
        let cycles = 150;
        let started = Instant::now();
        for _ in 0..cycles {
            run += 1;
            let run_id = format!("r{run}");
            for (operation, name, args) in [
                (Operation::ScenarioStart, "scenario_start", start_args(&run_id)),
                (Operation::ScenarioNext, "scenario_next", next_args(&run_id)),
            ] {
                let principal = authenticate(app.store.as_ref(), None, Some(&header), 0).unwrap();
                call(&app, &principal, format!("{name}-{run}"), operation, args, call_tool).unwrap();
            }
        }
        cycle_us.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(cycles));
        // The authorization work of one cycle (two requests), alone.
        let rounds = 2_000;
        let started = Instant::now();
        for n in 0..rounds {
            for operation in [Operation::ScenarioStart, Operation::ScenarioNext] {
                let principal = authenticate(app.store.as_ref(), None, Some(&header), 0).unwrap();
                let ctx = RequestCtx::new(&app, &principal, operation, format!("a{n}"));
                ctx.authorize(Target::namespace(2, 3)).unwrap();
            }
        }
        authz_us.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds));
    }
    let (cycle, authz) = (median(cycle_us), median(authz_us));
    let share = authz / cycle * 100.0;
    println!("daemon/authz: scenario cycle {cycle:.1} us (start+next, in-process, audited and durable)");
    println!("daemon/authz: authorization {authz:.1} us per cycle (2 x authenticate + policy + registry)");
    println!("daemon/authz: authorization adds {share:.2}% to the cycle (target < 5%, measured in one run)");
    app.store.close();
}
