//! The accept loop: TLS (or plain HTTP on loopback when asked), HTTP/1.1 and HTTP/2,
//! header-read timeouts against slow clients, and graceful shutdown on SIGTERM/SIGINT:
//! stop accepting, let in-flight requests finish, then flush storage.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use dg_identity::Principal;

use crate::config::ClientAuthConfig;
use crate::http::HttpFront;

/// Why the server could not run.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Binding or socket errors.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// TLS material unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// Loads a rustls server config from PEM files (ALPN h2 + http/1.1).
///
/// # Errors
/// [`ServerError::Tls`] naming the file.
pub fn tls_config(
    cert_path: &Path,
    key_path: &Path,
    client_auth: Option<&ClientAuthConfig>,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let read = |path: &Path| {
        dg_storage::read_bounded(path, 1024 * 1024, dg_storage::Links::Follow)
            .map_err(|err| ServerError::Tls(format!("{}: {err}", path.display())))
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| ServerError::Tls(format!("{}: {err}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!("{}: no certificate found", cert_path.display())));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|err| ServerError::Tls(format!("{}: {err}", key_path.display())))?
        .ok_or_else(|| ServerError::Tls(format!("{}: no private key found", key_path.display())))?;
    let provider = dg_crypto::tls_provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| ServerError::Tls(err.to_string()))?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some(client) => builder.with_client_cert_verifier(client_verifier(client, provider)?),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|err| ServerError::Tls(err.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The FIPS build serves only with a configuration rustls reports as FIPS (approved
    // provider, suites, groups and verifier); a key or verifier that breaks that refuses.
    let fips_required = dg_crypto::FIPS_BUILD;
    tracing::info!(tls_fips = config.fips(), fips_required, "TLS server configuration");
    if fips_required && !config.fips() {
        return Err(ServerError::Tls("the TLS server configuration is not FIPS-approved; refusing to serve".into()));
    }
    Ok(Arc::new(config))
}

/// Verifies client certificates against the configured CA bundle (expiry, chain and
/// key usage by webpki); optional unless `required`.
fn client_verifier(
    client: &ClientAuthConfig,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, ServerError> {
    let pem = dg_storage::read_bounded(&client.ca_path, 1024 * 1024, dg_storage::Links::Follow)
        .map_err(|err| ServerError::Tls(format!("{}: {err}", client.ca_path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|err| ServerError::Tls(format!("{}: {err}", client.ca_path.display())))?;
        roots.add(cert).map_err(|err| ServerError::Tls(format!("{}: {err}", client.ca_path.display())))?;
    }
    if roots.is_empty() {
        return Err(ServerError::Tls(format!("{}: no CA certificate found", client.ca_path.display())));
    }
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if client.required { builder } else { builder.allow_unauthenticated() };
    builder.build().map_err(|err| ServerError::Tls(err.to_string()))
}

/// The common name of a verified client certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(name)
}

/// Maps a connection's verified client certificate to a principal (`None` when there is
/// no certificate or its subject is not configured).
fn certificate_principal(
    tls: &tokio_rustls::server::TlsStream<TcpStream>,
    client: Option<&ClientAuthConfig>,
) -> Option<Principal> {
    let client = client?;
    let der = tls.get_ref().1.peer_certificates()?.first()?;
    let name = common_name(der.as_ref())?;
    let entry = client.principals.iter().find(|p| p.common_name == name);
    match entry {
        Some(entry) => Some(Principal {
            id: format!("cert:{name}"),
            role: entry.role,
            tenant: entry.tenant_id,
            namespaces: entry.namespaces.clone(),
        }),
        None => {
            tracing::info!(subject = %name, "client certificate subject is not mapped to a principal");
            None
        }
    }
}

/// Answer for a client that speaks plain HTTP to the TLS port.
const PLAINTEXT_TO_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 164\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"this port requires TLS (https)\",\"data\":{\"kind\":\"invalid_request\",\"retryable\":false,\"request_id\":null}}}";

/// Whether the first bytes of a connection look like a plain HTTP request line.
fn looks_like_plain_http(peek: &[u8]) -> bool {
    [&b"GET "[..], b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN"].iter().any(|m| peek.starts_with(m))
}

/// Serves until `shutdown` completes, then drains in-flight requests (at most 8 s).
///
/// # Errors
/// Listener errors.
pub async fn run(
    front: Arc<HttpFront>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    let local = listener.local_addr().map_err(|source| ServerError::Bind { addr: ([0, 0, 0, 0], 0).into(), source })?;
    let acceptor = tls.map(TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let connection_slots = front.connection_slots();
    tokio::pin!(shutdown);
    on_ready(local);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // At most `server.max_connections` open at once: past it a new connection is
        // closed at once (counted), so idle or slow clients cannot exhaust descriptors.
        let Ok(slot) = connection_slots.clone().try_acquire_owned() else {
            front.app.metrics.connection_refused();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = front.connection(peer.ip());
        let front = front.clone();
        let builder = builder.clone();
        match &acceptor {
            None => {
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _slot = slot;
                    // hyper's header timeout starts with a request's first byte: a plain
                    // connection that never sends one would be held forever.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => {
                            tracing::debug!(%peer, "connection sent nothing within the header timeout; closed");
                            return;
                        }
                    }
                    let service = service_fn(move |request| front.clone().serve(request, None, connection.clone()));
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    if let Err(err) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _slot = slot;
                    let Some(tls_stream) = handshake(acceptor, stream, peer, header_timeout).await else { return };
                    let client = front.app.config.tls.as_ref().and_then(|tls| tls.client_auth.as_ref());
                    let principal = certificate_principal(&tls_stream, client).map(Arc::new);
                    let service =
                        service_fn(move |request| front.clone().serve(request, principal.clone(), connection.clone()));
                    let conn = builder.serve_connection(TokioIo::new(tls_stream), service).into_owned();
                    if let Err(err) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!("shutdown requested: draining in-flight requests");
    if tokio::time::timeout(Duration::from_secs(8), graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within 8 s; closing");
    }
    Ok(())
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut peek = [0u8; 4];
    if let Ok(Ok(n)) = tokio::time::timeout(timeout, stream.peek(&mut peek)).await {
        if looks_like_plain_http(&peek[..n]) {
            let mut stream = stream;
            let _ = stream.write_all(PLAINTEXT_TO_TLS).await;
            let _ = stream.shutdown().await;
            tracing::info!(%peer, "refused plain HTTP on the TLS port");
            return None;
        }
    }
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(err)) => {
            tracing::info!(%peer, error = %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            None
        }
    }
}
