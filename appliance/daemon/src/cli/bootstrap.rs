//! What every command starts from: the application built from the configuration and the
//! data directory, and the CLI caller's own principal, request ids and audit events (for
//! work done outside `ops::request::call`, such as starting and stopping).

use std::sync::Arc;

use dg_identity::Principal;
use dg_storage::audit::AuditEvent;

use crate::app::App;
use crate::cli::DataDirArgs;
use crate::datadir::{self, DataDir};
use crate::{config, providers_setup};

/// Loads config, prepares the data directory and builds the application (shared by
/// `serve`, `stdio` and the admin CLI).
///
/// # Errors
/// A message for the operator.
pub fn build_app(args: &DataDirArgs) -> Result<(App, DataDir, Option<String>), String> {
    let config = config::load(args.config.as_deref()).map_err(|err| err.to_string())?;
    let root = args.data_dir.clone().unwrap_or_else(datadir::default_root);
    let data = DataDir::prepare(root).map_err(|err| err.to_string())?;
    let store = open_store(&config, &data)?;
    let admin_key = data.ensure_admin_key(store.as_ref()).map_err(|err| err.to_string())?;
    let providers = providers_setup::build(&config.providers)?;
    if let Some(problem) = providers.http.as_ref().and_then(dg_providers::http::HttpProvider::name_resolution_problem) {
        tracing::warn!(problem, "http provider: host names outside /etc/hosts will not resolve");
    }
    let keys = open_keys(&config, &data, KeyOpening::MayMakeFirst)?;
    let runpacks = open_runpacks(&config, &data, &keys)?;
    store.set_audit_signer(keys.clone(), config.audit.checkpoint_every);
    data.ensure_default_tenant(store.as_ref()).map_err(|err| err.to_string())?;
    let export_roots = crate::export_roots::ExportRoots::open(
        &config.runpacks.client_export_roots,
        dg_storage::runpack_store::RunpackLimits::default(),
    )?;
    let mut app = App::new(config, store, providers, runpacks, keys);
    app.export_roots = export_roots;
    Ok((app, data, admin_key))
}

/// Whether opening the signing keys may make the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyOpening {
    /// The appliance's start: a fresh data directory (or token) gets its first key.
    MayMakeFirst,
    /// An offline command (`runpack export`): the active key must exist already, as a file
    /// or in the configured token.
    ExistingOnly,
}

/// The signing keys `[signing] backend` names: a key file in the data directory, or a
/// PKCS#11 token through the helper (the appliance refuses to start when the helper, the
/// module, the token or the PIN is wrong, or when the active key in the token could be
/// extracted; no key file is ever written then).
pub(crate) fn open_keys(
    config: &config::Config,
    data: &DataDir,
    opening: KeyOpening,
) -> Result<Arc<dg_storage::signing::KeyStore>, String> {
    use dg_storage::signing::KeyStore;
    let dir = data.root.join("keys");
    let Some(settings) =
        config.signing.pkcs11.as_ref().filter(|_| config.signing.backend == crate::hsm::SigningBackend::Pkcs11)
    else {
        let opened = match opening {
            KeyOpening::MayMakeFirst => KeyStore::open(&dir),
            KeyOpening::ExistingOnly => KeyStore::open_existing(&dir),
        };
        return opened.map(Arc::new).map_err(|err| err.to_string());
    };
    let token = Arc::new(crate::hsm::helper::Pkcs11Helper::open(settings)?);
    let store = match opening {
        KeyOpening::MayMakeFirst => KeyStore::open_in_token(&dir, token.clone()),
        KeyOpening::ExistingOnly => KeyStore::open_existing_in_token(&dir, token.clone()),
    }
    .map_err(|err| err.to_string())?;
    let active = store.active().map_err(|err| err.to_string())?;
    let (sensitive, extractable, never_extractable) =
        token.protection(&active.key_id).map_err(|err| err.to_string())?;
    if !sensitive || extractable {
        return Err(format!(
            "the signing key {} in {} can leave the token (sensitive: {sensitive}, extractable: {extractable}); \
             refusing to sign with it: rotate to a key the appliance generates (`keys rotate`)",
            active.key_id,
            dg_storage::signing::KeyToken::describe(token.as_ref())
        ));
    }
    tracing::info!(
        key_id = active.key_id,
        never_extractable,
        helper = %token.program().display(),
        "signing keys in a PKCS#11 token"
    );
    Ok(Arc::new(store))
}

