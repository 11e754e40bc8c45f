//! The appliance's one crypto seam. Every use of cryptography goes through here: SHA-256
//! for canonical hashes and the audit chain, Ed25519 signing and verification, random
//! bytes, passphrase-sealed secrets (AES-256-GCM, PBKDF2-HMAC-SHA256) and the rustls
//! provider for TLS.
//!
//! Two providers with one API, chosen at build time:
//! - `standard` (the default build): `ring`;
//! - `fips`: `aws-lc-rs` on the AWS-LC-FIPS 3 module, in FIPS mode (fips/README.md).
//!
//! Both crates expose the same interfaces, so each module below is written once against
//! `backend`; only the module report ([`module`], [`self_check`]) differs.

#[cfg(not(any(feature = "standard", feature = "fips")))]
compile_error!("dg-crypto needs a provider: enable its `standard` or its `fips` feature");

#[cfg(feature = "fips")]
use aws_lc_rs as backend;
#[cfg(all(feature = "standard", not(feature = "fips")))]
use ring as backend;

mod digest;
mod module;
mod random;
mod seal;
mod signature;
mod tls;

pub use digest::{sha256, sha256_hex, Sha256};
pub use module::{module, self_check, Module, ModuleError, FIPS_BUILD};
pub use random::{fill_random, random_u128, random_u64};
pub use seal::{is_sealed, open, seal, SealError, DEFAULT_ITERATIONS};
pub use signature::{SignatureError, SigningKey, VerifyingKey, PUBLIC_KEY_LEN, SEED_LEN, SIGNATURE_LEN};
pub use tls::{provider as tls_provider, public_client_config as tls_public_client_config};
