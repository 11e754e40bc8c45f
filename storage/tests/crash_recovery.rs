#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance (issue 4, point 1): a child process writes runs and triggers as fast as it
//! can, acknowledging each on stdout only after the store returned; it is killed with
//! SIGKILL at random points, 20 rounds; after each kill every acknowledged write is
//! present and the store check passes. The kill point is counted in the child's
//! acknowledgements, so a busy machine does not move it; in every other round it comes
//! after the child's background WAL checkpoints began, so kills also land in their middle.
//!
//! The child is this same test binary re-run with `DG_CRASH_CHILD_DB` set (see
//! `crash_child_writer`), so the test needs no extra binary.

use std::io::{BufRead, BufReader, Write};
use std::num::NonZeroU64;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dg_engine::spec::ScenarioSpec;
use dg_engine::state::{RunConfig, TriggerEvent, TriggerKind};
use dg_engine::time::Timestamp;
use dg_engine::{ControlPlane, EngineConfig};
use dg_providers::time::TimeProviderConfig;
use dg_providers::BuiltinProviders;
use dg_storage::{Scope, Store, StoreLimits};
use rand::Rng;
use serde_json::json;

fn spec() -> ScenarioSpec {
    serde_json::from_value(json!({
        "scenario_id": "crash", "namespace_id": 4, "spec_version": "1", "policies": [], "schemas": [],
        "conditions": [{"condition_id": "c", "query": {"provider_id": "time", "check_id": "after", "params": {"timestamp": 1000}},
                        "comparator": "equals", "expected": true, "policy_tags": []}],
        "stages": [{"stage_id": "s", "entry_packets": [], "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}],
                    "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"}]
    }))
    .unwrap()
}

/// The child: only active when re-run by the parent test.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var("DG_CRASH_CHILD_DB") else { return };
    let round = std::env::var("DG_CRASH_ROUND").unwrap();
    let store = Arc::new(Store::open(std::path::Path::new(&path), StoreLimits::default()).unwrap());
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4)
        .map(|worker| {
            let (store, stdout, round) = (store.clone(), stdout.clone(), round.clone());
            std::thread::spawn(move || {
                let spec = spec();
                let providers = BuiltinProviders::default().with_time(TimeProviderConfig::default());
                let config = EngineConfig::default();
                let engine = ControlPlane::new(&spec, &config, &providers).unwrap();
                for n in 0.. {
                    let run_id = format!("r{round}-w{worker}-{n}");
                    let run_config = RunConfig {
                        tenant_id: NonZeroU64::new(7).unwrap(),
                        namespace_id: NonZeroU64::new(4).unwrap(),
                        run_id: run_id.clone(),
                        scenario_id: "crash".into(),
                        dispatch_targets: vec![],
                        policy_tags: vec![],
                    };
                    let mut state = engine.start_run(run_config, Timestamp::Logical(0), false).unwrap();
                    let version = store.create_run(&state, dg_storage::audit::AuditBatch::none()).unwrap();
                    writeln!(stdout.lock().unwrap(), "ACK run {run_id}").unwrap();
                    let trigger = TriggerEvent {
                        trigger_id: "t1".into(),
                        tenant_id: state.tenant_id,
                        namespace_id: state.namespace_id,
                        run_id: run_id.clone(),
                        kind: TriggerKind::Tick,
                        time: Timestamp::Logical(n),
                        source_id: "crash".into(),
                        payload: None,
                        correlation_id: None,
                    };
                    engine.trigger(&mut state, &trigger).unwrap();
                    store.update_run(&state, version, dg_storage::audit::AuditBatch::none()).unwrap();
                    writeln!(stdout.lock().unwrap(), "ACK trigger {run_id}").unwrap();
                    if worker == 0 {
                        let counts = store.checkpoint_counts();
                        writeln!(
                            stdout.lock().unwrap(),
                            "CHECKPOINTS {} {}",
                            counts.background_passes,
                            counts.writer_finishes
                        )
                        .unwrap();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

/// What the crash child reported on stdout so far.
#[derive(Default)]
struct ChildProgress {
    /// Acknowledged writes, in order.
    acks: Vec<String>,
    /// Whether the child's last report counted finished background checkpoints of each kind.
    checkpointed: bool,
    /// Acknowledgements since the child first reported checkpoints.
    acks_since_checkpoint: usize,
}

impl ChildProgress {
    /// Takes one line of the child's output: `ACK <write>` or `CHECKPOINTS <counts>`.
    fn read(&mut self, line: &str) {
        if let Some(ack) = line.strip_prefix("ACK ") {
            self.acks.push(ack.to_string());
            if self.checkpointed {
                self.acks_since_checkpoint += 1;
            }
        } else if let Some(counts) = line.strip_prefix("CHECKPOINTS ") {
            self.checkpointed = counts.split(' ').all(|count| count.parse::<u64>().is_ok_and(|n| n > 0));
        }
    }
}

#[test]
fn acknowledged_writes_survive_sigkill_at_random_points() {
    if std::env::var("DG_CRASH_CHILD_DB").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let mut rng = rand::thread_rng();
    let mut total_acks = 0usize;
    // Rounds whose child had finished background checkpoints before the kill, so kills
    // land while checkpoints (copying into the database file) are part of the traffic.
    let mut rounds_with_checkpoints = 0;
    for round in 0..20 {
        // Where the kill lands is counted in the child's own progress, not in wall time, so
        // a machine busy with other work moves the kill no less far into the child's traffic.
        // Even rounds: after a random number of acknowledgements, early or late. Odd rounds:
        // a random number of acknowledgements after the child reported finished background
        // checkpoints, so kills land while checkpoints are part of the traffic.
        let after_checkpoints = round % 2 == 1;
        let kill_after_acks = if after_checkpoints { rng.gen_range(0..200) } else { rng.gen_range(1..600) };
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
            .env("DG_CRASH_CHILD_DB", &db)
            .env("DG_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut progress = ChildProgress::default();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let due = if after_checkpoints {
                progress.checkpointed && progress.acks_since_checkpoint >= kill_after_acks
            } else {
                progress.acks.len() >= kill_after_acks
            };
            if due {
                break;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "round {round}: the child stalled or ended ({} acknowledgements, checkpointed: {})",
                    progress.acks.len(),
                    progress.checkpointed
                )
            });
            progress.read(&line);
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Acknowledgements printed before the kill but not yet read are acknowledged too.
        for line in lines.iter() {
            progress.read(&line);
        }
        reader.join().unwrap();
        let ChildProgress { acks, checkpointed, .. } = progress;
        total_acks += acks.len();
        if checkpointed {
            rounds_with_checkpoints += 1;
        }

        let store = Store::open(&db, StoreLimits::default()).unwrap();
        let scope = Scope::new(7, 4);
        for ack in &acks {
            let (kind, run_id) = ack.split_once(' ').unwrap();
            let (state, _) =
                store.get_run(scope, run_id).unwrap().unwrap_or_else(|| panic!("round {round}: lost {ack}"));
            if kind == "trigger" {
                assert_eq!(state.triggers.len(), 1, "round {round}: lost {ack}");
                assert_eq!(state.decisions.len(), 1);
            }
        }
        let report = store.check().unwrap();
        assert!(report.ok(), "round {round}: store check failed: {report:?}");
    }
    assert!(total_acks > 100, "the child made progress ({total_acks} acknowledgements)");
    assert!(rounds_with_checkpoints >= 10, "only {rounds_with_checkpoints} of 20 rounds checkpointed before the kill");
}
