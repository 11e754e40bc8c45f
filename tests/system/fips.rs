//! The FIPS build (issue 31, fips/README.md), against the FIPS binary named by
//! `DG_FIPS_BIN` (scripts/test-all.sh builds it with scripts/release-fips.sh) beside the
//! standard test build. Outside CI a missing FIPS binary skips these tests with a message;
//! in CI (CI=true) it is a failure.
//!
//! The security-relevant system tests (authorization matrix, runpacks with the reference
//! runpacks, backups, audit) also run whole against the FIPS binary: scripts/test-all.sh.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{sample_spec, Daemon, DaemonOptions};

fn fips_binary() -> Option<PathBuf> {
    match std::env::var_os("DG_FIPS_BIN") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            assert!(std::env::var("CI").is_err(), "CI runs the FIPS tests: DG_FIPS_BIN is not set");
            eprintln!("DG_FIPS_BIN is not set: the FIPS tests are skipped (scripts/release-fips.sh builds it)");
            None
        }
    }
}

/// The standard build (the test build; never DG_APPLIANCE_BIN, which may be the FIPS one).
fn standard_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dg-appliance"))
}

fn run(bin: &Path, args: &[&str], paths: &[&Path]) -> Output {
    let mut command = Command::new(bin);
    command.args(args);
    for path in paths {
        command.arg(path);
    }
    command.output().unwrap()
}

