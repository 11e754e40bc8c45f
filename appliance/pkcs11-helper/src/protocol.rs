//! The pipe protocol between the daemon and this helper: one JSON object per line each way.
//! The daemon's side is `appliance/daemon/src/hsm/helper.rs`; both spell it from this list.

use serde::{Deserialize, Serialize};

/// Longest request line read (a signed message is at most a bundle index or a checkpoint,
/// a few KiB; hex doubles it).
pub const MAX_REQUEST_BYTES: u64 = 4 * 1024 * 1024;

/// What the daemon asks.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Load the module, find the token by label, log in. Must come first, once.
    Open {
        /// The vendor's PKCS#11 module (a shared library).
        module: String,
        /// The token's label.
        token_label: String,
        /// The label the appliance's keys carry.
        key_label: String,
        /// The user PIN (sent over the pipe, never on a command line or in the environment).
        pin: String,
    },
    /// Generate an Ed25519 key pair in the token (sensitive, never extractable).
    Generate,
    /// Whether the token holds the private key `key_id`.
    Holds {
        /// Key id (16 hex digits).
        key_id: String,
    },
    /// Sign `message` (hex) with the private key `key_id` (CKM_EDDSA, pure Ed25519).
    Sign {
        /// Key id.
        key_id: String,
        /// The message, hex.
        message: String,
    },
    /// The private key's protection attributes, as the token reports them.
    Attributes {
        /// Key id.
        key_id: String,
    },
}

/// What the helper answers: `{"ok": …}` or `{"error": "…"}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Success, with the operation's result.
    Ok(serde_json::Value),
    /// A message for the operator.
    Error(String),
}
