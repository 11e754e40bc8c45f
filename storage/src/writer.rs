//! The single writer: one thread owns the write connection and commits queued writes in
//! groups. Each job runs inside its own savepoint, so one failing job does not undo the
//! others; every job's caller is answered only after the group's COMMIT returned (WAL +
//! `synchronous=FULL`: durable once acknowledged).

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::error::StoreError;

/// A write: runs against the writer connection inside a savepoint; returns a number
/// (rows touched, a new version) for the caller.
pub(crate) type WriteJob = Box<dyn FnOnce(&Connection) -> Result<i64, StoreError> + Send>;

struct Queued {
    job: WriteJob,
    reply: SyncSender<Result<i64, StoreError>>,
}

/// Most jobs committed in one transaction.
const MAX_GROUP: usize = 512;

/// Handle to the writer thread.
pub(crate) struct Writer {
    queue: Mutex<Option<Sender<Queued>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    pub(crate) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Queued>();
        let thread = std::thread::Builder::new()
            .name("dg-store-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|source| StoreError::Io { operation: "start writer thread", source })?;
        Ok(Self { queue: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) })
    }

    /// Queues a job and waits for its group to commit.
    pub(crate) fn submit(&self, job: WriteJob) -> Result<i64, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        {
            let guard = self.queue.lock().map_err(|_| StoreError::WriterGone)?;
            let sender = guard.as_ref().ok_or(StoreError::WriterGone)?;
            sender.send(Queued { job, reply }).map_err(|_| StoreError::WriterGone)?;
        }
        answer.recv().map_err(|_| StoreError::WriterGone)?
    }

    /// Stops accepting writes, lets queued ones commit, and joins the thread.
    pub(crate) fn shutdown(&self) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
        if let Ok(mut thread) = self.thread.lock() {
            if let Some(handle) = thread.take() {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(conn: Connection, rx: Receiver<Queued>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        commit_group(&conn, group);
    }
}

fn commit_group(conn: &Connection, group: Vec<Queued>) {
    if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
        for queued in group {
            let _ = queued.reply.send(Err(group_error("begin", &err)));
        }
        return;
    }
    let mut results = Vec::with_capacity(group.len());
    let mut replies = Vec::with_capacity(group.len());
    for queued in group {
        let outcome = match conn.execute_batch("SAVEPOINT job") {
            Err(source) => Err(StoreError::Sqlite { operation: "savepoint", source }),
            Ok(()) => {
                let outcome = (queued.job)(conn);
                let end = if outcome.is_ok() { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
                match conn.execute_batch(end) {
                    Ok(()) => outcome,
                    Err(source) => Err(StoreError::Sqlite { operation: "end savepoint", source }),
                }
            }
        };
        results.push(outcome);
        replies.push(queued.reply);
    }
    if let Err(err) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        for reply in replies {
            let _ = reply.send(Err(group_error("commit", &err)));
        }
        return;
    }
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
}

fn group_error(operation: &'static str, err: &rusqlite::Error) -> StoreError {
    let disk_full = matches!(err, rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::DiskFull);
    StoreError::WriteGroup { operation, message: err.to_string(), disk_full }
}
