//! Command-line interface: every subcommand and flag, with `--help` on each.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Operator access to the state database.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Signed runpack bundles: export, verify offline, inspect.
    #[command(subcommand)]
    Runpack(RunpackCommand),
    /// The appliance's bundle signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `runpack` subcommands.
#[derive(Debug, Subcommand)]
pub enum RunpackCommand {
    /// Export a run as a signed bundle (.tar.zst) from the data directory.
    Export {
        /// Data directory.
        #[arg(long, env = "DG_DATA_DIR")]
        data_dir: Option<PathBuf>,
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
    /// Print the public key ring (give it to auditors for offline verification).
    ShowPublic {
        /// Data directory.
        #[arg(long, env = "DG_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Start signing with a new key; old public keys stay in the ring.
    Rotate {
        /// Data directory.
        #[arg(long, env = "DG_DATA_DIR")]
        data_dir: Option<PathBuf>,
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

/// Message framing on stdio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Framing {
    /// `Content-Length: N` headers (Decision Gate clients).
    ContentLength,
    /// One JSON message per line (standard MCP stdio clients).
    Ndjson,
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
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
