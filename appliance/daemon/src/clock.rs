//! Wall-clock time, used only outside the logical record (key expiry, logs, metrics):
//! the one clock of the storage crate, so every timestamp the daemon writes agrees.

pub use dg_storage::clock::now_ms;
