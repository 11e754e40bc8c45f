//! API keys and the tenant/namespace registry kept in memory between changes. Every
//! request looks up its key and its tenant and namespace; read from the database each
//! time that costs two or three read transactions per request. Instead a request opens a
//! [`RegistrySnapshot`]: one read of `store_meta.registry_generation`, a counter that
//! triggers on `api_keys`, `tenants` and `namespaces` bump in the same transaction as any
//! change (by this daemon, by the CLI in another process, or by hand with `sqlite3`).
//! While the snapshot is open on the request's thread, lookups are answered from memory
//! when they were read at that same generation, and read (and kept) otherwise. So a
//! revoked key or a disabled tenant is refused by every request that starts after the
//! change committed, exactly as without the cache. Unknown keys are never kept (a flood
//! of random tokens cannot fill memory), and both maps start over when full.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::store::ApiKeyRecord;

/// Most entries per map; past it the map starts over (entries are re-read, never wrong).
const MAX_ENTRIES: usize = 4096;

thread_local! {
    /// The generation the request on this thread observed, while its snapshot is open.
    static SNAPSHOT: Cell<Option<i64>> = const { Cell::new(None) };
}

/// A tenant's quota overrides when it (and the namespace, if any) is active; `None` when
/// either is unknown or disabled.
pub(crate) type TenancyAnswer = Option<BTreeMap<String, u64>>;

#[derive(Default)]
struct Entries {
    generation: i64,
    keys: HashMap<String, ApiKeyRecord>,
    tenancy: HashMap<(u64, Option<u64>), TenancyAnswer>,
}

/// The cache (one per store).
#[derive(Default)]
pub(crate) struct RegistryCache {
    entries: Mutex<Entries>,
}

/// The registry generation a request runs under; lookups on this thread use the cache
/// while it lives. Dropping it ends the snapshot (so a pooled thread never carries one
/// into another request).
#[must_use = "the snapshot holds only while the guard lives"]
pub struct RegistrySnapshot {
    generation: i64,
    previous: Option<i64>,
}

impl RegistrySnapshot {
    /// The generation it was opened at: a request that moves to another thread reopens its
    /// snapshot there at this generation (`Store::registry_snapshot_at`), without a second read.
    #[must_use]
    pub fn generation(&self) -> i64 {
        self.generation
    }
}

impl Drop for RegistrySnapshot {
    fn drop(&mut self) {
        SNAPSHOT.with(|slot| slot.set(self.previous));
    }
}

impl RegistryCache {
    /// Opens a snapshot at `generation` (just read from the database) on this thread,
    /// dropping whatever was read at an older generation.
    pub(crate) fn open(&self, generation: i64) -> RegistrySnapshot {
        if let Ok(mut entries) = self.entries.lock() {
            // Never back to an older generation: a request that read the counter just
            // before a change simply misses the cache.
            if generation > entries.generation {
                *entries = Entries { generation, ..Entries::default() };
            }
        }
        RegistrySnapshot { generation, previous: SNAPSHOT.with(|slot| slot.replace(Some(generation))) }
    }

    /// The generation of this thread's open snapshot, if any.
    fn current() -> Option<i64> {
        SNAPSHOT.with(Cell::get)
    }

    /// The key record with this secret hash, if one was read at the snapshot's generation.
    pub(crate) fn key(&self, secret_sha256: &str) -> Option<ApiKeyRecord> {
        self.lookup(|entries| entries.keys.get(secret_sha256).cloned())
    }

    /// Keeps a key record read (and verified) under this thread's snapshot.
    pub(crate) fn keep_key(&self, secret_sha256: &str, record: &ApiKeyRecord) {
        self.keep(|entries| {
            entries.keys.insert(secret_sha256.to_string(), record.clone());
        });
    }

    /// The registry answer for a tenant and namespace, if read at the snapshot's generation.
    pub(crate) fn tenancy(&self, tenant_id: u64, namespace_id: Option<u64>) -> Option<TenancyAnswer> {
        self.lookup(|entries| entries.tenancy.get(&(tenant_id, namespace_id)).cloned())
    }

    /// Keeps a registry answer read under this thread's snapshot.
    pub(crate) fn keep_tenancy(&self, tenant_id: u64, namespace_id: Option<u64>, answer: &TenancyAnswer) {
        self.keep(|entries| {
            entries.tenancy.insert((tenant_id, namespace_id), answer.clone());
        });
    }

    /// Runs `get` when this thread has a snapshot and the cache is at its generation.
    fn lookup<T>(&self, get: impl FnOnce(&Entries) -> Option<T>) -> Option<T> {
        let generation = Self::current()?;
        let entries = self.entries.lock().ok()?;
        if entries.generation != generation {
            return None;
        }
        get(&entries)
    }

    /// Runs `insert` when this thread has a snapshot and the cache is at its generation
    /// (a newer snapshot elsewhere has already started the cache over otherwise).
    fn keep(&self, insert: impl FnOnce(&mut Entries)) {
        let Some(generation) = Self::current() else { return };
        if let Ok(mut entries) = self.entries.lock() {
            if entries.generation != generation {
                return;
            }
            if entries.keys.len() >= MAX_ENTRIES || entries.tenancy.len() >= MAX_ENTRIES {
                *entries = Entries { generation, ..Entries::default() };
            }
            insert(&mut entries);
        }
    }
}
