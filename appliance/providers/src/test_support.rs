//! Helpers shared by the providers' unit tests.

use dg_engine::evidence::EvidenceContext;
use dg_engine::time::Timestamp;
use std::num::NonZeroU64;

/// An evidence context for a provider call outside any real run.
pub(crate) fn context() -> EvidenceContext {
    let one = NonZeroU64::MIN;
    EvidenceContext {
        tenant_id: one,
        namespace_id: one,
        run_id: "r".into(),
        scenario_id: "s".into(),
        stage_id: "st".into(),
        trigger_id: "t".into(),
        trigger_time: Timestamp::Logical(1),
        correlation_id: None,
    }
}
