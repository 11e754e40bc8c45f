//! Plans and the billing export. `[billing]` names plans (entitlements per usage counter
//! per calendar month, UTC, with an overage rule each: `block` refuses the request before it
//! changes anything, with the quota error; `flag` allows it and marks the overage; `price`
//! allows it and prices each unit over at `unit_price_micros`) and which tenant is on which
//! plan. `dg-appliance usage export --period YYYY-MM` writes one row per tenant and counter
//! (entitlement, usage, overage and its price) as CSV or JSONL, with a detached signature
//! by the appliance's key. Every figure is an integer (prices in millionths of the
//! currency unit) read from the period totals a closed month no longer changes, so the same
//! period exported twice is byte-identical.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use dg_storage::usage::COUNTERS;

/// What the signature over an export is prefixed with.
pub const EXPORT_CONTEXT: &[u8] = b"dg-appliance usage export v1\0";

/// `[billing]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BillingSection {
    /// Currency of the prices (ISO 4217 code).
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Plans by name.
    #[serde(default)]
    pub plans: BTreeMap<String, Plan>,
    /// Tenant id (as a string key) → plan name. A tenant on no plan is metered only.
    #[serde(default)]
    pub tenant_plans: BTreeMap<String, String>,
}

impl Default for BillingSection {
    fn default() -> Self {
        Self { currency: default_currency(), plans: BTreeMap::new(), tenant_plans: BTreeMap::new() }
    }
}

fn default_currency() -> String {
    "EUR".into()
}

/// One plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Counter → entitlement per month.
    #[serde(default)]
    pub entitlements: BTreeMap<String, Entitlement>,
}

/// An entitlement of one counter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Entitlement {
    /// Units included per month.
    pub included: u64,
    /// What happens past it.
    pub overage: Overage,
    /// Price per unit over (millionths of the currency unit; `price` only).
    #[serde(default)]
    pub unit_price_micros: u64,
}

/// The overage rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overage {
    /// Refused before the request changes anything.
    Block,
    /// Allowed, the overage marked in the export.
    Flag,
    /// Allowed, each unit over priced.
    Price,
}

impl Overage {
    fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Flag => "flag",
            Self::Price => "price",
        }
    }
}

impl BillingSection {
    /// Every problem with its key (relative to `billing`).
    #[must_use]
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            problems.push(("currency".into(), "an ISO 4217 code such as EUR".into()));
        }
        for (name, plan) in &self.plans {
            for (counter, entitlement) in &plan.entitlements {
                let key = format!("plans.{name}.entitlements.{counter}");
                if !COUNTERS.contains(&counter.as_str()) {
                    problems.push((key.clone(), format!("unknown usage counter; one of {}", COUNTERS.join(", "))));
                }
                if counter == "storage_bytes" && entitlement.overage == Overage::Block {
                    problems
                        .push((key.clone(), "storage is a level, not a count of requests: flag or price it".into()));
                }
                if entitlement.overage != Overage::Price && entitlement.unit_price_micros != 0 {
                    problems.push((key, "unit_price_micros is only for overage = \"price\"".into()));
                }
            }
        }
        for (tenant, plan) in &self.tenant_plans {
            if tenant.parse::<u64>().map_or(true, |t| t == 0) {
                problems.push((format!("tenant_plans.{tenant}"), "keys are tenant ids".into()));
            }
            if !self.plans.contains_key(plan) {
                problems.push((format!("tenant_plans.{tenant}"), format!("no plan named {plan:?}")));
            }
        }
        problems
    }

    /// The plan a tenant is on.
    #[must_use]
    pub fn plan_of(&self, tenant_id: u64) -> Option<(&str, &Plan)> {
        let name = self.tenant_plans.get(&tenant_id.to_string())?;
        self.plans.get(name).map(|plan| (name.as_str(), plan))
    }

    /// The monthly limit a `block` entitlement sets on a tenant's counter.
    #[must_use]
    pub fn block_limit(&self, tenant_id: u64, counter: &str) -> Option<u64> {
        let (_, plan) = self.plan_of(tenant_id)?;
        plan.entitlements.get(counter).filter(|e| e.overage == Overage::Block).map(|e| e.included)
    }
}

/// An export's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated, one header line.
    Csv,
    /// One JSON object per line, keys sorted.
    Jsonl,
}

/// One row of the export.
#[derive(Debug, Serialize)]
struct Row<'a> {
    period: &'a str,
    tenant_id: u64,
    plan: &'a str,
    counter: &'a str,
    included: Option<u64>,
    used: u64,
    overage: u64,
    rule: &'a str,
    unit_price_micros: u64,
    overage_price_micros: u64,
    flagged: bool,
    currency: &'a str,
}

/// The export of `period` from its totals `(tenant, counter, total)`; `tenants` are every
/// registered tenant (one row per tenant and counter, zeros included).
#[must_use]
pub fn export(
    billing: &BillingSection,
    period: &str,
    tenants: &[u64],
    totals: &[(u64, String, u64)],
    format: Format,
) -> Vec<u8> {
    let used: BTreeMap<(u64, &str), u64> = totals.iter().map(|(t, c, n)| ((*t, c.as_str()), *n)).collect();
    let mut tenants = tenants.to_vec();
    tenants.extend(totals.iter().map(|(t, _, _)| *t));
    tenants.sort_unstable();
    tenants.dedup();
    let mut out = String::new();
    if format == Format::Csv {
        out.push_str("period,tenant_id,plan,counter,included,used,overage,rule,unit_price_micros,overage_price_micros,flagged,currency\n");
    }
    for tenant in tenants {
        let plan = billing.plan_of(tenant);
        for counter in COUNTERS {
            let used = used.get(&(tenant, counter)).copied().unwrap_or(0);
            let entitlement = plan.and_then(|(_, p)| p.entitlements.get(counter)).copied();
            let included = entitlement.map(|e| e.included);
            let overage = entitlement.map_or(0, |e| used.saturating_sub(e.included));
            let rule = entitlement.map_or("none", |e| e.overage.as_str());
            let unit = entitlement.filter(|e| e.overage == Overage::Price).map_or(0, |e| e.unit_price_micros);
            let row = Row {
                period,
                tenant_id: tenant,
                plan: plan.map_or("none", |(name, _)| name),
                counter,
                included,
                used,
                overage,
                rule,
                unit_price_micros: unit,
                overage_price_micros: overage.saturating_mul(unit),
                flagged: overage > 0,
                currency: &billing.currency,
            };
            match format {
                Format::Csv => {
                    let _ = writeln!(
                        out,
                        "{},{},{},{},{},{},{},{},{},{},{},{}",
                        row.period,
                        row.tenant_id,
                        csv_field(row.plan),
                        row.counter,
                        row.included.map_or(String::new(), |n| n.to_string()),
                        row.used,
                        row.overage,
                        row.rule,
                        row.unit_price_micros,
                        row.overage_price_micros,
                        row.flagged,
                        row.currency
                    );
                }
                Format::Jsonl => {
                    let bytes = dg_engine::canonical_json_bytes(&row).unwrap_or_default();
                    out.push_str(&String::from_utf8_lossy(&bytes));
                    out.push('\n');
                }
            }
        }
    }
    out.into_bytes()
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
