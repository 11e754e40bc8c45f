//! The token: the module loaded once, one logged-in read-write session.

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// DER of the Ed25519 curve's OID (1.3.101.112), the `CKA_EC_PARAMS` of its keys.
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// The opened token.
pub struct Token {
    session: Session,
    key_label: String,
    _context: Pkcs11,
}

fn failed(what: &str) -> impl FnOnce(cryptoki::error::Error) -> String + '_ {
    move |err| format!("{what}: {err}")
}

/// The 32-byte public key in a `CKA_EC_POINT`: raw, or DER OCTET STRING around it.
fn public_key(point: &[u8]) -> Option<[u8; 32]> {
    match point {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest.try_into().ok(),
        raw if raw.len() == 32 => raw.try_into().ok(),
        _ => None,
    }
}

/// The appliance's key id of a public key: the first 16 hex digits of its sha256 (the same
/// definition as `dg_storage::signing::key_id`; the daemon checks every id it is given).
fn key_id(public: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

impl Token {
    /// Loads `module`, finds the token labelled `token_label` and logs in with `pin`.
    ///
    /// # Errors
    /// A message naming what is wrong: the module, the token or the PIN.
    pub fn open(module: &str, token_label: &str, key_label: &str, pin: &str) -> Result<Self, String> {
        let context = Pkcs11::new(module).map_err(|err| format!("PKCS#11 module {module} cannot be loaded: {err}"))?;
        context
            .initialize(CInitializeArgs::OsThreads)
            .map_err(|err| format!("PKCS#11 module {module} did not initialize: {err}"))?;
        let slots = context.get_slots_with_token().map_err(|err| format!("PKCS#11 module {module}: {err}"))?;
        let mut found = None;
        for slot in slots {
            let info = context.get_token_info(slot).map_err(|err| format!("PKCS#11 module {module}: {err}"))?;
            if info.label().trim_end() == token_label {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| {
            format!("no PKCS#11 token labelled {token_label:?} in {module} (is the token present and initialized?)")
        })?;
        let session = context
            .open_rw_session(slot)
            .map_err(|err| format!("PKCS#11 token {token_label:?}: cannot open a session: {err}"))?;
        session.login(UserType::User, Some(&AuthPin::new(pin.to_string()))).map_err(|err| {
            format!("PKCS#11 token {token_label:?}: login refused ({err}); check [signing.pkcs11] pin_file")
        })?;
        Ok(Self { session, key_label: key_label.to_string(), _context: context })
    }

    fn private_key(&self, key_id: &str) -> Result<Option<ObjectHandle>, String> {
        let found = self
            .session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(self.key_label.as_bytes().to_vec()),
                Attribute::Id(key_id.as_bytes().to_vec()),
            ])
            .map_err(failed("find the key"))?;
        Ok(found.first().copied())
    }

    fn existing(&self, key_id: &str) -> Result<ObjectHandle, String> {
        self.private_key(key_id)?.ok_or_else(|| format!("the token holds no key {key_id}"))
    }

    /// Generates a key pair in the token; the private half is sensitive and never
    /// extractable. Both halves get the key id as `CKA_ID`.
    ///
    /// # Errors
    /// The token's refusal.
    pub fn generate(&self) -> Result<Value, String> {
        let label = self.key_label.as_bytes().to_vec();
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::EcParams(ED25519_PARAMS.to_vec()),
            Attribute::Label(label.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::Label(label),
        ];
        let (public, private) = self
            .session
            .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public_template, &private_template)
            .map_err(failed("generate an Ed25519 key pair"))?;
        let point =
            self.session.get_attributes(public, &[AttributeType::EcPoint]).map_err(failed("read the public key"))?;
        let bytes = point
            .iter()
            .find_map(|attribute| match attribute {
                Attribute::EcPoint(point) => public_key(point),
                _ => None,
            })
            .ok_or_else(|| "the token's public key is not an Ed25519 point".to_string())?;
        let id = key_id(&bytes).into_bytes();
        for handle in [public, private] {
            self.session.update_attributes(handle, &[Attribute::Id(id.clone())]).map_err(failed("set the key id"))?;
        }
        Ok(json!({"public_key": hex::encode(bytes)}))
    }

    /// Whether the token holds the private key `key_id`.
    ///
    /// # Errors
    /// The token's refusal.
    pub fn holds(&self, key_id: &str) -> Result<Value, String> {
        Ok(json!({"holds": self.private_key(key_id)?.is_some()}))
    }

    /// The Ed25519 signature (hex) of `message` by `key_id`.
    ///
    /// # Errors
    /// No such key, or the token's refusal.
    pub fn sign(&self, key_id: &str, message: &[u8]) -> Result<Value, String> {
        let key = self.existing(key_id)?;
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let signature = self.session.sign(&mechanism, key, message).map_err(failed("sign"))?;
        if signature.len() != 64 {
            return Err(format!("the token's signature is {} bytes, not 64", signature.len()));
        }
        Ok(json!({"signature": hex::encode(signature)}))
    }

    /// The private key's `CKA_SENSITIVE`, `CKA_EXTRACTABLE` and `CKA_NEVER_EXTRACTABLE`.
    ///
    /// # Errors
    /// No such key, or the token's refusal.
    pub fn attributes(&self, key_id: &str) -> Result<Value, String> {
        let key = self.existing(key_id)?;
        let wanted = [AttributeType::Sensitive, AttributeType::Extractable, AttributeType::NeverExtractable];
        let read = self.session.get_attributes(key, &wanted).map_err(failed("read the key's attributes"))?;
        let mut out = json!({});
        for attribute in read {
            match attribute {
                Attribute::Sensitive(value) => out["sensitive"] = json!(value),
                Attribute::Extractable(value) => out["extractable"] = json!(value),
                Attribute::NeverExtractable(value) => out["never_extractable"] = json!(value),
                _ => {}
            }
        }
        Ok(out)
    }
}
