#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance (issue 5, points 1 and 2): a corpus of hostile bundles generated here, each
//! refused with its specific error and nothing written anywhere; and the round trip
//! export → bundle → offline verify with only the public key, again after a rotation.

use std::num::NonZeroU64;

use dg_engine::runpack::{build_runpack, ExportOptions, RunpackSecurity};
use dg_engine::spec::ScenarioSpec;
use dg_engine::state::{RunConfig, TriggerEvent, TriggerKind};
use dg_engine::time::Timestamp;
use dg_engine::{ControlPlane, EngineConfig};
use dg_providers::time::TimeProviderConfig;
use dg_providers::BuiltinProviders;
use dg_storage::bundle::{build_bundle, import_verified, read_bundle, BundleError, BundleLimits, DESCRIPTOR_NAME};
use dg_storage::runpack_store::{ResolveMode, RunpackLimits, RunpackStore};
use dg_storage::signing::{KeyStore, PublicKeyRing};
use serde_json::{json, Value};

/// Manifest bytes and artifact files of a real run.
fn runpack() -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    runpack_of(|_| {})
}

/// The same run with its state edited before export (a runpack whose manifest and hashes
/// are consistent with contents the verifier must still refuse).
fn runpack_of(edit: impl Fn(&mut dg_engine::RunState)) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let spec: ScenarioSpec = serde_json::from_value(json!({
        "scenario_id": "bundled", "namespace_id": 2, "spec_version": "1", "default_tenant_id": 5, "policies": [], "schemas": [],
        "conditions": [{"condition_id": "c", "query": {"provider_id": "time", "check_id": "after", "params": {"timestamp": 0}},
                        "comparator": "equals", "expected": true, "policy_tags": []}],
        "stages": [{"stage_id": "s", "entry_packets": [], "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}],
                    "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"}]
    }))
    .unwrap();
    let providers = BuiltinProviders::default().with_time(TimeProviderConfig::default());
    let config = EngineConfig::default();
    let engine = ControlPlane::new(&spec, &config, &providers).unwrap();
    let run_config = RunConfig {
        tenant_id: NonZeroU64::new(5).unwrap(),
        namespace_id: NonZeroU64::new(2).unwrap(),
        run_id: "run-b".into(),
        scenario_id: "bundled".into(),
        dispatch_targets: vec![],
        policy_tags: vec![],
    };
    let mut state = engine.start_run(run_config, Timestamp::Logical(1), true).unwrap();
    let trigger = TriggerEvent {
        trigger_id: "t".into(),
        tenant_id: state.tenant_id,
        namespace_id: state.namespace_id,
        run_id: "run-b".into(),
        kind: TriggerKind::Tick,
        time: Timestamp::Logical(2),
        source_id: "x".into(),
        payload: None,
        correlation_id: None,
    };
    engine.trigger(&mut state, &trigger).unwrap();
    edit(&mut state);
    let options = ExportOptions {
        generated_at: Timestamp::Logical(3),
        include_verification: true,
        anchor_policy: None,
        security: Some(RunpackSecurity { dev_permissive: false, namespace_authority: "dg_registry".into() }),
    };
    let pack = build_runpack(&spec, &state, &options).unwrap();
    (pack.manifest_bytes, pack.files)
}

/// One raw ustar member (header + padded data); `kind` is the type flag byte.
fn member(name: &[u8], kind: u8, data: &[u8], declared_size: Option<u64>, link: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    let size = declared_size.unwrap_or(data.len() as u64);
    let octal = if size < 8u64.pow(11) { format!("{size:011o}\0") } else { format!("{size:012o}") };
    header[124..136].copy_from_slice(octal.as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = kind;
    header[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    member(name.as_bytes(), b'0', data, None, b"")
}

fn finish(mut tar: Vec<u8>) -> Vec<u8> {
    tar.extend_from_slice(&[0u8; 1024]);
    zstd::encode_all(tar.as_slice(), 3).unwrap()
}

/// The members of a genuine bundle, as (path, bytes), descriptor first.
fn members_of(bundle: &[u8]) -> Vec<(String, Vec<u8>)> {
    let tar = zstd::decode_all(bundle).unwrap();
    let mut archive = tar::Archive::new(tar.as_slice());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            (path, bytes)
        })
        .collect()
}

fn repack(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    finish(members.iter().flat_map(|(p, b)| file(p, b)).collect())
}

