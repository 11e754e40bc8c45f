//! The connection to the collector: TCP with bounded connect and write times, TLS
//! (rustls, the configured CA, an optional client certificate) unless configured off on
//! loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use super::settings::ForwardSettings;

/// Longest a connect or a write may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the collector.
pub struct Connector {
    address: SocketAddr,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// An open connection.
pub enum Stream {
    /// Plain TCP (loopback only).
    Plain(TcpStream),
    /// TLS.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Connector {
    /// From the settings, reading the TLS material now.
    ///
    /// # Errors
    /// Unreadable or invalid TLS material.
    pub fn new(settings: &ForwardSettings) -> Result<Self, String> {
        let tls = if settings.tls {
            let ca = settings.ca_file.as_ref().ok_or("[audit.forward] ca_file is required with TLS")?;
            let client = settings.client_cert.as_deref().zip(settings.client_key.as_deref());
            let config = crate::tls_client::client_config(ca, client)?;
            let name = settings.server_name.clone().unwrap_or_else(|| settings.address.ip().to_string());
            let name = ServerName::try_from(name).map_err(|err| format!("[audit.forward] server_name: {err}"))?;
            Some((Arc::new(config), name))
        } else {
            None
        };
        Ok(Self { address: settings.address, tls })
    }

    /// For the log.
    #[must_use]
    pub fn describe(&self) -> String {
        format!("{}{}", if self.tls.is_some() { "tls://" } else { "tcp://" }, self.address)
    }

    /// Connects (and completes the TLS handshake).
    ///
    /// # Errors
    /// Connection, handshake or certificate errors.
    pub fn connect(&self) -> Result<Stream, String> {
        let tcp = TcpStream::connect_timeout(&self.address, IO_TIMEOUT).map_err(|err| err.to_string())?;
        tcp.set_write_timeout(Some(IO_TIMEOUT)).map_err(|err| err.to_string())?;
        tcp.set_read_timeout(Some(IO_TIMEOUT)).map_err(|err| err.to_string())?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some((config, name)) => {
                let connection =
                    rustls::ClientConnection::new(config.clone(), name.clone()).map_err(|err| err.to_string())?;
                let mut stream = rustls::StreamOwned::new(connection, tcp);
                while stream.conn.is_handshaking() {
                    stream.conn.complete_io(&mut stream.sock).map_err(|err| format!("TLS handshake: {err}"))?;
                }
                Ok(Stream::Tls(Box::new(stream)))
            }
        }
    }
}

impl Stream {
    fn socket(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => &tls.sock,
        }
    }

    /// Whether the collector still holds the connection open. It sends no data: what
    /// arrives (TLS session tickets, an alert) is read through and dropped; end of stream,
    /// a close alert or an error means it is closing.
    pub fn is_open(&mut self) -> bool {
        if self.socket().set_nonblocking(true).is_err() {
            return false;
        }
        let mut buf = [0u8; 512];
        let open = loop {
            match self.read(&mut buf) {
                Ok(0) => break false,
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break true,
                Err(_) => break false,
            }
        };
        let _ = self.socket().set_nonblocking(false);
        open
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.write(buf),
            Self::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.flush(),
            Self::Tls(tls) => tls.flush(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.read(buf),
            Self::Tls(tls) => tls.read(buf),
        }
    }
}
