//! Connections to PostgreSQL: what the operator configured ([`PgSettings`]), a bounded pool
//! of connections (deadpool), and the small runtime the store's synchronous callers block on.
//!
//! TLS: over TCP the connection is TLS unless the operator said `tls = "disable"`, which is
//! allowed on a loopback host only; rustls checks the server's certificate chain and name
//! against the given roots (what libpq calls `verify-full`). A Unix socket needs no TLS.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::config::{Host, SslMode};

use crate::error::StoreError;

/// How the store reaches PostgreSQL (parsed and checked by the daemon's configuration).
#[derive(Clone)]
pub struct PgSettings {
    /// Host, port, user, database (no password: see `password`).
    pub config: tokio_postgres::Config,
    /// The password, read by the caller from the operator's 0600 file; `None` for peer or
    /// certificate authentication.
    pub password: Option<String>,
    /// TLS to the server (rustls, verified chain and name); `None` = plain, allowed only on a
    /// Unix socket or a loopback host.
    pub tls: Option<rustls::ClientConfig>,
    /// Most connections this node keeps.
    pub pool_size: usize,
    /// The server cancels any one statement running longer than this.
    pub statement_timeout: Duration,
    /// Longest wait for a connection (connecting, or a free one from the pool).
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("user", &self.config.get_user())
            .field("dbname", &self.config.get_dbname())
            .field("tls", &self.tls.is_some())
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

/// Whether every host of `config` is a Unix socket or a loopback address (where plain
/// connections are allowed).
#[must_use]
pub fn local_only(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
    })
}

/// Most lone audit appends (a refused request's entries) one node has in the database at
/// once; run writes go in groups, one group at a time (`write_group.rs`). Every audited write
/// of the deployment serializes on the chain head, so more of them only wait inside
/// PostgreSQL, where waiting costs its CPU (lock waits and wake-ups: measured in
/// docs/scale-out.md); they wait here instead, in the node, for a permit.
const WRITES_IN_FLIGHT: usize = 2;

/// The node's connections, and the runtime that drives them.
pub(crate) struct Connections {
    runtime: tokio::runtime::Runtime,
    pool: Pool,
    writes: tokio::sync::Semaphore,
}

impl Connections {
    /// Builds the pool (connections are made on first use).
    ///
    /// # Errors
    /// Plain TCP to a host that is not loopback; the runtime or the pool cannot be built.
    pub(crate) fn new(settings: &PgSettings) -> Result<Self, StoreError> {
        let failed = |message: String| StoreError::Postgres { operation: "configure", message, unavailable: false };
        if settings.config.get_password().is_some() {
            return Err(failed("the connection settings hold a password; it is read from password_file".into()));
        }
        let mut config = settings.config.clone();
        if let Some(password) = &settings.password {
            config.password(password.as_bytes());
        }
        let timeout_ms = settings.statement_timeout.as_millis();
        // Every statement of this node is bounded by the server, whatever a caller does.
        config.options(format!("-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}"));
        config.connect_timeout(settings.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("dg-appliance");
        }
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match &settings.tls {
            Some(tls) => {
                config.ssl_mode(SslMode::Require);
                Manager::from_config(config, tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone()), manager_config)
            }
            None => {
                if !local_only(&config) {
                    return Err(failed(
                        "plain connections are allowed only to a Unix socket or a loopback host; configure TLS".into(),
                    ));
                }
                config.ssl_mode(SslMode::Disable);
                Manager::from_config(config, tokio_postgres::NoTls, manager_config)
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dg-postgres")
            .enable_all()
            .build()
            .map_err(|err| failed(format!("cannot start the client runtime: {err}")))?;
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|err| failed(format!("cannot build the connection pool: {err}")))?;
        Ok(Self { runtime, pool, writes: tokio::sync::Semaphore::new(WRITES_IN_FLIGHT) })
    }

    /// A connection for an audited write, once one of the node's write permits is free (held
    /// until the permit is dropped).
    pub(crate) async fn writer(
        &self,
        operation: &'static str,
    ) -> Result<(tokio::sync::SemaphorePermit<'_>, Object), StoreError> {
        let permit = self.writes.acquire().await.map_err(|_| StoreError::Postgres {
            operation,
            message: "the node is shutting down".into(),
            unavailable: true,
        })?;
        Ok((permit, self.client(operation).await?))
    }

