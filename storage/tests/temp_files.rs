#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! SQLite's temporary files (statement journals, sorts that outgrow memory) are written in
//! `tmp/` beside the database, owner-only, not in the system's temporary directory: they hold
//! page images of the data. Its own test binary: the setting is per process, set by the first
//! store opened.

use std::mem::MaybeUninit;
use std::os::unix::fs::PermissionsExt as _;

use dg_storage::{Store, StoreLimits};
use rustix::fs::inotify;

#[test]
fn a_sort_that_outgrows_memory_writes_its_temporary_file_beside_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let _store = Store::open(&db, StoreLimits::default()).unwrap();
    let tmp = dir.path().join("tmp");
    assert_eq!(dg_storage::sqlite_temp_directory(), Some(tmp.as_path()));
    assert_eq!(std::fs::metadata(&tmp).unwrap().permissions().mode() & 0o777, 0o700);

    let watch = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
    inotify::add_watch(&watch, &tmp, inotify::WatchFlags::CREATE).unwrap();
    // About 6 MB of rows sorted by a random key: past the sorter's memory (the page
    // cache's size, 2 MB), so SQLite spills to a temporary file. Any connection of the
    // process uses the directory.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let sorted: i64 = conn
        .query_row(
            "SELECT count(*) FROM (WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 50000)
             SELECT i, randomblob(100) AS b FROM s ORDER BY b)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(sorted, 50_000);
    let mut buf = [MaybeUninit::uninit(); 4096];
    let mut events = inotify::Reader::new(&watch, &mut buf);
    let created = events.next().expect("SQLite created a temporary file in tmp/ beside the database");
    let name = created.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("etilqs_"), "{name}");
    // Deleted as soon as it was opened: nothing is left behind.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}
