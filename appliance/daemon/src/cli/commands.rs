//! The subcommands' top level: builds the application and runs `serve`, `stdio` and the
//! operator commands. Each command's own logic lives in its module.

use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{
    admin as admin_cli, backup as backup_cli, bootstrap, release as release_cli, runpack as runpack_cli,
    store as store_cli,
};
use crate::cli::{Cli, Command, ConfigCommand, Protocol};
use crate::http::{self, server};
use crate::rpc::{self, stdio};
use crate::{cli, config};

/// Tells systemd (`Type=notify`) about readiness and stopping; a no-op elsewhere.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::warn!(error = %err, "sd_notify failed");
    }
}

/// Pets the systemd watchdog (`WatchdogSec=`) at half its interval while storage answers,
/// so a wedged daemon is restarted.
fn spawn_watchdog(runtime: &tokio::runtime::Runtime, store: Arc<dyn dg_storage::StateStore>) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = std::time::Duration::from_micros(usec / 2);
    runtime.spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            ticker.tick().await;
            let store = store.clone();
            let healthy = tokio::task::spawn_blocking(move || store.ping().is_ok()).await.unwrap_or(false);
            if healthy {
                notify(&[sd_notify::NotifyState::Watchdog]);
            } else {
                tracing::error!("storage does not answer; withholding the watchdog ping");
            }
        }
    });
}

