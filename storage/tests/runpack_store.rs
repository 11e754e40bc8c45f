#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The hardened runpack store refuses every hostile path and file type, in both path
//! resolution modes (openat2 and the O_NOFOLLOW component walk), and writes atomically.

use std::os::unix::fs::symlink;

use dg_storage::runpack_store::{ResolveMode, RunpackLimits, RunpackStore, RunpackStoreError};
use dg_storage::Scope;

fn files() -> Vec<(String, Vec<u8>)> {
    vec![("manifest.json".into(), b"{}".to_vec()), ("artifacts/a.json".into(), b"[1]".to_vec())]
}

fn modes() -> Vec<ResolveMode> {
    let probe = tempfile::tempdir().unwrap();
    let auto = RunpackStore::open(probe.path(), RunpackLimits::default(), ResolveMode::Auto).unwrap();
    let mut modes = vec![ResolveMode::ComponentWalk];
    if auto.mode() == ResolveMode::Openat2 {
        modes.push(ResolveMode::Openat2);
    } else {
        eprintln!("openat2 unavailable here: only the component walk is exercised");
    }
    modes
}

#[test]
fn round_trip_and_replace_are_atomic() {
    for mode in modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunpackStore::open(dir.path(), RunpackLimits::default(), mode).unwrap();
        let path = store.write(Scope::new(1, 2), "run-1", &files()).unwrap();
        assert!(path.ends_with("1/2/run-1"));
        let read = store.read(Scope::new(1, 2), "run-1").unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read["artifacts/a.json"], b"[1]");
        let newer = vec![("manifest.json".to_string(), b"{\"v\":2}".to_vec())];
        store.write(Scope::new(1, 2), "run-1", &newer).unwrap();
        let read = store.read(Scope::new(1, 2), "run-1").unwrap();
        assert_eq!(read.keys().collect::<Vec<_>>(), ["manifest.json"]);
        let leftovers: Vec<_> =
            std::fs::read_dir(dir.path().join("1/2")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, ["run-1"], "no staging or replaced directories remain");
        assert!(matches!(store.read(Scope::new(9, 2), "run-1").unwrap_err(), RunpackStoreError::NotFound(_)));
    }
}

