//! Fuzz target: the hardened bundle reader must never panic, hang or accept anything
//! that is not a bundle signed by the trusted key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ring = dg_storage::signing::PublicKeyRing::default();
    let limits = dg_storage::bundle::BundleLimits { max_entries: 64, max_unpacked_bytes: 8 << 20, max_file_bytes: 4 << 20, max_ratio: 200 };
    // With an empty trust ring nothing may ever verify.
    assert!(dg_storage::bundle::read_bundle(data, &ring, limits).is_err());
    let _ = dg_storage::bundle::inspect_unverified(data, limits);
});
