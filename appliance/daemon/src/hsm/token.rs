//! A PKCS#11 token holding the signing keys (`cryptoki`; the vendor's module is loaded at
//! start). One logged-in read-write session, used under a lock: signing is rare (bundles,
//! checkpoints, backups), never on the decision path.

use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use dg_storage::signing::{key_id, KeyToken, SigningError};
use ed25519_dalek::VerifyingKey;

use super::settings::Pkcs11Settings;

/// DER of the Ed25519 curve's OID (1.3.101.112), the `CKA_EC_PARAMS` of its keys.
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// The token and the session the appliance signs in.
pub struct Pkcs11Token {
    settings: Pkcs11Settings,
    session: Mutex<Session>,
    _context: Pkcs11,
}

fn token_error(what: &str) -> impl FnOnce(cryptoki::error::Error) -> SigningError + '_ {
    move |err| SigningError::Token(format!("{what}: {err}"))
}

/// The 32-byte public key in a `CKA_EC_POINT`: raw, or DER OCTET STRING around it.
fn public_key(point: &[u8]) -> Option<[u8; 32]> {
    match point {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest.try_into().ok(),
        raw if raw.len() == 32 => raw.try_into().ok(),
        _ => None,
    }
}

impl Pkcs11Token {
    /// Loads the module, finds the token by label and logs in with the PIN from its file.
    ///
    /// # Errors
    /// A message naming what is wrong: the module, the token, the PIN file or the PIN.
    pub fn open(settings: &Pkcs11Settings) -> Result<Self, String> {
        let module = settings.module.display();
        let pin = crate::secret_file::read_secret(&settings.pin_file, "[signing.pkcs11] pin_file")?;
        let context =
            Pkcs11::new(&settings.module).map_err(|err| format!("PKCS#11 module {module} cannot be loaded: {err}"))?;
        context
            .initialize(CInitializeArgs::OsThreads)
            .map_err(|err| format!("PKCS#11 module {module} did not initialize: {err}"))?;
        let slots = context.get_slots_with_token().map_err(|err| format!("PKCS#11 module {module}: {err}"))?;
        let mut found = None;
        for slot in slots {
            let info = context.get_token_info(slot).map_err(|err| format!("PKCS#11 module {module}: {err}"))?;
            if info.label().trim_end() == settings.token_label {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| {
            format!(
                "no PKCS#11 token labelled {:?} in {module} (is the token present and initialized?)",
                settings.token_label
            )
        })?;
        let session = context
            .open_rw_session(slot)
            .map_err(|err| format!("PKCS#11 token {:?}: cannot open a session: {err}", settings.token_label))?;
        session.login(UserType::User, Some(&AuthPin::new(pin.trim().to_string()))).map_err(|err| {
            format!("PKCS#11 token {:?}: login refused ({err}); check [signing.pkcs11] pin_file", settings.token_label)
        })?;
        Ok(Self { settings: settings.clone(), session: Mutex::new(session), _context: context })
    }

    fn private_key(&self, session: &Session, key_id: &str) -> Result<Option<ObjectHandle>, SigningError> {
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(self.settings.key_label.as_bytes().to_vec()),
                Attribute::Id(key_id.as_bytes().to_vec()),
            ])
            .map_err(token_error("find key"))?;
        Ok(found.first().copied())
    }
}

impl KeyToken for Pkcs11Token {
    fn describe(&self) -> String {
        format!("PKCS#11 token {:?} ({})", self.settings.token_label, self.settings.module.display())
    }

    fn generate(&self) -> Result<VerifyingKey, SigningError> {
        let session = self.session.lock().map_err(|_| SigningError::Token("session lock poisoned".into()))?;
        let label = self.settings.key_label.as_bytes().to_vec();
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::EcParams(ED25519_PARAMS.to_vec()),
            Attribute::Label(label.clone()),
        ];
        // Made in the token, sensitive and never extractable: the private key never leaves.
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::Label(label),
        ];
        let (public, private) = session
            .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public_template, &private_template)
            .map_err(token_error("generate an Ed25519 key pair"))?;
        let point =
            session.get_attributes(public, &[AttributeType::EcPoint]).map_err(token_error("read public key"))?;
        let bytes = point
            .iter()
            .find_map(|attribute| match attribute {
                Attribute::EcPoint(point) => public_key(point),
                _ => None,
            })
            .ok_or_else(|| SigningError::Token("the token's public key is not an Ed25519 point".into()))?;
        let verifying =
            VerifyingKey::from_bytes(&bytes).map_err(|err| SigningError::Token(format!("public key: {err}")))?;
        let id = key_id(&verifying).into_bytes();
        for handle in [public, private] {
            session.update_attributes(handle, &[Attribute::Id(id.clone())]).map_err(token_error("label the key"))?;
        }
        Ok(verifying)
    }

    fn holds(&self, key_id: &str) -> Result<bool, SigningError> {
        let session = self.session.lock().map_err(|_| SigningError::Token("session lock poisoned".into()))?;
        Ok(self.private_key(&session, key_id)?.is_some())
    }

    fn sign(&self, key_id: &str, message: &[u8]) -> Result<[u8; 64], SigningError> {
        let session = self.session.lock().map_err(|_| SigningError::Token("session lock poisoned".into()))?;
        let key = self
            .private_key(&session, key_id)?
            .ok_or_else(|| SigningError::Token(format!("{} holds no key {key_id}", self.describe())))?;
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let signature = session.sign(&mechanism, key, message).map_err(token_error("sign"))?;
        signature.try_into().map_err(|_| SigningError::Token("the token's signature is not 64 bytes".into()))
    }
}
