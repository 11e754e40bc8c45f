#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance (issue 3, point 4): hostile input, each answered with the documented
//! error; the server stays healthy and nothing is stored.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Daemon, DaemonOptions};

fn config_with_short_header_timeout() -> String {
    let text = std::process::Command::new(support::binary()).args(["config", "default"]).output().unwrap().stdout;
    String::from_utf8(text).unwrap().replace("header_read_timeout_ms = 5000", "header_read_timeout_ms = 800")
}

#[test]
fn hostile_inputs_get_documented_errors_and_change_nothing() {
    let daemon =
        Daemon::start_with(DaemonOptions { config: Some(config_with_short_header_timeout()), ..Default::default() });
    let auth = format!("Bearer {}", daemon.key);
    let two_mib = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"scenario_define","arguments":{{"spec":"{}"}}}}}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let start_with_bad_types = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "scenario_start",
        "arguments": {"scenario_id": "s", "run_config": {"tenant_id": "one", "namespace_id": 1, "run_id": "r", "scenario_id": "s",
        "dispatch_targets": [], "policy_tags": []}, "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": true}}});
    // (case, body, extra headers, expected HTTP status, expected JSON-RPC code)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16, i64);
    let cases: Vec<Case> = vec![
        ("malformed json", "{\"jsonrpc\": \"2.0\", \"id\": 1,".into(), vec![], 400, -32600),
        ("not an object", "42".into(), vec![], 400, -32600),
        ("wrong version", json!({"jsonrpc": "1.0", "id": 1, "method": "tools/list"}).to_string(), vec![], 400, -32600),
        ("missing id", json!({"jsonrpc": "2.0", "method": "tools/list"}).to_string(), vec![], 400, -32600),
        ("batch", json!([{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]).to_string(), vec![], 400, -32600),
        (
            "object id",
            json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "tools/list"}).to_string(),
            vec![],
            400,
            -32600,
        ),
        ("unknown method", json!({"jsonrpc": "2.0", "id": 1, "method": "initialize"}).to_string(), vec![], 400, -32601),
        (
            "unknown tool",
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "rm_rf", "arguments": {}}})
                .to_string(),
            vec![],
            400,
            -32601,
        ),
        (
            "tool name not a string",
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": 5, "arguments": {}}})
                .to_string(),
            vec![],
            400,
            -32602,
        ),
        (
            "missing arguments",
            json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "providers_list"}})
                .to_string(),
            vec![],
            400,
            -32602,
        ),
        ("wrong param types", start_with_bad_types.to_string(), vec![], 400, -32602),
        ("2 MiB body", two_mib, vec![], 413, -32070),
        (
            "bad token",
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string(),
            vec![("authorization", "Bearer dgk_0000000000000000_00_00")],
            401,
            -32001,
        ),
        (
            "no token",
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string(),
            vec![("authorization", "")],
            401,
            -32001,
        ),
        (
            "bad correlation id",
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string(),
            vec![("x-correlation-id", "has spaces")],
            400,
            -32073,
        ),
    ];
    for (name, body, extra, status, code) in cases {
        let mut headers: Vec<(&str, &str)> = vec![("authorization", auth.as_str())];
        for (key, value) in &extra {
            headers.retain(|(k, _)| k != key);
            if !value.is_empty() {
                headers.push((key, value));
            }
        }
        let (got_status, content_type, text, response_headers) = daemon.post_raw("/rpc", body.as_bytes(), &headers);
        assert_eq!(got_status, status, "{name}: {text}");
        assert!(content_type.starts_with("application/json"), "{name}: error answers are JSON, got {content_type}");
        let parsed: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: not JSON: {text}"));
        assert_eq!(parsed["error"]["code"], code, "{name}: {parsed}");
        assert!(parsed["error"]["data"]["kind"].is_string(), "{name}");
        if code == -32001 {
            assert!(
                response_headers
                    .iter()
                    .any(|(k, v)| k.eq_ignore_ascii_case("www-authenticate") && v.contains("Bearer")),
                "{name}"
            );
        }
    }

    // Slowloris: a request whose headers never finish is cut off by the server.
    let mut slow = TcpStream::connect(("127.0.0.1", daemon.port())).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Plain TCP to a TLS port: feed a partial TLS-less line slowly.
    let started = Instant::now();
    slow.write_all(b"\x16\x03\x01").unwrap();
    let mut buf = [0u8; 64];
    let read = slow.read(&mut buf);
    assert!(matches!(read, Ok(0) | Err(_)), "a stalled handshake is closed, got {read:?}");
    assert!(started.elapsed() < Duration::from_secs(8), "closed after the header timeout");

    // Plain HTTP sent to the TLS port gets a JSON-RPC error, not silence.
    let mut plain = TcpStream::connect(("127.0.0.1", daemon.port())).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    plain.write_all(b"POST /rpc HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}").unwrap();
    let mut answer = String::new();
    let _ = plain.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("requires TLS"), "{answer}");

    // Still healthy, and nothing was stored.
    assert_eq!(daemon.get("/healthz").0, 200);
    assert_eq!(daemon.get("/readyz").0, 200);
    let list = daemon.tool("scenarios_list", json!({"tenant_id": 1, "namespace_id": 1})).unwrap();
    assert_eq!(list["items"], json!([]));
    let runs = std::process::Command::new(support::binary())
        .args(["store", "list", "--json", "--data-dir"])
        .arg(daemon.data_dir())
        .output()
        .unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&runs.stdout).unwrap(), json!([]));
}

#[test]
fn slow_headers_on_plain_http_are_cut_off() {
    let daemon = Daemon::start_with(DaemonOptions {
        config: Some(config_with_short_header_timeout()),
        plaintext: true,
        ..Default::default()
    });
    let mut slow = TcpStream::connect(("127.0.0.1", daemon.port())).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    slow.write_all(b"POST /rpc HTTP/1.1\r\nhost: x\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(8), "slowloris connection closed by the server");
    assert_eq!(daemon.get("/healthz").0, 200);
}

#[test]
fn plaintext_is_refused_off_loopback() {
    let output = std::process::Command::new(support::binary())
        .args(["serve", "--plaintext-loopback", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path().join("d"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("only allowed on a loopback address"));
}
