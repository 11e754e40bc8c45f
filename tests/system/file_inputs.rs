#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Files the appliance reads from a path an operator or attacker names, and the data
//! directory it trusts (hardening issue, points 4 and 5), one named test per attack:
//! - every file-reading command refuses a FIFO, a device, an oversized file, and a link
//!   where none is allowed, promptly (each run is bounded; a hang fails the test);
//! - the daemon refuses to start on a data directory others may write, a secret others
//!   may read, a data directory or state database that is a link; `backup restore`
//!   refuses a link as its target; each message says what to fix.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, binary};

/// Runs the binary with `args`, at most 20 s; returns (exit code, stderr + stdout).
fn run_bounded(args: &[&str], paths: &[&Path]) -> (i32, String) {
    let mut command = Command::new(binary());
    command.args(args).args(paths).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
            return (status.code().unwrap_or(-1), text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} {paths:?} hung (killed after 20 s)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fifo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    rustix::fs::mknodat(rustix::fs::CWD, &path, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0)
        .unwrap();
    path
}

/// A FIFO, a device, a link to a device, and a 45 MB file.
fn hostile_files(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let big = dir.join("big");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(45 * 1024 * 1024).unwrap();
    let link = dir.join("zero-link");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    vec![
        ("FIFO", fifo(dir, "fifo")),
        ("device", PathBuf::from("/dev/zero")),
        ("link to a device", link),
        ("45 MB file", big),
    ]
}

fn refused(what: &str, (code, text): (i32, String)) {
    assert_ne!(code, 0, "{what}: accepted: {text}");
    assert!(
        ["FIFO", "device", "bytes", "regular file"].iter().any(|word| text.contains(word)),
        "{what}: the message says what was found: {text}"
    );
}

#[test]
fn file_reading_commands_refuse_fifos_devices_and_oversized_files_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let ring_dir = tempfile::tempdir().unwrap();
    let data = ring_dir.path().join("data");
    let (code, _) = run_bounded(&["tenants", "list", "--data-dir"], &[&data]);
    assert_eq!(code, 0);
    let ring = ring_dir.path().join("ring.json");
    std::fs::write(
        &ring,
        Command::new(binary()).args(["keys", "show-public", "--data-dir"]).arg(&data).output().unwrap().stdout,
    )
    .unwrap();
    for (what, path) in hostile_files(dir.path()) {
        refused(&format!("config check {what}"), run_bounded(&["config", "check"], &[&path]));
        refused(
            &format!("serve --config {what}"),
            run_bounded(&["serve", "--listen", "127.0.0.1:0", "--config"], &[&path, Path::new("--data-dir"), &data]),
        );
        // A bundle is streamed under the bundle limits, never read whole: a large file is
        // refused as soon as its stream is not a bundle.
        let (code, text) = run_bounded(&["runpack", "verify", "--pubkey"], &[&ring, &path]);
        if what == "45 MB file" {
            assert_eq!(code, 1, "{text}");
            assert!(text.contains("NOT verified") && text.contains("corrupt"), "{text}");
        } else {
            refused(&format!("runpack verify {what}"), (code, text));
        }
        refused(
            &format!("runpack verify --pubkey {what}"),
            run_bounded(&["runpack", "verify", "--pubkey"], &[&path, &ring]),
        );
        refused(
            &format!("audit verify --export {what}"),
            run_bounded(&["audit", "verify", "--pubkey"], &[&ring, Path::new("--export"), &path]),
        );
        refused(
            &format!("release verify --pubkey {what}"),
            run_bounded(&["release", "verify", "--pubkey"], &[&path, &ring]),
        );
    }
}