#[test]
fn hostile_names_are_refused_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunpackStore::open(dir.path(), RunpackLimits::default(), ResolveMode::ComponentWalk).unwrap();
    for name in ["../escape", "/etc", "a/../../b", "", "a//b", ".", "a\0b", &"x".repeat(300), ".staging-1", "a\\..\\b"]
    {
        assert!(
            matches!(store.write(Scope::new(1, 1), name, &files()), Err(RunpackStoreError::InvalidPath { .. })),
            "{name:?}"
        );
        assert!(matches!(store.read(Scope::new(1, 1), name), Err(RunpackStoreError::InvalidPath { .. })), "{name:?}");
    }
    for file in ["../x", "/abs", "a/./b", "ok/../../x"] {
        let bad = vec![(file.to_string(), b"x".to_vec())];
        assert!(
            matches!(store.write(Scope::new(1, 1), "r", &bad), Err(RunpackStoreError::InvalidPath { .. })),
            "{file}"
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was written");
}

#[test]
fn links_and_special_files_are_refused_in_every_mode() {
    for mode in modes() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), "root:x:0:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = RunpackStore::open(dir.path(), RunpackLimits::default(), mode).unwrap();
        store.write(Scope::new(1, 1), "good", &files()).unwrap();
        let ns = dir.path().join("1/1");

        // A runpack that is a symlink to a directory outside the store.
        symlink(outside.path(), ns.join("linked")).unwrap();
        assert!(matches!(store.read(Scope::new(1, 1), "linked"), Err(RunpackStoreError::Symlink { .. })), "{mode:?}");
        // Writing through it is refused too: the parent chain must be real directories.
        assert!(store.write(Scope::new(1, 1), "linked/sub", &files()).is_err(), "{mode:?}");
        assert!(!outside.path().join("sub").exists(), "{mode:?}: nothing escaped");

        // A file inside a runpack that links to /etc/passwd-like content outside.
        let evil = ns.join("evil");
        std::fs::create_dir_all(evil.join("artifacts")).unwrap();
        symlink(outside.path().join("passwd"), evil.join("artifacts/a.json")).unwrap();
        assert!(matches!(store.read(Scope::new(1, 1), "evil"), Err(RunpackStoreError::Symlink { .. })), "{mode:?}");

        // A hard link to a file outside the runpack.
        let hard = ns.join("hard");
        std::fs::create_dir(&hard).unwrap();
        std::fs::hard_link(outside.path().join("passwd"), hard.join("manifest.json")).unwrap();
        assert!(matches!(store.read(Scope::new(1, 1), "hard"), Err(RunpackStoreError::HardLink { .. })), "{mode:?}");

        // A FIFO (reading it would block forever).
        let fifo = ns.join("fifo");
        std::fs::create_dir(&fifo).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            fifo.join("manifest.json"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(
            matches!(store.read(Scope::new(1, 1), "fifo"), Err(RunpackStoreError::NotRegular { kind: "FIFO", .. })),
            "{mode:?}"
        );

        // A device node (root only).
        let dev = ns.join("dev");
        std::fs::create_dir(&dev).unwrap();
        let made = rustix::fs::mknodat(
            rustix::fs::CWD,
            dev.join("manifest.json"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(1, 3),
        );
        if made.is_ok() {
            assert!(
                matches!(
                    store.read(Scope::new(1, 1), "dev"),
                    Err(RunpackStoreError::NotRegular { kind: "device", .. })
                ),
                "{mode:?}"
            );
        }

        // A directory swapped for a symlink between a check and the use.
        let swapped = ns.join("swapped");
        std::fs::create_dir(&swapped).unwrap();
        std::fs::write(swapped.join("manifest.json"), "{}").unwrap();
        assert!(store.read(Scope::new(1, 1), "swapped").is_ok());
        std::fs::remove_dir_all(&swapped).unwrap();
        symlink(outside.path(), &swapped).unwrap();
        assert!(matches!(store.read(Scope::new(1, 1), "swapped"), Err(RunpackStoreError::Symlink { .. })), "{mode:?}");

        // The tenant directory itself swapped for a symlink.
        std::fs::rename(dir.path().join("1"), dir.path().join("moved")).unwrap();
        symlink(dir.path().join("moved"), dir.path().join("1")).unwrap();
        assert!(matches!(store.read(Scope::new(1, 1), "good"), Err(RunpackStoreError::Symlink { .. })), "{mode:?}");
    }
}

#[test]
fn size_limits_per_file_runpack_and_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let limits = RunpackLimits { max_file_bytes: 10, max_runpack_bytes: 15, max_files: 3, max_tenant_bytes: 25 };
    let store = RunpackStore::open(dir.path(), limits, ResolveMode::Auto).unwrap();
    let big = vec![("f".to_string(), vec![0u8; 11])];
    assert!(matches!(store.write(Scope::new(1, 1), "a", &big), Err(RunpackStoreError::TooLarge { .. })));
    let many = (0..4).map(|i| (format!("f{i}"), vec![0u8; 1])).collect::<Vec<_>>();
    assert!(matches!(store.write(Scope::new(1, 1), "a", &many), Err(RunpackStoreError::TooLarge { .. })));
    let pack = vec![("f".to_string(), vec![0u8; 8]), ("g".to_string(), vec![0u8; 8])];
    assert!(matches!(store.write(Scope::new(1, 1), "a", &pack), Err(RunpackStoreError::TooLarge { .. })));
    let ok = vec![("f".to_string(), vec![0u8; 10])];
    store.write(Scope::new(1, 1), "a", &ok).unwrap();
    store.write(Scope::new(1, 2), "b", &ok).unwrap();
    let err = store.write(Scope::new(1, 3), "c", &ok).unwrap_err();
    assert!(err.to_string().contains("tenant 1"), "{err}");
    store.write(Scope::new(2, 1), "c", &ok).unwrap();
}
