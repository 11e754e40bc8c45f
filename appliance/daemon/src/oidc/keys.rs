//! A provider's signing keys: parsed from a JWKS document, each kept with what it may
//! verify (its family and curve), so a key is never used for another algorithm's tokens.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Largest JWKS document read (file or network).
pub const MAX_JWKS_BYTES: u64 = 256 * 1024;
/// Most keys kept from one document.
pub const MAX_KEYS: usize = 64;
/// Longest `kid` accepted (in a token or a document).
pub const MAX_KID_BYTES: usize = 128;

/// One usable verification key.
pub struct VerifyKey {
    /// The key material.
    pub key: DecodingKey,
    kind: KeyKind,
    /// The algorithm the document binds the key to, if any.
    bound_alg: Option<Algorithm>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl VerifyKey {
    /// Whether this key may verify a token signed with `alg`: the key type matches the
    /// algorithm (RSA for RS/PS, the curve for ES, Ed25519 for EdDSA) and, when the
    /// document names an algorithm for the key, it is this one.
    #[must_use]
    pub fn verifies(&self, alg: Algorithm) -> bool {
        let kind_fits = matches!(
            (self.kind, alg),
            (
                KeyKind::Rsa,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (KeyKind::P256, Algorithm::ES256)
                | (KeyKind::P384, Algorithm::ES384)
                | (KeyKind::Ed25519, Algorithm::EdDSA)
        );
        kind_fits && self.bound_alg.is_none_or(|bound| bound == alg)
    }
}

/// Whether a `kid` is one the appliance will look up: short, and only characters key ids
/// are made of (base64url, dots, dashes); anything else (paths, quotes, SQL) is refused
/// before any lookup or fetch.
#[must_use]
pub fn kid_acceptable(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_BYTES
        && kid.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'.' | b'+'))
        && !kid.contains("..")
}

/// The keys of a JWKS document by `kid`, and how many entries were skipped (symmetric
/// keys, encryption keys, unknown types, entries without an acceptable `kid`).
///
/// # Errors
/// The document is not a JSON object with a `keys` array.
pub fn parse_jwks(bytes: &[u8]) -> Result<(HashMap<String, Arc<VerifyKey>>, usize), String> {
    let document: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|err| format!("the JWKS is not JSON: {err}"))?;
    let entries = document
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| "the JWKS has no \"keys\" array".to_string())?;
    let mut keys = HashMap::new();
    let mut skipped = 0;
    for entry in entries.iter().take(MAX_KEYS) {
        match usable(entry) {
            Some((kid, key)) => {
                keys.insert(kid, Arc::new(key));
            }
            None => skipped += 1,
        }
    }
    skipped += entries.len().saturating_sub(MAX_KEYS);
    Ok((keys, skipped))
}

fn usable(entry: &serde_json::Value) -> Option<(String, VerifyKey)> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).ok()?;
    let kid = jwk.common.key_id.clone().filter(|kid| kid_acceptable(kid))?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => KeyKind::P256,
            EllipticCurve::P384 => KeyKind::P384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(params) => match params.curve {
            EllipticCurve::Ed25519 => KeyKind::Ed25519,
            _ => return None,
        },
        // A symmetric key in a provider's document is never used: HMAC is refused.
        _ => return None,
    };
    let bound_alg = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => Some(signature_algorithm(alg)?),
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((kid, VerifyKey { key, kind, bound_alg }))
}

fn signature_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_kids_are_refused_before_any_lookup() {
        for kid in ["../../etc/passwd", "a'; DROP TABLE keys;--", "a/b", "", "a b", "k\u{202e}", &"k".repeat(200)] {
            assert!(!kid_acceptable(kid), "{kid:?}");
        }
        for kid in ["r1", "AbC-_=.x", "RMNHyTRg3B0yW1FcZ4sCGc7p3VD6vYwzHE_8dXyD-Js"] {
            assert!(kid_acceptable(kid), "{kid:?}");
        }
    }

    #[test]
    fn symmetric_and_encryption_keys_are_skipped_and_keys_fit_only_their_algorithm() {
        let document = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "s", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        ]});
        let (keys, skipped) = parse_jwks(document.to_string().as_bytes()).unwrap();
        assert_eq!(skipped, 2);
        let key = keys.get("e").unwrap();
        assert!(key.verifies(Algorithm::EdDSA));
        assert!(!key.verifies(Algorithm::ES256) && !key.verifies(Algorithm::RS256) && !key.verifies(Algorithm::HS256));
    }
}
