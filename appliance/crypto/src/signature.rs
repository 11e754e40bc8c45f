//! Ed25519: the appliance's signing keys (bundles, backups, audit checkpoints) and the
//! verification of signatures against a public key ring. Signatures are deterministic
//! (RFC 8032), so both providers produce the same bytes for the same key and message.

use thiserror::Error;

/// Bytes of a private key seed.
pub const SEED_LEN: usize = 32;
/// Bytes of a public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// Why a key or a signature was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The bytes are not a usable Ed25519 key.
    #[error("not a valid Ed25519 key")]
    BadKey,
    /// The signature does not verify.
    #[error("the Ed25519 signature does not verify")]
    BadSignature,
}

/// A private signing key, made from (and kept as) its 32-byte seed.
#[derive(Clone)]
pub struct SigningKey {
    seed: [u8; SEED_LEN],
    public: VerifyingKey,
    #[cfg(feature = "fips")]
    key: std::sync::Arc<aws_lc_rs::signature::Ed25519KeyPair>,
    #[cfg(all(feature = "standard", not(feature = "fips")))]
    key: ed25519_dalek::SigningKey,
}

/// A public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey([u8; PUBLIC_KEY_LEN]);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("public", &self.public).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey(")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        write!(f, ")")
    }
}

impl SigningKey {
    /// A new key from the provider's random generator.
    ///
    /// # Errors
    /// [`SignatureError::BadKey`] if the provider refuses the fresh seed (never expected).
    pub fn generate() -> Result<Self, SignatureError> {
        let mut seed = [0u8; SEED_LEN];
        crate::fill_random(&mut seed);
        Self::from_seed(&seed)
    }

    /// The key of a stored seed.
    ///
    /// # Errors
    /// [`SignatureError::BadKey`] if the provider refuses the seed.
    pub fn from_seed(seed: &[u8; SEED_LEN]) -> Result<Self, SignatureError> {
        #[cfg(feature = "fips")]
        {
            use aws_lc_rs::signature::KeyPair as _;
            let pair =
                aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| SignatureError::BadKey)?;
            let public: [u8; PUBLIC_KEY_LEN] =
                pair.public_key().as_ref().try_into().map_err(|_| SignatureError::BadKey)?;
            Ok(Self { seed: *seed, public: VerifyingKey(public), key: std::sync::Arc::new(pair) })
        }
        #[cfg(all(feature = "standard", not(feature = "fips")))]
        {
            let key = ed25519_dalek::SigningKey::from_bytes(seed);
            let public = VerifyingKey(key.verifying_key().to_bytes());
            Ok(Self { seed: *seed, public, key })
        }
    }

    /// The seed, for the key file (0600) it is stored in.
    #[must_use]
    pub fn seed(&self) -> &[u8; SEED_LEN] {
        &self.seed
    }

    /// Its public key.
    #[must_use]
    pub fn verifying_key(&self) -> VerifyingKey {
        self.public
    }

    /// The signature of `message`.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        #[cfg(feature = "fips")]
        {
            let mut out = [0u8; SIGNATURE_LEN];
            out.copy_from_slice(self.key.sign(message).as_ref());
            out
        }
        #[cfg(all(feature = "standard", not(feature = "fips")))]
        {
            use ed25519_dalek::Signer as _;
            self.key.sign(message).to_bytes()
        }
    }
}

impl VerifyingKey {
    /// A public key from its 32 bytes.
    ///
    /// # Errors
    /// [`SignatureError::BadKey`] when the bytes are not a point on the curve (checked
    /// here by the standard provider, at verification by the FIPS module).
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, SignatureError> {
        #[cfg(all(feature = "standard", not(feature = "fips")))]
        ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|_| SignatureError::BadKey)?;
        Ok(Self(*bytes))
    }

    /// Its 32 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// Checks `signature` over `message`: non-canonical signatures are refused by both
    /// providers; the standard one (`verify_strict`) also refuses small-order keys.
    ///
    /// # Errors
    /// [`SignatureError::BadSignature`], or [`SignatureError::BadKey`].
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Result<(), SignatureError> {
        #[cfg(feature = "fips")]
        {
            aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, &self.0)
                .verify(message, signature)
                .map_err(|_| SignatureError::BadSignature)
        }
        #[cfg(all(feature = "standard", not(feature = "fips")))]
        {
            let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::BadKey)?;
            key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
                .map_err(|_| SignatureError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032, section 7.1, test 2: both providers must produce these bytes.
    #[test]
    fn rfc8032_test_vector() {
        let seed: [u8; 32] = hex::decode("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
            .ok()
            .and_then(|b| b.try_into().ok())
            .unwrap_or_default();
        let key = SigningKey::from_seed(&seed).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            hex::encode(key.verifying_key().as_bytes()),
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
        );
        let signature = key.sign(&[0x72]);
        assert_eq!(
            hex::encode(signature),
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
             085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        );
        assert_eq!(key.verifying_key().verify(&[0x72], &signature), Ok(()));
        assert_eq!(key.verifying_key().verify(&[0x73], &signature), Err(SignatureError::BadSignature));
    }
}
