//! Provider contracts: what each built-in provider offers (checks, parameter and result
//! schemas, comparators, determinism). The data is the open-source Decision Gate's
//! published built-in contract (Apache-2.0), kept as `contracts/builtin.json` so the
//! appliance serves the same contracts and `contract_hash` values; a test compares it
//! with the reference copy.

use std::sync::OnceLock;

use dg_engine::evidence::Comparator;
use dg_engine::hashing::{hash_canonical_json, HashDigest};
use dg_engine::spec::ConditionSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A provider's contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderContract {
    /// Provider id.
    pub provider_id: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// `builtin` or `mcp`.
    pub transport: String,
    /// Schema of its `config` table.
    pub config_schema: Value,
    /// Its checks.
    pub checks: Vec<CheckContract>,
    /// Notes.
    pub notes: Vec<String>,
}

/// One check of a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckContract {
    /// Check id.
    pub check_id: String,
    /// Description.
    pub description: String,
    /// Whether params are required.
    pub params_required: bool,
    /// Params schema.
    pub params_schema: Value,
    /// Result schema.
    pub result_schema: Value,
    /// Comparators allowed by the provider.
    pub allowed_comparators: Vec<Comparator>,
    /// `deterministic`, `time_dependent` or `external`.
    pub determinism: String,
    /// Anchor types produced.
    pub anchor_types: Vec<String>,
    /// Content types produced.
    pub content_types: Vec<String>,
    /// Examples.
    pub examples: Vec<Value>,
}

/// The built-in contracts, parsed once.
#[must_use]
pub fn builtin_contracts() -> &'static [ProviderContract] {
    static CONTRACTS: OnceLock<Vec<ProviderContract>> = OnceLock::new();
    CONTRACTS.get_or_init(|| {
        // The file is compiled in and covered by `builtin_contracts_match_the_reference`;
        // an unparsable file would fail that test, so an empty list is unreachable here.
        serde_json::from_str(include_str!("../contracts/builtin.json")).unwrap_or_default()
    })
}

/// The contract of one built-in provider.
#[must_use]
pub fn builtin_contract(provider_id: &str) -> Option<&'static ProviderContract> {
    builtin_contracts().iter().find(|contract| contract.provider_id == provider_id)
}

/// `contract_hash`: sha256 of the canonical contract.
#[must_use]
pub fn contract_hash(contract: &ProviderContract) -> HashDigest {
    // Contracts are plain JSON data; canonicalisation cannot fail for them.
    hash_canonical_json(contract).unwrap_or_else(|_| dg_engine::hash_bytes(b""))
}

impl ProviderContract {
    /// The check with this id.
    #[must_use]
    pub fn check(&self, check_id: &str) -> Option<&CheckContract> {
        self.checks.iter().find(|check| check.check_id == check_id)
    }
}

fn schema_errors(schema: &Value, value: &Value) -> Option<String> {
    match jsonschema::draft202012::new(schema) {
        Err(err) => Some(format!("invalid schema: {err}")),
        Ok(validator) => {
            let errors: Vec<String> = validator.iter_errors(value).map(|e| e.to_string()).collect();
            (!errors.is_empty()).then(|| errors.join("; "))
        }
    }
}

/// Checks a condition against the contracts of the configured providers (always on):
/// provider and check exist, params and expected fit their schemas, the comparator is
/// allowed. `available` says which providers are configured.
///
/// # Errors
/// `"<code>: <text>"` with the contract's codes (`provider_missing`, `check_missing`,
/// `params_missing`, `params_invalid`, `expected_invalid`, `comparator_not_allowed`).
pub fn validate_capability(condition: &ConditionSpec, available: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let query = &condition.query;
    let id = &condition.condition_id;
    let contract = builtin_contract(&query.provider_id).filter(|_| available(&query.provider_id)).ok_or_else(|| {
        format!("provider_missing: provider {} is not configured (condition {id})", query.provider_id)
    })?;
    let check = contract.check(&query.check_id).ok_or_else(|| {
        format!("check_missing: provider {} has no check {} (condition {id})", query.provider_id, query.check_id)
    })?;
    validate_query_params(check, query.params.as_ref(), id)?;
    let comparator = condition.comparator;
    match (&condition.expected, comparator.is_presence()) {
        (Some(_), true) => {
            return Err(format!(
                "expected_invalid: comparator {} takes no expected value (condition {id})",
                comparator.as_str()
            ))
        }
        (None, false) => {
            return Err(format!(
                "expected_invalid: comparator {} requires an expected value (condition {id})",
                comparator.as_str()
            ))
        }
        (Some(Value::Array(items)), false) if comparator == Comparator::InSet => {
            for item in items {
                if let Some(err) = schema_errors(&check.result_schema, item) {
                    return Err(format!("expected_invalid: {err} (condition {id})"));
                }
            }
        }
        (Some(expected), false) if comparator != Comparator::InSet => {
            if let Some(err) = schema_errors(&check.result_schema, expected) {
                return Err(format!("expected_invalid: {err} (condition {id})"));
            }
        }
        (Some(_), false) => {
            return Err(format!("expected_invalid: in_set requires an expected array (condition {id})"))
        }
        (None, true) => {}
    }
    if !check.allowed_comparators.contains(&comparator) {
        return Err(format!(
            "comparator_not_allowed: {} is not allowed for {}.{} (condition {id})",
            comparator.as_str(),
            query.provider_id,
            query.check_id
        ));
    }
    Ok(())
}

/// Checks a query's params against its check's contract.
///
/// # Errors
/// `params_missing: ...` or `params_invalid: ...`.
pub fn validate_query_params(check: &CheckContract, params: Option<&Value>, context: &str) -> Result<(), String> {
    match params {
        None if check.params_required => {
            Err(format!("params_missing: check {} requires params ({context})", check.check_id))
        }
        None => Ok(()),
        Some(params) => match schema_errors(&check.params_schema, params) {
            Some(err) => Err(format!("params_invalid: {err} ({context})")),
            None => Ok(()),
        },
    }
}
