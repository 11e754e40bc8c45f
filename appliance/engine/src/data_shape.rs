//! Registered data shapes (JSON Schemas for precheck payloads): immutable records keyed by
//! tenant, namespace, schema id and version.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::{NamespaceId, TenantId};
use crate::time::Timestamp;

/// A registered data shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataShapeRecord {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Namespace.
    pub namespace_id: NamespaceId,
    /// Schema id.
    pub schema_id: String,
    /// Opaque version label.
    pub version: String,
    /// The JSON Schema (Draft 2020-12).
    pub schema: Value,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Caller-supplied creation time.
    pub created_at: Timestamp,
    /// Optional signature metadata (omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<DataShapeSignature>,
}

/// Signature metadata of a data shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataShapeSignature {
    /// Signing key id.
    pub key_id: String,
    /// Signature text.
    pub signature: String,
    /// Algorithm (omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
}
