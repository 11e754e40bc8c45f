//! `[storage]`: where the appliance's state lives. `backend = "sqlite"` (the default, the
//! data directory's `state.db`) or `"postgres"` with `[storage.postgres]`: the connection
//! string without a password, the password from a 0600 file, TLS to the server checked
//! against a CA bundle (what libpq calls `verify-full`; plain only to a Unix socket or a
//! loopback host), the pool size and the statement timeout. docs/scale-out.md.

use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[storage]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// `sqlite` (default) or `postgres`.
    #[serde(default)]
    pub backend: StorageBackendKind,
    /// The database, with `backend = "postgres"`.
    #[serde(default)]
    pub postgres: Option<PostgresSettings>,
}

/// `[storage] backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackendKind {
    /// The embedded SQLite database in the data directory.
    #[default]
    Sqlite,
    /// A PostgreSQL 15+ database shared by every node.
    Postgres,
}

/// `[storage.postgres] tls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresTls {
    /// TLS, the server's chain checked against `ca_file` and its name against the host.
    #[default]
    VerifyFull,
    /// No TLS: allowed only when every host is a Unix socket or a loopback address.
    Disable,
}

/// `[storage.postgres]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// `postgresql://user@host:port/dbname` or `host=… port=… user=… dbname=…`; no password.
    pub url: String,
    /// A file (0600) holding the password; absent: none (peer or trust on a Unix socket).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS to the server.
    #[serde(default)]
    pub tls: PostgresTls,
    /// CA bundle (PEM) the server's certificate must chain to (needed for `verify-full`
    /// over TCP: air-gapped sites run their own CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Most connections one node keeps.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// The server cancels any statement running longer (ms).
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// Longest wait for a connection (ms).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

/// Connections per node: writes are bounded to two at a time per node (the chain head
/// serializes them anyway), so a few more serve the reads beside them (docs/scale-out.md).
fn default_pool_size() -> usize {
    4
}

fn default_statement_timeout_ms() -> u64 {
    10_000
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

impl PostgresSettings {
    /// The connection string parsed.
    fn parsed(&self) -> Result<tokio_postgres::Config, String> {
        let config =
            tokio_postgres::Config::from_str(&self.url).map_err(|err| format!("not a connection string: {err}"))?;
        if config.get_hosts().is_empty() {
            return Err("names no host".into());
        }
        if config.get_user().is_none() {
            return Err("names no user".into());
        }
        if config.get_password().is_some() {
            return Err("holds a password: put it in password_file (0600) instead".into());
        }
        Ok(config)
    }

    /// Every problem as (key, message); reads the password file to check it.
    #[must_use]
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        match self.parsed() {
            Err(message) => problems.push(("url".into(), message)),
            Ok(config) => {
                let local = dg_storage::postgres::local_only(&config);
                let sockets_only =
                    config.get_hosts().iter().all(|host| matches!(host, tokio_postgres::config::Host::Unix(_)));
                match self.tls {
                    PostgresTls::Disable if !local => problems.push((
                        "tls".into(),
                        "the database is reached over the network: plain connections are allowed only to a Unix socket or a loopback host".into(),
                    )),
                    PostgresTls::VerifyFull if self.ca_file.is_none() && !sockets_only => problems.push((
                        "ca_file".into(),
                        "tls = \"verify-full\" needs the CA bundle the server's certificate chains to".into(),
                    )),
                    _ => {}
                }
            }
        }
        if let Some(path) = &self.password_file {
            if let Err(message) = crate::secret_file::read_secret(path, "password_file") {
                problems.push(("password_file".into(), message));
            }
        }
        if let (PostgresTls::VerifyFull, Some(ca)) = (self.tls, &self.ca_file) {
            if let Err(message) = crate::tls_client::pem_certs(ca) {
                problems.push(("ca_file".into(), message));
            }
        }
        if !(1..=256).contains(&self.pool_size) {
            problems.push(("pool_size".into(), "1 to 256 connections".into()));
        }
        if !(100..=600_000).contains(&self.statement_timeout_ms) {
            problems.push(("statement_timeout_ms".into(), "100 to 600000 ms".into()));
        }
        if !(100..=60_000).contains(&self.connect_timeout_ms) {
            problems.push(("connect_timeout_ms".into(), "100 to 60000 ms".into()));
        }
        problems
    }

    /// What the store connects with: the password read from its file, TLS built on the
    /// appliance's one rustls provider.
    ///
    /// # Errors
    /// The first problem, as a message.
    pub fn connect_settings(&self) -> Result<dg_storage::postgres::PgSettings, String> {
        if let Some((key, message)) = self.problems().into_iter().next() {
            return Err(format!("[storage.postgres] {key}: {message}"));
        }
        let config = self.parsed()?;
        let password = match &self.password_file {
            Some(path) => {
                Some(crate::secret_file::read_secret(path, "password_file")?.trim_end_matches(['\n', '\r']).to_string())
            }
            None => None,
        };
        let tls = match (self.tls, &self.ca_file) {
            (PostgresTls::VerifyFull, Some(ca)) => Some(crate::tls_client::client_config(ca, None)?),
            _ => None,
        };
        Ok(dg_storage::postgres::PgSettings {
            config,
            password,
            tls,
            pool_size: self.pool_size,
            statement_timeout: Duration::from_millis(self.statement_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
        })
    }
}

impl StorageSection {
    /// Every problem as (key below `storage`, message).
    #[must_use]
    pub fn problems(&self) -> Vec<(String, String)> {
        match (self.backend, &self.postgres) {
            (StorageBackendKind::Postgres, None) => {
                vec![("postgres".into(), "backend = \"postgres\" needs a [storage.postgres] section".into())]
            }
            (StorageBackendKind::Sqlite, Some(_)) => vec![(
                "backend".into(),
                "[storage.postgres] is set but backend is \"sqlite\": say backend = \"postgres\" or remove the section"
                    .into(),
            )],
            (_, Some(postgres)) => {
                postgres.problems().into_iter().map(|(key, message)| (format!("postgres.{key}"), message)).collect()
            }
            (StorageBackendKind::Sqlite, None) => Vec::new(),
        }
    }
}
