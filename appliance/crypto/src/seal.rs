//! Passphrase-sealed secrets (the secrets part of a backup): AES-256-GCM under a key
//! derived with PBKDF2-HMAC-SHA256, both approved algorithms, so the FIPS build and the
//! default build write and read the same format.
//!
//! Format: `DG-SEAL-1\n`, iterations (u32, big-endian), salt (16 bytes), nonce (12
//! bytes), then the ciphertext with its 16-byte tag. Everything before the ciphertext is
//! authenticated as associated data, so a changed iteration count or salt fails to open.

use std::num::NonZeroU32;

use thiserror::Error;

use crate::backend::{aead, pbkdf2};

const MAGIC: &[u8] = b"DG-SEAL-1\n";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = MAGIC.len() + 4 + SALT_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;

/// PBKDF2 iterations for new seals (OWASP's figure for PBKDF2-HMAC-SHA256).
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// Fewest iterations accepted when opening (below: refused as weakened).
const MIN_ITERATIONS: u32 = 100_000;
/// Most iterations accepted when opening (above: refused, bounds the work an input causes).
const MAX_ITERATIONS: u32 = 10_000_000;

/// Why a seal could not be made or opened.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SealError {
    /// The bytes are not in this format.
    #[error("not a DG-SEAL-1 sealed secret")]
    NotSealed,
    /// The header is damaged or asks for an unacceptable iteration count.
    #[error("sealed secret header is malformed: {0}")]
    Malformed(String),
    /// Wrong passphrase, or the ciphertext was changed.
    #[error("the passphrase is wrong or the sealed secret was changed")]
    WrongPassphraseOrChanged,
    /// The provider refused an operation (never expected).
    #[error("the crypto provider refused to {0}")]
    Provider(&'static str),
}

fn key_for(passphrase: &[u8], salt: &[u8], iterations: NonZeroU32) -> Result<aead::LessSafeKey, SealError> {
    let mut key = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, passphrase, &mut key);
    let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, &key).map_err(|_| SealError::Provider("make a key"))?;
    key.fill(0);
    Ok(aead::LessSafeKey::new(unbound))
}

/// Whether `bytes` start like a sealed secret of this format.
#[must_use]
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Seals `plaintext` under `passphrase` with `iterations` PBKDF2 rounds.
///
/// # Errors
/// [`SealError::Malformed`] for an iteration count outside the accepted range.
pub fn seal(passphrase: &[u8], plaintext: &[u8], iterations: u32) -> Result<Vec<u8>, SealError> {
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(SealError::Malformed(format!(
            "{iterations} iterations (accepted: {MIN_ITERATIONS}..={MAX_ITERATIONS})"
        )));
    }
    let rounds = NonZeroU32::new(iterations).ok_or(SealError::Provider("derive a key"))?;
    let mut salt = [0u8; SALT_LEN];
    crate::fill_random(&mut salt);
    let mut nonce = [0u8; NONCE_LEN];
    crate::fill_random(&mut nonce);
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&iterations.to_be_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let key = key_for(passphrase, &salt, rounds)?;
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(&out[..HEADER_LEN]),
        &mut body,
    )
    .map_err(|_| SealError::Provider("seal"))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens a sealed secret.
///
/// # Errors
/// [`SealError::NotSealed`], [`SealError::Malformed`] or
/// [`SealError::WrongPassphraseOrChanged`].
pub fn open(passphrase: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    if !is_sealed(sealed) {
        return Err(SealError::NotSealed);
    }
    if sealed.len() < HEADER_LEN + TAG_LEN {
        return Err(SealError::Malformed("too short".to_string()));
    }
    let (header, body) = sealed.split_at(HEADER_LEN);
    let mut at = MAGIC.len();
    let iterations = u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    at += 4;
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(SealError::Malformed(format!(
            "{iterations} iterations (accepted: {MIN_ITERATIONS}..={MAX_ITERATIONS})"
        )));
    }
    let rounds = NonZeroU32::new(iterations).ok_or(SealError::Malformed("zero iterations".to_string()))?;
    let salt = &header[at..at + SALT_LEN];
    at += SALT_LEN;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&header[at..at + NONCE_LEN]);
    let key = key_for(passphrase, salt, rounds)?;
    let mut buffer = body.to_vec();
    let plain = key
        .open_in_place(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(header), &mut buffer)
        .map_err(|_| SealError::WrongPassphraseOrChanged)?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let sealed = seal(b"correct horse", b"the secrets", MIN_ITERATIONS).unwrap_or_else(|err| panic!("{err}"));
        assert!(is_sealed(&sealed));
        assert_eq!(open(b"correct horse", &sealed).as_deref(), Ok(&b"the secrets"[..]));
        assert_eq!(open(b"wrong", &sealed), Err(SealError::WrongPassphraseOrChanged));
        for at in [MAGIC.len() + 3, MAGIC.len() + 6, HEADER_LEN - 1, sealed.len() - 1] {
            let mut changed = sealed.clone();
            changed[at] ^= 1;
            assert!(open(b"correct horse", &changed).is_err(), "byte {at} changed but the seal opened");
        }
        let mut weakened = sealed.clone();
        weakened[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&1000u32.to_be_bytes());
        assert!(matches!(open(b"correct horse", &weakened), Err(SealError::Malformed(_))));
        assert_eq!(open(b"x", b"age-encryption.org/v1"), Err(SealError::NotSealed));
        assert!(matches!(open(b"x", MAGIC), Err(SealError::Malformed(_))));
    }
}
