#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Trusted time (operations issue, point 5), in-process with a faked wall clock (the
//! process's clock is shifted; the machine's is untouched): a step back of one hour is
//! warned about, counted on `/metrics`, audited, makes `/readyz` degraded, and audit
//! entries and usage rows written after it never sort before earlier ones.

use std::collections::BTreeMap;

use dg_appliance::cli::DataDirArgs;
use dg_appliance::clock_watch::Direction;
use dg_appliance::ops::request;
use dg_identity::{Operation, Principal};
use serde_json::json;

#[test]
fn a_clock_stepped_back_an_hour_is_reported_and_record_order_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _, _) =
        dg_appliance::cli::bootstrap::build_app(&DataDirArgs { data_dir: Some(dir.path().join("data")), config: None })
            .unwrap();
    app.store.create_tenant(2, "t", &BTreeMap::new()).unwrap();
    let admin = Principal::local_operator();
    let list = |id: &str| {
        request::call(&app, &admin, id.to_string(), Operation::TenantList, json!({}), dg_appliance::ops::admin::call)
            .unwrap();
    };
    assert!(app.clock.watch_once(app.store.as_ref()).is_none(), "a steady clock");
    list("before-1");
    list("before-2");
    std::thread::sleep(std::time::Duration::from_millis(20));

    dg_storage::shift_wall_clock_for_tests(-3_600_000);
    let step = app.clock.watch_once(app.store.as_ref()).expect("the step is seen");
    assert_eq!(step.direction, Direction::Backward);
    assert!(step.amount_ms >= 3_590_000, "{step:?}");
    assert!(
        step.message.contains("stepped backward") && step.message.contains("behind"),
        "the warning: {}",
        step.message
    );
    assert!(app.clock.ready().is_err(), "/readyz degraded beyond the bound");
    assert!(app.clock.render().contains("dg_clock_steps_total{direction=\"backward\"} 1"));
    list("after-1");
    list("after-2");

    let entries = app.store.audit_entries(1).unwrap();
    let audited = entries.iter().find(|e| e.event.action == "clock_step").expect("the step is audited");
    assert_eq!(audited.event.outcome, "warn");
    for pair in entries.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert!(pair[1].time_ms >= pair[0].time_ms, "entry {} sorts before entry {}", pair[1].seq, pair[0].seq);
    }
    let before = entries.iter().find(|e| e.event.request_id == "before-2").unwrap();
    let after = entries.iter().find(|e| e.event.request_id == "after-1").unwrap();
    assert!(after.time_ms >= before.time_ms, "held at the newest record's time");
    assert!(after.time_ms - dg_storage::now_ms() > 3_000_000, "the wall clock itself is an hour behind");

    // A signed checkpoint says its time was held.
    let signer: std::sync::Arc<dyn dg_storage::audit::AuditSigner> = app.keys.clone();
    let checkpoint = app.store.audit_checkpoint_now(&signer).unwrap().expect("a checkpoint is due");
    assert_eq!(checkpoint.body.time_source.as_deref(), Some("system_clock_held"));
    dg_storage::shift_wall_clock_for_tests(3_600_000);
    assert!(app.clock.watch_once(app.store.as_ref()).is_some_and(|s| s.direction == Direction::Forward));
    assert!(app.clock.ready().is_ok(), "ready again once the clock is back");
}