    /// Runs `work` to completion for a synchronous caller. Blocking-pool and plain threads
    /// block here directly; a worker thread of a multi-thread tokio runtime (an async task
    /// calling the store) first hands its other tasks away (`block_in_place`); under a
    /// current-thread runtime the work runs on a scoped thread of its own (the daemon serves
    /// PostgreSQL deployments on a multi-thread runtime, so that is never its request path).
    pub(crate) fn block_on<T: Send>(&self, work: impl Future<Output = T> + Send) -> T {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current().map(|handle| handle.runtime_flavor()) {
            Err(_) => self.runtime.block_on(work),
            Ok(RuntimeFlavor::CurrentThread) => {
                std::thread::scope(|scope| match scope.spawn(|| self.runtime.block_on(work)).join() {
                    Ok(value) => value,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
            }
            Ok(_) => tokio::task::block_in_place(|| self.runtime.block_on(work)),
        }
    }

    /// A connection from the pool. A refusal by the server (a wrong password, an unknown
    /// database) is reported in the server's words and is not "unavailable"; a server that
    /// cannot be reached, or a pool wait that timed out, is.
    pub(crate) async fn client(&self, operation: &'static str) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|err| match err {
            deadpool_postgres::PoolError::Backend(err) => match pg(operation)(err) {
                StoreError::Postgres { operation, message, unavailable } => {
                    StoreError::Postgres { operation, message: format!("cannot connect: {message}"), unavailable }
                }
                other => other,
            },
            other => StoreError::Postgres {
                operation,
                message: format!("no database connection: {other}"),
                unavailable: true,
            },
        })
    }
}

/// A read-only transaction over one snapshot (repeatable read): what a long read (a chain
/// verification, an export, a check, a copy) sees does not move while it reads, whatever
/// other nodes commit meanwhile.
pub(crate) async fn snapshot<'a>(
    client: &'a mut Object,
    operation: &'static str,
) -> Result<deadpool_postgres::Transaction<'a>, StoreError> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg(operation))
}

/// An error's message followed by its causes' (a TLS handshake's reason sits two levels down).
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}

/// Wraps a PostgreSQL error with the operation name: a serialization failure or deadlock is
/// a [`StoreError::Conflict`] (retryable), a lost connection or shutdown is unavailable.
pub(crate) fn pg(operation: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |err| {
        use tokio_postgres::error::SqlState;
        let code = err.code().cloned();
        if code == Some(SqlState::T_R_SERIALIZATION_FAILURE) || code == Some(SqlState::T_R_DEADLOCK_DETECTED) {
            let message = err.as_db_error().map_or_else(|| err.to_string(), |db| db.message().to_string());
            return StoreError::Contended { operation, message };
        }
        let unavailable = err.is_closed()
            || code.as_ref().is_some_and(|code| {
                let text = code.code();
                // Class 08 (connection exception), 57P01-57P03 (shutdown, cannot connect now).
                text.starts_with("08") || matches!(text, "57P01" | "57P02" | "57P03")
            })
            || (code.is_none() && err.as_db_error().is_none());
        let message = match err.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => with_causes(&err),
        };
        StoreError::Postgres { operation, message, unavailable }
    }
}

/// Statements through each connection's statement cache: parsed and planned by the server
/// once per connection, not on every call (one round trip instead of two).
pub(crate) mod cached {
    use deadpool_postgres::GenericClient;
    use tokio_postgres::types::ToSql;
    use tokio_postgres::Row;

    /// `execute` of a cached statement.
    pub(crate) async fn execute(
        client: &impl GenericClient,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = client.prepare_cached(sql).await?;
        client.execute(&statement, params).await
    }

    /// `query` of a cached statement.
    pub(crate) async fn query(
        client: &impl GenericClient,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = client.prepare_cached(sql).await?;
        client.query(&statement, params).await
    }

    /// `query_one` of a cached statement.
    pub(crate) async fn query_one(
        client: &impl GenericClient,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        let statement = client.prepare_cached(sql).await?;
        client.query_one(&statement, params).await
    }

    /// `query_opt` of a cached statement.
    pub(crate) async fn query_opt(
        client: &impl GenericClient,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = client.prepare_cached(sql).await?;
        client.query_opt(&statement, params).await
    }
}
