//! One node's run writes, grouped: a write waits in this node's queue, and whichever waiting
//! writer holds the group's turn sends everything queued as one statement (`dg_write_runs`,
//! migrations.rs v3; a lone write is a group of one). One head lock, one commit and one
//! round trip then serve the whole group, and each node has one group in the database at a
//! time, so writers wait in the node (cheap) rather than on the chain head inside PostgreSQL.
//! Each write still gets its own answer: its version, its own conflict, or the group's error.
//!
//! Across nodes, every group takes the write lock (an advisory lock, `dg_take_write_lock`,
//! migrations.rs v4) before anything else, holding nothing yet. How a node takes it depends
//! on whether another node's groups were met lately:
//! - alone (one node, or nodes that do not meet): the lock is taken inside the group's one
//!   statement, which says whether it had to wait; nothing is added to a write.
//! - meeting others: the turn's holder first opens a transaction and waits for the lock (one
//!   round trip), and only then takes what its node queued, so the writes that arrived while
//!   another node's group committed join this group; the statement and the commit then go
//!   out together. Formed first, a group waited inside PostgreSQL on rows the other node's
//!   group held until its commit, while the node's next writes waited behind it: three nodes
//!   sent groups half the size of one node's, at about twice the database's CPU per cycle
//!   (docs/scale-out.md).
//!
//! A node meets others when a group had to wait for the lock, and goes back to the one
//! statement after [`CALM_GROUPS`] groups in a row found it free. Writers outside groups (lone
//! appends, deletes, quota charges) do not take the lock, and a group holds nothing when it
//! waits for it, so no lock cycle can form.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use deadpool_postgres::Object;
use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;
use tokio_postgres::{SimpleQueryMessage, Statement};

use crate::error::StoreError;
use crate::postgres::audit::{AppendArgs, Appended};
use crate::postgres::connection::{pg, Connections};

/// Most writes one statement carries (a bound on its size and on the rows it locks).
const MAX_GROUP: usize = 32;

/// Groups in a row that found the write lock free before a node meeting others goes back to
/// taking it inside the group's statement.
const CALM_GROUPS: u32 = 16;

/// The statement every group sends (prepared once per connection): `dg_write_runs` behind the
/// write lock, with whether it waited for it last.
const WRITE_GROUP: &str = "SELECT * FROM dg_write_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)";

/// A run's write as the database's arguments.
pub(crate) struct RunWrite {
    pub(crate) tenant: i64,
    pub(crate) namespace: i64,
    pub(crate) run_id: String,
    pub(crate) scenario_id: String,
    pub(crate) status: String,
    pub(crate) expected: Option<i64>,
    pub(crate) doc: Vec<u8>,
    pub(crate) sha256: String,
    pub(crate) saved_at: i64,
    pub(crate) append: AppendArgs,
    /// A request's start: its namespace must be registered when the write commits.
    pub(crate) need_namespace: bool,
}

/// What a write gets back: its new version, and whether it is to sign the checkpoint that
/// fell due (one write of a group).
pub(crate) type Answer = Result<(i64, bool), StoreError>;

struct Pending {
    write: RunWrite,
    answer: oneshot::Sender<Answer>,
}

/// The queue and the turn (one per store).
#[derive(Default)]
pub(crate) struct WriteGroups {
    queue: Mutex<Vec<Pending>>,
    turn: tokio::sync::Mutex<()>,
    /// Groups of two writes or more sent, and the writes they carried.
    groups: AtomicU64,
    grouped: AtomicU64,
    /// Whether groups wait for the write lock before they are formed (other nodes' groups
    /// were met lately), and how many groups in a row found it free since.
    lock_first: AtomicBool,
    calm: AtomicU32,
}

/// The settings every statement of a group shares.
pub(crate) struct Shared<'a> {
    pub(crate) conn: &'a Connections,
    pub(crate) statuses: &'a [&'a str],
    pub(crate) limit: i64,
}

impl WriteGroups {
    /// (groups of two writes or more sent, the writes they carried) since start.
    pub(crate) fn sent(&self) -> (u64, u64) {
        (self.groups.load(Ordering::Relaxed), self.grouped.load(Ordering::Relaxed))
    }

