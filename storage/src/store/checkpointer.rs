//! WAL checkpoints off the request path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold: that
//! one request copies every page written since the last checkpoint into the database file
//! and then waits for the database file's `fdatasync` (1.3–1.7 ms on the reference
//! machine, against 0.2–0.4 ms for the WAL's own). About one commit in 75 paid that, which
//! set the one-client p99.
//!
//! Here a background thread with its own connection does the copy (`PASSIVE`: it never
//! blocks the writer) and syncs the pages it copied. Frames the writer appends meanwhile
//! are left over, and SQLite starts the WAL over from its beginning only once every frame
//! is in the database file; so the writer finishes the checkpoint itself, between two of
//! its transactions, once a background pass is done. That copies and syncs only the few
//! frames written during the pass, and the next transaction then rewrites the WAL from its
//! start (overwriting the WAL costs half as much to sync as appending to it).
//!
//! SQLite's automatic checkpoint stays on at a higher threshold
//! ([`FALLBACK_AUTOCHECKPOINT_PAGES`]), so the WAL stays bounded should this thread fall
//! behind or fail.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::error::StoreError;

/// Committed writes between background passes: about the 1,000 WAL pages of SQLite's
/// default threshold, for this appliance's commits of 4–8 pages.
const WRITES_PER_PASS: u64 = 128;

/// SQLite's own threshold (pages) while this thread runs: the bound if it falls behind.
const FALLBACK_AUTOCHECKPOINT_PAGES: u32 = 8_000;

/// How checkpoints went since the store opened, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointCounts {
    /// Background passes that copied (and synced) the WAL's frames.
    pub background_passes: u64,
    /// Checkpoints the writer finished after a pass (what lets the WAL start over).
    pub writer_finishes: u64,
    /// Passes or finishes that failed (the frames stay in the WAL for the next one).
    pub failures: u64,
}

#[derive(Default)]
struct Wake {
    pass_requested: bool,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    wake: Mutex<Wake>,
    signal: Condvar,
    /// A background pass finished: the writer's next turn finishes the checkpoint.
    finish_due: AtomicBool,
    writes: AtomicU64,
    background_passes: AtomicU64,
    writer_finishes: AtomicU64,
    failures: AtomicU64,
}

/// The background checkpoint thread and its hand-off with the writer.
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts the thread for the database at `path` (it opens its own connection) and
    /// raises the write connection's automatic checkpoint to the fallback bound.
    pub(crate) fn start(path: &Path, writer: &Connection) -> Result<Self, StoreError> {
        writer
            .execute_batch(&format!("PRAGMA wal_autocheckpoint = {FALLBACK_AUTOCHECKPOINT_PAGES}"))
            .map_err(StoreError::sqlite("set checkpoint threshold"))?;
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("dg-checkpoint".into())
            .spawn(move || run(&path, &thread_shared))
            .map_err(|source| StoreError::Io { operation: "start the checkpoint thread", source })?;
        Ok(Self { shared, thread: Mutex::new(Some(thread)) })
    }

    /// Called by the writer after each committed group of `writes` jobs, on the write
    /// connection and between its transactions (so no frame is appended meanwhile).
    pub(crate) fn after_commit(&self, conn: &Connection, writes: u64) {
        let shared = &self.shared;
        if shared.finish_due.swap(false, Ordering::AcqRel) {
            let counter = match conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                Ok(()) => &shared.writer_finishes,
                Err(_) => &shared.failures,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let before = shared.writes.fetch_add(writes, Ordering::Relaxed);
        if (before + writes) / WRITES_PER_PASS != before / WRITES_PER_PASS {
            if let Ok(mut wake) = shared.wake.lock() {
                wake.pass_requested = true;
                shared.signal.notify_one();
            }
        }
    }

    /// How checkpoints went so far.
    pub(crate) fn counts(&self) -> CheckpointCounts {
        let shared = &self.shared;
        CheckpointCounts {
            background_passes: shared.background_passes.load(Ordering::Relaxed),
            writer_finishes: shared.writer_finishes.load(Ordering::Relaxed),
            failures: shared.failures.load(Ordering::Relaxed),
        }
    }

    /// Stops the thread after its current pass; safe to call more than once.
    pub(crate) fn stop(&self) {
        if let Ok(mut wake) = self.shared.wake.lock() {
            wake.stop = true;
            self.shared.signal.notify_one();
        }
        if let Some(thread) = self.thread.lock().ok().and_then(|mut slot| slot.take()) {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread: waits for a request, then runs one pass.
fn run(path: &Path, shared: &Shared) {
    let mut pass = Pass { path: path.to_path_buf(), conn: None, db_file: None };
    while wait_for_request(shared) {
        if pass.run().is_ok() {
            shared.background_passes.fetch_add(1, Ordering::Relaxed);
            shared.finish_due.store(true, Ordering::Release);
        } else {
            shared.failures.fetch_add(1, Ordering::Relaxed);
            // Reopen next time: a connection that failed once may stay broken.
            pass.conn = None;
            pass.db_file = None;
        }
    }
}

/// Blocks until a pass is requested (true) or the thread is to stop (false).
fn wait_for_request(shared: &Shared) -> bool {
    let Ok(mut wake) = shared.wake.lock() else { return false };
    while !wake.pass_requested && !wake.stop {
        wake = match shared.signal.wait(wake) {
            Ok(wake) => wake,
            Err(_) => return false,
        };
    }
    wake.pass_requested = false;
    !wake.stop
}

/// The thread's own connection and database file handle, opened on first use.
struct Pass {
    path: PathBuf,
    conn: Option<Connection>,
    db_file: Option<File>,
}

impl Pass {
    fn run(&mut self) -> Result<(), StoreError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = Connection::open(&self.path).map_err(StoreError::sqlite("open checkpoint connection"))?;
                conn.execute_batch("PRAGMA synchronous = FULL")
                    .map_err(StoreError::sqlite("configure checkpoint connection"))?;
                self.conn.insert(conn)
            }
        };
        conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)").map_err(StoreError::sqlite("checkpoint"))?;
        let db_file = match &mut self.db_file {
            Some(file) => file,
            None => self.db_file.insert(
                File::open(&self.path).map_err(|source| StoreError::Io { operation: "open database", source })?,
            ),
        };
        // SQLite syncs the database file only in a checkpoint that reaches the WAL's end,
        // which a pass racing the writer never does: sync what this pass copied now, so
        // the writer's finishing checkpoint has only its own few pages left to sync.
        db_file.sync_data().map_err(|source| StoreError::Io { operation: "sync database after checkpoint", source })
    }
}
