//! Lays out the shipped binary's code: the functions the daemon runs (start-up, the request
//! path, its timers) first and together, the rest after them (`link/symbol-order.txt`,
//! docs/performance.md "The binary's code, laid out").
//!
//! A static binary's code counts in the daemon's resident memory page by page: a page is
//! resident once any function on it ran. Linked in the default order, the 4.5 MB of code the
//! daemon runs is spread over most of the 22 MB of text. Given the list, lld places those
//! functions first, so they fill few pages.
//!
//! Only the release binary of the standard build, on Linux, with lld found (the toolchain's
//! own: rustc links with it by default): debug builds link as before, and so does the FIPS
//! build (its crypto module is linked as its build expects). Without lld a release builds all
//! the same, in the default order, with a warning; the packaging test fails on such a binary.
//!
//! The list names symbols as this toolchain and these dependency versions mangle them (the
//! names carry hashes of both): `scripts/symbol-order.sh` makes it again after an update. A
//! stale list links and runs the same, with more of the code resident, which the load
//! bench's memory figure shows; the packaging test fails a release in which fewer than 90%
//! of the listed names are found.

use std::path::Path;

fn main() {
    let order = Path::new("link/symbol-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    let layout = link_order(order).unwrap_or_else(|why| {
        if let Some(why) = why {
            println!(
                "cargo:warning={why}: dg-appliance is linked in the default order, with more of its code resident"
            );
        }
        "the linker's default".to_string()
    });
    // `dg-appliance version` says which (the packaging test checks the release's).
    println!("cargo:rustc-env=DG_CODE_LAYOUT={layout}");
}

/// Passes the order to the binary's link when it applies; `Err(Some(why))` when a release
/// cannot have it, `Err(None)` when it does not apply (a debug or FIPS build).
fn link_order(order: &Path) -> Result<String, Option<String>> {
    let release = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let fips = std::env::var_os("CARGO_FEATURE_FIPS").is_some();
    let linux_gnu = std::env::var("TARGET").is_ok_and(|target| target.ends_with("-linux-gnu"));
    if !release || fips || !linux_gnu {
        return Err(None);
    }
    if !lld_found() {
        return Err(Some("no lld (neither the toolchain's nor on the PATH)".into()));
    }
    let text = std::fs::read_to_string(order).unwrap_or_default();
    let listed = text.lines().count();
    if listed == 0 {
        return Err(Some(format!("{} is missing or empty", order.display())));
    }
    // The linker is handed a copy in the build's own directory, not the checkout's file: a
    // kept target directory reuses this script's output while its file is unchanged, and a
    // path into the checkout that ran it last (another clone, since removed) would not link.
    let out = std::env::var_os("OUT_DIR").ok_or_else(|| Some("cargo gave no OUT_DIR".to_string()))?;
    let path = Path::new(&out).join("symbol-order.txt");
    std::fs::write(&path, text).map_err(|err| Some(format!("cannot copy {}: {err}", order.display())))?;
    for arg in [
        "-fuse-ld=lld".to_string(),
        format!("-Wl,--symbol-ordering-file={}", path.display()),
        // Functions of the list that a build does not have (another toolchain's symbol
        // names) are skipped.
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ] {
        println!("cargo:rustc-link-arg-bin=dg-appliance={arg}");
    }
    Ok(format!("executed functions first ({listed} listed)"))
}

/// Whether the link will find lld: the toolchain's own (rustc links x86_64 Linux with it by
/// default since 1.90, through `gcc-ld/ld.lld` in its sysroot) or one on the PATH.
fn lld_found() -> bool {
    let target = std::env::var("TARGET").unwrap_or_default();
    let sysroot = std::env::var_os("RUSTC")
        .and_then(|rustc| std::process::Command::new(rustc).args(["--print", "sysroot"]).output().ok())
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    let bundled = sysroot
        .is_some_and(|root| Path::new(&root).join("lib/rustlib").join(&target).join("bin/gcc-ld/ld.lld").is_file());
    bundled
        || std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("ld.lld").is_file()))
}
