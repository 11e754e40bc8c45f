//! The Decision Gate Appliance daemon as a library: the binary (`main.rs`) only parses
//! arguments and calls [`cli::commands::run`]; benchmarks and tests reach the same request
//! path (`ops`) directly.

pub mod app;
pub mod billing;
pub mod cli;
pub mod clock_watch;
pub mod config;
pub mod datadir;
pub mod export_roots;
pub mod forward;
pub mod hsm;
pub mod http;
pub mod metrics;
pub mod oidc;
pub mod ops;
pub mod providers_setup;
pub mod rpc;
pub mod s3;
pub mod secret_file;
pub mod slo;
pub mod storage_settings;
pub mod tls_client;
pub mod ui;
pub mod wire;
