//! Built-in Decision Gate evidence providers: `time`, `env`, `json` and `http`.
//!
//! Each provider reproduces the open-source provider's outputs (values, anchors,
//! references, content types, error codes) so that evidence records and runpacks match
//! byte for byte. They are the only part of evaluation that touches the outside world,
//! which is why they live outside the pure engine crate.

pub mod address_policy;
pub mod contracts;
pub mod env;
pub mod host_resolver;
pub mod http;
pub mod json;
pub mod registry;
#[cfg(test)]
mod test_support;
pub mod time;

pub use registry::{BuiltinProviders, ProviderConfigError};
