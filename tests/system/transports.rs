#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Acceptance (issue 3, points 2 and 3): the same scenario session over `/rpc`, `/rpc`
//! with SSE, stdio (both framings) and `/mcp` gives identical tool payloads; and a
//! standard MCP client session has the MCP specification's message shapes.

use crate::support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::{binary, sample_spec, Daemon};

/// The session: (tool, arguments) in order.
fn session() -> Vec<(&'static str, Value)> {
    let request = |trigger: &str, time: u64| {
        json!({"scenario_id": "xport", "request": {"run_id": "r1", "tenant_id": 2, "namespace_id": 3, "trigger_id": trigger,
               "agent_id": "agent", "time": {"kind": "logical", "value": time}, "correlation_id": null}})
    };
    vec![
        ("scenario_define", json!({"spec": sample_spec("xport")})),
        (
            "scenario_start",
            json!({"scenario_id": "xport", "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": "r1",
            "scenario_id": "xport", "dispatch_targets": [], "policy_tags": []}, "started_at": {"kind": "logical", "value": 1},
            "issue_entry_packets": true}),
        ),
        ("scenario_next", request("a", 2)),
        ("scenario_next", request("b", 8)),
        ("scenario_next", request("b", 8)),
        (
            "scenario_status",
            json!({"scenario_id": "xport", "request": {"run_id": "r1", "tenant_id": 2, "namespace_id": 3,
            "requested_at": {"kind": "logical", "value": 9}, "correlation_id": null}}),
        ),
        (
            "runpack_export",
            json!({"scenario_id": "xport", "tenant_id": 2, "namespace_id": 3, "run_id": "r1",
            "generated_at": {"kind": "logical", "value": 10}, "include_verification": true}),
        ),
    ]
}

fn call_body(id: usize, name: &str, args: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}})
}

fn over_rpc(sse: bool) -> Vec<Value> {
    let daemon = Daemon::start();
    let auth = format!("Bearer {}", daemon.key);
    let mut headers = vec![("authorization", auth.as_str())];
    if sse {
        headers.push(("accept", "application/json, text/event-stream"));
    }
    session()
        .iter()
        .enumerate()
        .map(|(id, (name, args))| {
            let (status, content_type, text, _) =
                daemon.post_raw("/rpc", call_body(id, name, args).to_string().as_bytes(), &headers);
            assert_eq!(status, 200, "{text}");
            let json_text = if sse {
                assert!(content_type.starts_with("text/event-stream"), "{content_type}");
                let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                assert_eq!(data.len(), 1, "exactly one SSE event");
                data[0].to_string()
            } else {
                text
            };
            let body: Value = serde_json::from_str(&json_text).unwrap();
            body["result"]["content"][0]["json"].clone()
        })
        .collect()
}

