//! Random bytes from the provider's generator (the operating system's, or the FIPS
//! module's DRBG).

use crate::backend::rand::{SecureRandom, SystemRandom};

/// Fills `dest` with random bytes.
///
/// Without randomness no key, token or session can be made safely, and the providers
/// only fail when the system's source is broken: the process stops (abort) rather than
/// go on with predictable bytes.
pub fn fill_random(dest: &mut [u8]) {
    if SystemRandom::new().fill(dest).is_err() {
        eprintln!("dg-crypto: the random number generator failed; stopping");
        std::process::abort();
    }
}

/// A random `u64`.
#[must_use]
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// A random `u128`.
#[must_use]
pub fn random_u128() -> u128 {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes);
    u128::from_le_bytes(bytes)
}
