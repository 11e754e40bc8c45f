//! The daemon's side of the PKCS#11 helper (`dg-appliance-pkcs11`): started with the
//! daemon, spoken to over its stdin/stdout one JSON line at a time
//! (`appliance/pkcs11-helper/src/protocol.rs`), stopped with it. The PIN goes over the pipe,
//! never on a command line or in the environment. A helper that dies or does not answer
//! within [`ANSWER_TIMEOUT`] is killed and started again at the next signature.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use dg_crypto::VerifyingKey;
use dg_storage::signing::{KeyToken, SigningError};
use serde_json::{json, Value};

use super::settings::Pkcs11Settings;

/// Longest a token operation may take (key generation on a network HSM is the slow one).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest answer line read from the helper.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;
/// Where the packages install the helper.
const PACKAGED_HELPER: &str = "/usr/libexec/dg-appliance/dg-appliance-pkcs11";

struct Conversation {
    child: Child,
    to_helper: ChildStdin,
    from_helper: BufReader<ChildStdout>,
}

impl Drop for Conversation {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PKCS#11 token behind the helper process.
pub struct Pkcs11Helper {
    settings: Pkcs11Settings,
    program: PathBuf,
    pin: String,
    conversation: Mutex<Option<Conversation>>,
}

fn token_error(message: impl Into<String>) -> SigningError {
    SigningError::Token(message.into())
}

/// The helper program: the configured one, else beside the daemon's binary, else the
/// packaged path.
fn helper_program(settings: &Pkcs11Settings) -> PathBuf {
    if let Some(helper) = &settings.helper {
        return helper.clone();
    }
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join("dg-appliance-pkcs11")));
    match beside {
        Some(path) if path.is_file() => path,
        _ => PathBuf::from(PACKAGED_HELPER),
    }
}

impl Pkcs11Helper {
    /// Starts the helper and opens the token: loads the module, finds the token by label,
    /// logs in with the PIN from its 0600 file.
    ///
    /// # Errors
    /// A message naming what is wrong: the PIN file, the helper, the module, the token or
    /// the PIN.
    pub fn open(settings: &Pkcs11Settings) -> Result<Self, String> {
        let pin = crate::secret_file::read_secret(&settings.pin_file, "[signing.pkcs11] pin_file")?;
        let mut helper = Self {
            settings: settings.clone(),
            program: helper_program(settings),
            pin: pin.trim().to_string(),
            conversation: Mutex::new(None),
        };
        // Started (and the token opened) now, so a wrong helper, module, token or PIN
        // refuses the start with its own message.
        let conversation = helper.start().map_err(|err| err.to_string())?;
        helper.conversation = Mutex::new(Some(conversation));
        Ok(helper)
    }

