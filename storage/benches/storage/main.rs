//! The storage benchmarks, in one binary: durable writes and verified reads
//! (`store.rs`) and runpack bundles (`bundle.rs`). One binary because each benchmark
//! binary is a whole-program build under the release settings (thin LTO, one code
//! generation unit): as two binaries they took 57 and 66 s of every benchmark build.
//! `cargo bench --bench storage -- bundle` (or `store`) runs one of them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod bundle;
mod store;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("storage benches: skipped outside `cargo bench`");
        return;
    }
    let chosen: Vec<&str> = args.iter().map(String::as_str).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| chosen.is_empty() || chosen.iter().any(|c| name.contains(c));
    if wanted("store") {
        store::run();
    }
    if wanted("bundle") {
        bundle::run();
    }
}
