//! The single writer with leader-based group commit. Writers queue their job; the first
//! one to find no group being led leads: it takes the write connection and commits every
//! queued job in one transaction, hands each caller its result and wakes it, then hands the
//! lead to the oldest job still queued (or leaves it free). So concurrent writers share one
//! fsync, and a lone writer commits on its own thread without any hand-off. In a group of
//! several, each job runs in its own savepoint, so one failing job does not undo the
//! others; every caller is answered only after the COMMIT returned (WAL +
//! `synchronous=FULL`: durable once acknowledged). A job that panics fails alone, rolled
//! back like any failed job: the panic is not let through the connection's lock, which
//! would otherwise stay poisoned and refuse every later write.
//!
//! A waiting writer waits on its own slot, not on the connection's lock: once its group has
//! committed it returns at once. (When waiters queued on the connection's lock instead,
//! each answered waiter woke only when the previous one let the lock go, and a writer that
//! arrived meanwhile could take the lock and commit a whole new group first: an answered
//! request then waited for another group's fsync.)

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use rusqlite::Connection;

use crate::error::StoreError;
use crate::store::checkpointer::{CheckpointCounts, Checkpointer};

/// A write: runs against the writer connection inside a savepoint; returns a number
/// (rows touched, a new version) for the caller.
pub(crate) type WriteJob = Box<dyn FnOnce(&Connection) -> Result<i64, StoreError> + Send>;

/// Most jobs committed in one transaction.
const MAX_GROUP: usize = 512;

/// Where a queued write's caller waits: for its answer, or for its turn to lead.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

#[derive(Default)]
enum SlotState {
    #[default]
    Queued,
    /// The previous leader handed this caller the lead (its job is still queued).
    Lead,
    Answered(Result<i64, StoreError>),
}

/// What a waiting caller was woken for.
enum Turn {
    Lead,
    Answered(Result<i64, StoreError>),
}

impl Slot {
    // A slot's and the queue's locks guard plain values that no code panics while holding,
    // so a poisoned lock is taken as it is: refusing it would leave waiters asleep for ever.
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, state: SlotState) {
        *self.lock() = state;
        self.changed.notify_one();
    }

    /// Blocks until the job is answered or its caller is to lead.
    fn wait(&self) -> Turn {
        let mut state = self.lock();
        loop {
            match std::mem::take(&mut *state) {
                SlotState::Queued => state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner),
                SlotState::Lead => return Turn::Lead,
                SlotState::Answered(result) => return Turn::Answered(result),
            }
        }
    }

    /// The answer, if the job has one (taken).
    fn take_answer(&self) -> Option<Result<i64, StoreError>> {
        let mut state = self.lock();
        match std::mem::take(&mut *state) {
            SlotState::Answered(result) => Some(result),
            other => {
                *state = other;
                None
            }
        }
    }
}

type Queued = (WriteJob, Arc<Slot>);

/// Jobs not yet taken into a group, and whether a caller is leading.
#[derive(Default)]
struct Queue {
    jobs: Vec<Queued>,
    leading: bool,
}

/// The write connection and the queue of pending jobs.
pub(crate) struct Writer {
    conn: Mutex<Option<Connection>>,
    queue: Mutex<Queue>,
    checkpointer: Option<Checkpointer>,
}

impl Writer {
    pub(crate) fn start(conn: Connection, checkpointer: Option<Checkpointer>) -> Result<Self, StoreError> {
        Ok(Self { conn: Mutex::new(Some(conn)), queue: Mutex::new(Queue::default()), checkpointer })
    }

