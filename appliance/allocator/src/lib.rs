//! The daemon's allocator: mimalloc, set up to keep resident memory to what is in use.
//!
//! mimalloc instead of glibc's malloc: the request path allocates many small, short-lived
//! objects (JSON values, SQL parameters), where glibc's allocator cost about a tenth of the
//! daemon's CPU time in the load benchmark's profile.
//!
//! Three settings, each measured with the load bench's profile mode (8 clients, 40,000
//! cycles, resident memory read during the run):
//! - mimalloc 2 instead of 3 (the `v2` feature): its per-thread pages held less memory and
//!   its fast path cost less (61 → 50 MB; 464 → 441 us of daemon CPU per cycle);
//! - `purge_delay` 0: freed pages go back to the system at once instead of after 10 ms
//!   (mimalloc 3 waited a second, ten times that in its arenas: 185 MiB at 32 clients);
//! - `arena_eager_commit` 0: the 1 GiB arena mimalloc reserves is committed page by page as
//!   it is used, not in large eager blocks (50 → 41 MB).
//!
//! The options must be in force before mimalloc reserves its first arena, which happens at
//! the process's first allocation, before `main`: [`Allocator`] applies them there.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};
use mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc 2's `mi_option_e` (include/mimalloc.h).
const ARENA_EAGER_COMMIT: mi_option_t = 4;
/// `mi_option_purge_delay` in mimalloc 2's `mi_option_e`: the milliseconds freed memory
/// waits before it is returned; 0 returns it at once.
const PURGE_DELAY: mi_option_t = 15;

static CONFIGURED: AtomicBool = AtomicBool::new(false);

/// mimalloc with this crate's options applied at the first allocation.
pub struct Allocator;

#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

/// Applies the options once. The first allocation comes from the process's one thread
/// (Rust's runtime start), so the options are set before any other thread allocates.
#[inline]
fn configure_once() {
    if !CONFIGURED.load(Ordering::Relaxed) && !CONFIGURED.swap(true, Ordering::AcqRel) {
        // SAFETY: mi_option_set stores an integer in mimalloc's option table; it takes no
        // pointers, and both indexes are below `_mi_option_last` (checked by the tests).
        #[allow(unsafe_code)]
        unsafe {
            mi_option_set(PURGE_DELAY, 0);
            mi_option_set(ARENA_EAGER_COMMIT, 0);
        }
    }
}

// SAFETY: every method delegates to mimalloc's own GlobalAlloc with the same arguments;
// `configure_once` only sets options and allocates nothing.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        configure_once();
        MiMalloc.alloc(layout)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        configure_once();
        MiMalloc.alloc_zeroed(layout)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        MiMalloc.dealloc(ptr, layout);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        MiMalloc.realloc(ptr, layout, new_size)
    }
}

/// The value of one mimalloc option (for the tests and diagnostics).
#[must_use]
pub fn option(index: i32) -> i64 {
    // SAFETY: reads one integer from mimalloc's option table; an out-of-range index is
    // refused by mimalloc (it returns 0 and reports an error).
    #[allow(unsafe_code)]
    let value = unsafe { mi_option_get(index) };
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options are in force once anything was allocated (this test binary's runtime
    /// allocated before the test ran).
    #[test]
    fn the_options_are_set_by_the_first_allocation() {
        assert!(CONFIGURED.load(Ordering::Relaxed));
        assert_eq!(option(PURGE_DELAY), 0);
        assert_eq!(option(ARENA_EAGER_COMMIT), 0);
    }

    /// The indexes are mimalloc 2's: its named neighbours sit around them with their
    /// documented defaults, so a mimalloc update that renumbered its options fails here.
    #[test]
    fn the_option_indexes_are_mimalloc_2s() {
        assert_eq!(libmimalloc_sys::mi_option_eager_commit_delay, PURGE_DELAY - 1);
        assert_eq!(libmimalloc_sys::mi_option_use_numa_nodes, PURGE_DELAY + 1);
        assert_eq!(option(libmimalloc_sys::mi_option_eager_commit_delay), 1);
        // `mi_option_purge_decommits` (5) follows arena_eager_commit; default 1.
        assert_eq!(option(ARENA_EAGER_COMMIT + 1), 1);
        assert_eq!(option(libmimalloc_sys::mi_option_show_errors), 0);
    }
}