    /// Queues `write` and returns its answer, sending its group when this writer gets the turn.
    /// A writer waits for its answer and for the turn at once: once its group is answered
    /// it returns, without queueing for the turn behind the writers of the next group (each
    /// of which would otherwise take and hand on the turn before the next group is sent).
    pub(crate) async fn write(&self, shared: &Shared<'_>, write: RunWrite) -> Answer {
        self.queue_and_wait(write, || self.enter(shared), |turn, group| self.send(shared, turn, group)).await
    }

    /// Takes the deployment's write turn for the next group: a connection with the group's
    /// statement prepared on it (before any lock, so that the statement and its commit go
    /// out back to back), and, while other nodes are met, an open transaction that waited
    /// for the write lock (one round trip, bounded by the node's `lock_timeout`). A connection
    /// whose transaction did not open cleanly is dropped from the pool, not handed to the
    /// next caller mid-transaction.
    async fn enter(&self, shared: &Shared<'_>) -> Result<Turn, StoreError> {
        let turn = Turn::alone(shared).await?;
        if !self.lock_first.load(Ordering::Relaxed) {
            return Ok(turn);
        }
        let Turn { client, statement, .. } = turn;
        match client.simple_query("BEGIN; SELECT dg_take_write_lock()").await {
            Ok(messages) => {
                let waited = messages.iter().any(|message| match message {
                    SimpleQueryMessage::Row(row) => row.get(0) == Some("t"),
                    _ => false,
                });
                Ok(Turn { client, statement, open: true, waited })
            }
            Err(err) => {
                drop(Object::take(client));
                Err(pg("take the write lock")(err))
            }
        }
    }

    /// Sends one group in `turn` and answers each of its writes.
    async fn send(&self, shared: &Shared<'_>, turn: Turn, mut group: Vec<Pending>) {
        // Runs, then tenants, then the head: the same lock order in every writer.
        group.sort_by(|a, b| {
            (a.write.tenant, a.write.namespace, &a.write.run_id).cmp(&(
                b.write.tenant,
                b.write.namespace,
                &b.write.run_id,
            ))
        });
        let writes: Vec<&RunWrite> = group.iter().map(|pending| &pending.write).collect();
        match many(shared, turn, &writes).await {
            Ok((answers, waited)) => {
                self.met(waited);
                for (pending, answer) in group.into_iter().zip(answers) {
                    let _gone = pending.answer.send(answer);
                }
            }
            // A tenant's bound or a corrupt status fails the group: each write alone names its own.
            Err(StoreError::TooLarge { .. } | StoreError::Corrupt { .. }) if group.len() > 1 => {
                for pending in group {
                    let answer = one(shared, &pending.write).await;
                    let _gone = pending.answer.send(answer);
                }
            }
            Err(err) if group.len() == 1 => {
                if let Some(pending) = group.pop() {
                    let _gone = pending.answer.send(Err(err));
                }
            }
            Err(err) => {
                for pending in group {
                    let _gone = pending.answer.send(Err(copy_of(&err)));
                }
            }
        }
    }

    /// Whether the next groups wait for the write lock first: from the first group that had
    /// to wait for it until [`CALM_GROUPS`] in a row found it free.
    fn met(&self, waited: bool) {
        if waited {
            self.calm.store(0, Ordering::Relaxed);
            self.lock_first.store(true, Ordering::Relaxed);
        } else if self.lock_first.load(Ordering::Relaxed)
            && self.calm.fetch_add(1, Ordering::Relaxed) + 1 >= CALM_GROUPS
        {
            self.lock_first.store(false, Ordering::Relaxed);
        }
    }

    /// Whether groups wait for the write lock before they are formed.
    pub(crate) fn meeting_others(&self) -> bool {
        self.lock_first.load(Ordering::Relaxed)
    }