fn serve(args: cli::ServeArgs) -> Result<(), String> {
    let (mut app, data, admin_key) = bootstrap::build_app(&args.data)?;
    let module = dg_crypto::module();
    tracing::info!(
        provider = module.provider,
        implementation = %module.implementation,
        fips_mode = module.fips_mode,
        "crypto module"
    );
    match dg_storage::sqlite_temp_directory() {
        Some(dir) => tracing::info!(directory = %dir.display(), "SQLite temporary files"),
        // PostgreSQL, or a data directory where `tmp/` could not be made: SQLite's default.
        None => tracing::debug!("SQLite temporary files in the system's temporary directory"),
    }
    // Held while serving: `backup restore` refuses to replace a directory in use.
    let _lock = dg_storage::backup::lock_data_dir(&data.root).map_err(|err| err.to_string())?;
    if let Some(listen) = args.listen {
        app.config.server.listen = listen;
    }
    if args.plaintext_loopback {
        app.config.server.plaintext_loopback = true;
    }
    let server = &app.config.server;
    for setting in server.retired_settings() {
        tracing::warn!(
            setting,
            "retired setting ignored: the daemon no longer busy-polls or holds CPU wake-up latency (docs/tuning.md)"
        );
        eprintln!("warning: {setting} is retired and ignored (see docs/tuning.md)");
    }
    if server.plaintext_loopback && !server.listen.ip().is_loopback() {
        return Err(format!("plain HTTP is only allowed on a loopback address, not {}", server.listen));
    }
    let tls = if server.plaintext_loopback {
        None
    } else {
        let (cert, key) = match &app.config.tls {
            Some(tls) => (tls.cert_path.clone(), tls.key_path.clone()),
            None => {
                data.ensure_self_signed_cert().map_err(|err| err.to_string())?;
                (data.cert_path(), data.key_path())
            }
        };
        if let Err(err) = app.slo.watch_certificate(&cert) {
            tracing::warn!(error = %err, "cannot read the certificate's expiry for /metrics");
        }
        let client_auth = app.config.tls.as_ref().and_then(|tls| tls.client_auth.as_ref());
        Some(server::tls_config(&cert, &key, client_auth).map_err(|err| err.to_string())?)
    };
    app.slo.watch_data_dir(&data.root);
    let mut forwarder = match &app.config.audit.forward {
        Some(settings) => {
            let forwarder = crate::forward::Forwarder::start(settings, app.store.clone())
                .map_err(|err| format!("[audit.forward]: {err}"))?;
            app.forwarding = Some(forwarder.metrics.clone());
            Some(forwarder)
        }
        None => None,
    };
    if let Some(settings) = &app.config.auth.oidc {
        let verifier = crate::oidc::OidcVerifier::new(settings).map_err(|err| format!("[auth.oidc]: {err}"))?;
        app.oidc = Some(Arc::new(verifier));
    }
    if let Some(token) = admin_key {
        eprintln!("First admin API key (shown once, also saved to {}):", data.root.join("admin.key").display());
        eprintln!("{token}");
    }
    let listen = app.config.server.listen;
    let header_timeout = std::time::Duration::from_millis(app.config.server.header_read_timeout_ms);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let app = Arc::new(app);
    let store = app.store.clone();
    let signer: Arc<dyn dg_storage::audit::AuditSigner> = app.keys.clone();
    // The configuration in force is identified by its hash, so a change of configuration
    // between two starts shows in the audit log.
    let config_sha256 = dg_engine::canonical_json_bytes(&app.config)
        .map(|bytes| hex::encode(dg_crypto::Sha256::digest(bytes)))
        .map_err(|err| err.to_string())?;
    bootstrap::lifecycle_event(
        store.as_ref(),
        "startup",
        &format!("listening on {listen}; config sha256 {config_sha256}"),
    )?;
    // One async thread is a current-thread runtime: the same thread without the
    // work-stealing scheduler's bookkeeping and wake-ups.
    // A store over the network (PostgreSQL) blocks in place on the async threads, which a
    // current-thread runtime cannot: those deployments always run the multi-thread one.
    let mut builder = if app.config.server.io_threads == 1 && app.store.as_sqlite().is_some() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(app.config.server.io_threads);
        builder
    };
    // The blocking pool runs requests (and the timers' storage work): bounded, so a burst
    // of clients queues instead of starting a thread (and its memory) per request.
    builder.max_blocking_threads(app.config.server.work_threads);
    let runtime = builder.enable_all().build().map_err(|err| err.to_string())?;
    let interval = std::time::Duration::from_millis(app.config.audit.checkpoint_interval_ms);
    let (checkpoint_store, checkpoint_signer) = (store.clone(), signer.clone());
    runtime.spawn(async move {
        // Bounds how long new audit entries wait for a signed checkpoint.
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            let (store, signer) = (checkpoint_store.clone(), checkpoint_signer.clone());
            let done = tokio::task::spawn_blocking(move || store.audit_checkpoint_now(&signer)).await;
            if let Ok(Err(err)) = done {
                tracing::warn!(error = %err, "audit checkpoint failed");
            }
        }
    });
    spawn_watchdog(&runtime, store.clone());
    // Storage is billed by its highest level in the month: sampled once a minute.
    let sampling = store.clone();
    runtime.spawn(async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            ticker.tick().await;
            let store = sampling.clone();
            if let Ok(Err(err)) = tokio::task::spawn_blocking(move || store.sample_storage_usage()).await {
                tracing::warn!(error = %err, "storage usage sample failed");
            }
        }
    });
    // Trusted time: the wall clock checked once a second (a step across the restart is
    // seen by the first check).
    let watching = app.clone();
    runtime.spawn(async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            ticker.tick().await;
            let app = watching.clone();
            let _ = tokio::task::spawn_blocking(move || app.clock.watch_once(app.store.as_ref())).await;
        }
    });
    let result = runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|err| format!("cannot listen on {listen}: {err}"))?;
        let front = Arc::new(http::HttpFront::new(app)?);
        // Failed authentications are audited as one summary per interval, off the request path.
        let auditing = front.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(http::auth_failures::SUMMARY_EVERY);
            loop {
                ticker.tick().await;
                let front = auditing.clone();
                let _ = tokio::task::spawn_blocking(move || front.audit_auth_failures()).await;
            }
        });
        // Shutdown is decided here, in one place: SIGTERM (systemd) or SIGINT (a terminal).
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|err| format!("cannot watch SIGTERM: {err}"))?;
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|err| format!("cannot watch SIGINT: {err}"))?;
        let shutdown = async move {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = sigint.recv() => {}
            }
        };
        let served = server::run(front.clone(), listener, tls, header_timeout, shutdown, |addr| {
            tracing::info!(address = %addr, "listening");
            eprintln!("dg-appliance listening on {scheme}://{addr}");
            notify(&[sd_notify::NotifyState::Ready]);
        })
        .await
        .map_err(|err| err.to_string());
        // Failures since the last summary are audited before the shutdown entry.
        let _ = tokio::task::spawn_blocking(move || front.audit_auth_failures()).await;
        served
    });
    notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(forwarder) = forwarder.as_mut() {
        forwarder.stop();
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    if let Err(err) = bootstrap::lifecycle_event(store.as_ref(), "shutdown", "stopped serving") {
        tracing::error!(error = %err, "shutdown audit entry failed");
    }
    if let Err(err) = store.audit_checkpoint_now(&signer) {
        tracing::error!(error = %err, "final audit checkpoint failed");
    }
    store.close();
    tracing::info!("stopped");
    result
}