fn over_mcp() -> Vec<Value> {
    let daemon = Daemon::start();
    session()
        .iter()
        .enumerate()
        .map(|(id, (name, args))| {
            let (status, body) = daemon.rpc("/mcp", &call_body(id, name, args));
            assert_eq!(status, 200);
            assert_eq!(body["result"]["isError"], false, "{body}");
            let text: Value = serde_json::from_str(body["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
            assert_eq!(text, body["result"]["structuredContent"]);
            body["result"]["structuredContent"].clone()
        })
        .collect()
}

fn over_stdio(framing: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    // The local operator registers the session's tenant and namespace with the CLI first.
    for args in [
        vec!["tenants", "create", "--id", "2", "--name", "t2"],
        vec!["namespaces", "create", "--tenant", "2", "--id", "3", "--name", "n3"],
    ] {
        let out = Command::new(binary()).args(&args).arg("--data-dir").arg(dir.path().join("data")).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut child = Command::new(binary())
        .args(["stdio", "--framing", framing, "--data-dir"])
        .arg(dir.path().join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut outputs = Vec::new();
    for (id, (name, args)) in session().iter().enumerate() {
        let text = call_body(id, name, args).to_string();
        if framing == "ndjson" {
            writeln!(stdin, "{text}").unwrap();
        } else {
            write!(stdin, "Content-Length: {}\r\n\r\n{text}", text.len()).unwrap();
        }
        stdin.flush().unwrap();
        let response = if framing == "ndjson" {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            line
        } else {
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                stdout.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some(value) = line.strip_prefix("Content-Length: ") {
                    length = value.parse().unwrap();
                }
            }
            let mut body = vec![0u8; length];
            stdout.read_exact(&mut body).unwrap();
            String::from_utf8(body).unwrap()
        };
        let body: Value = serde_json::from_str(&response).unwrap();
        outputs.push(body["result"]["content"][0]["json"].clone());
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    outputs
}

/// Storage URIs and nothing else may differ between transports (they do not, today).
#[test]
fn the_same_session_gives_identical_payloads_on_every_transport() {
    let reference = over_rpc(false);
    assert!(reference.iter().all(|v| !v.is_null()), "{reference:?}");
    assert_eq!(reference[3]["decision"]["outcome"]["kind"], "advance");
    assert_eq!(reference[4], reference[3], "trigger replay is idempotent");
    for (name, outputs) in [
        ("rpc+sse", over_rpc(true)),
        ("mcp", over_mcp()),
        ("stdio content-length", over_stdio("content-length")),
        ("stdio ndjson", over_stdio("ndjson")),
    ] {
        assert_eq!(outputs, reference, "{name} differs from /rpc");
    }
}

#[test]
fn standard_mcp_session_has_the_specification_shapes() {
    let daemon = Daemon::start();
    let (status, init) = daemon.rpc(
        "/mcp",
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test-client", "version": "1.0"}}}),
    );
    assert_eq!(status, 200);
    let result = &init["result"];
    assert_eq!(init["jsonrpc"], "2.0");
    assert_eq!(init["id"], 1);
    assert_eq!(result["protocolVersion"], "2025-06-18");
    assert!(result["capabilities"]["tools"].is_object());
    assert!(result["serverInfo"]["name"].is_string() && result["serverInfo"]["version"].is_string());

    let (_, older) = daemon.rpc(
        "/mcp",
        &json!({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "old", "version": "0"}}}),
    );
    assert_eq!(older["result"]["protocolVersion"], "2025-03-26", "an older supported revision is negotiated");
    let (_, unknown) = daemon.rpc(
        "/mcp",
        &json!({"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": {
        "protocolVersion": "1999-01-01", "capabilities": {}, "clientInfo": {"name": "x", "version": "0"}}}),
    );
    assert_eq!(unknown["result"]["protocolVersion"], "2025-06-18", "unsupported revisions get the latest");

    let auth = format!("Bearer {}", daemon.key);
    let (status, _, body, _) = daemon.post_raw(
        "/mcp",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string().as_bytes(),
        &[("authorization", &auth), ("accept", "application/json, text/event-stream")],
    );
    assert_eq!(status, 202, "notifications are accepted without a body");
    assert!(body.is_empty());

    let (_, tools) = daemon.rpc("/mcp", &json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"}));
    let list = tools["result"]["tools"].as_array().unwrap();
    assert_eq!(list.len(), 18);
    for tool in list {
        assert!(tool["name"].is_string() && tool["inputSchema"]["type"] == "object", "{tool}");
        assert!(tool.get("input_schema").is_none());
    }

    let (_, call) = daemon.rpc(
        "/mcp",
        &json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "providers_list", "arguments": {}}}),
    );
    let result = &call["result"];
    assert_eq!(result["isError"], false);
    assert_eq!(result["content"][0]["type"], "text");
    assert_eq!(result["structuredContent"]["providers"][0]["provider_id"], "time");

    let (_, failed) = daemon.rpc("/mcp", &json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
        "params": {"name": "schemas_get", "arguments": {"tenant_id": 1, "namespace_id": 1, "schema_id": "x", "version": "1"}}}));
    assert_eq!(failed["result"]["isError"], true, "tool failures are results with isError");
    assert_eq!(failed["result"]["content"][0]["text"], "schema not found");

    let (_, pong) = daemon.rpc("/mcp", &json!({"jsonrpc": "2.0", "id": 7, "method": "ping"}));
    assert_eq!(pong["result"], json!({}));
    let (status, missing) = daemon.rpc("/mcp", &json!({"jsonrpc": "2.0", "id": 8, "method": "prompts/list"}));
    assert_eq!(status, 200, "JSON-RPC errors travel with 200 on /mcp");
    assert_eq!(missing["error"]["code"], -32601);
}
