//! Command-line interface: every subcommand and flag, with `--help` on each.

pub mod admin;
pub mod backup;
pub mod bootstrap;
pub mod commands;
pub mod release;
pub mod runpack;
pub mod store;
pub mod support;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::rpc::stdio::Framing;

/// Decision Gate Appliance: the enterprise Decision Gate control plane in one daemon.
#[derive(Debug, Parser)]
#[command(name = "dg-appliance", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance: MCP over HTTPS (/rpc, /mcp), health, readiness and metrics.
    Serve(ServeArgs),
    /// Speak the same tools over stdin/stdout (for local agents).
    Stdio(StdioArgs),
    /// The version and the crypto provider of this build (standard, or the FIPS module and
    /// whether it runs in FIPS mode).
    Version,
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Operator access to the state database.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Signed runpack bundles: export, verify offline, inspect.
    #[command(subcommand)]
    Runpack(RunpackCommand),
    /// API keys (issue, list, revoke, rotate) and the bundle signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The tenant registry.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// A tenant's namespaces.
    #[command(subcommand)]
    Namespaces(NamespacesCommand),
    /// The OIDC subject mapping: who an identity provider's subject is here.
    #[command(subcommand)]
    Subjects(SubjectsCommand),
    /// The tamper-evident audit log: verify, export, prune, legal hold.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The usage ledger.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Backups for USB sticks: create (online), verify (offline), restore, prune.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// One signed archive for the vendor, with no secret in it (`--out`), or check one
    /// offline (`--verify`).
    SupportBundle(SupportBundleArgs),
    /// Sign and verify release files (the offline install bundle's SHA256SUMS).
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Write the man pages and shell completions (used by packaging).
    #[command(hide = true)]
    GenerateDocs {
        /// Output directory (man/ and completions/ are created in it).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the policy table: every operation and the roles that may perform it.
    Policy {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `tenants` subcommands.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Register a tenant.
    Create {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// Tenant id (>= 1).
        #[arg(long)]
        id: u64,
        /// Unique name.
        #[arg(long)]
        name: String,
        /// Quota, as COUNTER=N (tool_calls, runs_started, evidence_queries, runpack_exports,
        /// schemas_written, registry_entries); repeatable.
        #[arg(long = "quota", value_parser = parse_quota)]
        quotas: Vec<(String, u64)>,
    },
    /// List tenants.
    List(AdminListArgs),
    /// Disable a tenant (every request to it is refused), or enable it again.
    Disable {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// Tenant id.
        #[arg(long)]
        id: u64,
        /// Enable instead.
        #[arg(long)]
        enable: bool,
    },
    /// Delete a tenant that holds no namespaces and no data.
    Delete {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// Tenant id.
        #[arg(long)]
        id: u64,
    },
}

/// `subjects` subcommands.
#[derive(Debug, Subcommand)]
pub enum SubjectsCommand {
    /// Map a subject (`oidc:<issuer>#<sub>`, as the audit log records it) to a role; the
    /// mapping wins over the token's claims.
    Set {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// `oidc:<issuer>#<sub>`.
        subject: String,
        /// org_admin, tenant_admin, auditor or service.
        #[arg(long)]
        role: String,
        /// Tenant (not for org_admin).
        #[arg(long)]
        tenant: Option<u64>,
        /// Namespace within the tenant (repeat; required for service).
        #[arg(long = "namespace")]
        namespaces: Vec<u64>,
        /// Label.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List mapped subjects.
    List {
        /// Data directory, config and output format.
        #[command(flatten)]
        list: AdminListArgs,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<u64>,
    },
    /// Remove a subject's mapping (its tokens fall back to their claims).
    Delete {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// `oidc:<issuer>#<sub>`.
        subject: String,
        /// The tenant it is mapped in (none for an org_admin mapping).
        #[arg(long)]
        tenant: Option<u64>,
    },
}

/// `namespaces` subcommands.
#[derive(Debug, Subcommand)]
pub enum NamespacesCommand {
    /// Register a namespace in a tenant.
    Create {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// Tenant id.
        #[arg(long)]
        tenant: u64,
        /// Namespace id (>= 1).
        #[arg(long)]
        id: u64,
        /// Name.
        #[arg(long)]
        name: String,
    },
    /// List a tenant's namespaces.
    List {
        /// Data directory, config and output format.
        #[command(flatten)]
        list: AdminListArgs,
        /// Tenant id.
        #[arg(long)]
        tenant: u64,
    },
    /// Disable a namespace, or enable it again.
    Disable {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// Tenant id.
        #[arg(long)]
        tenant: u64,
        /// Namespace id.
        #[arg(long)]
        id: u64,
        /// Enable instead.
        #[arg(long)]
        enable: bool,
    },
    /// Delete an empty namespace.
    Delete {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// Tenant id.
        #[arg(long)]
        tenant: u64,
        /// Namespace id.
        #[arg(long)]
        id: u64,
    },
}

/// Flags of list commands.
#[derive(Debug, Clone, Args)]
pub struct AdminListArgs {
    /// Data directory and config.
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Follow the chain into a JSONL file (for sites that ship files to their SIEM): each
    /// entry appended once, in order, as stored; the position is kept in `<out>.cursor`,
    /// so a restarted follower resumes where it stopped (at-least-once).
    Follow {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// The JSONL file to append to.
        #[arg(long)]
        out: PathBuf,
        /// Catch up and exit instead of following.
        #[arg(long)]
        once: bool,
        /// How often to look for new entries, in ms (default 1000).
        #[arg(long, default_value_t = 1000)]
        poll_ms: u64,
    },
    /// Verify the whole chain, every signed checkpoint and the witness file; or, with
    /// `--export`, an exported JSONL file offline. Reports the first broken entry.
    /// Exit codes: 0 verified, 1 broken, 2 unusable input.
    Verify {
        /// Data directory and config (not needed with --export).
        #[command(flatten)]
        data: DataDirArgs,
        /// An exported JSONL file to verify instead of the database.
        #[arg(long)]
        export: Option<PathBuf>,
        /// Public key ring (`keys show-public`); default: the data directory's.
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Export entries (and the checkpoints that verify them) as JSON lines.
    Export {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// Entries from this time on: RFC 3339 (2026-01-31T00:00:00Z) or unix ms.
        #[arg(long)]
        since: Option<String>,
        /// Output format (only jsonl).
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Reduce entries older than a duration to their hashes (the chain stays verifiable;
    /// tenants under legal hold are kept whole).
    Prune {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// Age, e.g. 365d.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
    },
    /// Put a tenant's audit entries under legal hold, or release it.
    Hold {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// Tenant id.
        #[arg(long)]
        tenant: u64,
        /// Why (case number).
        #[arg(long, required_unless_present = "release")]
        reason: Option<String>,
        /// Release the hold.
        #[arg(long)]
        release: bool,
    },
}

/// Where a passphrase comes from (never the command line, which other users can see).
#[derive(Debug, Clone, Args)]
pub struct PassphraseArgs {
    /// File holding the passphrase (first line). Or set DG_BACKUP_PASSPHRASE.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

/// `backup` subcommands. Verification exit codes: 0 verified, 10 corrupt, 11 signed by a
/// key not in the ring, 12 incomplete set (missing parts), 13 unreadable, 14 wrong
/// passphrase, 15 refused (appliance running, target exists), 16 write failure.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up the data directory while the appliance serves: a consistent database
    /// snapshot, the runpacks, the public key ring, the audit witness and the config.
    Create {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// Target directory (the USB stick); the backup is a new directory inside it.
        #[arg(long)]
        to: PathBuf,
        /// Also back up the private keys (signing key, TLS key, admin key), encrypted with
        /// the passphrase.
        #[arg(long)]
        include_secrets: bool,
        /// Passphrase for --include-secrets.
        #[command(flatten)]
        passphrase: PassphraseArgs,
        /// Largest part file in bytes (default: below 4 GiB, for FAT32).
        #[arg(long)]
        part_size: Option<u64>,
    },
    /// Verify a backup with no daemon and no data directory: every part, every member,
    /// the signature, and the embedded database's integrity_check.
    Verify {
        /// The backup directory or its backup.json.
        backup: PathBuf,
        /// Public key ring (`keys show-public`) of the appliance that made it.
        #[arg(long)]
        pubkey: PathBuf,
        /// Also open the encrypted private keys with this passphrase.
        #[command(flatten)]
        passphrase: PassphraseArgs,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Restore into a stopped appliance: unpack and verify beside the data directory,
    /// then swap atomically; the previous directory survives any failure.
    Restore {
        /// The backup directory or its backup.json.
        backup: PathBuf,
        /// Data directory to restore into.
        #[arg(long, env = "DG_DATA_DIR")]
        data_dir: PathBuf,
        /// Public key ring of the appliance that made the backup.
        #[arg(long)]
        pubkey: PathBuf,
        /// Replace an existing data directory.
        #[arg(long)]
        force: bool,
        /// The node's configuration: with `[storage] backend = "postgres"` the state goes into
        /// that database (new and migrated, not yet served), the rest into the data directory.
        #[arg(long, env = "DG_CONFIG")]
        config: Option<PathBuf>,
        /// Restore the private keys too (needs the passphrase).
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Keep the newest N backups in a directory and delete the rest.
    Prune {
        /// The directory holding the backups.
        #[arg(long)]
        dir: PathBuf,
        /// How many to keep.
        #[arg(long)]
        keep: usize,
    },
}

/// `release` subcommands: detached Ed25519 signatures over files.
#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Sign files with the key in a key directory (FILE.sig beside each).
    Sign {
        /// Key directory (`active.key`, `keyring.json`); created with a new key if empty.
        #[arg(long)]
        keys: PathBuf,
        /// Files to sign.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Verify FILE against FILE.sig and a public key ring. Exit 0 verified, 1 not.
    Verify {
        /// Public key ring (`keyring.json`).
        #[arg(long)]
        pubkey: PathBuf,
        /// Files to verify.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `usage` subcommands.
#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Usage per tenant, key and counter, for billing export.
    Report {
        /// Data directory, config and output format.
        #[command(flatten)]
        list: AdminListArgs,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<u64>,
        /// From this time on: RFC 3339 or unix ms.
        #[arg(long)]
        since: Option<String>,
    },
    /// The billing export of one month: per tenant and counter, the plan's entitlement,
    /// usage, overage and its price; written with a detached signature (`<out>.sig`).
    Export {
        /// Data directory and config (the plans come from `[billing]`).
        #[command(flatten)]
        data: DataDirArgs,
        /// The month, YYYY-MM (UTC).
        #[arg(long)]
        period: String,
        /// csv or jsonl.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_quota(text: &str) -> Result<(String, u64), String> {
    let (name, value) = text.split_once('=').ok_or("expected COUNTER=N")?;
    let value = value.parse().map_err(|_| format!("{value:?} is not a number"))?;
    Ok((name.to_string(), value))
}

/// `runpack` subcommands.
#[derive(Debug, Subcommand)]
pub enum RunpackCommand {
    /// Export a run as a signed bundle (.tar.zst) from the configured store (`[storage]`:
    /// the data directory's SQLite database or PostgreSQL), signed with the configured keys
    /// (`[signing]`: the data directory's key file or the PKCS#11 token).
    Export {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// Tenant id.
        #[arg(long)]
        tenant: u64,
        /// Namespace id.
        #[arg(long)]
        namespace: u64,
        /// Run id.
        #[arg(long)]
        run_id: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle offline with nothing but a public key file (no daemon, no data
    /// directory, no network). A directory is verified as an unsigned runpack.
    /// Exit codes: 0 verified, 1 verification failed, 2 unusable input.
    Verify {
        /// Bundle file, or runpack directory.
        bundle: PathBuf,
        /// Public key ring or key file (`dg-appliance keys show-public`).
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Show what a bundle claims, without trusting it.
    Inspect {
        /// Bundle file.
        bundle: PathBuf,
    },
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue an API key (printed once; only its hash is stored).
    Issue {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// Role: org_admin, tenant_admin, auditor or service.
        #[arg(long)]
        role: String,
        /// Tenant the key is bound to (not for org_admin).
        #[arg(long)]
        tenant: Option<u64>,
        /// Namespace the key may use; repeatable (default: all of the tenant's).
        #[arg(long = "namespace")]
        namespaces: Vec<u64>,
        /// Label.
        #[arg(long, default_value = "")]
        label: String,
        /// Lifetime, e.g. 90d.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// List API keys (never their secrets).
    List {
        /// Data directory, config and output format.
        #[command(flatten)]
        list: AdminListArgs,
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<u64>,
    },
    /// Revoke an API key: refused from the next request on.
    Revoke {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// Key id.
        key_id: String,
    },
    /// Print the public key ring (give it to auditors for offline verification).
    ShowPublic {
        /// Data directory.
        #[arg(long, env = "DG_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// With KEY_ID: issue a successor API key with the same scopes; the old one keeps
    /// working for the overlap, then expires. Without KEY_ID: start signing bundles and
    /// audit checkpoints with a new key; old public keys stay in the ring.
    Rotate {
        /// Data directory and config.
        #[command(flatten)]
        data: DataDirArgs,
        /// API key id to rotate (omit to rotate the signing key).
        key_id: Option<String>,
        /// How long the old API key keeps working, e.g. 24h.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
        overlap: std::time::Duration,
    },
}

/// Where the appliance keeps its state.
#[derive(Debug, Clone, Args)]
pub struct DataDirArgs {
    /// Data directory (created on first start). Default: ./dg-data from a shell,
    /// /var/lib/dg-appliance under systemd ($STATE_DIRECTORY).
    #[arg(long, env = "DG_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file; without it the embedded default is used.
    #[arg(long, env = "DG_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `support-bundle` flags.
#[derive(Debug, Clone, Args)]
pub struct SupportBundleArgs {
    /// Data directory and config.
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Where to write the bundle (a tar archive).
    #[arg(long, conflicts_with = "verify")]
    pub out: Option<PathBuf>,
    /// Check a bundle's signature and contents instead (offline).
    #[arg(long)]
    pub verify: Option<PathBuf>,
    /// The public key ring for --verify (`dg-appliance keys show-public`).
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
    /// The daemon's log to take the tail of (default: the journal of dg-appliance.service).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// How many log lines to take (default 500).
    #[arg(long)]
    pub log_lines: Option<usize>,
    /// The /metrics URL to snapshot (default: the configured listen address).
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// A file holding the API key to scrape /metrics with (default: <data dir>/admin.key);
    /// the key itself never enters the bundle.
    #[arg(long)]
    pub metrics_key_file: Option<PathBuf>,
}

/// `serve` flags.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Data directory and config.
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Address to listen on (overrides the config).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Serve plain HTTP instead of TLS. Only allowed on a loopback address.
    #[arg(long)]
    pub plaintext_loopback: bool,
}

/// `stdio` flags.
#[derive(Debug, Clone, Args)]
pub struct StdioArgs {
    /// Data directory and config.
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Message framing.
    #[arg(long, value_enum, default_value = "content-length")]
    pub framing: Framing,
    /// Protocol: Decision Gate JSON-RPC (`rpc`) or standard MCP (`mcp`).
    #[arg(long, value_enum, default_value = "rpc")]
    pub protocol: Protocol,
}

/// Which JSON-RPC dialect to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// The Decision Gate surface (`content[0].json`, `input_schema`).
    Rpc,
    /// Standard MCP (`initialize`, `inputSchema`, `structuredContent`).
    Mcp,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file and print every error with its key path.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
    /// Print the embedded default configuration.
    Default,
}

/// `store` subcommands.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Run SQLite's integrity_check and verify every stored document's hash.
    Check(StoreArgs),
    /// List runs (all tenants: operators only).
    List(StoreArgs),
    /// Copy every row into an empty store of another backend (SQLite to PostgreSQL and back),
    /// checking every document's hash and the audit chain on arrival.
    Copy {
        /// `sqlite:DATA_DIR`, or `postgres:CONFIG` (a configuration file whose
        /// `[storage.postgres]` names the database).
        #[arg(long)]
        from: String,
        /// The empty target, spelled as `--from`.
        #[arg(long)]
        to: String,
        /// Public key ring checking the chain's checkpoints (default: the SQLite side's
        /// `keys/keyring.json`).
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Bring the configured database's schema to this build's version (PostgreSQL: safe
    /// while other nodes start; SQLite: the data directory's state.db, with a backup first).
    Migrate(DataDirArgs),
    /// Import runs and data shapes from an open-source Decision Gate SQLite database.
    Import {
        /// Data directory.
        #[command(flatten)]
        store: StoreArgs,
        /// The open-source database file.
        #[arg(long)]
        from: PathBuf,
        /// Tenant id of the runs in the source.
        #[arg(long)]
        source_tenant: u64,
        /// Namespace id of the runs in the source.
        #[arg(long)]
        source_namespace: u64,
        /// Tenant to import into.
        #[arg(long)]
        tenant: u64,
        /// Namespace to import into.
        #[arg(long)]
        namespace: u64,
    },
    /// Show one run's state.
    Show {
        /// Data directory.
        #[command(flatten)]
        store: StoreArgs,
        /// Tenant id.
        #[arg(long)]
        tenant: u64,
        /// Namespace id.
        #[arg(long)]
        namespace: u64,
        /// Run id.
        run_id: String,
    },
}

/// Flags for store commands.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Data directory.
    #[arg(long, env = "DG_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file (its `[storage]` section names the database); without it the
    /// data directory's SQLite database.
    #[arg(long, env = "DG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
