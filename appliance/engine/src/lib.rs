//! Decision Gate semantics as a pure library.
//!
//! Everything an appliance needs to evaluate scenarios exactly as the open-source
//! Decision Gate does, and nothing that touches the outside world: no files, sockets or
//! clocks (runpack verification uses a scoped second thread for CPU work only). Evidence providers and disclosure policies are traits the caller
//! implements; run state is handed in and handed back for the caller to persist.
//!
//! Map of the crate:
//! - [`hashing`]: canonical JSON and sha256 digests (every hash in the system);
//! - [`time`], [`spec`], [`evidence`], [`state`]: the wire data model;
//! - [`ret`]: the requirement algebra in Kleene logic;
//! - [`comparator`]: comparing evidence with expected values;
//! - [`validation`]: strict comparator-vs-schema checks at define time;
//! - [`control_plane`]: the run state machine;
//! - [`runpack`]: building and verifying runpacks.

mod canonical;
pub mod comparator;
pub mod control_plane;
pub mod data_shape;
pub mod evidence;
pub mod hashing;
pub mod ret;
pub mod runpack;
pub mod spec;
pub mod state;
pub mod time;
pub mod validation;

pub use control_plane::{ControlPlane, EngineConfig, EngineError, PrecheckResult};
pub use hashing::{canonical_json_bytes, hash_bytes, hash_canonical_json, HashDigest};
pub use spec::ScenarioSpec;
pub use state::RunState;