    fn start(&self) -> Result<Conversation, SigningError> {
        let mut child = Command::new(&self.program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_clear()
            .envs(std::env::vars_os().filter(|(name, _)| name == "SOFTHSM2_CONF" || name == "PATH"))
            .spawn()
            .map_err(|err| token_error(format!("cannot start the PKCS#11 helper {}: {err}", self.program.display())))?;
        let (Some(to_helper), Some(from_helper)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(token_error("the PKCS#11 helper has no pipes"));
        };
        let mut conversation = Conversation { child, to_helper, from_helper: BufReader::new(from_helper) };
        let open = json!({"op": "open", "module": self.settings.module, "token_label": self.settings.token_label,
                          "key_label": self.settings.key_label, "pin": self.pin});
        exchange(&mut conversation, &open)?;
        Ok(conversation)
    }

    /// One request and its answer's `ok` value; a broken or silent helper is dropped
    /// (killed) so the next call starts a fresh one.
    fn call(&self, request: &Value) -> Result<Value, SigningError> {
        let mut slot = self.conversation.lock().map_err(|_| token_error("the PKCS#11 helper's lock is poisoned"))?;
        if slot.is_none() {
            *slot = Some(self.start()?);
        }
        let Some(conversation) = slot.as_mut() else { return Err(token_error("no PKCS#11 helper")) };
        match exchange(conversation, request) {
            Ok(value) => Ok(value),
            Err(Exchange::Refused(message)) => Err(token_error(message)),
            Err(Exchange::Broken(message)) => {
                *slot = None;
                Err(token_error(message))
            }
        }
    }
}

enum Exchange {
    /// The token said no (the helper is fine).
    Refused(String),
    /// The pipe broke, the answer was malformed or late: the helper is not usable.
    Broken(String),
}

impl From<Exchange> for SigningError {
    fn from(value: Exchange) -> Self {
        match value {
            Exchange::Refused(message) | Exchange::Broken(message) => token_error(message),
        }
    }
}

fn exchange(conversation: &mut Conversation, request: &Value) -> Result<Value, Exchange> {
    let broken = |what: &str, err: &dyn std::fmt::Display| Exchange::Broken(format!("PKCS#11 helper: {what}: {err}"));
    let mut line = serde_json::to_string(request).map_err(|err| broken("encode", &err))?;
    line.push('\n');
    conversation.to_helper.write_all(line.as_bytes()).map_err(|err| broken("write", &err))?;
    conversation.to_helper.flush().map_err(|err| broken("write", &err))?;
    if conversation.from_helper.buffer().is_empty() {
        let fd = conversation.from_helper.get_ref().as_fd();
        let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
        let millis = i32::try_from(ANSWER_TIMEOUT.as_millis()).unwrap_or(i32::MAX);
        let ready = rustix::event::poll(&mut fds, millis).map_err(|err| broken("wait", &err))?;
        if ready == 0 {
            return Err(Exchange::Broken(format!(
                "PKCS#11 helper: no answer within {} s (token stalled?)",
                ANSWER_TIMEOUT.as_secs()
            )));
        }
    }
    let mut answer = String::new();
    let read = (&mut conversation.from_helper)
        .take(MAX_ANSWER_BYTES)
        .read_line(&mut answer)
        .map_err(|err| broken("read", &err))?;
    if read == 0 || !answer.ends_with('\n') {
        return Err(Exchange::Broken("PKCS#11 helper: it stopped or its answer was cut off".to_string()));
    }
    let answer: Value = serde_json::from_str(&answer).map_err(|err| broken("malformed answer", &err))?;
    if let Some(message) = answer.get("error").and_then(Value::as_str) {
        return Err(Exchange::Refused(message.to_string()));
    }
    answer.get("ok").cloned().ok_or_else(|| Exchange::Broken("PKCS#11 helper: an answer without ok".to_string()))
}

fn hex_field<const N: usize>(value: &Value, field: &str) -> Result<[u8; N], SigningError> {
    value
        .get(field)
        .and_then(Value::as_str)
        .and_then(|text| hex::decode(text).ok())
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| token_error(format!("PKCS#11 helper: {field} is not {N} bytes of hex")))
}

impl Pkcs11Helper {
    /// The private key's protection as the token reports it: (sensitive, extractable,
    /// never extractable).
    ///
    /// # Errors
    /// No such key, or the token's refusal.
    pub fn protection(&self, key_id: &str) -> Result<(bool, bool, bool), SigningError> {
        let value = self.call(&json!({"op": "attributes", "key_id": key_id}))?;
        let flag = |name: &str| value.get(name).and_then(Value::as_bool);
        match (flag("sensitive"), flag("extractable"), flag("never_extractable")) {
            (Some(sensitive), Some(extractable), Some(never)) => Ok((sensitive, extractable, never)),
            _ => Err(token_error(format!("PKCS#11 helper: incomplete key attributes {value}"))),
        }
    }

    /// The helper program in use.
    #[must_use]
    pub fn program(&self) -> &Path {
        &self.program
    }
}

impl KeyToken for Pkcs11Helper {
    fn describe(&self) -> String {
        format!("PKCS#11 token {:?} ({})", self.settings.token_label, self.settings.module.display())
    }

    fn generate(&self) -> Result<VerifyingKey, SigningError> {
        let value = self.call(&json!({"op": "generate"}))?;
        let public: [u8; 32] = hex_field(&value, "public_key")?;
        VerifyingKey::from_bytes(&public).map_err(|err| token_error(format!("the token's public key: {err}")))
    }

    fn holds(&self, key_id: &str) -> Result<bool, SigningError> {
        let value = self.call(&json!({"op": "holds", "key_id": key_id}))?;
        value.get("holds").and_then(Value::as_bool).ok_or_else(|| token_error("PKCS#11 helper: holds without a bool"))
    }

    fn sign(&self, key_id: &str, message: &[u8]) -> Result<[u8; 64], SigningError> {
        let value = self.call(&json!({"op": "sign", "key_id": key_id, "message": hex::encode(message)}))?;
        hex_field(&value, "signature")
    }
}
