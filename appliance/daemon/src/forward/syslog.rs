//! RFC 5424 messages with RFC 6587 octet-counting framing: one message per audit entry,
//! facility `log audit` (13), severity informational, MSGID `audit`, the entry's position
//! and hash in structured data, its canonical JSON as the message.

use dg_storage::audit::StoredAuditEntry;

/// PRI: facility 13 (log audit) × 8 + severity 6 (informational).
const PRI: u8 = 110;
/// The structured-data id (the RFC's example enterprise number: this is a private id).
pub const SD_ID: &str = "dgAudit@32473";

/// The framed message (`<length> <message>`) of one entry.
#[must_use]
pub fn framed(entry: &StoredAuditEntry, hostname: &str, pid: u32) -> Vec<u8> {
    let message = message(entry, hostname, pid);
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(&message);
    out
}

/// The message of one entry.
#[must_use]
pub fn message(entry: &StoredAuditEntry, hostname: &str, pid: u32) -> Vec<u8> {
    let header = format!(
        "<{PRI}>1 {} {} dg-appliance {pid} audit [{SD_ID} seq=\"{}\" sha256=\"{}\"] ",
        timestamp(entry.time_ms),
        hostname,
        entry.seq,
        param_value(&entry.sha256)
    );
    let mut out = header.into_bytes();
    out.extend_from_slice(&entry.json);
    out
}

/// RFC 3339 in UTC with milliseconds.
fn timestamp(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        ),
        Err(_) => "-".to_string(),
    }
}

/// A PARAM-VALUE with `"`, `\` and `]` escaped.
fn param_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace(']', "\\]")
}

/// A HOSTNAME field: printable ASCII without spaces, at most 255 bytes, else `-`.
#[must_use]
pub fn hostname_field(name: &str) -> String {
    if !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic()) {
        name.to_string()
    } else {
        "-".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_framed_by_its_length_and_carries_seq_and_hash() {
        let entry = StoredAuditEntry {
            seq: 42,
            json: br#"{"action":"tool_call"}"#.to_vec(),
            sha256: "ab".repeat(32),
            time_ms: 1_794_312_000_123,
        };
        let framed = framed(&entry, "box-1", 7);
        let text = String::from_utf8(framed).unwrap();
        let (length, message) = text.split_once(' ').unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), message.len());
        assert!(
            message.starts_with(
                "<110>1 2026-11-10T12:00:00.123Z box-1 dg-appliance 7 audit [dgAudit@32473 seq=\"42\" sha256=\"abab"
            ),
            "{message}"
        );
        assert!(message.ends_with(r#"] {"action":"tool_call"}"#));
        assert_eq!(hostname_field("a b"), "-");
    }
}
