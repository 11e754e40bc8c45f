//! Verified scenario specs kept in memory. A stored scenario never changes: defining an
//! identical spec again writes nothing, a different one is a conflict, and nothing
//! deletes one (a tenant or namespace is deleted only when it holds none). So a spec
//! read and hash-checked once is served from here afterwards, sparing every run step a
//! database read, a sha256 and a JSON parse. Only found specs are kept: a scenario
//! defined later, by this process or another, is looked up in the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dg_engine::spec::ScenarioSpec;

use crate::store::Scope;

/// Most specs kept; past it the cache starts over (specs are re-read, never wrong).
const MAX_ENTRIES: usize = 4096;

type Key = (u64, u64, String);

/// The cache (one per store).
#[derive(Default)]
pub(crate) struct ScenarioCache {
    entries: Mutex<HashMap<Key, Arc<ScenarioSpec>>>,
}

impl ScenarioCache {
    /// The spec stored under `scope` and `scenario_id`, when it was read before.
    pub(crate) fn get(&self, scope: Scope, scenario_id: &str) -> Option<Arc<ScenarioSpec>> {
        let entries = self.entries.lock().ok()?;
        entries.get(&(scope.tenant_id, scope.namespace_id, scenario_id.to_string())).cloned()
    }

    /// Keeps a spec that was just read and verified.
    pub(crate) fn insert(&self, scope: Scope, spec: Arc<ScenarioSpec>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert((scope.tenant_id, scope.namespace_id, spec.scenario_id.clone()), spec);
        }
    }
}
