//! Signing keys in a hardware security module (`[signing] backend = "pkcs11"`): the
//! runpack bundle, backup, audit-checkpoint and support-bundle signatures are made inside a
//! PKCS#11 token (Ed25519, `CKM_EDDSA`); keys are generated there as sensitive and never
//! extractable, and no private key file is written. The public key ring stays in the data
//! directory and travels with bundles and backups as before, so offline verification needs
//! nothing but the ring. `settings.rs` is the configuration, `token.rs` the PKCS#11 side.

pub mod settings;
pub mod token;

pub use settings::{SigningBackend, SigningSection};
