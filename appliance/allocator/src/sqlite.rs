//! SQLite's memory: its own allocations (page caches, statements, its lookaside) through
//! mimalloc, and its memory accounting on, so that its soft heap limit holds.
//!
//! SQLite is C and allocates with the C library's `malloc` unless told otherwise. glibc's
//! `malloc` gives every thread that allocates its own arena and keeps freed memory in it, so
//! each work thread that ran a statement kept 0.4-0.8 MB of glibc heap (about 6 MB at
//! 8 work threads, read from the daemon's `smaps`). Routed here, SQLite's memory joins the
//! Rust heap under the same settings (freed pages returned at once).
//!
//! rusqlite's bundled SQLite is compiled with `SQLITE_DEFAULT_MEMSTATUS=0`: without memory
//! accounting SQLite ignores `PRAGMA soft_heap_limit`, so the process-wide budget the store
//! sets (`StoreLimits::sqlite_memory_bytes`) bound nothing. Accounting is turned on here.

use std::ffi::{c_int, c_void};

use libmimalloc_sys::{mi_free, mi_good_size, mi_malloc, mi_realloc, mi_usable_size};
use rusqlite::ffi;

/// Why SQLite refused the memory settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteAllocatorRefused {
    /// SQLite's result code: `SQLITE_MISUSE` once SQLite has been initialized (a connection
    /// was opened before the call).
    pub code: c_int,
}

impl std::fmt::Display for SqliteAllocatorRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SQLite refused its memory settings (result code {}): they came after its initialization", self.code)
    }
}

impl std::error::Error for SqliteAllocatorRefused {}

// SAFETY (all five): SQLite calls these with sizes it checked (positive, below 2^31) and with
// pointers it got from them; mimalloc's functions accept exactly that, from any thread.
#[allow(unsafe_code)]
unsafe extern "C" fn allocate(size: c_int) -> *mut c_void {
    usize::try_from(size).map_or(std::ptr::null_mut(), |size| unsafe { mi_malloc(size) })
}

#[allow(unsafe_code)]
unsafe extern "C" fn free(block: *mut c_void) {
    unsafe { mi_free(block) }
}

#[allow(unsafe_code)]
unsafe extern "C" fn reallocate(block: *mut c_void, size: c_int) -> *mut c_void {
    usize::try_from(size).map_or(std::ptr::null_mut(), |size| unsafe { mi_realloc(block, size) })
}

/// The usable size of a block: at least what was asked, which is all SQLite needs.
#[allow(unsafe_code)]
unsafe extern "C" fn size_of(block: *mut c_void) -> c_int {
    c_int::try_from(unsafe { mi_usable_size(block) }).unwrap_or(c_int::MAX)
}

/// The size mimalloc would give a request of `size` (SQLite uses the slack it reports).
#[allow(unsafe_code)]
unsafe extern "C" fn round_up(size: c_int) -> c_int {
    let Ok(asked) = usize::try_from(size) else { return size };
    c_int::try_from(unsafe { mi_good_size(asked) }).unwrap_or(size)
}

#[allow(unsafe_code)]
unsafe extern "C" fn start(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

#[allow(unsafe_code)]
unsafe extern "C" fn stop(_: *mut c_void) {}

/// Makes SQLite allocate through mimalloc and count what it holds (so its soft heap limit
/// is enforced). Call it once, before the process opens its first SQLite connection (SQLite
/// takes both settings only before its initialization).
///
/// # Errors
/// [`SqliteAllocatorRefused`] if SQLite was already initialized; SQLite keeps the C
/// library's `malloc` and no soft heap limit then: correct, only larger.
pub fn configure_sqlite_memory() -> Result<(), SqliteAllocatorRefused> {
    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(allocate),
        xFree: Some(free),
        xRealloc: Some(reallocate),
        xSize: Some(size_of),
        xRoundup: Some(round_up),
        xInit: Some(start),
        xShutdown: Some(stop),
        pAppData: std::ptr::null_mut(),
    };
    // SAFETY: SQLITE_CONFIG_MALLOC takes one pointer to a sqlite3_mem_methods, which SQLite
    // copies before returning; the functions above live for the whole process.
    #[allow(unsafe_code)]
    let code = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &raw const methods) };
    if code != ffi::SQLITE_OK {
        return Err(SqliteAllocatorRefused { code });
    }
    // SAFETY: SQLITE_CONFIG_MEMSTATUS takes one int.
    #[allow(unsafe_code)]
    let code = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, c_int::from(true)) };
    if code == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(SqliteAllocatorRefused { code })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes in use in glibc's heap (all its arenas).
    #[allow(unsafe_code)]
    fn glibc_heap_in_use() -> usize {
        // SAFETY: mallinfo2 reads glibc's counters and takes no arguments.
        unsafe { libc::mallinfo2() }.uordblks
    }

    /// What SQLite holds, by its own count.
    #[allow(unsafe_code)]
    fn sqlite_in_use() -> i64 {
        // SAFETY: reads SQLite's global counter.
        unsafe { ffi::sqlite3_memory_used() }
    }

    /// 4,000 rows of 1,000 bytes (about 4.5 MB of pages) written to a new database file
    /// with a 16 MiB cache, under the given soft heap limit (0: none).
    fn fill(name: &str, soft_limit: i64) -> rusqlite::Connection {
        let path = std::env::temp_dir().join(format!("dg-allocator-{}-{name}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.query_row(&format!("PRAGMA soft_heap_limit = {soft_limit}"), [], |_| Ok(())).expect("limit");
        conn.execute_batch(
            "PRAGMA cache_size = -16384;
             CREATE TABLE t(v BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
             INSERT INTO t SELECT randomblob(1000) FROM n;",
        )
        .expect("fill");
        let _ = std::fs::remove_file(&path);
        conn
    }

    /// One test, in order (SQLite's settings are the process's): they are taken only before
    /// SQLite's initialization; then its memory grows in mimalloc's heap, not glibc's, is
    /// counted, and the soft heap limit holds it.
    #[test]
    fn sqlite_allocates_through_mimalloc_and_keeps_its_budget_once_configured() {
        configure_sqlite_memory().expect("before the first connection");
        let glibc_before = glibc_heap_in_use();
        let unbounded = fill("unbounded", 0);
        assert_eq!(configure_sqlite_memory(), Err(SqliteAllocatorRefused { code: ffi::SQLITE_MISUSE }));
        let held = sqlite_in_use();
        assert!(held > 4_000_000, "SQLite counts {held} bytes");
        let glibc_growth = glibc_heap_in_use().saturating_sub(glibc_before);
        assert!(glibc_growth < 256 * 1024, "glibc's heap grew by {glibc_growth} bytes while SQLite held {held}");
        drop(unbounded);
        let bounded = fill("bounded", 1024 * 1024);
        let held = sqlite_in_use();
        assert!(held < 2 * 1024 * 1024, "SQLite holds {held} bytes under a 1 MiB soft limit");
        drop(bounded);
    }
}