/// `dg-appliance version`: the release and the crypto provider.
fn version_text() -> String {
    let module = dg_crypto::module();
    format!(
        "dg-appliance {}\ncrypto provider: {}\ncrypto module: {}\nFIPS mode: {}\ncode layout: {}",
        env!("CARGO_PKG_VERSION"),
        module.provider,
        module.implementation,
        if module.fips_mode { "yes" } else { "no" },
        // Set by build.rs: whether the release link placed the functions the daemon runs first.
        env!("DG_CODE_LAYOUT")
    )
}

/// Runs one parsed command line; `Err` is a message for the operator (exit code 2).
///
/// # Errors
/// A message for the operator.
pub fn run(cli: Cli) -> Result<ExitCode, String> {
    if matches!(cli.command, Command::Version) {
        // In one write (`println!` wrote the last line apart): a reader that stops at the
        // line it wants, as `dg-appliance version | grep -q ...` does, then cannot meet a
        // closed pipe halfway (exit 141, main.rs), which under `pipefail` failed the
        // caller's pipeline now and then.
        let text = format!("{}\n", version_text());
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    // The FIPS build runs nothing unless its module is in FIPS mode (a failed power-on
    // self test has already aborted the process before main).
    dg_crypto::self_check().map_err(|err| err.to_string())?;
    match cli.command {
        Command::Version => Ok(ExitCode::SUCCESS),
        Command::Serve(args) => serve(args).map(|()| ExitCode::SUCCESS),
        Command::Stdio(args) => {
            let (app, data, _) = bootstrap::build_app(&args.data)?;
            let _lock = dg_storage::backup::lock_data_dir(&data.root).map_err(|err| err.to_string())?;
            let dialect = match args.protocol {
                Protocol::Rpc => rpc::Dialect::DecisionGate,
                Protocol::Mcp => rpc::Dialect::Mcp,
            };
            stdio::run(&app, args.framing, dialect).map_err(|err| format!("stdio: {err}"))?;
            app.store.close();
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => match config::load(Some(&file)) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                println!("{err}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Config(ConfigCommand::Default) => {
            print!("{}", config::DEFAULT_CONFIG);
            Ok(ExitCode::SUCCESS)
        }
        Command::Store(command) => store_cli::run(command),
        Command::Runpack(command) => runpack_cli::run_runpack(command),
        Command::Keys(command) => admin_cli::run_keys(command),
        Command::Tenants(command) => admin_cli::run_tenants(command),
        Command::Namespaces(command) => admin_cli::run_namespaces(command),
        Command::Subjects(command) => admin_cli::run_subjects(command),
        Command::Audit(command) => admin_cli::run_audit(command),
        Command::Usage(command) => admin_cli::run_usage(command),
        Command::Policy { json } => admin_cli::print_policy(json),
        Command::Backup(command) => backup_cli::run(command),
        Command::SupportBundle(args) => crate::cli::support::run(args),
        Command::Release(command) => release_cli::run(command),
        Command::GenerateDocs { out } => release_cli::generate_docs(&out),
    }
}
