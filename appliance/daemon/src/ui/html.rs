//! HTML for the admin UI: escaping (every value written into a page goes through
//! [`esc`] or a helper that calls it: scenario ids, labels and audit reasons are
//! attacker-controlled), the page frame (navigation, who is signed in, sign-out), and
//! small builders for tables and forms. No inline script or style anywhere: the CSP
//! forbids both.

use std::fmt::Write as _;

/// Escapes text for an HTML text node or a double- or single-quoted attribute value.
#[must_use]
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one URL path segment or query value (everything but unreserved
/// characters), so ids never change a link's structure.
#[must_use]
pub fn url_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The sections of the navigation, in order: (path, label).
pub const NAV: [(&str, &str); 8] = [
    ("/ui/runs", "Runs"),
    ("/ui/scenarios", "Scenarios"),
    ("/ui/tenants", "Tenants"),
    ("/ui/keys", "API keys"),
    ("/ui/audit", "Audit"),
    ("/ui/usage", "Usage"),
    ("/ui/health", "Health"),
    ("/ui/account", "Account"),
];

/// Who is signed in, for the page frame.
pub struct Viewer<'a> {
    /// Principal id.
    pub id: &'a str,
    /// Role name.
    pub role: &'a str,
    /// The session's CSRF token (the sign-out form carries it).
    pub csrf: &'a str,
}

/// A whole page: frame, navigation (the current section marked), heading, body.
#[must_use]
pub fn page(title: &str, current: &str, viewer: Option<&Viewer<'_>>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} — Decision Gate Appliance</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/ui.css\">\
         <link rel=\"icon\" href=\"/ui/assets/icon.svg\" type=\"image/svg+xml\"></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a><header class=\"top\">\
         <span class=\"brand\">Decision Gate Appliance</span>",
        esc(title)
    );
    if let Some(viewer) = viewer {
        out.push_str("<nav aria-label=\"Sections\"><ul>");
        for (path, label) in NAV {
            let mark = if path == current { " aria-current=\"page\"" } else { "" };
            let _ = write!(out, "<li><a href=\"{path}\"{mark}>{label}</a></li>");
        }
        let _ = write!(
            out,
            "</ul></nav><div class=\"who\"><span>{} <span class=\"role\">({})</span></span>\
             <form method=\"post\" action=\"/ui/sign-out\">{}<button type=\"submit\">Sign out</button></form></div>",
            esc(viewer.id),
            esc(viewer.role),
            csrf_field(viewer.csrf)
        );
    }
    let _ =
        write!(out, "</header><main id=\"main\" tabindex=\"-1\"><h1>{}</h1>{body}</main></body></html>", esc(title));
    out
}

/// The hidden CSRF field every state-changing form carries.
#[must_use]
pub fn csrf_field(token: &str) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(token))
}

/// A notice (`role="status"`) or an error (`role="alert"`) box.
#[must_use]
pub fn notice(text: &str, error: bool) -> String {
    if error {
        format!("<p class=\"notice error\" role=\"alert\">{}</p>", esc(text))
    } else {
        format!("<p class=\"notice\" role=\"status\">{}</p>", esc(text))
    }
}

/// A table: caption, header cells (already HTML: they may hold sort links), rows of
/// cells (already HTML).
#[must_use]
pub fn table(caption: &str, headers: &[String], rows: &[Vec<String>]) -> String {
    let mut out = String::with_capacity(rows.len() * 200 + 256);
    let _ = write!(out, "<table><caption>{}</caption><thead><tr>", esc(caption));
    for header in headers {
        let _ = write!(out, "<th scope=\"col\">{header}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(out, "<tr><td colspan=\"{}\">None.</td></tr>", headers.len().max(1));
    }
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// Table rows from the array `key` of a JSON answer, one per element (none when it is
/// absent).
#[must_use]
pub fn rows_of(
    value: &serde_json::Value,
    key: &str,
    row: impl Fn(&serde_json::Value) -> Vec<String>,
) -> Vec<Vec<String>> {
    value
        .get(key)
        .and_then(serde_json::Value::as_array)
        .map(|items| items.iter().map(row).collect())
        .unwrap_or_default()
}

/// A definition list of (term, value HTML).
#[must_use]
pub fn facts(items: &[(&str, String)]) -> String {
    let mut out = String::from("<dl class=\"facts\">");
    for (term, value) in items {
        let _ = write!(out, "<dt>{}</dt><dd>{value}</dd>", esc(term));
    }
    out.push_str("</dl>");
    out
}

/// A labelled text input.
#[must_use]
pub fn input(name: &str, label: &str, value: &str, kind: &str, required: bool) -> String {
    let id = format!("f-{name}");
    format!(
        "<div class=\"field\"><label for=\"{id}\">{}</label><input id=\"{id}\" name=\"{}\" type=\"{}\" value=\"{}\"{}></div>",
        esc(label),
        esc(name),
        esc(kind),
        esc(value),
        if required { " required" } else { "" }
    )
}

/// A labelled select of (value, label) options.
#[must_use]
pub fn select(name: &str, label: &str, options: &[(String, String)], selected: &str) -> String {
    let id = format!("f-{name}");
    let mut out = format!(
        "<div class=\"field\"><label for=\"{id}\">{}</label><select id=\"{id}\" name=\"{}\">",
        esc(label),
        esc(name)
    );
    for (value, text) in options {
        let mark = if value == selected { " selected" } else { "" };
        let _ = write!(out, "<option value=\"{}\"{mark}>{}</option>", esc(value), esc(text));
    }
    out.push_str("</select></div>");
    out
}

/// A POST form with the CSRF field: `fields` is HTML (inputs), `button` the submit text.
#[must_use]
pub fn post_form(action: &str, csrf: &str, fields: &str, button: &str, class: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\" class=\"{}\">{}{fields}<button type=\"submit\">{}</button></form>",
        esc(action),
        esc(class),
        csrf_field(csrf),
        esc(button)
    )
}

/// A hidden input.
#[must_use]
pub fn hidden(name: &str, value: &str) -> String {
    format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", esc(name), esc(value))
}

/// A link.
#[must_use]
pub fn link(href: &str, text: &str) -> String {
    format!("<a href=\"{}\">{}</a>", esc(href), esc(text))
}

/// A member of a JSON answer as text: `key` names a member, or is a JSON pointer (`/a/b`);
/// a string as it is, null or absent as "", anything else as JSON.
#[must_use]
pub fn json_text(value: &serde_json::Value, key: &str) -> String {
    use serde_json::Value;
    let found = if key.starts_with('/') { value.pointer(key) } else { value.get(key) };
    match found {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Unix milliseconds as an RFC 3339 UTC time.
#[must_use]
pub fn time_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_inert_in_text_and_attributes() {
        let hostile = "\"><img src=x onerror=alert(1)><script>alert('x')</script>&";
        let escaped = esc(hostile);
        assert!(!escaped.contains('<') && !escaped.contains('>') && !escaped.contains('"') && !escaped.contains('\''));
        assert_eq!(escaped.matches("&amp;").count(), 1);
        assert_eq!(url_part("a/b?c=d&e f"), "a%2Fb%3Fc%3Dd%26e%20f");
        let cell = link(&format!("/ui/x/{}", url_part(hostile)), hostile);
        assert!(!cell.contains("<img") && !cell.contains("<script"));
    }

    #[test]
    fn times_print_as_rfc3339() {
        assert_eq!(time_ms(0), "1970-01-01T00:00:00Z");
    }
}