    /// The queue and the turn, apart from what the database's turn and a group's statement
    /// are: `enter` takes the deployment's turn (before the group is formed), and `send`
    /// answers every write of the group it is given.
    async fn queue_and_wait<E, Entering, T, F, Sent>(&self, write: RunWrite, mut enter: E, mut send: F) -> Answer
    where
        E: FnMut() -> Entering,
        Entering: std::future::Future<Output = Result<T, StoreError>>,
        F: FnMut(T, Vec<Pending>) -> Sent,
        Sent: std::future::Future<Output = ()>,
    {
        let (answer, mut answered) = oneshot::channel();
        self.queue.lock().map_err(|_| poisoned())?.push(Pending { write, answer });
        loop {
            let _turn = tokio::select! {
                biased;
                answer = &mut answered => return answer.unwrap_or_else(|_| Err(poisoned())),
                turn = self.turn.lock() => turn,
            };
            match answered.try_recv() {
                Ok(answer) => return answer,
                Err(oneshot::error::TryRecvError::Closed) => return Err(poisoned()),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            // Only the turn's holder takes from the queue: this writer's write is still there.
            let entered = enter().await;
            let group: Vec<Pending> = {
                let mut queue = self.queue.lock().map_err(|_| poisoned())?;
                let take = queue.len().min(MAX_GROUP);
                queue.drain(..take).collect()
            };
            if group.len() > 1 {
                self.groups.fetch_add(1, Ordering::Relaxed);
                self.grouped.fetch_add(group.len() as u64, Ordering::Relaxed);
            }
            match entered {
                Ok(entered) => send(entered, group).await,
                Err(err) => {
                    for pending in group {
                        let _gone = pending.answer.send(Err(copy_of(&err)));
                    }
                }
            }
        }
    }
}

/// A group's connection with its statement prepared, and whether it is inside a transaction
/// that already holds the write lock (and whether that one had to wait for it).
struct Turn {
    client: Object,
    statement: Statement,
    open: bool,
    waited: bool,
}

impl Turn {
    /// A connection with the group's statement prepared on it, outside any transaction: the
    /// statement takes the write lock itself and commits alone.
    async fn alone(shared: &Shared<'_>) -> Result<Self, StoreError> {
        let client = shared.conn.client("save runs").await?;
        let statement = client.prepare_cached(WRITE_GROUP).await.map_err(pg("save runs"))?;
        Ok(Self { client, statement, open: false, waited: false })
    }
}

fn poisoned() -> StoreError {
    StoreError::Postgres { operation: "save run", message: "the write queue failed".into(), unavailable: true }
}

/// One write of a failed group, alone (its own statement and commit: a tenant's bound names
/// this run).
async fn one(shared: &Shared<'_>, write: &RunWrite) -> Answer {
    let (mut answers, _waited) = many(shared, Turn::alone(shared).await?, &[write]).await?;
    answers.pop().unwrap_or_else(|| Err(StoreError::Conflict("the run was not written".into())))
}

/// Writes of a group: `dg_write_group`, one answer per write in the group's order, and
/// whether the group had to wait for the write lock. Inside `turn`'s open transaction, the
/// statement and the commit go out together (one round trip; a failed statement's commit
/// rolls back); otherwise the statement commits alone.
async fn many(shared: &Shared<'_>, turn: Turn, group: &[&RunWrite]) -> Result<(Vec<Answer>, bool), StoreError> {
    let writes = || group.iter().copied();
    let tenants: Vec<i64> = writes().map(|w| w.tenant).collect();
    let namespaces: Vec<i64> = writes().map(|w| w.namespace).collect();
    let runs: Vec<&str> = writes().map(|w| w.run_id.as_str()).collect();
    let scenarios: Vec<&str> = writes().map(|w| w.scenario_id.as_str()).collect();
    let statuses: Vec<&str> = writes().map(|w| w.status.as_str()).collect();
    let expected: Vec<Option<i64>> = writes().map(|w| w.expected).collect();
    let docs: Vec<&[u8]> = writes().map(|w| w.doc.as_slice()).collect();
    let shas: Vec<&str> = writes().map(|w| w.sha256.as_str()).collect();
    let saved: Vec<i64> = writes().map(|w| w.saved_at).collect();
    let time_ms = writes().map(|w| w.append.time_ms).max().unwrap_or(0);
    let every = writes().map(|w| w.append.every).max().unwrap_or(0);
    let parts: Vec<&[u8]> = writes().flat_map(|w| w.append.parts.iter().map(Vec::as_slice)).collect();
    let entry_tenants: Vec<Option<i64>> = writes().flat_map(|w| w.append.tenants.iter().copied()).collect();
    let entries: Vec<i32> = writes().map(|w| i32::try_from(w.append.tenants.len()).unwrap_or(i32::MAX)).collect();
    let usage_tenants: Vec<i64> = writes().flat_map(|w| w.append.usage_tenants.iter().copied()).collect();
    let usage_requests: Vec<&str> = writes().flat_map(|w| w.append.usage_requests.iter().map(String::as_str)).collect();
    let usage_counters: Vec<&str> = writes().flat_map(|w| w.append.usage_counters.iter().map(String::as_str)).collect();
    let usage_keys: Vec<&str> = writes().flat_map(|w| w.append.usage_keys.iter().map(String::as_str)).collect();
    let usage_amounts: Vec<i64> = writes().flat_map(|w| w.append.usage_amounts.iter().copied()).collect();
    let usages: Vec<i32> = writes().map(|w| i32::try_from(w.append.usage_tenants.len()).unwrap_or(i32::MAX)).collect();
    let need_namespaces: Vec<bool> = writes().map(|w| w.need_namespace).collect();
    let params: [&(dyn ToSql + Sync); 23] = [
        &tenants,
        &namespaces,
        &runs,
        &scenarios,
        &statuses,
        &expected,
        &docs,
        &shas,
        &saved,
        &shared.statuses,
        &shared.limit,
        &time_ms,
        &parts,
        &entry_tenants,
        &entries,
        &usage_tenants,
        &usage_requests,
        &usage_counters,
        &usage_keys,
        &usage_amounts,
        &usages,
        &every,
        &need_namespaces,
    ];
    let failed = |err| {
        let run_id = match group {
            [write] => write.run_id.as_str(),
            _ => "(a group of runs)",
        };
        save_error(err, run_id, shared.limit)
    };
    let Turn { client, statement, open, waited: waited_first } = turn;
    let row = if open {
        let (row, committed) = tokio::join!(client.query_one(&statement, &params), client.batch_execute("COMMIT"));
        let row = row.map_err(failed)?;
        committed.map_err(pg("commit runs"))?;
        row
    } else {
        client.query_one(&statement, &params).await.map_err(failed)?
    };
    let waited = waited_first || row.get::<_, Option<bool>>(7).unwrap_or(false);
    let versions: Vec<Option<i64>> = row.get(0);
    let errors: Vec<Option<String>> = row.get(1);
    let codes: Vec<Option<String>> = row.get(2);
    // One write of the group signs the checkpoint that fell due, not each of them.
    let mut due = Appended::from_row(&row, 3).is_some_and(|head| head.checkpoint_due);
    if versions.len() != group.len() || errors.len() != group.len() || codes.len() != group.len() {
        return Err(StoreError::Postgres {
            operation: "save runs",
            message: format!("{} answers for {} writes", versions.len(), group.len()),
            unavailable: false,
        });
    }
    let answers = versions
        .into_iter()
        .zip(errors.into_iter().zip(codes))
        .map(|(version, (error, code))| match (version, error) {
            (Some(version), None) => Ok((version, std::mem::take(&mut due))),
            (_, Some(message)) if code.as_deref() == Some("DGN01") => Err(StoreError::Missing(message)),
            (_, Some(message)) => Err(StoreError::Conflict(message)),
            (None, None) => Err(StoreError::Conflict("the run was not written".into())),
        })
        .collect();
    Ok((answers, waited))
}

/// The database's answer to a run write as the store's error: its own codes (DGL01 the
/// tenant's storage bound, DGS01 an unknown stored status), else as every other
/// statement's. (A run's conflict, DGC01, and a deleted namespace, DGN01, are answers per
/// write, not errors of the statement.)
fn save_error(err: tokio_postgres::Error, run_id: &str, limit: i64) -> StoreError {
    let Some(db) = err.as_db_error() else { return pg("save run")(err) };
    match db.code().code() {
        "DGL01" => StoreError::TooLarge {
            what: "tenant run state storage",
            actual: db.message().parse().unwrap_or(usize::MAX),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        },
        "DGS01" => StoreError::Corrupt { table: "runs", key: run_id.to_string(), reason: db.message().to_string() },
        _ => pg("save run")(err),
    }
}

/// The group's error, once for each of its writes (the kinds a caller acts on are kept:
/// unavailable, contended, conflict).
fn copy_of(err: &StoreError) -> StoreError {
    match err {
        StoreError::Postgres { operation, message, unavailable } => {
            StoreError::Postgres { operation, message: message.clone(), unavailable: *unavailable }
        }
        StoreError::Contended { operation, message } => StoreError::Contended { operation, message: message.clone() },
        StoreError::Conflict(message) => StoreError::Conflict(message.clone()),
        other => StoreError::Postgres { operation: "save runs", message: other.to_string(), unavailable: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_write(run_id: &str) -> RunWrite {
        RunWrite {
            tenant: 1,
            namespace: 1,
            run_id: run_id.into(),
            scenario_id: "s".into(),
            status: "active".into(),
            expected: None,
            doc: Vec::new(),
            sha256: String::new(),
            saved_at: 0,
            append: AppendArgs::new(Vec::new(), &[], None).unwrap(),
            need_namespace: false,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// A write answered by another writer's group returns while the turn is still held
    /// (by that writer sending its next group, here this test): it does not queue for the
    /// turn behind the next group's writers.
    #[test]
    fn an_answered_write_returns_without_taking_the_turn() {
        runtime().block_on(async {
            let groups = WriteGroups::default();
            let held = groups.turn.lock().await;
            let waiting = groups.queue_and_wait(
                run_write("r1"),
                || async { Ok::<(), StoreError>(()) },
                |(), _| async { panic!("this writer never leads") },
            );
            let answering = async {
                tokio::task::yield_now().await;
                let queued: Vec<Pending> = groups.queue.lock().unwrap().drain(..).collect();
                assert_eq!(queued.len(), 1);
                for pending in queued {
                    let _ = pending.answer.send(Ok((7, false)));
                }
            };
            // Bounded: a writer that waited for the turn would wait for ever here.
            let waiting = tokio::time::timeout(std::time::Duration::from_secs(10), waiting);
            let (answer, ()) = tokio::join!(waiting, answering);
            assert_eq!(answer.expect("answered without the turn").unwrap(), (7, false));
            drop(held);
        });
    }

    /// Writers queued together go out as one group, sent by one of them; each gets its own
    /// answer, and groups are counted.
    #[test]
    fn queued_writes_go_out_as_one_group_with_their_own_answers() {
        runtime().block_on(async {
            let groups = WriteGroups::default();
            let sent = std::cell::RefCell::new(Vec::new());
            let send = |(), group: Vec<Pending>| {
                sent.borrow_mut().push(group.len());
                async move {
                    for pending in group {
                        let version = pending.write.run_id.trim_start_matches('r').parse::<i64>().unwrap();
                        let _ = pending.answer.send(Ok((version, false)));
                    }
                }
            };
            let enter = || async { Ok::<(), StoreError>(()) };
            let held = groups.turn.lock().await;
            let writes = futures_util::future::join_all(
                (1..=3).map(|n| groups.queue_and_wait(run_write(&format!("r{n}")), enter, send)),
            );
            let release = async {
                tokio::task::yield_now().await;
                drop(held);
            };
            let (answers, ()) = tokio::join!(writes, release);
            let versions: Vec<i64> = answers.into_iter().map(|answer| answer.unwrap().0).collect();
            assert_eq!(versions, vec![1, 2, 3]);
            assert_eq!(*sent.borrow(), vec![3], "one group carried all three");
            assert_eq!(groups.sent(), (1, 3));
        });
    }
}
