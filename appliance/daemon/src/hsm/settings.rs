//! `[signing]`: where the private signing keys are.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where private signing keys live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningBackend {
    /// `keys/active.key` in the data directory (0600).
    #[default]
    File,
    /// A PKCS#11 token (`[signing.pkcs11]`).
    Pkcs11,
}

/// `[signing]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSection {
    /// `file` (default) or `pkcs11`.
    #[serde(default)]
    pub backend: SigningBackend,
    /// The token, for `backend = "pkcs11"`.
    #[serde(default)]
    pub pkcs11: Option<Pkcs11Settings>,
}

/// `[signing.pkcs11]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Settings {
    /// The vendor's PKCS#11 module (a shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The label the appliance's keys carry in the token (each key's `CKA_ID` is its key id).
    #[serde(default = "default_key_label")]
    pub key_label: String,
    /// The user PIN, in a file only its owner may read (0600).
    pub pin_file: PathBuf,
    /// The PKCS#11 helper program (dynamically linked: it loads the module, which the
    /// static daemon cannot). Default: `dg-appliance-pkcs11` beside the daemon's binary,
    /// else `/usr/libexec/dg-appliance/dg-appliance-pkcs11` (where the packages put it).
    #[serde(default)]
    pub helper: Option<PathBuf>,
}

fn default_key_label() -> String {
    "dg-appliance".to_string()
}

impl SigningSection {
    /// Problems, as (key relative to `signing`, message).
    #[must_use]
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match (self.backend, &self.pkcs11) {
            (SigningBackend::Pkcs11, None) => {
                out.push(("pkcs11".to_string(), "backend = \"pkcs11\" needs a [signing.pkcs11] section".to_string()));
            }
            (SigningBackend::File, Some(_)) => {
                out.push(("backend".to_string(), "[signing.pkcs11] is set but backend is \"file\"".to_string()));
            }
            _ => {}
        }
        if let Some(pkcs11) = &self.pkcs11 {
            if !pkcs11.module.is_absolute() {
                out.push(("pkcs11.module".to_string(), "must be an absolute path".to_string()));
            }
            if !pkcs11.pin_file.is_absolute() {
                out.push(("pkcs11.pin_file".to_string(), "must be an absolute path".to_string()));
            }
            if pkcs11.helper.as_ref().is_some_and(|helper| !helper.is_absolute()) {
                out.push(("pkcs11.helper".to_string(), "must be an absolute path".to_string()));
            }
            for (key, value) in [("pkcs11.token_label", &pkcs11.token_label), ("pkcs11.key_label", &pkcs11.key_label)] {
                if value.is_empty() || value.len() > 32 {
                    out.push((key.to_string(), "1 to 32 bytes (a PKCS#11 label)".to_string()));
                }
            }
        }
        out
    }
}
