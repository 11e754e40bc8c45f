//! Signing keys in a hardware security module (`[signing] backend = "pkcs11"`): the
//! runpack bundle, backup, audit-checkpoint and support-bundle signatures are made inside a
//! PKCS#11 token (Ed25519, `CKM_EDDSA`); keys are generated there as sensitive and never
//! extractable, and no private key file is written. The public key ring stays in the data
//! directory and travels with bundles and backups as before, so offline verification needs
//! nothing but the ring.
//!
//! The token is driven by a helper process (`appliance/pkcs11-helper`, dynamically
//! linked): a vendor's PKCS#11 module is a shared library, and loading one into the static
//! daemon crashes it. `settings.rs` is the configuration, `helper.rs` the daemon's side of
//! the pipe (a [`dg_storage::signing::KeyToken`]).

pub mod helper;
pub mod settings;

pub use settings::{Pkcs11Settings, SigningBackend, SigningSection};