fn edit_json(bytes: &[u8], edit: impl Fn(&mut Value)) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(bytes).unwrap();
    edit(&mut value);
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn round_trip_verifies_offline_and_after_rotation() {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(keys_dir.path()).unwrap();
    let (manifest, files) = runpack();
    let bundle = build_bundle("manifest.json", &manifest, &files, &keys.active().unwrap()).unwrap();
    assert_eq!(
        bundle,
        build_bundle("manifest.json", &manifest, &files, &keys.active().unwrap()).unwrap(),
        "deterministic"
    );
    // Offline: only the published ring text is used.
    let ring = PublicKeyRing::parse(&serde_json::to_string(&keys.ring().unwrap()).unwrap()).unwrap();
    let verified = read_bundle(bundle.as_slice(), &ring, BundleLimits::default()).unwrap();
    assert_eq!(verified.manifest_bytes, manifest);
    assert_eq!(verified.files.len(), files.len());
    assert_eq!(verified.signed.descriptor.run_id, "run-b");
    keys.rotate().unwrap();
    let after = keys.ring().unwrap();
    assert_eq!(after.keys.len(), 2);
    read_bundle(bundle.as_slice(), &after, BundleLimits::default()).expect("old bundles verify after rotation");
    let newer = build_bundle("manifest.json", &manifest, &files, &keys.active().unwrap()).unwrap();
    read_bundle(newer.as_slice(), &after, BundleLimits::default()).unwrap();
    assert!(
        matches!(read_bundle(newer.as_slice(), &ring, BundleLimits::default()), Err(BundleError::Signature(_))),
        "the old ring does not know the new key"
    );
    let store_dir = tempfile::tempdir().unwrap();
    let store = RunpackStore::open(store_dir.path(), RunpackLimits::default(), ResolveMode::Auto).unwrap();
    let path = import_verified(&store, &verified).unwrap();
    assert!(path.join("manifest.json").is_file());
}

