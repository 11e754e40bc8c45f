//! Which provider is compiled in, and the FIPS build's start-up check.

use thiserror::Error;

/// The crypto provider of this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// `standard` or `fips`.
    pub provider: &'static str,
    /// What implements it, with versions (for `version`, logs and the support bundle).
    pub implementation: String,
    /// Whether the module runs in FIPS mode (always false for `standard`).
    pub fips_mode: bool,
}

/// Why the FIPS build refuses to start.
#[derive(Debug, Error)]
pub enum ModuleError {
    /// The module is not in FIPS mode or its power-on self tests did not pass.
    #[error("the AWS-LC FIPS module is not in FIPS mode ({0}); refusing to start")]
    NotFipsMode(String),
    /// The TLS provider is not the FIPS one.
    #[error("the TLS provider is not FIPS-approved; refusing to start")]
    TlsNotFips,
}

/// Whether this is the FIPS build (the `fips` provider is compiled in).
pub const FIPS_BUILD: bool = cfg!(feature = "fips");

/// This build's provider.
#[must_use]
pub fn module() -> Module {
    #[cfg(feature = "fips")]
    {
        Module {
            provider: "fips",
            implementation: format!("{} (aws-lc-rs 1.17, aws-lc-fips-sys 0.13)", fips_module_version()),
            fips_mode: aws_lc_rs::try_fips_mode().is_ok(),
        }
    }
    #[cfg(all(feature = "standard", not(feature = "fips")))]
    {
        Module {
            provider: "standard",
            implementation: "ring 0.17, ed25519-dalek 2 (not a validated module)".to_string(),
            fips_mode: false,
        }
    }
}

/// The FIPS build's start-up check: the module reports FIPS mode (its power-on self
/// tests and integrity test ran and passed; a failing one aborts the process before
/// `main`) and the TLS provider is the FIPS one. The standard build has nothing to check.
///
/// # Errors
/// [`ModuleError`] in the FIPS build when either check fails.
pub fn self_check() -> Result<Module, ModuleError> {
    #[cfg(feature = "fips")]
    {
        aws_lc_rs::try_fips_mode().map_err(|reason| ModuleError::NotFipsMode(reason.to_string()))?;
        if !crate::tls_provider().fips() {
            return Err(ModuleError::TlsNotFips);
        }
    }
    Ok(module())
}

/// The module's own version string (e.g. `AWS-LC FIPS 3.x.y`).
#[cfg(feature = "fips")]
#[allow(unsafe_code)]
fn fips_module_version() -> String {
    // SAFETY: awslc_version_string takes no arguments and returns a pointer to a static,
    // NUL-terminated string owned by the module (never freed, never null).
    let text = unsafe { std::ffi::CStr::from_ptr(aws_lc_fips_sys::awslc_version_string()) };
    text.to_string_lossy().into_owned()
}
