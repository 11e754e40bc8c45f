#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The request path's audit guarantees (architecture issue, point 2), through the
//! daemon's own request path (`request::call`) on one thread, as a connection's thread
//! runs requests one after another:
//! - a tool that panics after its authorization and before its write is audited as an
//!   internal error, and leaves nothing behind for the next request on that thread: an
//!   admin operation and a tool call that follow have exactly their own audit entries;
//! - an operation that never records an authorization decision is refused (internal
//!   error), audited, and its write never happens.

use std::collections::BTreeMap;

use dg_appliance::app::App;
use dg_appliance::cli::DataDirArgs;
use dg_appliance::ops::request;
use dg_identity::{Operation, Principal, Target};
use serde_json::{json, Value};

fn app(dir: &tempfile::TempDir) -> App {
    let (app, _, _) =
        dg_appliance::cli::bootstrap::build_app(&DataDirArgs { data_dir: Some(dir.path().join("data")), config: None })
            .unwrap();
    app.store.create_tenant(2, "t", &BTreeMap::new()).unwrap();
    app.store.create_namespace(2, 3, "n").unwrap();
    app
}

fn spec(id: &str) -> Value {
    json!({"spec": {"scenario_id": id, "namespace_id": 3, "spec_version": "1", "default_tenant_id": 2,
        "policies": [], "schemas": [], "conditions": [],
        "stages": [{"stage_id": "s", "entry_packets": [], "gates": [], "advance_to": {"kind": "terminal"},
                    "timeout": null, "on_timeout": "fail"}]}})
}

/// (request id, action, outcome) of every audit entry after `since`.
fn entries_after(app: &App, since: u64) -> Vec<(String, String, String)> {
    app.store
        .audit_entries(since + 1)
        .unwrap()
        .into_iter()
        .map(|entry| (entry.event.request_id, entry.event.action, entry.event.outcome))
        .collect()
}

fn head(app: &App) -> u64 {
    app.store.audit_entries(1).unwrap().last().map_or(0, |entry| entry.seq)
}

fn of(entries: &[(String, String, String)], request_id: &str) -> Vec<(String, String)> {
    entries.iter().filter(|(id, _, _)| id == request_id).map(|(_, a, o)| (a.clone(), o.clone())).collect()
}

#[test]
fn a_panicking_tool_is_audited_as_an_internal_error_and_later_requests_keep_their_own_entries() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir);
    let admin = Principal::local_operator();
    let since = head(&app);
    // The connection's thread catches a panic (http.rs): so does this test.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        request::call(&app, &admin, "panics".into(), Operation::ScenarioDefine, spec("never"), |ctx, _| {
            ctx.authorize(Target::namespace(2, 3))?;
            panic!("a bug in a tool, after its authorization and before its write");
        })
    }));
    // Then, on the same thread: an admin operation and a tool call.
    let created = request::call(
        &app,
        &admin,
        "admin-after".into(),
        Operation::NamespaceCreate,
        json!({"tenant_id": 2, "namespace_id": 4, "name": "four"}),
        dg_appliance::ops::admin::call,
    );
    assert!(created.is_ok(), "{created:?}");
    let defined =
        request::call(&app, &admin, "tool-after".into(), Operation::ScenarioDefine, spec("after"), |ctx, args| {
            dg_appliance::ops::tools::call_tool(ctx, args)
        });
    assert!(defined.is_ok(), "{defined:?}");

    let entries = entries_after(&app, since);
    let pair = |a: &str, o: &str| (a.to_string(), o.to_string());
    // The panicking request: its decision and the call, failed as an internal error
    // (whether the panic reached the caller or was answered by the request path).
    let answered = match &panicked {
        Ok(Err(err)) => err.code == dg_appliance::wire::code::INTERNAL,
        Ok(Ok(_)) => false,
        Err(_) => true,
    };
    assert!(answered, "the panicking request was not answered as an internal error: {panicked:?}");
    assert_eq!(of(&entries, "panics"), vec![pair("authz", "allow"), pair("tool_call", "error")], "{entries:#?}");
    assert_eq!(of(&entries, "admin-after"), vec![pair("authz", "allow"), pair("admin", "ok")], "{entries:#?}");
    assert_eq!(of(&entries, "tool-after"), vec![pair("authz", "allow"), pair("tool_call", "ok")], "{entries:#?}");
    assert_eq!(entries.len(), 6, "no other entries: {entries:#?}");
    // The panicking request's scenario was never written.
    assert!(app.store.get_scenario(dg_storage::Scope::new(2, 3), "never").unwrap().is_none());
}

#[test]
fn an_operation_that_skips_authorization_is_refused_audited_and_not_executed() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir);
    let admin = Principal::local_operator();
    let since = head(&app);
    // A tool handler with a bug: it writes without naming its target first.
    let result =
        request::call(&app, &admin, "skips".into(), Operation::ScenarioDefine, spec("unchecked"), |ctx, args| {
            let args: Value = args;
            let spec: dg_engine::spec::ScenarioSpec = serde_json::from_value(args["spec"].clone()).unwrap();
            let output = json!({"scenario_id": spec.scenario_id});
            ctx.commit(Some(&output), |audit| {
                Ok(ctx.app.store.put_scenario(dg_storage::Scope::new(2, 3), &spec, audit)?)
            })?;
            Ok(output)
        });
    let err = result.expect_err("an operation without an authorization decision must fail");
    assert_eq!(err.code, dg_appliance::wire::code::INTERNAL, "{err:?}");
    assert!(app.store.get_scenario(dg_storage::Scope::new(2, 3), "unchecked").unwrap().is_none(), "it was executed");
    let entries = entries_after(&app, since);
    assert_eq!(of(&entries, "skips"), vec![("tool_call".to_string(), "error".to_string())], "{entries:#?}");
}