#[test]
fn a_signed_bundle_with_a_bad_decision_log_is_refused_like_the_directory_verifier_does() {
    // The bundle reader checks the decision log on a second core while it unpacks the
    // rest; its verdict must be the one the sequential verifier reaches.
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(keys_dir.path()).unwrap();
    let ring = keys.ring().unwrap();
    let (manifest, files) = runpack_of(|state| {
        let again = state.decisions[0].clone();
        state.decisions.push(again);
    });
    let sequential = {
        let map: std::collections::BTreeMap<String, Vec<u8>> = files.iter().cloned().collect();
        dg_engine::runpack::verify_runpack(&manifest, &map).unwrap().errors
    };
    assert!(sequential.iter().any(|e| e.starts_with("duplicate decision for trigger")), "{sequential:?}");
    let bundle = build_bundle("manifest.json", &manifest, &files, &keys.active().unwrap()).unwrap();
    match read_bundle(bundle.as_slice(), &ring, BundleLimits::default()) {
        Err(BundleError::Runpack(message)) => assert_eq!(message, sequential.join("; ")),
        other => panic!("expected the duplicate decision to be refused, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn hostile_bundles_are_refused_with_specific_errors_and_nothing_is_written() {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(keys_dir.path()).unwrap();
    let ring = keys.ring().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = KeyStore::open(other_dir.path()).unwrap();
    let (manifest, files) = runpack();
    let good = build_bundle("manifest.json", &manifest, &files, &keys.active().unwrap()).unwrap();
    let good_members = members_of(&good);
    let descriptor = good_members[0].1.clone();
    assert_eq!(good_members[0].0, DESCRIPTOR_NAME);
    let with_member = |extra: Vec<u8>| -> Vec<u8> {
        let mut tar: Vec<u8> = good_members.iter().flat_map(|(p, b)| file(p, b)).collect();
        tar.extend(extra);
        finish(tar)
    };
    let replace = |path: &str, bytes: Vec<u8>| -> Vec<u8> {
        let members: Vec<(String, Vec<u8>)> = good_members
            .iter()
            .map(|(p, b)| if p == path { (p.clone(), bytes.clone()) } else { (p.clone(), b.clone()) })
            .collect();
        repack(&members)
    };
    let other_run = {
        let mut edited_manifest = edit_json(&manifest, |m| m["generated_at"]["value"] = json!(99));
        edited_manifest.shrink_to_fit();
        build_bundle("manifest.json", &edited_manifest, &files, &keys.active().unwrap()).unwrap()
    };
    let mut pax = Vec::new();
    pax.extend(member(b"PaxHeaders/x", b'x', b"14 size=99999\n", None, b""));
    pax.extend(file("artifacts/pax.json", b"{}"));
    let mut long_name = member(b"././@LongLink", b'L', b"../../../../etc/cron.d/evil\0", None, b"");
    long_name.extend(file("placeholder", b"x"));
    let mut pax_path = member(b"PaxHeaders/p", b'x', b"20 path=/etc/passwd\n", None, b"");
    pax_path.extend(file("innocent", b"x"));
    let truncated = good[..good.len() / 2].to_vec();
    let many: Vec<u8> = {
        let mut tar = Vec::with_capacity(100_000 * 1024);
        for i in 0..100_000 {
            tar.extend(file(&format!("f{i}"), b"x"));
        }
        finish(tar)
    };
    let bomb = {
        // 40 MiB of zeros behind a 1 KiB-scale stream: far past the ratio limit.
        let mut tar = member(b"artifacts/zeros", b'0', &[], Some(40 * 1024 * 1024), b"");
        tar.resize(tar.len() + 40 * 1024 * 1024, 0);
        finish(tar)
    };
    let huge_declared = finish(member(b"artifacts/huge", b'0', &[], Some(10 * 1024 * 1024 * 1024), b""));

    type Case = (&'static str, Vec<u8>, fn(&BundleError) -> bool);
    let cases: Vec<Case> = vec![
        ("symlink to /etc/passwd", with_member(member(b"artifacts/link", b'2', &[], None, b"/etc/passwd")), |e| {
            matches!(e, BundleError::Link(_))
        }),
        ("hard link", with_member(member(b"artifacts/hard", b'1', &[], None, b"manifest.json")), |e| {
            matches!(e, BundleError::Link(_))
        }),
        ("dot-dot entry", with_member(file("../escape", b"x")), |e| matches!(e, BundleError::Path { .. })),
        ("nested dot-dot", with_member(file("artifacts/../../escape", b"x")), |e| {
            matches!(e, BundleError::Path { .. })
        }),
        ("absolute entry", with_member(file("/etc/passwd", b"x")), |e| matches!(e, BundleError::Path { .. })),
        ("empty segment", with_member(file("artifacts//x", b"x")), |e| matches!(e, BundleError::Path { .. })),
        ("dot-dot directory", with_member(member(b"../", b'5', &[], None, b"")), |e| {
            matches!(e, BundleError::Path { .. })
        }),
        ("non-utf8 name", with_member(member(b"artifacts/\xff\xfe", b'0', b"x", None, b"")), |e| {
            matches!(e, BundleError::Path { .. })
        }),
        ("character device", with_member(member(b"dev/null", b'3', &[], None, b"")), |e| {
            matches!(e, BundleError::Special { .. })
        }),
        ("block device", with_member(member(b"dev/sda", b'4', &[], None, b"")), |e| {
            matches!(e, BundleError::Special { .. })
        }),
        ("fifo", with_member(member(b"pipe", b'6', &[], None, b"")), |e| matches!(e, BundleError::Special { .. })),
        ("duplicate manifest", with_member(file("manifest.json", &manifest)), |e| {
            matches!(e, BundleError::Duplicate(_))
        }),
        ("duplicate descriptor", with_member(file(DESCRIPTOR_NAME, &descriptor)), |e| {
            matches!(e, BundleError::Duplicate(_))
        }),
        ("pax size mismatch", with_member(pax), |e| {
            matches!(e, BundleError::SizeMismatch(_) | BundleError::Corrupt(_))
        }),
        ("gnu long name escape", with_member(long_name), |e| matches!(e, BundleError::Path { .. })),
        ("pax absolute path", with_member(pax_path), |e| matches!(e, BundleError::Path { .. })),
        ("truncated zstd stream", truncated, |e| matches!(e, BundleError::Corrupt(_))),
        ("not zstd at all", b"this is not a bundle".to_vec(), |e| matches!(e, BundleError::Corrupt(_))),
        ("zstd of garbage", zstd::encode_all(&[0x55u8; 4096][..], 3).unwrap(), |e| {
            matches!(e, BundleError::Corrupt(_))
        }),
        ("declared size beyond the stream", finish(member(b"artifacts/short", b'0', b"abc", Some(5000), b"")), |e| {
            matches!(e, BundleError::Corrupt(_))
        }),
        ("decompression bomb", bomb, |e| matches!(e, BundleError::Ratio(_))),
        ("10 GiB declared entry", huge_declared, |e| matches!(e, BundleError::TooLarge(_))),
        ("100,000 tiny entries", many, |e| matches!(e, BundleError::TooManyEntries(_))),
        (
            "signed by an unknown key",
            build_bundle("manifest.json", &manifest, &files, &other.active().unwrap()).unwrap(),
            |e| matches!(e, BundleError::Signature(dg_storage::signing::SigningError::UnknownKey(_))),
        ),
        (
            "valid signature over a different manifest",
            {
                let theirs = members_of(&other_run);
                let mut mixed = good_members.clone();
                mixed[0] = theirs[0].clone();
                repack(&mixed)
            },
            |e| matches!(e, BundleError::HashMismatch(_)),
        ),
        (
            "manifest run_id edited",
            replace("manifest.json", edit_json(&manifest, |m| m["run_id"] = json!("run-x"))),
            |e| matches!(e, BundleError::HashMismatch(_)),
        ),
        (
            "descriptor run_id edited",
            replace(DESCRIPTOR_NAME, edit_json(&descriptor, |d| d["descriptor"]["run_id"] = json!("run-x"))),
            |e| matches!(e, BundleError::Signature(dg_storage::signing::SigningError::BadSignature(_))),
        ),
        (
            "descriptor security edited",
            replace(
                DESCRIPTOR_NAME,
                edit_json(&descriptor, |d| d["descriptor"]["manifest"]["security"]["dev_permissive"] = json!(true)),
            ),
            |e| matches!(e, BundleError::Signature(_)),
        ),
        (
            "signature flipped",
            replace(
                DESCRIPTOR_NAME,
                edit_json(&descriptor, |d| {
                    let sig = d["signature"]["value"].as_str().unwrap().to_string();
                    let first = if sig.starts_with('0') { '1' } else { '0' };
                    let flipped: String = std::iter::once(first).chain(sig.chars().skip(1)).collect();
                    d["signature"]["value"] = json!(flipped);
                }),
            ),
            |e| matches!(e, BundleError::Signature(_)),
        ),
        (
            "unknown signature algorithm",
            replace(DESCRIPTOR_NAME, edit_json(&descriptor, |d| d["signature"]["algorithm"] = json!("rsa"))),
            |e| matches!(e, BundleError::InvalidDescriptor(_)),
        ),
        ("descriptor not json", replace(DESCRIPTOR_NAME, b"{".to_vec()), |e| {
            matches!(e, BundleError::InvalidDescriptor(_))
        }),
        ("missing descriptor", repack(&good_members[1..]), |e| matches!(e, BundleError::MissingDescriptor)),
        ("extra unsigned file", with_member(file("artifacts/extra.json", b"{}")), |e| {
            matches!(e, BundleError::Extra(_))
        }),
        ("signed file missing", repack(&good_members[..good_members.len() - 1]), |e| {
            matches!(e, BundleError::Missing(_))
        }),
        (
            "artifact byte flipped",
            {
                let (path, bytes) = &good_members[2];
                let mut bytes = bytes.clone();
                bytes[0] ^= 1;
                replace(path, bytes)
            },
            |e| matches!(e, BundleError::HashMismatch(_)),
        ),
    ];
    assert!(cases.len() >= 30, "corpus has {} cases", cases.len());
    let store_dir = tempfile::tempdir().unwrap();
    let store = RunpackStore::open(store_dir.path(), RunpackLimits::default(), ResolveMode::Auto).unwrap();
    for (name, bytes, expected) in &cases {
        match read_bundle(bytes.as_slice(), &ring, BundleLimits::default()) {
            Ok(verified) => {
                let _ = import_verified(&store, &verified);
                panic!("{name}: hostile bundle accepted");
            }
            Err(err) => assert!(expected(&err), "{name}: wrong error: {err}"),
        }
    }
    assert_eq!(std::fs::read_dir(store_dir.path()).unwrap().count(), 0, "nothing was written");
    // A forged ring entry (right id, other public key) is refused too.
    let mut forged = ring.clone();
    forged.keys[0].public_key = other.ring().unwrap().keys[0].public_key.clone();
    assert!(read_bundle(good.as_slice(), &forged, BundleLimits::default()).is_err());
}

/// Writes seed inputs for the bundle-reader fuzz target (a valid bundle and damaged
/// variants) into `DG_WRITE_FUZZ_SEEDS`; does nothing otherwise.
#[test]
fn write_fuzz_seeds() {
    let Ok(dir) = std::env::var("DG_WRITE_FUZZ_SEEDS") else { return };
    std::fs::create_dir_all(&dir).unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(keys_dir.path()).unwrap();
    let (manifest, files) = runpack();
    let good = build_bundle("manifest.json", &manifest, &files, &keys.active().unwrap()).unwrap();
    let members = members_of(&good);
    std::fs::write(format!("{dir}/valid.tar.zst"), &good).unwrap();
    std::fs::write(format!("{dir}/no-descriptor.tar.zst"), repack(&members[1..])).unwrap();
    std::fs::write(format!("{dir}/symlink.tar.zst"), finish(member(b"a", b'2', &[], None, b"/etc/passwd"))).unwrap();
    std::fs::write(format!("{dir}/plain.tar.zst"), finish(file("bundle.json", b"{}"))).unwrap();
}