    /// Queues a job and returns once a group containing it has committed. Everything a
    /// write commits is in its job (a mutation carries its audit entries and usage rows
    /// as values: `Store::submit_with_audit`); no state of the calling thread rides along.
    pub(crate) fn submit(&self, job: WriteJob) -> Result<i64, StoreError> {
        let slot = Arc::new(Slot::default());
        let lead = {
            let mut queue = self.queue();
            queue.jobs.push((job, slot.clone()));
            !std::mem::replace(&mut queue.leading, true)
        };
        if !lead {
            match slot.wait() {
                Turn::Answered(result) => return result,
                Turn::Lead => {}
            }
        }
        self.lead(&slot)
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits groups until the caller's own job is answered (it is in the first group
    /// unless more than [`MAX_GROUP`] were queued before it), then passes the lead on.
    fn lead(&self, own: &Slot) -> Result<i64, StoreError> {
        loop {
            self.commit_next_group();
            let mut queue = self.queue();
            if let Some(result) = own.take_answer() {
                match queue.jobs.first() {
                    Some((_, next)) => next.set(SlotState::Lead),
                    None => queue.leading = false,
                }
                return result;
            }
        }
    }

    /// Takes up to [`MAX_GROUP`] queued jobs and commits them as one group.
    fn commit_next_group(&self) {
        let guard = self.conn.lock();
        let batch: Vec<Queued> = {
            let mut queue = self.queue();
            let take = queue.jobs.len().min(MAX_GROUP);
            queue.jobs.drain(..take).collect()
        };
        let Some(conn) = guard.as_ref().ok().and_then(|guard| guard.as_ref()) else {
            // Stopped (or a panic left the lock poisoned): nothing more is written.
            for (_, slot) in &batch {
                answer(slot, Err(StoreError::WriterGone));
            }
            return;
        };
        let writes = batch.len() as u64;
        commit_group(conn, batch);
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.after_commit(conn, writes);
        }
    }

    /// The write connection, when no group is committing and no job is queued, for one
    /// short point read. Its page cache stays valid across its own commits, while a reader
    /// connection drops its whole cache whenever another connection has committed, so a
    /// lone client's reads here skip re-reading the pages its last write just wrote.
    /// `None` when busy: the caller reads on a reader connection instead.
    pub(crate) fn idle_connection(&self) -> Option<MutexGuard<'_, Option<Connection>>> {
        let guard = self.conn.try_lock().ok()?;
        let queued = self.queue.try_lock().ok().is_none_or(|queue| queue.leading || !queue.jobs.is_empty());
        // A connection left inside a transaction (a failed rollback) would show writes
        // that never committed: only one in autocommit mode is lent.
        let settled = guard.as_ref().is_none_or(Connection::is_autocommit);
        (!queued && settled).then_some(guard)
    }

    /// Runs `f` on the write connection between groups (settings, not data).
    pub(crate) fn with_connection<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = self.conn.lock().map_err(|_| StoreError::WriterGone)?;
        f(guard.as_ref().ok_or(StoreError::WriterGone)?)
    }

    /// How checkpoints went (all zero without a checkpoint thread).
    pub(crate) fn checkpoint_counts(&self) -> CheckpointCounts {
        self.checkpointer.as_ref().map(Checkpointer::counts).unwrap_or_default()
    }

    /// Stops accepting writes; queued writes already committed stay committed.
    pub(crate) fn shutdown(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop();
        }
        if let Ok(mut conn) = self.conn.lock() {
            if let Some(conn) = conn.take() {
                let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
            }
        }
    }
}

fn answer(slot: &Slot, result: Result<i64, StoreError>) {
    slot.set(SlotState::Answered(result));
}

fn commit_group(conn: &Connection, group: Vec<Queued>) {
    if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
        for (_, slot) in &group {
            answer(slot, Err(group_error("begin", &err)));
        }
        return;
    }
    if group.len() == 1 {
        commit_single(conn, group);
        return;
    }
    let mut results: Vec<(Arc<Slot>, Result<i64, StoreError>)> = Vec::with_capacity(group.len());
    let mut pending = group.into_iter();
    while let Some((job, slot)) = pending.next() {
        let outcome = match conn.execute_batch("SAVEPOINT job") {
            Err(source) => Err(StoreError::Sqlite { operation: "savepoint", source }),
            Ok(()) => {
                let outcome = run_job(job, conn);
                let end = if outcome.is_ok() { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
                match conn.execute_batch(end) {
                    Ok(()) => outcome,
                    // A failed job's own error says more than the savepoint cleanup's.
                    Err(_) if outcome.is_err() => outcome,
                    Err(source) => Err(StoreError::Sqlite { operation: "end savepoint", source }),
                }
            }
        };
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (a full disk does that): nothing
            // of this group is committed, so every job in it fails with that cause.
            let (message, disk_full) = match &outcome {
                Err(err) => (err.to_string(), err.is_disk_full()),
                Ok(_) => ("transaction rolled back".to_string(), false),
            };
            let failure = || StoreError::WriteGroup { operation: "write", message: message.clone(), disk_full };
            answer(&slot, Err(failure()));
            for (done, _) in &results {
                answer(done, Err(failure()));
            }
            for (_, untouched) in pending {
                answer(&untouched, Err(failure()));
            }
            return;
        }
        results.push((slot, outcome));
    }
    if let Err(err) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        for (slot, _) in &results {
            answer(slot, Err(group_error("commit", &err)));
        }
        return;
    }
    for (slot, result) in results {
        answer(&slot, result);
    }
}

