//! The appliance's Ed25519 signing keys and the public key ring. The private key of the
//! active key lives in the data directory (0600), or in a hardware token ([`KeyToken`],
//! PKCS#11: made and used there, never read out, no key file written); retired keys'
//! public halves stay in the ring so bundles signed before a rotation keep verifying. A key
//! id is the first 16 hex digits of the sha256 of the public key.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dg_crypto::{Sha256, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One public key of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyEntry {
    /// Key id.
    pub key_id: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// 32-byte public key, hex.
    pub public_key: String,
    /// When it was created (unix ms).
    pub created_at_ms: i64,
    /// When it stopped signing (unix ms), if rotated out.
    #[serde(default)]
    pub retired_at_ms: Option<i64>,
}

/// The published key ring: every public key this appliance ever signed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PublicKeyRing {
    /// Keys, oldest first.
    pub keys: Vec<PublicKeyEntry>,
}

/// Why signing keys or signatures failed.
#[derive(Debug, Error)]
pub enum SigningError {
    /// Filesystem errors.
    #[error("signing key store {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A key file is malformed.
    #[error("malformed key material in {0}")]
    Malformed(String),
    /// No key with this id is trusted.
    #[error("bundle signed by unknown key {0}")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("signature does not verify with key {0}")]
    BadSignature(String),
    /// The key token (HSM) failed or refused.
    #[error("signing key token: {0}")]
    Token(String),
}

/// Where keys live when they are not files: a hardware security module's token. Keys are
/// generated in it and sign in it; only their public halves come out.
pub trait KeyToken: Send + Sync {
    /// What it is, for messages (module, token).
    fn describe(&self) -> String;
    /// Generates an Ed25519 key pair in the token, labelled with its key id; returns the
    /// public key.
    ///
    /// # Errors
    /// [`SigningError::Token`].
    fn generate(&self) -> Result<VerifyingKey, SigningError>;
    /// Whether the token holds the private key `key_id`.
    ///
    /// # Errors
    /// [`SigningError::Token`].
    fn holds(&self, key_id: &str) -> Result<bool, SigningError>;
    /// Signs `message` (Ed25519) with the private key `key_id`.
    ///
    /// # Errors
    /// [`SigningError::Token`].
    fn sign(&self, key_id: &str, message: &[u8]) -> Result<[u8; 64], SigningError>;
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SigningError + '_ {
    move |source| SigningError::Io { path: path.to_path_buf(), source }
}

/// Key id of a public key.
#[must_use]
pub fn key_id(public: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..8])
}

impl PublicKeyEntry {
    /// Its public key.
    ///
    /// # Errors
    /// [`SigningError::Malformed`] when it is not 32 bytes of hex on the curve.
    pub fn verifying_key(&self) -> Result<VerifyingKey, SigningError> {
        let malformed = || SigningError::Malformed(format!("public key {}", self.key_id));
        let bytes: [u8; 32] =
            hex::decode(&self.public_key).ok().and_then(|b| b.try_into().ok()).ok_or_else(malformed)?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| malformed())
    }
}

impl PublicKeyRing {
    /// Parses a ring, or a single public key entry, from JSON text.
    ///
    /// # Errors
    /// [`SigningError::Malformed`].
    pub fn parse(text: &str) -> Result<Self, SigningError> {
        if let Ok(ring) = serde_json::from_str::<PublicKeyRing>(text) {
            return Ok(ring);
        }
        serde_json::from_str::<PublicKeyEntry>(text)
            .map(|entry| PublicKeyRing { keys: vec![entry] })
            .map_err(|err| SigningError::Malformed(format!("public key file: {err}")))
    }

    /// Reads a published ring (or one public key entry) from a file: the offline
    /// verifiers' trust input.
    ///
    /// # Errors
    /// [`SigningError::Io`] when the file cannot be read, [`SigningError::Malformed`]
    /// (naming the file) when it is not a ring.
    pub fn load(path: &Path) -> Result<Self, SigningError> {
        let text =
            crate::fsutil::read_text_bounded(path, 1024 * 1024, crate::fsutil::Links::Follow).map_err(io(path))?;
        Self::parse(&text).map_err(|err| SigningError::Malformed(format!("{}: {err}", path.display())))
    }

