//! Durable appliance state in one SQLite file: run state, the scenario registry, the
//! data-shape (schema) registry and API keys. Every row is keyed by tenant and namespace
//! and every query is scoped by them; every stored document is canonical JSON with its
//! sha256 stored beside it and checked on every read. Writes go through one writer
//! thread that commits in groups (WAL, `synchronous=FULL`), so an acknowledged write is
//! durable without paying one fsync per request.

pub mod audit;
pub mod backup;
pub mod bundle;
pub mod checkpointer;
pub mod clock;
pub mod document;
pub mod error;
pub mod fsutil;
pub mod import;
pub mod migrations;
mod registry_cache;
pub mod run_counts;
pub mod runpack_store;
mod scenario_cache;
pub mod signing;
pub mod store;
pub mod tenancy;
pub mod usage;
mod writer;

pub use error::StoreError;
pub use store::{ApiKeyRecord, CheckReport, RunSummary, ScenarioRecord, Scope, Store, StoreLimits};
