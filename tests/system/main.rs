#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The black-box system tests, one binary (one link): each module starts the real
//! `dg-appliance` binary (`support::binary`, or `DG_APPLIANCE_BIN`) on loopback with a fresh
//! data directory and talks to it as a client would. `cargo test --test system` runs them
//! all; `cargo test --test system authz::` one module.

#[path = "../support/mod.rs"]
mod support;

mod admin_ui;
mod alert_rules;
mod audit;
mod audit_forward;
mod authz;
mod backup;
mod execution;
mod file_inputs;
mod fips;
mod hardening;
mod hostile_input;
mod hsm;
mod lifecycle;
mod machine_wide;
mod oidc;
mod oss_clients;
mod postgres_scale;
mod postgres_storage;
mod runpack_names;
mod runpacks;
mod s3_runpacks;
mod support_bundle;
mod tools;
mod transports;