/// Runs a binary this test has just written. Another test thread that forks a child while
/// the file is still open for writing lends that child the descriptor until the child's own
/// exec closes it; executing the file meanwhile fails with ETXTBSY ("Text file busy"). That
/// is a race of the test process, so the start is tried again, a bounded number of times.
fn output_of_new_binary(command: &mut Command) -> Output {
    for _ in 0..100 {
        match command.output() {
            Err(err) if err.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
    panic!("{command:?}: the new binary stayed busy for 2 s");
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn start(bin: &Path) -> Daemon {
    Daemon::start_with(DaemonOptions { binary: Some(bin.to_path_buf()), ..DaemonOptions::default() })
}

#[test]
fn the_fips_binary_runs_the_module_in_fips_mode_and_says_so() {
    let Some(fips) = fips_binary() else { return };
    let version = ok(&run(&fips, &["version"], &[]));
    assert!(version.contains("crypto provider: fips"), "{version}");
    assert!(version.contains("AWS-LC FIPS"), "{version}");
    assert!(version.lines().any(|line| line == "FIPS mode: yes"), "{version}");
    let standard = ok(&run(&standard_binary(), &["version"], &[]));
    assert!(standard.contains("crypto provider: standard"), "{standard}");
    assert!(standard.lines().any(|line| line == "FIPS mode: no"), "{standard}");

    // The daemon serves only once its server TLS configuration reports fips() (it refuses
    // otherwise) and logs what it found; /metrics says which provider runs.
    let daemon = start(&fips);
    let logged = |message: &str| -> Value {
        daemon
            .startup_log
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|entry| entry["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} in the start-up log: {:?}", daemon.startup_log))
    };
    assert_eq!(logged("TLS server configuration")["fields"]["tls_fips"], true);
    assert_eq!(logged("crypto module")["fields"]["fips_mode"], true);
    assert_eq!(daemon.metric("dg_fips_mode"), Some(1.0));
    let (status, text) = daemon.get_authed("/metrics");
    assert_eq!(status, 200);
    assert!(text.contains("dg_crypto_provider_info{provider=\"fips\"} 1"), "{text}");
    let plain = start(&standard_binary());
    assert_eq!(plain.metric("dg_fips_mode"), Some(0.0));
}

/// Connects with only `suites` (and TLS 1.2 and 1.3) offered; returns the /healthz status
/// line, or the handshake error.
fn healthz_with_suites(daemon: &Daemon, suites: Vec<rustls::SupportedCipherSuite>) -> Result<String, String> {
    let pem = std::fs::read(daemon.data_dir().join("tls/cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = rustls::crypto::CryptoProvider { cipher_suites: suites, ..rustls::crypto::ring::default_provider() };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).map_err(|err| err.to_string())?;
    let mut socket = TcpStream::connect(("127.0.0.1", daemon.port())).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = rustls::Stream::new(&mut connection, &mut socket);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|err| err.to_string())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|err| err.to_string())?;
    Ok(answer.lines().next().unwrap_or_default().to_string())
}

#[test]
fn a_client_offering_only_non_approved_suites_is_refused_and_approved_ones_connect() {
    let Some(fips) = fips_binary() else { return };
    use rustls::crypto::ring::cipher_suite as suite;
    let chacha_only = || {
        vec![
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ]
    };
    let daemon = start(&fips);
    let refused = healthz_with_suites(&daemon, chacha_only());
    assert!(refused.is_err(), "a ChaCha20-Poly1305-only client connected to the FIPS daemon: {refused:?}");
    for approved in [suite::TLS13_AES_256_GCM_SHA384, suite::TLS13_AES_128_GCM_SHA256] {
        let answer = healthz_with_suites(&daemon, vec![approved]).unwrap_or_else(|err| panic!("{approved:?}: {err}"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{approved:?}: {answer}");
    }
    let tls12 = healthz_with_suites(&daemon, vec![suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384])
        .unwrap_or_else(|err| panic!("TLS 1.2 AES-GCM: {err}"));
    assert!(tls12.starts_with("HTTP/1.1 200"), "{tls12}");
    // The same ChaCha-only client is served by the standard build: the refusal above is
    // the FIPS provider's, not the client's.
    let standard = start(&standard_binary());
    let served = healthz_with_suites(&standard, chacha_only()).unwrap_or_else(|err| panic!("standard build: {err}"));
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
}

fn start_args(run_id: &str) -> Value {
    json!({"scenario_id": "fips", "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": run_id,
           "scenario_id": "fips", "dispatch_targets": [], "policy_tags": []},
           "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false})
}

/// Signs with `signer` (a runpack bundle, a backup with sealed secrets, audit checkpoints)
/// and verifies everything with `verifier`.
fn cross_verify(signer: &Path, verifier: &Path) {
    let mut daemon = start(signer);
    daemon.tool("scenario_define", json!({"spec": sample_spec("fips")})).unwrap();
    for n in 0..20 {
        daemon.tool("scenario_start", start_args(&format!("r{n}"))).unwrap();
    }
    let data = daemon.data_dir();
    // A clean stop writes the closing audit checkpoint, signed by the signer's build.
    daemon.terminate(Duration::from_secs(20)).expect("clean stop");
    let out = tempfile::tempdir().unwrap();
    let ring = out.path().join("ring.json");
    std::fs::write(&ring, ok(&run(signer, &["keys", "show-public", "--data-dir"], &[&data]))).unwrap();

    let bundle = out.path().join("r0.tar.zst");
    ok(&run(
        signer,
        &["runpack", "export", "--tenant", "2", "--namespace", "3", "--run-id", "r0", "--out"],
        &[&bundle, Path::new("--data-dir"), &data],
    ));
    let verified = ok(&run(verifier, &["runpack", "verify", "--pubkey"], &[&ring, &bundle]));
    assert!(verified.contains("result: VERIFIED"), "{verified}");
    let mut forged = std::fs::read(&bundle).unwrap();
    let at = forged.len() / 2;
    forged[at] ^= 1;
    let forged_path = out.path().join("forged.tar.zst");
    std::fs::write(&forged_path, forged).unwrap();
    assert!(!run(verifier, &["runpack", "verify", "--pubkey"], &[&ring, &forged_path]).status.success());

    let pass = out.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let backup = ok(&run(
        signer,
        &["backup", "create", "--include-secrets", "--passphrase-file"],
        &[&pass, Path::new("--to"), &out.path().join("usb"), Path::new("--data-dir"), &data],
    ));
    let backup = PathBuf::from(backup.trim());
    ok(&run(verifier, &["backup", "verify", "--pubkey"], &[&ring, &backup, Path::new("--passphrase-file"), &pass]));
    let restored = out.path().join("restored");
    ok(&run(
        verifier,
        &["backup", "restore", "--pubkey"],
        &[&ring, &backup, Path::new("--passphrase-file"), &pass, Path::new("--data-dir"), &restored],
    ));
    assert_eq!(
        std::fs::read(restored.join("keys/active.key")).unwrap(),
        std::fs::read(data.join("keys/active.key")).unwrap(),
        "the sealed signing key opened in the other build"
    );

    let export = out.path().join("audit.jsonl");
    ok(&run(signer, &["audit", "export", "--out"], &[&export, Path::new("--data-dir"), &data]));
    let audit = ok(&run(verifier, &["audit", "verify", "--export"], &[&export, Path::new("--pubkey"), &ring]));
    assert!(audit.contains("VERIFIED"), "{audit}");
    let checkpoints: u64 = audit
        .split("signed checkpoints: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(checkpoints >= 1, "no signed checkpoint was verified: {audit}");
    let in_place = ok(&run(verifier, &["audit", "verify", "--data-dir"], &[&data]));
    assert!(in_place.contains("VERIFIED"), "{in_place}");
}

#[test]
fn bundles_backups_and_checkpoints_signed_by_either_build_verify_with_the_other() {
    let Some(fips) = fips_binary() else { return };
    cross_verify(&fips, &standard_binary());
    cross_verify(&standard_binary(), &fips);
}

/// The file offset of a symbol's address (`nm`), through the section that holds it (`readelf`).
fn file_offset_of(bin: &Path, symbol: &str) -> u64 {
    let nm = ok(&run(Path::new("nm"), &[], &[bin]));
    let address = nm
        .lines()
        .find_map(|line| {
            let mut parts = line.split_whitespace();
            let (address, _kind, name) = (parts.next()?, parts.next()?, parts.next()?);
            (name == symbol).then(|| u64::from_str_radix(address, 16).ok()).flatten()
        })
        .unwrap_or_else(|| panic!("{symbol} is not in the FIPS binary's symbol table"));
    let sections = ok(&run(Path::new("readelf"), &["-SW"], &[bin]));
    for line in sections.lines() {
        let fields: Vec<&str> = line
            .trim_start_matches(|c: char| c == ' ' || c == '[' || c.is_ascii_digit() || c == ']')
            .split_whitespace()
            .collect();
        // Name Type Address Off Size ...
        if fields.len() < 5 || fields[1] != "PROGBITS" {
            continue;
        }
        let (Ok(start), Ok(offset), Ok(size)) = (
            u64::from_str_radix(fields[2], 16),
            u64::from_str_radix(fields[3], 16),
            u64::from_str_radix(fields[4], 16),
        ) else {
            continue;
        };
        if (start..start + size).contains(&address) {
            return address - start + offset;
        }
    }
    panic!("no section holds {symbol} at {address:#x}");
}

#[test]
fn a_module_that_fails_its_integrity_self_test_refuses_to_start() {
    let Some(fips) = fips_binary() else { return };
    // One byte of the module's code changed: the power-on integrity test (an HMAC over the
    // module's text, checked before main) fails, the module aborts with its message, and
    // nothing of the appliance runs.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("dg-appliance-fips");
    let mut bytes = std::fs::read(&fips).unwrap();
    let start = usize::try_from(file_offset_of(&fips, "BORINGSSL_bcm_text_start")).unwrap();
    let end = usize::try_from(file_offset_of(&fips, "BORINGSSL_bcm_text_end")).unwrap();
    assert!(start < end && end <= bytes.len(), "module text {start}..{end}");
    let at = start + (end - start) / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&broken, &bytes).unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for args in [vec!["version"], vec!["serve", "--data-dir"]] {
        let mut command = Command::new(&broken);
        command.args(&args);
        if args.len() > 1 {
            command.arg(dir.path().join("data"));
        }
        let out = output_of_new_binary(&mut command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: a broken module started");
        assert!(stderr.contains("FIPS integrity test failed"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: printed {}", String::from_utf8_lossy(&out.stdout));
    }
    assert!(!dir.path().join("data").exists(), "the broken binary created a data directory");
    // The unbroken copy starts (the change above is what failed, not the copying).
    let intact = dir.path().join("dg-appliance-fips-intact");
    std::fs::copy(&fips, &intact).unwrap();
    ok(&output_of_new_binary(Command::new(&intact).arg("version")));
}

/// A backup as releases before the crypto seam wrote it: the secrets sealed with age
/// (scrypt, ChaCha20-Poly1305) under `secrets.tar.age`, the index re-signed.
fn age_sealed_copy(backup: &Path, data: &Path, passphrase: &str, into: &Path) -> PathBuf {
    let copy = into.join("age-backup");
    crate::backup::copy_dir(backup, &copy);
    let index: dg_storage::backup::Index =
        serde_json::from_slice(&std::fs::read(copy.join("backup.json")).unwrap()).unwrap();
    let members: Vec<(String, Vec<u8>)> = crate::backup::unpack(&copy, &index)
        .into_iter()
        .map(|(name, bytes)| {
            if name != "secrets.tar.sealed" {
                return (name, bytes);
            }
            let secrets = dg_crypto::open(passphrase.as_bytes(), &bytes).unwrap();
            let encryptor =
                age::Encryptor::with_user_passphrase(age::secrecy::SecretString::from(passphrase.to_string()));
            let mut sealed = Vec::new();
            let mut writer = encryptor.wrap_output(&mut sealed).unwrap();
            std::io::Write::write_all(&mut writer, &secrets).unwrap();
            writer.finish().unwrap();
            ("secrets.tar.age".to_string(), sealed)
        })
        .collect();
    let listed = members
        .iter()
        .map(|(name, bytes)| dg_storage::backup::Member {
            path: name.clone(),
            size: bytes.len() as u64,
            sha256: dg_crypto::sha256_hex(bytes),
        })
        .collect();
    let key = dg_storage::signing::KeyStore::open(&data.join("keys")).unwrap().active().unwrap();
    crate::backup::repack(&copy, &members, listed, &key);
    copy
}

#[test]
fn age_sealed_secrets_of_older_backups_open_in_the_standard_build_and_are_refused_by_the_fips_one() {
    let Some(fips) = fips_binary() else { return };
    let mut daemon = start(&standard_binary());
    let data = daemon.data_dir();
    daemon.terminate(Duration::from_secs(20)).expect("clean stop");
    let out = tempfile::tempdir().unwrap();
    let pass = out.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let backup = ok(&run(
        &standard_binary(),
        &["backup", "create", "--include-secrets", "--passphrase-file"],
        &[&pass, Path::new("--to"), &out.path().join("usb"), Path::new("--data-dir"), &data],
    ));
    let old = age_sealed_copy(Path::new(backup.trim()), &data, "correct horse battery staple", out.path());
    let ring = out.path().join("ring.json");
    std::fs::write(&ring, ok(&run(&standard_binary(), &["keys", "show-public", "--data-dir"], &[&data]))).unwrap();
    let verify =
        |bin: &Path| run(bin, &["backup", "verify", "--pubkey"], &[&ring, &old, Path::new("--passphrase-file"), &pass]);
    ok(&verify(&standard_binary()));
    let refused = verify(&fips);
    let said = format!("{}{}", String::from_utf8_lossy(&refused.stdout), String::from_utf8_lossy(&refused.stderr));
    assert!(!refused.status.success(), "the FIPS build opened age-sealed secrets: {said}");
    assert!(said.contains("not FIPS-approved") && said.contains("standard build"), "{said}");
}
