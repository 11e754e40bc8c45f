//! The tool surface over stdin/stdout, with either Content-Length framing (Decision Gate
//! clients) or newline-delimited JSON (standard MCP stdio clients). The caller is the
//! local operator (whoever may run the binary against the data directory).

use std::io::{BufRead, Write};

/// Message framing on stdio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Framing {
    /// `Content-Length: N` headers (Decision Gate clients).
    ContentLength,
    /// One JSON message per line (standard MCP stdio clients).
    Ndjson,
}

use crate::app::App;
use crate::ops::auth::Principal;
use crate::rpc::{self, Dialect, Reply};
use crate::wire::{code, WireError};

/// Reads one Content-Length framed message; `Ok(None)` at end of input.
fn read_framed(input: &mut impl BufRead, max: usize) -> std::io::Result<Option<Result<Vec<u8>, WireError>>> {
    let mut length: Option<usize> = None;
    loop {
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            }
        }
    }
    let Some(length) = length else {
        return Ok(Some(Err(WireError::new(code::INVALID_REQUEST, "missing Content-Length header"))));
    };
    if length > max {
        // Unrecoverable: the rest of the stream cannot be re-synchronised safely.
        return Ok(None);
    }
    let mut body = vec![0u8; length];
    input.read_exact(&mut body)?;
    Ok(Some(Ok(body)))
}

fn write_message(output: &mut impl Write, framing: Framing, body: &serde_json::Value) -> std::io::Result<()> {
    let text = body.to_string();
    match framing {
        Framing::ContentLength => write!(output, "Content-Length: {}\r\n\r\n{text}", text.len())?,
        Framing::Ndjson => writeln!(output, "{text}")?,
    }
    output.flush()
}

/// Serves until stdin closes.
///
/// # Errors
/// I/O errors on stdin/stdout.
pub fn run(app: &App, framing: Framing, dialect: Dialect) -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut output = stdout.lock();
    let principal = Principal::local_operator();
    let boot: u64 = dg_crypto::random_u64();
    let mut sequence: u64 = 0;
    let max = app.config.server.max_body_bytes;
    loop {
        let message = match framing {
            Framing::ContentLength => match read_framed(&mut input, max)? {
                None => return Ok(()),
                Some(message) => message,
            },
            Framing::Ndjson => {
                let mut line = String::new();
                if input.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line.trim().is_empty() {
                    continue;
                }
                if line.len() > max {
                    Err(WireError::new(code::REQUEST_TOO_LARGE, format!("message exceeds {max} bytes")))
                } else {
                    Ok(line.into_bytes())
                }
            }
        };
        let reply = match message.and_then(|body| rpc::parse(&body, dialect)) {
            Ok(request) => {
                sequence += 1;
                let _registry = app.store.registry_snapshot().ok();
                rpc::handle(app, &principal, &format!("stdio-{boot:016x}-{sequence}"), request, dialect)
            }
            Err(err) => Reply::error(&err, None),
        };
        if let Reply::Response { body, .. } = reply {
            write_message(&mut output, framing, &body)?;
        }
    }
}
