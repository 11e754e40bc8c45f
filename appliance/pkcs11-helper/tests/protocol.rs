#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The helper's pipe protocol without a token: malformed and out-of-order requests get a
//! clear error and the helper keeps serving; a wrong module path is named. (The token
//! paths are tested against SoftHSM2 in tests/system/hsm.rs.)

use std::io::Write;
use std::process::{Command, Stdio};

fn converse(input: &str) -> Vec<serde_json::Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dg-appliance-pkcs11"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The helper may stop reading early (an oversized request): a broken pipe is expected then.
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    String::from_utf8(out.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

#[test]
fn bad_requests_get_clear_errors_and_the_helper_keeps_answering() {
    let answers = converse(
        "not json\n{\"op\":\"sign\",\"key_id\":\"00\",\"message\":\"00\"}\n{\"op\":\"frobnicate\"}\n\
         {\"op\":\"open\",\"module\":\"/nonexistent/libnothing.so\",\"token_label\":\"t\",\"key_label\":\"k\",\"pin\":\"1\"}\n",
    );
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert!(answers[0]["error"].as_str().unwrap().contains("malformed request"), "{answers:?}");
    assert_eq!(answers[1]["error"], "open the token first");
    assert!(answers[2]["error"].as_str().unwrap().contains("malformed request"), "{answers:?}");
    let open = answers[3]["error"].as_str().unwrap();
    assert!(open.contains("/nonexistent/libnothing.so") && open.contains("cannot be loaded"), "{open}");
}

#[test]
fn an_oversized_request_is_refused_and_ends_the_conversation() {
    let huge = format!("{{\"op\":\"sign\",\"key_id\":\"00\",\"message\":\"{}\"}}\n", "0".repeat(5 * 1024 * 1024));
    let answers = converse(&(huge + "{\"op\":\"generate\"}\n"));
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(answers[0]["error"].as_str().unwrap().contains("longer than"), "{answers:?}");
}
