//! Turns `[[providers]]` entries into configured built-in providers. A `config` table, when
//! given, must spell out every field of that provider (as in the open-source config);
//! omitting it uses the provider's defaults (the json provider has none: it needs a root).

use dg_providers::env::EnvProviderConfig;
use dg_providers::http::HttpProviderConfig;
use dg_providers::json::JsonProviderConfig;
use dg_providers::time::TimeProviderConfig;
use dg_providers::{BuiltinProviders, ProviderConfigError};
use serde::de::DeserializeOwned;

use serde::{Deserialize, Serialize};

/// One `[[providers]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderEntry {
    /// Built-in provider id: time, env, json or http.
    pub name: String,
    /// The provider's config table.
    #[serde(default)]
    pub config: Option<toml::Value>,
}

fn parse_table<T: DeserializeOwned>(entry: &ProviderEntry) -> Result<Option<T>, (String, String)> {
    match &entry.config {
        None => Ok(None),
        Some(value) => serde_path_to_error::deserialize(value.clone()).map(Some).map_err(|err| {
            let path = err.path().to_string();
            let field = if path == "." { "config".to_string() } else { format!("config.{path}") };
            (field, err.inner().to_string())
        }),
    }
}

/// Checks one entry without building anything that touches the filesystem beyond the
/// json root's existence.
///
/// # Errors
/// `(field, message)`.
pub fn check_entry(entry: &ProviderEntry) -> Result<(), (String, String)> {
    let mut providers = BuiltinProviders::default();
    add(&mut providers, entry).map(|_| ())
}

fn add(providers: &mut BuiltinProviders, entry: &ProviderEntry) -> Result<(), (String, String)> {
    let built = std::mem::take(providers);
    *providers = match entry.name.as_str() {
        "time" => built.with_time(parse_table::<TimeProviderConfig>(entry)?.unwrap_or_default()),
        "env" => built.with_env(parse_table::<EnvProviderConfig>(entry)?.unwrap_or_default()),
        "http" => built
            .with_http(parse_table::<HttpProviderConfig>(entry)?.unwrap_or_default())
            .map_err(|err| ("name".to_string(), format!("the http provider cannot start its name resolver: {err}")))?,
        "json" => {
            let config = parse_table::<JsonProviderConfig>(entry)?.ok_or_else(|| {
                ("config".to_string(), "the json provider needs a config table with root and root_id".to_string())
            })?;
            built
                .with_json(config)
                .map_err(|ProviderConfigError { field, reason, .. }| (format!("config.{field}"), reason))?
        }
        other => {
            return Err((
                "name".to_string(),
                format!("unknown provider {other:?}: built-in providers are time, env, json and http"),
            ))
        }
    };
    Ok(())
}

/// Builds the configured providers.
///
/// # Errors
/// `(field path, message)` of the first bad entry.
pub fn build(entries: &[ProviderEntry]) -> Result<BuiltinProviders, String> {
    let mut providers = BuiltinProviders::default();
    for (index, entry) in entries.iter().enumerate() {
        add(&mut providers, entry).map_err(|(field, message)| format!("providers[{index}].{field}: {message}"))?;
    }
    Ok(providers)
}

/// Whether every configured provider answers from this machine alone (time, env, json),
/// so a tool call's work is bounded by CPU and the disk. Requests may then run on the
/// connection's own thread (see `http.rs`); the http provider waits on the network.
#[must_use]
pub fn all_local(entries: &[ProviderEntry]) -> bool {
    entries.iter().all(|entry| matches!(entry.name.as_str(), "time" | "env" | "json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> ProviderEntry {
        ProviderEntry { name: name.to_string(), config: None }
    }

    #[test]
    fn only_machine_local_providers_are_local() {
        assert!(all_local(&[]));
        assert!(all_local(&[entry("time"), entry("env"), entry("json")]));
        assert!(!all_local(&[entry("time"), entry("http")]));
        assert!(!all_local(&[entry("something-new")]));
    }
}
