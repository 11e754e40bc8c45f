//! Verified scenario specs kept in memory. A stored scenario never changes: defining an
//! identical spec again writes nothing, a different one is a conflict, and nothing
//! deletes one (a tenant or namespace is deleted only when it holds none). So a spec
//! read and hash-checked once is served from here afterwards, sparing every run step a
//! database read, a sha256 and a JSON parse. Only found specs are kept: a scenario
//! defined later, by this process or another, is looked up in the database.
//!
//! Bounded by entries and by bytes (the stored canonical size of each spec; a parsed spec
//! takes a few times that in memory): past either bound the oldest entries go first, and a
//! spec larger than a quarter of the byte budget is never kept (it is re-read, never
//! wrong). Clients choose what they define, so this is a budget, not a hope.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use dg_engine::spec::ScenarioSpec;

use crate::store::Scope;

/// Most specs kept.
const MAX_ENTRIES: usize = 4096;

/// Most stored bytes of the kept specs (`docs/limits.md`).
pub(crate) const MAX_BYTES: usize = 8 * 1024 * 1024;

type Key = (u64, u64, String);

#[derive(Default)]
struct Entries {
    specs: HashMap<Key, (Arc<ScenarioSpec>, usize)>,
    /// Insertion order, oldest first.
    order: VecDeque<Key>,
    bytes: usize,
}

/// The cache (one per store).
#[derive(Default)]
pub(crate) struct ScenarioCache {
    entries: Mutex<Entries>,
}

impl ScenarioCache {
    /// The spec stored under `scope` and `scenario_id`, when it was read before.
    pub(crate) fn get(&self, scope: Scope, scenario_id: &str) -> Option<Arc<ScenarioSpec>> {
        let entries = self.entries.lock().ok()?;
        entries.specs.get(&(scope.tenant_id, scope.namespace_id, scenario_id.to_string())).map(|(spec, _)| spec.clone())
    }

    /// Keeps a spec that was just read and verified; `size` is its stored size in bytes.
    pub(crate) fn insert(&self, scope: Scope, spec: Arc<ScenarioSpec>, size: usize) {
        if size > MAX_BYTES / 4 {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else { return };
        let key = (scope.tenant_id, scope.namespace_id, spec.scenario_id.clone());
        if entries.specs.contains_key(&key) {
            return;
        }
        while entries.specs.len() >= MAX_ENTRIES || entries.bytes + size > MAX_BYTES {
            let Some(oldest) = entries.order.pop_front() else { break };
            if let Some((_, freed)) = entries.specs.remove(&oldest) {
                entries.bytes -= freed;
            }
        }
        entries.bytes += size;
        entries.order.push_back(key.clone());
        entries.specs.insert(key, (spec, size));
    }

    /// Stored bytes and entries kept now.
    #[cfg(test)]
    fn usage(&self) -> (usize, usize) {
        self.entries.lock().map(|e| (e.bytes, e.specs.len())).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> Arc<ScenarioSpec> {
        let value = serde_json::json!({"scenario_id": id, "namespace_id": 1, "spec_version": "1", "policies": [],
            "schemas": [], "conditions": [], "stages": [{"stage_id": "s", "entry_packets": [], "gates": [],
            "advance_to": {"kind": "terminal"}, "timeout": null, "on_timeout": "fail"}]});
        Arc::new(serde_json::from_value(value).unwrap())
    }

    #[test]
    fn the_byte_budget_holds_and_the_oldest_go_first() {
        let cache = ScenarioCache::default();
        let size = MAX_BYTES / 8;
        for i in 0..20 {
            cache.insert(Scope::new(1, 1), spec(&format!("s{i}")), size);
            let (bytes, _) = cache.usage();
            assert!(bytes <= MAX_BYTES, "{bytes}");
        }
        assert_eq!(cache.usage(), (8 * size, 8));
        assert!(cache.get(Scope::new(1, 1), "s19").is_some(), "the newest is kept");
        assert!(cache.get(Scope::new(1, 1), "s0").is_none(), "the oldest went first");
        cache.insert(Scope::new(1, 1), spec("huge"), MAX_BYTES / 4 + 1);
        assert!(cache.get(Scope::new(1, 1), "huge").is_none(), "a spec over a quarter of the budget is not kept");
    }
}
