//! CLI front of the admin operations (`tenants`, `namespaces`, `keys`, `audit`, `usage`).
//! Each command opens the data directory and runs the same operation as the
//! `admin/<operation>` JSON-RPC method, as the local operator, through the same policy
//! and audit path; offline verification of an audit export needs no data directory.

use std::io::Write;
use std::process::ExitCode;

use dg_identity::Operation;
use dg_storage::audit::AuditEvent;
use dg_storage::signing::PublicKeyRing;
use serde_json::{json, Value};

use crate::cli::bootstrap;
use crate::cli::{
    AdminListArgs, AuditCommand, DataDirArgs, KeysCommand, NamespacesCommand, SubjectsCommand, TenantsCommand,
    UsageCommand,
};

/// Runs one admin operation against the data directory.
fn admin(data: &DataDirArgs, operation: Operation, args: Value) -> Result<Value, String> {
    let (app, _, _) = crate::cli::bootstrap::build_app(data)?;
    let request_id = bootstrap::cli_request_id();
    let result = crate::ops::request::call(
        &app,
        &bootstrap::cli_principal(),
        request_id,
        operation,
        args,
        crate::ops::admin::call,
    );
    app.store.close();
    result.map_err(|err| format!("{} ({})", err.message, err.kind()))
}

fn print_json(value: &Value) -> Result<ExitCode, String> {
    println!("{}", serde_json::to_string_pretty(value).map_err(|err| err.to_string())?);
    Ok(ExitCode::SUCCESS)
}

/// Prints rows of a JSON array as an aligned table of the given columns.
fn print_table(rows: &Value, columns: &[&str]) -> Result<ExitCode, String> {
    let cell = |row: &Value, column: &str| match row.get(column) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => "-".to_string(),
        Some(other) => other.to_string(),
    };
    let rows = rows.as_array().cloned().unwrap_or_default();
    let widths: Vec<usize> =
        columns.iter().map(|c| rows.iter().map(|r| cell(r, c).len()).max().unwrap_or(0).max(c.len())).collect();
    let line = |cells: Vec<String>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    println!("{}", line(columns.iter().map(|c| c.to_uppercase()).collect()));
    for row in &rows {
        println!("{}", line(columns.iter().map(|c| cell(row, c)).collect()));
    }
    Ok(ExitCode::SUCCESS)
}

fn listing(list: &AdminListArgs, value: &Value, columns: &[&str]) -> Result<ExitCode, String> {
    if list.json {
        print_json(value)
    } else {
        print_table(value, columns)
    }
}

/// Parses `--since`: unix milliseconds or an RFC 3339 time.
fn parse_since(text: Option<&str>) -> Result<i64, String> {
    let Some(text) = text else { return Ok(0) };
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|err| format!("--since {text:?}: {err}"))?;
    let ms = time.duration_since(std::time::UNIX_EPOCH).map_err(|err| err.to_string())?.as_millis();
    i64::try_from(ms).map_err(|err| err.to_string())
}

/// `tenants ...`.
///
/// # Errors
/// A message for the operator.
pub fn run_tenants(command: TenantsCommand) -> Result<ExitCode, String> {
    match command {
        TenantsCommand::Create { data, id, name, quotas } => {
            let quotas: serde_json::Map<String, Value> = quotas.into_iter().map(|(k, v)| (k, json!(v))).collect();
            print_json(&admin(
                &data,
                Operation::TenantCreate,
                json!({"tenant_id": id, "name": name, "quotas": quotas}),
            )?)
        }
        TenantsCommand::List(list) => {
            let value = admin(&list.data, Operation::TenantList, json!({}))?;
            listing(&list, &value, &["tenant_id", "name", "status", "quotas"])
        }
        TenantsCommand::Disable { data, id, enable } => {
            print_json(&admin(&data, Operation::TenantDisable, json!({"tenant_id": id, "enable": enable}))?)
        }
        TenantsCommand::Delete { data, id } => {
            print_json(&admin(&data, Operation::TenantDelete, json!({"tenant_id": id}))?)
        }
    }
}