/// A group of one needs no savepoint (a failed job rolls the whole transaction back),
/// which spares copying every page it touches into the sub-journal first.
fn commit_single(conn: &Connection, group: Vec<Queued>) {
    let Some((job, slot)) = group.into_iter().next() else {
        let _ = conn.execute_batch("ROLLBACK");
        return;
    };
    let outcome = run_job(job, conn);
    if outcome.is_err() {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        answer(&slot, outcome);
        return;
    }
    if let Err(err) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        answer(&slot, Err(group_error("commit", &err)));
        return;
    }
    answer(&slot, outcome);
}

/// Runs one job; a panic becomes that job's error (its caller sees an internal error and the
/// job's changes are rolled back by the caller of this function, as for any failed job).
fn run_job(job: WriteJob, conn: &Connection) -> Result<i64, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn))).unwrap_or(Err(StoreError::WritePanicked))
}

fn group_error(operation: &'static str, err: &rusqlite::Error) -> StoreError {
    let disk_full = matches!(err, rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::DiskFull);
    StoreError::WriteGroup { operation, message: err.to_string(), disk_full }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> Writer {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        Writer::start(conn, None).unwrap()
    }

    fn insert(value: i64) -> WriteJob {
        Box::new(move |conn| {
            conn.execute("INSERT INTO t VALUES (?1)", [value]).map(|n| n as i64).map_err(StoreError::sqlite("insert"))
        })
    }

    fn values(writer: &Writer) -> Vec<i64> {
        let guard = writer.conn.lock().expect("the connection's lock is not poisoned");
        let conn = guard.as_ref().unwrap();
        let mut stmt = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        let rows = stmt.query_map([], |row| row.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    #[test]
    fn a_panicking_job_fails_alone_and_later_writes_still_commit() {
        let writer = writer();
        let panicking: WriteJob = Box::new(|conn| {
            conn.execute("INSERT INTO t VALUES (666)", []).unwrap();
            panic!("a bug in a write job");
        });
        assert!(matches!(writer.submit(panicking), Err(StoreError::WritePanicked)));
        writer.submit(insert(1)).unwrap();
        assert_eq!(values(&writer), vec![1], "the panicking job's insert was rolled back");
        assert!(writer.idle_connection().is_some(), "the connection is lent again, outside any transaction");

        // In a group, the panicking job's savepoint is rolled back and the others commit.
        let slots: Vec<Arc<Slot>> = (0..3).map(|_| Arc::new(Slot::default())).collect();
        let jobs: Vec<WriteJob> = vec![
            insert(2),
            Box::new(|conn| {
                conn.execute("INSERT INTO t VALUES (667)", []).unwrap();
                panic!("a bug in a grouped job");
            }),
            insert(3),
        ];
        let group = jobs.into_iter().zip(slots.iter().cloned()).collect();
        commit_group(writer.conn.lock().unwrap().as_ref().unwrap(), group);
        let answers: Vec<_> = slots.iter().map(|slot| slot.take_answer().unwrap()).collect();
        assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
        assert!(matches!(answers[1], Err(StoreError::WritePanicked)));
        assert_eq!(values(&writer), vec![1, 2, 3]);
    }

    #[test]
    fn an_idle_writer_lends_its_connection_and_sees_committed_writes() {
        let writer = writer();
        writer.submit(insert(7)).unwrap();
        let guard = writer.idle_connection().expect("idle");
        let conn = guard.as_ref().unwrap();
        assert_eq!(conn.query_row("SELECT v FROM t", [], |row| row.get::<_, i64>(0)).unwrap(), 7);
        assert!(conn.is_autocommit(), "lent outside any transaction");
    }

    #[test]
    fn a_busy_or_awaited_writer_is_not_lent() {
        let writer = writer();
        {
            let _committing = writer.conn.lock().unwrap();
            assert!(writer.idle_connection().is_none(), "a group is committing");
        }
        writer.queue().jobs.push((Box::new(|_| Ok(0)), Arc::new(Slot::default())));
        assert!(writer.idle_connection().is_none(), "a job is queued: its leader goes first");
        writer.queue().jobs.clear();
        assert!(writer.idle_connection().is_some());
        writer.with_connection(|conn| conn.execute_batch("BEGIN").map_err(StoreError::sqlite("begin"))).unwrap();
        assert!(writer.idle_connection().is_none(), "a connection inside a transaction is not lent");
        writer.with_connection(|conn| conn.execute_batch("ROLLBACK").map_err(StoreError::sqlite("rollback"))).unwrap();
        assert!(writer.idle_connection().is_some());
        writer.shutdown();
        assert!(writer.idle_connection().is_some_and(|guard| guard.is_none()), "a stopped writer lends nothing");
    }

    /// Polls `ready` (bounded: about ten seconds), so a test waits for another thread to
    /// reach a state without sleeping for a fixed time.
    fn wait_until(what: &str, ready: impl Fn() -> bool) {
        for _ in 0..2_000 {
            if ready() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("timed out waiting until {what}");
    }

    /// A waiter whose job was committed returns while the connection is still held (by a
    /// leader's checkpoint, or a new group): it waits on its slot, not on the connection.
    #[test]
    fn an_answered_writer_returns_while_the_connection_is_still_held() {
        let writer = Arc::new(writer());
        let held = writer.conn.lock().unwrap();
        writer.queue().leading = true; // a leader is at work (this test thread)
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = {
            let writer = writer.clone();
            std::thread::spawn(move || tx.send(writer.submit(insert(5))).unwrap())
        };
        wait_until("the job is queued", || writer.queue().jobs.len() == 1);
        let group: Vec<Queued> = writer.queue().jobs.drain(..).collect();
        commit_group(held.as_ref().unwrap(), group);
        let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert!(matches!(answer, Ok(Ok(1))), "answered while the connection is held: {answer:?}");
        writer.queue().leading = false;
        drop(held);
        waiting.join().unwrap();
        assert_eq!(values(&writer), vec![5]);
    }

    /// Many writers at once: every write commits once, each caller gets its own answer, and
    /// the writer ends idle with no leader.
    #[test]
    fn concurrent_writers_all_commit_and_the_lead_is_let_go() {
        let writer = Arc::new(writer());
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for n in 0..50 {
                        assert_eq!(writer.submit(insert(thread * 1_000 + n)).unwrap(), 1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let mut expected: Vec<i64> = (0..8).flat_map(|thread| (0..50).map(move |n| thread * 1_000 + n)).collect();
        expected.sort_unstable();
        assert_eq!(values(&writer), expected);
        assert!(!writer.queue().leading && writer.queue().jobs.is_empty());
        assert!(writer.idle_connection().is_some());
    }

    /// A job queued behind a leader is committed by the caller the lead passes to; a writer
    /// stopped meanwhile answers every queued caller instead of leaving it asleep.
    #[test]
    fn the_lead_passes_to_a_queued_writer_and_a_stop_answers_every_waiter() {
        let writer = Arc::new(writer());
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel();
        let blocking: WriteJob = Box::new(move |conn| {
            started_tx.send(()).unwrap();
            gate.recv().unwrap();
            conn.execute("INSERT INTO t VALUES (1)", []).map(|n| n as i64).map_err(StoreError::sqlite("insert"))
        });
        let leader = {
            let writer = writer.clone();
            std::thread::spawn(move || writer.submit(blocking))
        };
        started.recv().unwrap();
        let queued: Vec<_> = (2..5)
            .map(|value| {
                let writer = writer.clone();
                std::thread::spawn(move || writer.submit(insert(value)))
            })
            .collect();
        wait_until("three jobs are queued", || writer.queue().jobs.len() == 3);
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap().unwrap(), 1);
        for thread in queued {
            assert_eq!(thread.join().unwrap().unwrap(), 1);
        }
        assert_eq!(values(&writer), vec![1, 2, 3, 4]);

        writer.shutdown();
        let late = {
            let writer = writer.clone();
            std::thread::spawn(move || writer.submit(insert(9)))
        };
        assert!(matches!(late.join().unwrap(), Err(StoreError::WriterGone)));
        assert!(!writer.queue().leading, "a stopped writer's leader lets the lead go");
    }
}
