//! `providers_list`, `provider_contract_get`, `provider_check_schema_get`: discovery of
//! the configured providers' contracts.

use dg_engine::control_plane::ProviderAvailability;
use dg_providers::contracts::{builtin_contract, contract_hash, ProviderContract};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_args, to_output};
use crate::app::App;
use crate::wire::WireError;

pub(super) fn list(app: &App, _args: Value) -> Result<Value, WireError> {
    let providers: Vec<Value> = app
        .providers
        .configured_ids()
        .into_iter()
        .filter_map(builtin_contract)
        .map(|contract| {
            json!({
                "provider_id": contract.provider_id,
                "transport": "builtin",
                "checks": contract.checks.iter().map(|check| check.check_id.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({"providers": providers}))
}

fn configured_contract(app: &App, provider_id: &str) -> Result<&'static ProviderContract, WireError> {
    builtin_contract(provider_id)
        .filter(|_| app.providers.is_available(provider_id))
        .ok_or_else(|| WireError::invalid_params(format!("provider not found: {provider_id}")))
}

#[derive(Deserialize)]
struct ContractArgs {
    provider_id: String,
}

pub(super) fn contract_get(app: &App, args: Value) -> Result<Value, WireError> {
    let args: ContractArgs = parse_args(args)?;
    let contract = configured_contract(app, &args.provider_id)?;
    Ok(json!({
        "provider_id": contract.provider_id,
        "contract": to_output(contract)?,
        "contract_hash": contract_hash(contract),
        "source": "builtin",
        "version": null,
    }))
}

#[derive(Deserialize)]
struct CheckArgs {
    provider_id: String,
    check_id: String,
}

pub(super) fn check_schema_get(app: &App, args: Value) -> Result<Value, WireError> {
    let args: CheckArgs = parse_args(args)?;
    let contract = configured_contract(app, &args.provider_id)?;
    let check = contract
        .check(&args.check_id)
        .ok_or_else(|| WireError::invalid_params(format!("check not found: {}.{}", args.provider_id, args.check_id)))?;
    Ok(json!({
        "provider_id": contract.provider_id,
        "check_id": check.check_id,
        "params_required": check.params_required,
        "params_schema": check.params_schema,
        "result_schema": check.result_schema,
        "allowed_comparators": check.allowed_comparators,
        "determinism": check.determinism,
        "anchor_types": check.anchor_types,
        "content_types": check.content_types,
        "examples": check.examples,
        "contract_hash": contract_hash(contract),
    }))
}

/// This family's handler of `operation`, when it is one of its tools (`super::handler`).
pub(super) fn handler(operation: dg_identity::Operation) -> Option<super::Handler> {
    Some(match operation {
        dg_identity::Operation::ProvidersList => |ctx, args| list(ctx.app, args),
        dg_identity::Operation::ProviderContractGet => |ctx, args| contract_get(ctx.app, args),
        dg_identity::Operation::ProviderCheckSchemaGet => |ctx, args| check_schema_get(ctx.app, args),
        _ => return None,
    })
}