/// `namespaces ...`.
///
/// # Errors
/// A message for the operator.
pub fn run_namespaces(command: NamespacesCommand) -> Result<ExitCode, String> {
    match command {
        NamespacesCommand::Create { data, tenant, id, name } => print_json(&admin(
            &data,
            Operation::NamespaceCreate,
            json!({"tenant_id": tenant, "namespace_id": id, "name": name}),
        )?),
        NamespacesCommand::List { list, tenant } => {
            let value = admin(&list.data, Operation::NamespaceList, json!({"tenant_id": tenant}))?;
            listing(&list, &value, &["tenant_id", "namespace_id", "name", "status"])
        }
        NamespacesCommand::Disable { data, tenant, id, enable } => print_json(&admin(
            &data,
            Operation::NamespaceDisable,
            json!({"tenant_id": tenant, "namespace_id": id, "enable": enable}),
        )?),
        NamespacesCommand::Delete { data, tenant, id } => {
            print_json(&admin(&data, Operation::NamespaceDelete, json!({"tenant_id": tenant, "namespace_id": id}))?)
        }
    }
}

/// `subjects ...`.
///
/// # Errors
/// A message for the operator.
pub fn run_subjects(command: SubjectsCommand) -> Result<ExitCode, String> {
    match command {
        SubjectsCommand::Set { data, subject, role, tenant, namespaces, label } => print_json(&admin(
            &data,
            Operation::OidcSubjectSet,
            json!({"subject": subject, "role": role, "tenant_id": tenant, "namespaces": namespaces, "label": label}),
        )?),
        SubjectsCommand::List { list, tenant } => {
            let value = admin(&list.data, Operation::OidcSubjectList, json!({"tenant_id": tenant}))?;
            listing(&list, &value, &["subject", "role", "tenant_id", "namespaces", "label"])
        }
        SubjectsCommand::Delete { data, subject, tenant } => {
            print_json(&admin(&data, Operation::OidcSubjectDelete, json!({"subject": subject, "tenant_id": tenant}))?)
        }
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `keys ...`.
///
/// # Errors
/// A message for the operator.
pub fn run_keys(command: KeysCommand) -> Result<ExitCode, String> {
    match command {
        KeysCommand::Issue { data, role, tenant, namespaces, label, expires_in } => {
            let args = json!({"role": role, "tenant_id": tenant, "namespaces": namespaces, "label": label,
                              "expires_in_ms": expires_in.map(millis)});
            let issued = admin(&data, Operation::KeyIssue, args)?;
            eprintln!("API key issued; the token is shown once and only its hash is stored:");
            print_json(&issued)
        }
        KeysCommand::List { list, tenant } => {
            let value = admin(&list.data, Operation::KeyList, json!({"tenant_id": tenant}))?;
            listing(
                &list,
                &value,
                &["key_id", "role", "tenant_id", "namespaces", "label", "expires_at_ms", "revoked_at_ms"],
            )
        }
        KeysCommand::Revoke { data, key_id } => {
            print_json(&admin(&data, Operation::KeyRevoke, json!({"key_id": key_id}))?)
        }
        KeysCommand::Rotate { data, key_id: Some(key_id), overlap } => {
            print_json(&admin(&data, Operation::KeyRotate, json!({"key_id": key_id, "overlap_ms": millis(overlap)}))?)
        }
        KeysCommand::Rotate { data, key_id: None, .. } => {
            let (app, _, _) = crate::cli::bootstrap::build_app(&data)?;
            let id = app.keys.rotate().map_err(|err| err.to_string())?;
            let event = bootstrap::cli_event("admin", "signing_key_rotate", "ok", format!("new signing key {id}"));
            let audited = app.store.append_audit(vec![event], Vec::new());
            app.store.close();
            audited.map_err(|err| format!("the key was rotated but its audit entry failed: {err}"))?;
            println!("new signing key {id}; previous public keys stay in the ring");
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::ShowPublic { data_dir } => crate::cli::runpack::show_public(data_dir),
    }
}

fn read_ring(path: &std::path::Path) -> Result<PublicKeyRing, String> {
    PublicKeyRing::load(path).map_err(|err| err.to_string())
}

fn report_audit(report: &dg_storage::audit::AuditReport, json: bool) -> Result<ExitCode, String> {
    if json {
        println!("{}", serde_json::to_string_pretty(report).map_err(|err| err.to_string())?);
    } else {
        println!(
            "entries: {} ({} pruned to hashes), signed checkpoints: {}, signed through entry {}",
            report.entries, report.pruned, report.checkpoints, report.signed_through
        );
        match &report.first_break {
            None => println!("audit chain: VERIFIED"),
            Some(broken) => println!("audit chain: BROKEN at entry {}: {}", broken.entry, broken.reason),
        }
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `audit ...`.
///
/// # Errors
/// A message for the operator (exit code 2).
pub fn run_audit(command: AuditCommand) -> Result<ExitCode, String> {
    match command {
        AuditCommand::Verify { export: Some(export), pubkey, json, .. } => {
            let pubkey = pubkey.ok_or("--pubkey is required to verify an export offline")?;
            let ring = read_ring(&pubkey)?;
            let file = dg_storage::open_regular(&export, dg_storage::Links::Follow)
                .map_err(|err| format!("{}: {err}", export.display()))?;
            let report = dg_storage::audit::verify_export(std::io::BufReader::new(file), &ring)?;
            report_audit(&report, json)
        }
        AuditCommand::Verify { data, export: None, pubkey, json } => {
            let (app, _, _) = crate::cli::bootstrap::build_app(&data)?;
            let ring = match pubkey {
                Some(path) => read_ring(&path)?,
                None => app.keys.ring().map_err(|err| err.to_string())?,
            };
            let report = app.store.verify_audit(&ring).map_err(|err| err.to_string());
            app.store.close();
            report_audit(&report?, json)
        }
        AuditCommand::Follow { data, out, once, poll_ms } => audit_follow(&data, &out, once, poll_ms),
        AuditCommand::Export { data, since, format, out } => {
            if format != "jsonl" {
                return Err(format!("--format {format}: only jsonl is supported"));
            }
            let exported = admin(&data, Operation::AuditExport, json!({"since_ms": parse_since(since.as_deref())?}))?;
            let text = exported.get("jsonl").and_then(Value::as_str).unwrap_or_default();
            match out {
                Some(path) => dg_storage::write_atomic(&path, text.as_bytes(), 0o600)
                    .map_err(|err| format!("{}: {err}", path.display()))?,
                None => std::io::stdout().write_all(text.as_bytes()).map_err(|err| err.to_string())?,
            }
            eprintln!("exported {} entries", exported.get("entries").and_then(Value::as_u64).unwrap_or(0));
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Prune { data, older_than } => {
            let (app, _, _) = crate::cli::bootstrap::build_app(&data)?;
            let cutoff = dg_storage::now_ms().saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
            let pruned = app.store.prune_audit(cutoff).map_err(|err| err.to_string());
            app.store.close();
            println!("pruned {} entries to their hashes", pruned?);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Hold { data, tenant, reason, release } => {
            let (app, _, _) = crate::cli::bootstrap::build_app(&data)?;
            let reason = if release { None } else { reason };
            let held = app.store.set_legal_hold(tenant, reason.as_deref()).map_err(|err| err.to_string());
            let target = if release { "legal_hold_release" } else { "legal_hold" };
            let outcome = if held.is_ok() { "ok" } else { "error" };
            let event = AuditEvent {
                tenant_id: Some(tenant),
                ..bootstrap::cli_event("admin", target, outcome, reason.unwrap_or_default())
            };
            let audited = app.store.append_audit(vec![event], Vec::new()).map_err(|err| err.to_string());
            app.store.close();
            held?;
            audited?;
            println!("tenant {tenant}: legal hold {}", if release { "released" } else { "set" });
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `usage report`.
///
/// # Errors
/// A message for the operator.
pub fn run_usage(command: UsageCommand) -> Result<ExitCode, String> {
    match command {
        UsageCommand::Report { list, tenant, since } => {
            let args = json!({"tenant_id": tenant, "since_ms": parse_since(since.as_deref())?});
            let value = admin(&list.data, Operation::UsageReport, args)?;
            listing(&list, &value, &["tenant_id", "key_id", "counter", "total", "requests"])
        }
        UsageCommand::Export { data, period, format, out } => usage_export(&data, &period, &format, &out),
    }
}

/// `usage export`: the month's rows and a detached signature beside them.
fn usage_export(data: &DataDirArgs, period: &str, format: &str, out: &std::path::Path) -> Result<ExitCode, String> {
    use crate::billing::{export, Format, EXPORT_CONTEXT};
    if !dg_storage::usage::valid_period(period) {
        return Err(format!("--period {period:?}: expected YYYY-MM"));
    }
    let format = match format {
        "csv" => Format::Csv,
        "jsonl" => Format::Jsonl,
        other => return Err(format!("--format {other:?}: csv or jsonl")),
    };
    let (app, _, _) = crate::cli::bootstrap::build_app(data)?;
    let current = dg_storage::usage::period_of(dg_storage::record_time_ms());
    if period > current.as_str() {
        return Err(format!("{period} has not begun (this is {current})"));
    }
    if period == current {
        // Storage is a level: the month's figure is the highest sampled, now included.
        app.store.sample_storage_usage().map_err(|err| err.to_string())?;
        eprintln!("note: {period} is the current month; its figures will still change");
    }
    let tenants: Vec<u64> =
        app.store.list_tenants().map_err(|err| err.to_string())?.into_iter().map(|t| t.tenant_id).collect();
    let totals = app.store.usage_for_period(period).map_err(|err| err.to_string())?;
    let bytes = export(&app.config.billing, period, &tenants, &totals, format);
    let key = app.keys.active().map_err(|err| err.to_string())?;
    app.store.close();
    let mut message = EXPORT_CONTEXT.to_vec();
    message.extend_from_slice(&bytes);
    let signature = key.sign_hex(&message).map_err(|err| err.to_string())?;
    let signature = json!({"key_id": key.key_id, "signature": signature, "sha256":
        hex::encode(dg_crypto::Sha256::digest(&bytes))});
    let sig_path = std::path::PathBuf::from(format!("{}.sig", out.display()));
    dg_storage::write_atomic(out, &bytes, 0o600).map_err(|err| format!("{}: {err}", out.display()))?;
    let sig = serde_json::to_vec_pretty(&signature).map_err(|err| err.to_string())?;
    dg_storage::write_atomic(&sig_path, &sig, 0o600).map_err(|err| format!("{}: {err}", sig_path.display()))?;
    eprintln!("usage for {period} written to {} (signature {})", out.display(), sig_path.display());
    Ok(ExitCode::SUCCESS)
}

/// `policy`: the policy table, as the daemon enforces it.
///
/// # Errors
/// Serialization errors.
pub fn print_policy(as_json: bool) -> Result<ExitCode, String> {
    let table = serde_json::to_value(dg_identity::policy::POLICY).map_err(|err| err.to_string())?;
    if as_json {
        return print_json(&table);
    }
    print_table(&table, &["name", "scope", "writes", "roles"])
}

/// `audit follow`: appends entries after the cursor, syncs the file, then moves the cursor
/// (a crash in between resends, never skips).
fn audit_follow(data: &DataDirArgs, out: &std::path::Path, once: bool, poll_ms: u64) -> Result<ExitCode, String> {
    use std::io::Write;
    let (app, _, _) = crate::cli::bootstrap::build_app(data)?;
    let cursor_path = std::path::PathBuf::from(format!("{}.cursor", out.display()));
    let mut cursor: u64 = match dg_storage::read_text_bounded(&cursor_path, 64, dg_storage::Links::Refuse) {
        Ok(text) => text.trim().parse().map_err(|_| format!("{}: not a position", cursor_path.display()))?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
        Err(err) => return Err(format!("{}: {err}", cursor_path.display())),
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(|err| format!("{}: {err}", out.display()))?;
    loop {
        let page = app.store.audit_page(cursor, 1024).map_err(|err| err.to_string())?;
        if page.is_empty() {
            if once {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(poll_ms.max(50)));
            continue;
        }
        let mut lines = Vec::new();
        for entry in &page {
            lines.extend_from_slice(&entry.json);
            lines.push(b'\n');
        }
        file.write_all(&lines).and_then(|()| file.sync_data()).map_err(|err| format!("{}: {err}", out.display()))?;
        cursor = page.last().map_or(cursor, |entry| entry.seq);
        dg_storage::write_atomic(&cursor_path, cursor.to_string().as_bytes(), 0o600)
            .map_err(|err| format!("{}: {err}", cursor_path.display()))?;
    }
    app.store.close();
    eprintln!("audit followed to entry {cursor} ({})", out.display());
    Ok(ExitCode::SUCCESS)
}
