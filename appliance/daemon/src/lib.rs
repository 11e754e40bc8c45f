//! The Decision Gate Appliance daemon as a library: the binary (`main.rs`) only parses
//! arguments and calls [`commands::run`]; benchmarks and tests reach the same request
//! path (`auth`, `request`, `tools`) directly.

pub mod activity;
pub mod admin;
pub mod admin_cli;
pub mod app;
pub mod auth;
pub mod backup_cli;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod datadir;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod providers_setup;
pub mod release_cli;
pub mod request;
pub mod rpc;
pub mod runpack_cli;
pub mod server;
pub mod stdio;
pub mod store_cli;
pub mod tools;
pub mod wire;