    /// Verifies `signature` (hex) by `key_id` over `message`.
    ///
    /// # Errors
    /// Unknown key, malformed key or signature, or a signature that does not verify.
    pub fn verify(&self, key_id: &str, message: &[u8], signature_hex: &str) -> Result<(), SigningError> {
        let entry = self
            .keys
            .iter()
            .find(|k| k.key_id == key_id)
            .ok_or_else(|| SigningError::UnknownKey(key_id.to_string()))?;
        let public = entry.verifying_key()?;
        if self::key_id(&public) != key_id {
            return Err(SigningError::Malformed(format!("key id {key_id} does not match its public key")));
        }
        let signature: [u8; 64] = hex::decode(signature_hex)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| SigningError::BadSignature(key_id.to_string()))?;
        public.verify(message, &signature).map_err(|_| SigningError::BadSignature(key_id.to_string()))
    }
}

/// The signing keys: the public ring in `<dir>/keyring.json`; the active private key in
/// `<dir>/active.key`, or in a [`KeyToken`].
pub struct KeyStore {
    dir: PathBuf,
    token: Option<Arc<dyn KeyToken>>,
}

#[derive(Clone)]
enum KeyHolder {
    File(Box<SigningKey>),
    Token { token: Arc<dyn KeyToken>, public: VerifyingKey },
}

/// The active signing key.
#[derive(Clone)]
pub struct ActiveKey {
    /// Its id.
    pub key_id: String,
    holder: KeyHolder,
}

impl ActiveKey {
    /// Signs `message`; returns the hex signature. A token's signature is checked against
    /// the ring's public key before it is used (a token or helper that answers wrongly is
    /// an error, never a bad signature shipped).
    ///
    /// # Errors
    /// The token failed ([`SigningError::Token`]); a file key never fails.
    pub fn sign_hex(&self, message: &[u8]) -> Result<String, SigningError> {
        match &self.holder {
            KeyHolder::File(key) => Ok(hex::encode(key.sign(message))),
            KeyHolder::Token { token, public } => {
                let signature = token.sign(&self.key_id, message)?;
                public.verify(message, &signature).map_err(|_| {
                    SigningError::Token(format!("{} returned a signature that does not verify", token.describe()))
                })?;
                Ok(hex::encode(signature))
            }
        }
    }
}

fn write_private(path: &Path, contents: &[u8], mode: u32) -> Result<(), SigningError> {
    crate::fsutil::write_atomic(path, contents, mode).map_err(io(path))
}

impl KeyStore {
    /// Opens the key directory, creating it (0700) and a first key if empty.
    ///
    /// # Errors
    /// Filesystem errors.
    pub fn open(dir: &Path) -> Result<Self, SigningError> {
        create_dir(dir)?;
        let store = Self { dir: dir.to_path_buf(), token: None };
        if !store.dir.join("active.key").exists() {
            store.rotate()?;
        }
        Ok(store)
    }

    /// Opens an existing key directory whose active key is a file, creating nothing (the
    /// offline `runpack export`).
    ///
    /// # Errors
    /// No key file (the keys may be in a token: the configuration naming it opens them).
    pub fn open_existing(dir: &Path) -> Result<Self, SigningError> {
        if !dir.join("active.key").exists() {
            return Err(SigningError::Malformed(format!(
                "{}: no active.key (with [signing] backend = \"pkcs11\" the keys are in the token: pass the configuration that names it, --config)",
                dir.display()
            )));
        }
        Ok(Self { dir: dir.to_path_buf(), token: None })
    }

    /// Opens the key ring in `dir` with the private keys in `token`: a first key is made
    /// in the token when the ring's active key is not there (a fresh appliance, or one
    /// moving from a key file: the file key is retired and stays in the ring). No private
    /// key file is ever written.
    ///
    /// # Errors
    /// Filesystem and token errors.
    pub fn open_in_token(dir: &Path, token: Arc<dyn KeyToken>) -> Result<Self, SigningError> {
        create_dir(dir)?;
        let store = Self { dir: dir.to_path_buf(), token: Some(token.clone()) };
        let usable = match store.active_entry()? {
            Some(entry) => token.holds(&entry.key_id)?,
            None => false,
        };
        if !usable {
            store.rotate()?;
        }
        Ok(store)
    }

