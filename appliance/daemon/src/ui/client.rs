//! The admin UI as a client of the request path: every page's read and every action is a
//! JSON-RPC request (`tools/call` or `admin/<name>`) handed to `rpc::handle` for the
//! session's principal, exactly as an API client's would be, so the operation table,
//! policy, quotas, usage and audit apply unchanged. The UI never touches the store for
//! tenant data itself.

use std::cell::Cell;

use serde_json::{json, Value};

use crate::app::App;
use crate::ops::auth::Principal;
use crate::rpc::{self, Dialect, Reply};
use crate::wire::{code, WireError};
use dg_identity::Operation;

/// One page's calls: the principal and a request id per call (the page's correlation id
/// and a sequence number, so usage idempotency never merges two calls).
pub struct Calls<'a> {
    app: &'a App,
    principal: &'a Principal,
    request_id: &'a str,
    next: Cell<u32>,
}

impl<'a> Calls<'a> {
    /// Calls on behalf of `principal` for the page answering `request_id`.
    #[must_use]
    pub fn new(app: &'a App, principal: &'a Principal, request_id: &'a str) -> Self {
        Self { app, principal, request_id, next: Cell::new(0) }
    }

    /// The principal the calls are made for.
    #[must_use]
    pub fn principal(&self) -> &Principal {
        self.principal
    }

    /// The application.
    #[must_use]
    pub fn app(&self) -> &App {
        self.app
    }

    fn request_id(&self) -> String {
        let n = self.next.get() + 1;
        self.next.set(n);
        format!("{}.ui{n}", self.request_id)
    }

    /// Whether the principal's role may perform `operation` at all (the UI shows a write
    /// control only then; the request path decides again when it is used).
    #[must_use]
    pub fn may(&self, operation: Operation) -> bool {
        operation.row().roles.contains(&self.principal.role)
    }

    fn send(&self, method: &str, params: Value) -> Result<Value, WireError> {
        let request = rpc::Request { id: Some(Value::from(1)), method: method.to_string(), params };
        match rpc::handle(self.app, self.principal, &self.request_id(), request, Dialect::DecisionGate) {
            Reply::Response { body, error_code: None, .. } => Ok(body.get("result").cloned().unwrap_or(Value::Null)),
            Reply::Response { body, error_code: Some(code), .. } => {
                let message = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("request failed");
                let mut err = WireError::new(code, message);
                err.retry_after_ms = body.pointer("/error/data/retry_after_ms").and_then(Value::as_u64);
                Err(err)
            }
            Reply::Accepted => Err(WireError::new(code::INTERNAL, "no answer")),
        }
    }

    /// `admin/<name>` with `params`.
    ///
    /// # Errors
    /// The operation's wire error.
    pub fn admin(&self, operation: Operation, params: Value) -> Result<Value, WireError> {
        self.send(&format!("admin/{}", operation.name()), params)
    }

    /// `tools/call` of `operation` with `arguments`; the tool's output.
    ///
    /// # Errors
    /// The tool's wire error.
    pub fn tool(&self, operation: Operation, arguments: Value) -> Result<Value, WireError> {
        let result = self.send("tools/call", json!({"name": operation.name(), "arguments": arguments}))?;
        Ok(result.pointer("/content/0/json").cloned().unwrap_or(Value::Null))
    }

    /// The signed bundle of a stored runpack (the operation `GET /runpacks/...` runs):
    /// its bytes and the run id it holds.
    ///
    /// # Errors
    /// Not found, refusals, signing failures.
    pub fn runpack_bundle(&self, tenant: u64, namespace: u64, name: &str) -> Result<(Vec<u8>, String), WireError> {
        crate::ops::tools::runpack::download(self.app, self.principal, self.request_id(), tenant, namespace, name)
    }
}
