//! The daemon's in-process benchmarks, in one binary: the authorization cost against the
//! cycle it guards (`authz.rs`) and the runpack store through the filesystem and S3
//! (`runpack_store.rs`). One binary because each benchmark binary that links the daemon's
//! library is a whole-program build of it under the release settings (thin LTO, one code
//! generation unit): as two binaries they took 218 and 174 s of every benchmark build.
//! `cargo bench --bench in_process -- authz` (or `runpack_store`) runs one of them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../../../tests/support/mod.rs"]
mod support;

mod authz;
mod runpack_store;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("in_process benches: skipped outside `cargo bench`");
        return;
    }
    let chosen: Vec<&str> = args.iter().map(String::as_str).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| chosen.is_empty() || chosen.iter().any(|c| name.contains(c));
    if wanted("authz") {
        authz::run();
    }
    if wanted("runpack_store") {
        runpack_store::run();
    }
}