#[test]
fn backup_verify_refuses_a_linked_index_and_a_part_that_is_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let (code, text) = run_bounded(&["backup", "create", "--to"], &[&backups, Path::new("--data-dir"), &data]);
    assert_eq!(code, 0, "{text}");
    let backup = std::fs::read_dir(&backups).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_dir()).unwrap();
    let ring = dir.path().join("ring.json");
    std::fs::write(
        &ring,
        Command::new(binary()).args(["keys", "show-public", "--data-dir"]).arg(&data).output().unwrap().stdout,
    )
    .unwrap();
    let (code, text) = run_bounded(&["backup", "verify", "--pubkey"], &[&ring, &backup]);
    assert_eq!(code, 0, "the intact backup verifies: {text}");
    // One part replaced by a FIFO: refused, not read forever.
    let part = std::fs::read_dir(&backup)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().contains("part"))
        .expect("a part file");
    let saved = dir.path().join("saved-part");
    std::fs::rename(&part, &saved).unwrap();
    fifo(part.parent().unwrap(), part.file_name().unwrap().to_str().unwrap());
    let (code, text) = run_bounded(&["backup", "verify", "--pubkey"], &[&ring, &backup]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("FIFO"), "{text}");
    std::fs::remove_file(&part).unwrap();
    std::fs::rename(&saved, &part).unwrap();
    // backup.json as a link to /dev/zero: refused, not read until memory runs out.
    let index = backup.join("backup.json");
    std::fs::rename(&index, dir.path().join("saved-index")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &index).unwrap();
    let (code, text) = run_bounded(&["backup", "verify", "--pubkey"], &[&ring, &backup]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("symbolic link"), "{text}");
}

/// Starts `serve` on `data` and expects a refusal naming `fix`, within the bound.
fn refuses_to_start(data: &Path, fix: &str) {
    let (code, text) = run_bounded(&["serve", "--listen", "127.0.0.1:0", "--data-dir"], &[data]);
    assert_ne!(code, 0, "started on an unsafe data directory: {text}");
    assert!(text.contains("unsafe data directory") && text.contains(fix), "{text}");
}

/// A data directory made by the daemon itself (`keys show-public` creates everything).
fn fresh_data(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let (code, text) = run_bounded(&["tenants", "list", "--data-dir"], &[&data]);
    assert_eq!(code, 0, "{text}");
    data
}

#[test]
fn the_daemon_refuses_a_world_writable_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = fresh_data(dir.path());
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    refuses_to_start(&data, "chmod go-w");
}

#[test]
fn the_daemon_refuses_a_signing_key_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = fresh_data(dir.path());
    std::fs::set_permissions(data.join("keys/active.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    refuses_to_start(&data, "chmod 600");
}

#[test]
fn the_daemon_refuses_a_data_directory_that_is_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let data = fresh_data(dir.path());
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    refuses_to_start(&link, "real");
}

#[test]
fn the_daemon_refuses_a_state_database_that_is_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let data = fresh_data(dir.path());
    let elsewhere = dir.path().join("elsewhere.db");
    std::fs::rename(data.join("state.db"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, data.join("state.db")).unwrap();
    refuses_to_start(&data, "real path");
    assert!(std::fs::symlink_metadata(data.join("state.db")).unwrap().file_type().is_symlink(), "left as it was");
}

#[test]
fn backup_restore_refuses_a_link_as_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let data = fresh_data(dir.path());
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let (code, text) = run_bounded(&["backup", "create", "--to"], &[&backups, Path::new("--data-dir"), &data]);
    assert_eq!(code, 0, "{text}");
    let backup = std::fs::read_dir(&backups).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_dir()).unwrap();
    let ring = dir.path().join("ring.json");
    std::fs::write(
        &ring,
        Command::new(binary()).args(["keys", "show-public", "--data-dir"]).arg(&data).output().unwrap().stdout,
    )
    .unwrap();
    let target = dir.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    let link = dir.path().join("restore-link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (code, text) =
        run_bounded(&["backup", "restore", "--force", "--pubkey"], &[&ring, &backup, Path::new("--data-dir"), &link]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("symbolic link") && text.contains("--data-dir"), "{text}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was not replaced");
    let _ = support::free_port();
}
