//! `evidence_query`: asks one provider directly, outside any run. Values are redacted
//! unless raw values are allowed by configuration.

use dg_engine::control_plane::{normalize_evidence, ProviderAvailability};
use dg_engine::evidence::{EvidenceContext, EvidenceProvider, EvidenceQuery, EvidenceResult};
use dg_providers::contracts::{builtin_contract, validate_query_params};
use serde::Deserialize;
use serde_json::{json, Value};

use super::scenario::engine_error;
use super::{parse_args, to_output};
use crate::ops::request::RequestCtx;
use crate::wire::WireError;
use dg_identity::Target;

#[derive(Deserialize)]
struct QueryArgs {
    query: EvidenceQuery,
    context: EvidenceContext,
}

pub(super) fn query(ctx: &RequestCtx<'_>, args: Value) -> Result<Value, WireError> {
    let app = ctx.app;
    let args: QueryArgs = parse_args(args)?;
    ctx.authorize(Target {
        tenant: Some(args.context.tenant_id.get()),
        namespace: Some(args.context.namespace_id.get()),
    })?;
    let q = &args.query;
    let contract =
        builtin_contract(&q.provider_id).filter(|_| app.providers.is_available(&q.provider_id)).ok_or_else(|| {
            WireError::invalid_params(format!("provider_missing: provider {} is not configured", q.provider_id))
        })?;
    let check = contract.check(&q.check_id).ok_or_else(|| {
        WireError::invalid_params(format!("check_missing: provider {} has no check {}", q.provider_id, q.check_id))
    })?;
    validate_query_params(check, q.params.as_ref(), "evidence_query").map_err(WireError::invalid_params)?;
    let mut result = match app.providers.query(q, &args.context) {
        Ok(result) => result,
        Err(err) => EvidenceResult::from(err),
    };
    if result.error.is_some() {
        result.value = None;
        result.evidence_hash = None;
        result.content_type = None;
    }
    let mut result = normalize_evidence(&result).map_err(engine_error)?;
    if !app.config.evidence.allow_raw_values {
        result.value = None;
        result.content_type = None;
    }
    Ok(json!({"result": to_output(&result)?}))
}

/// This family's handler of `operation`, when it is one of its tools (`super::handler`).
pub(super) fn handler(operation: dg_identity::Operation) -> Option<super::Handler> {
    Some(match operation {
        dg_identity::Operation::EvidenceQuery => query,
        _ => return None,
    })
}
