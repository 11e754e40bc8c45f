//! The set of configured built-in providers, dispatching queries by provider id. A
//! provider that is not configured is unavailable: scenarios that use it cannot be
//! defined or advanced.

use dg_engine::control_plane::ProviderAvailability;
use dg_engine::evidence::{EvidenceContext, EvidenceProvider, EvidenceQuery, EvidenceResult, ProviderCallError};
use thiserror::Error;

use crate::env::{EnvProvider, EnvProviderConfig};
use crate::http::{HttpProvider, HttpProviderConfig};
use crate::json::{JsonProvider, JsonProviderConfig};
use crate::time::{TimeProvider, TimeProviderConfig};

/// A provider configuration value that cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("provider {provider}: config.{field} {reason}")]
pub struct ProviderConfigError {
    /// Provider id.
    pub provider: String,
    /// Offending field.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl ProviderConfigError {
    /// Builds an error.
    #[must_use]
    pub fn new(provider: &str, field: &str, reason: &str) -> Self {
        Self { provider: provider.to_string(), field: field.to_string(), reason: reason.to_string() }
    }
}

/// The reserved built-in provider ids.
pub const BUILTIN_PROVIDER_IDS: [&str; 4] = ["time", "env", "json", "http"];

/// Configured built-in providers; `None` means not configured.
#[derive(Debug, Default)]
pub struct BuiltinProviders {
    /// `time`.
    pub time: Option<TimeProvider>,
    /// `env`.
    pub env: Option<EnvProvider>,
    /// `json`.
    pub json: Option<JsonProvider>,
    /// `http`.
    pub http: Option<HttpProvider>,
}

impl BuiltinProviders {
    /// Adds `time`.
    #[must_use]
    pub fn with_time(mut self, config: TimeProviderConfig) -> Self {
        self.time = Some(TimeProvider::new(config));
        self
    }

    /// Adds `env`.
    #[must_use]
    pub fn with_env(mut self, config: EnvProviderConfig) -> Self {
        self.env = Some(EnvProvider::new(config));
        self
    }

    /// Adds `json`.
    ///
    /// # Errors
    /// A bad root or root id.
    pub fn with_json(mut self, config: JsonProviderConfig) -> Result<Self, ProviderConfigError> {
        self.json = Some(JsonProvider::new(config)?);
        Ok(self)
    }

    /// Adds `http`.
    ///
    /// # Errors
    /// Its name resolver could not be started (no file descriptors or threads left).
    pub fn with_http(mut self, config: HttpProviderConfig) -> std::io::Result<Self> {
        self.http = Some(HttpProvider::new(config)?);
        Ok(self)
    }

    /// Ids of the configured providers, sorted.
    #[must_use]
    pub fn configured_ids(&self) -> Vec<&'static str> {
        let mut ids: Vec<&'static str> = BUILTIN_PROVIDER_IDS.into_iter().filter(|id| self.is_available(id)).collect();
        ids.sort_unstable();
        ids
    }
}

impl ProviderAvailability for BuiltinProviders {
    fn is_available(&self, provider_id: &str) -> bool {
        match provider_id {
            "time" => self.time.is_some(),
            "env" => self.env.is_some(),
            "json" => self.json.is_some(),
            "http" => self.http.is_some(),
            _ => false,
        }
    }
}

impl EvidenceProvider for BuiltinProviders {
    fn query(&self, query: &EvidenceQuery, context: &EvidenceContext) -> Result<EvidenceResult, ProviderCallError> {
        let missing = || ProviderCallError(format!("provider not configured: {}", query.provider_id));
        match query.provider_id.as_str() {
            "time" => self.time.as_ref().ok_or_else(missing)?.query(query, context),
            "env" => self.env.as_ref().ok_or_else(missing)?.query(query, context),
            "json" => self.json.as_ref().ok_or_else(missing)?.query(query, context),
            "http" => self.http.as_ref().ok_or_else(missing)?.query(query, context),
            _ => Err(missing()),
        }
    }
}
