//! `dg-appliance-pkcs11`: the PKCS#11 helper the daemon starts when `[signing] backend =
//! "pkcs11"`. It reads one JSON request per line on stdin and answers one JSON line on
//! stdout (src/protocol.rs); it ends when stdin closes (the daemon went away). Private keys
//! stay in the token: only public keys and signatures are ever written.

mod protocol;
mod token;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::ExitCode;

use protocol::{Answer, Request, MAX_REQUEST_BYTES};
use serde_json::Value;
use token::Token;

fn answer(token: &mut Option<Token>, line: &str) -> Answer {
    let request: Request = match serde_json::from_str(line) {
        Ok(request) => request,
        Err(err) => return Answer::Error(format!("malformed request: {err}")),
    };
    let result: Result<Value, String> = match (request, token.as_ref()) {
        (Request::Open { .. }, Some(_)) => Err("the token is already open".to_string()),
        (Request::Open { module, token_label, key_label, pin }, None) => {
            Token::open(&module, &token_label, &key_label, &pin).map(|opened| {
                *token = Some(opened);
                serde_json::json!({"token": token_label})
            })
        }
        (_, None) => Err("open the token first".to_string()),
        (Request::Generate, Some(open)) => open.generate(),
        (Request::Holds { key_id }, Some(open)) => open.holds(&key_id),
        (Request::Sign { key_id, message }, Some(open)) => match hex::decode(&message) {
            Ok(bytes) => open.sign(&key_id, &bytes),
            Err(err) => Err(format!("message is not hex: {err}")),
        },
        (Request::Attributes { key_id }, Some(open)) => open.attributes(&key_id),
    };
    match result {
        Ok(value) => Answer::Ok(value),
        Err(message) => Answer::Error(message),
    }
}

fn main() -> ExitCode {
    let stdin = std::io::stdin();
    let mut reader = BufReader::new(stdin.lock());
    let mut out = std::io::stdout().lock();
    let mut token = None;
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_REQUEST_BYTES + 1).read_line(&mut line) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(err) => {
                eprintln!("dg-appliance-pkcs11: reading a request: {err}");
                return ExitCode::from(2);
            }
        }
        let reply = if line.len() as u64 > MAX_REQUEST_BYTES || !line.ends_with('\n') {
            // Too long (or cut off at end of input): refuse it and stop, the stream is out of step.
            let refused = Answer::Error(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
            let _ = writeln!(out, "{}", serde_json::to_string(&refused).unwrap_or_default());
            let _ = out.flush();
            return ExitCode::from(2);
        } else {
            answer(&mut token, line.trim_end())
        };
        let text = serde_json::to_string(&reply).unwrap_or_else(|_| r#"{"error":"unencodable answer"}"#.to_string());
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS;
        }
    }
}