    /// As [`Self::open_in_token`], making nothing: the ring's active key must be in `token`
    /// (the offline `runpack export`: a wrong token or label is refused, never given a new
    /// key that would retire the deployment's).
    ///
    /// # Errors
    /// No active key in the ring, the active key not in the token, filesystem and token errors.
    pub fn open_existing_in_token(dir: &Path, token: Arc<dyn KeyToken>) -> Result<Self, SigningError> {
        let store = Self { dir: dir.to_path_buf(), token: Some(token.clone()) };
        match store.active_entry()? {
            Some(entry) if token.holds(&entry.key_id)? => Ok(store),
            Some(entry) => Err(SigningError::Malformed(format!(
                "{}: the ring's active key {} is not in {}",
                dir.display(),
                entry.key_id,
                token.describe()
            ))),
            None => Err(SigningError::Malformed(format!(
                "{}: the key ring has no active key (the appliance's first start with the token makes it)",
                dir.display()
            ))),
        }
    }

    fn active_entry(&self) -> Result<Option<PublicKeyEntry>, SigningError> {
        Ok(self.ring()?.keys.into_iter().rev().find(|entry| entry.retired_at_ms.is_none()))
    }

    /// The public key ring.
    ///
    /// # Errors
    /// Filesystem or parse errors.
    pub fn ring(&self) -> Result<PublicKeyRing, SigningError> {
        let path = self.dir.join("keyring.json");
        if !path.exists() {
            return Ok(PublicKeyRing::default());
        }
        let text =
            crate::fsutil::read_text_bounded(&path, 1024 * 1024, crate::fsutil::Links::Refuse).map_err(io(&path))?;
        serde_json::from_str(&text).map_err(|err| SigningError::Malformed(format!("{}: {err}", path.display())))
    }

    /// The active signing key.
    ///
    /// # Errors
    /// Filesystem or format errors.
    pub fn active(&self) -> Result<ActiveKey, SigningError> {
        if let Some(token) = &self.token {
            let entry =
                self.active_entry()?.ok_or_else(|| SigningError::Malformed("the key ring has no active key".into()))?;
            let public = entry.verifying_key()?;
            return Ok(ActiveKey { key_id: entry.key_id, holder: KeyHolder::Token { token: token.clone(), public } });
        }
        let path = self.dir.join("active.key");
        let text = crate::fsutil::read_text_bounded(&path, 4096, crate::fsutil::Links::Refuse).map_err(io(&path))?;
        let seed: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| SigningError::Malformed(path.display().to_string()))?;
        let signing = SigningKey::from_seed(&seed).map_err(|_| SigningError::Malformed(path.display().to_string()))?;
        Ok(ActiveKey { key_id: key_id(&signing.verifying_key()), holder: KeyHolder::File(Box::new(signing)) })
    }

    /// Makes a new active key (in the token, when there is one); the old one is retired but
    /// stays in the ring.
    ///
    /// # Errors
    /// Filesystem and token errors.
    pub fn rotate(&self) -> Result<String, SigningError> {
        let (public, file_key) = match &self.token {
            Some(token) => {
                let public = token.generate()?;
                // The token names its keys by id: check it holds the one just made.
                if !token.holds(&key_id(&public))? {
                    return Err(SigningError::Token(format!(
                        "{} does not hold the key it just generated ({})",
                        token.describe(),
                        key_id(&public)
                    )));
                }
                (public, None)
            }
            None => {
                let signing =
                    SigningKey::generate().map_err(|err| SigningError::Malformed(format!("new key: {err}")))?;
                (signing.verifying_key(), Some(signing))
            }
        };
        let id = key_id(&public);
        let mut ring = self.ring()?;
        let now = crate::clock::now_ms();
        for entry in &mut ring.keys {
            if entry.retired_at_ms.is_none() {
                entry.retired_at_ms = Some(now);
            }
        }
        ring.keys.push(PublicKeyEntry {
            key_id: id.clone(),
            algorithm: "ed25519".to_string(),
            public_key: hex::encode(public.as_bytes()),
            created_at_ms: now,
            retired_at_ms: None,
        });
        let ring_json = serde_json::to_vec_pretty(&ring).map_err(|err| SigningError::Malformed(err.to_string()))?;
        // Ring first: a crash between the two leaves a published key that never signed,
        // never a signing key missing from the ring.
        write_private(&self.dir.join("keyring.json"), &ring_json, 0o644)?;
        if let Some(signing) = file_key {
            write_private(&self.dir.join("active.key"), hex::encode(signing.seed()).as_bytes(), 0o600)?;
        }
        Ok(id)
    }
}

fn create_dir(dir: &Path) -> Result<(), SigningError> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    Ok(())
}