/// The state store `[storage]` names: the data directory's SQLite database (the default), or
/// the PostgreSQL database several nodes share (migrated under its lock first).
///
/// # Errors
/// A message for the operator.
pub fn open_store(config: &config::Config, data: &DataDir) -> Result<Arc<dyn dg_storage::StateStore>, String> {
    match (&config.storage.backend, &config.storage.postgres) {
        (crate::storage_settings::StorageBackendKind::Postgres, Some(postgres)) => {
            let settings = postgres.connect_settings()?;
            let store = dg_storage::postgres::PgStore::open(&settings, dg_storage::StoreLimits::default())
                .map_err(|err| format!("[storage.postgres]: {err}"))?;
            Ok(Arc::new(store))
        }
        _ => Ok(Arc::new(data.open_store().map_err(|err| err.to_string())?)),
    }
}

/// What an offline command (`store …`, `runpack export`) opens: the configuration, the data
/// directory and the state store `[storage]` names. An offline command never makes an
/// appliance: with SQLite the data directory's database must exist already.
///
/// # Errors
/// A message for the operator.
pub fn open_existing_store(
    data_dir: Option<std::path::PathBuf>,
    config_file: Option<&std::path::Path>,
) -> Result<(config::Config, DataDir, Arc<dyn dg_storage::StateStore>), String> {
    let config = config::load(config_file).map_err(|err| err.to_string())?;
    let root = data_dir.unwrap_or_else(datadir::default_root);
    let sqlite = config.storage.backend == crate::storage_settings::StorageBackendKind::Sqlite;
    if sqlite && !root.join("state.db").exists() {
        return Err(format!("no state database in {}", root.display()));
    }
    let data = DataDir::prepare(root).map_err(|err| err.to_string())?;
    let store = open_store(&config, &data)?;
    Ok((config, data, store))
}

/// The runpack store `[runpacks] backend` names: the filesystem tree beneath the data
/// directory, or the S3 bucket (checked at once: reachable, Object Lock and encryption as
/// configured, else the appliance refuses to start).
fn open_runpacks(
    config: &config::Config,
    data: &DataDir,
    keys: &Arc<dg_storage::signing::KeyStore>,
) -> Result<Arc<dyn dg_storage::runpack_backend::RunpackBackend>, String> {
    match &config.runpacks.s3 {
        Some(settings) if config.runpacks.backend == config::RunpackBackendKind::S3 => {
            let store = crate::s3::S3RunpackStore::open(settings, keys.clone()).map_err(|err| err.to_string())?;
            Ok(Arc::new(store))
        }
        _ => {
            let store = dg_storage::runpack_store::RunpackStore::open(
                &data.runpacks(),
                dg_storage::runpack_store::RunpackLimits::default(),
                dg_storage::runpack_store::ResolveMode::Auto,
            )
            .map_err(|err| err.to_string())?;
            Ok(Arc::new(store))
        }
    }
}

/// The CLI caller: whoever may open the data directory.
pub(crate) fn cli_principal() -> Principal {
    Principal { id: "cli".to_string(), ..Principal::local_operator() }
}

/// A fresh request id for one CLI command.
pub(crate) fn cli_request_id() -> String {
    format!("cli-{:016x}", dg_crypto::random_u64())
}

/// An audit event of the CLI caller for work done outside `request::call` (signing key
/// rotation, legal holds, backups, restores).
pub(crate) fn cli_event(action: &str, target: &str, outcome: &str, reason: String) -> AuditEvent {
    AuditEvent {
        principal: "cli".into(),
        role: Some("org_admin".into()),
        action: action.into(),
        target: target.into(),
        outcome: outcome.into(),
        reason,
        request_id: cli_request_id(),
        ..AuditEvent::default()
    }
}

/// Records a daemon lifecycle event in the audit chain.
pub(crate) fn lifecycle_event(store: &dyn dg_storage::StateStore, action: &str, reason: &str) -> Result<(), String> {
    let event = dg_storage::audit::AuditEvent {
        principal: "system".into(),
        action: action.into(),
        target: "dg-appliance".into(),
        outcome: "ok".into(),
        reason: reason.into(),
        request_id: format!("{action}-{:016x}", dg_crypto::random_u64()),
        ..Default::default()
    };
    store.append_audit(vec![event], Vec::new()).map(|_| ()).map_err(|err| format!("audit log: {err}"))
}
