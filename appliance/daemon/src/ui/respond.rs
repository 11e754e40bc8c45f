//! The UI's answers and the headers every one of them carries: a strict
//! Content-Security-Policy (nothing but this origin's stylesheet; no script at all; no
//! framing; violations reported to `/ui/csp-report`), `nosniff`, no referrer, no caching
//! of pages (they show tokens and audit data).

/// The Content-Security-Policy of every UI answer.
pub const CSP: &str = "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; \
                       font-src 'none'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
                       form-action 'self'; frame-ancestors 'none'; report-uri /ui/csp-report";

/// One UI answer.
#[derive(Debug, Clone)]
pub struct UiResponse {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
    /// Extra headers (`Location`, `Set-Cookie`, `Content-Disposition`, caching).
    pub headers: Vec<(&'static str, String)>,
}

impl UiResponse {
    /// An HTML page.
    #[must_use]
    pub fn html(status: u16, page: String) -> Self {
        Self { status, content_type: "text/html; charset=utf-8", body: page.into_bytes(), headers: Vec::new() }
    }

    /// Plain text.
    #[must_use]
    pub fn text(status: u16, text: &str) -> Self {
        Self { status, content_type: "text/plain; charset=utf-8", body: text.as_bytes().to_vec(), headers: Vec::new() }
    }

    /// No body.
    #[must_use]
    pub fn empty(status: u16) -> Self {
        Self { status, content_type: "text/plain; charset=utf-8", body: Vec::new(), headers: Vec::new() }
    }

    /// `303 See Other` to a path of this UI.
    #[must_use]
    pub fn redirect(location: &str) -> Self {
        Self::empty(303).with_header("location", location.to_string())
    }

    /// A file to save (`Content-Disposition: attachment`); `filename` must be safe ASCII.
    #[must_use]
    pub fn attachment(content_type: &'static str, filename: &str, body: Vec<u8>) -> Self {
        Self { status: 200, content_type, body, headers: Vec::new() }
            .with_header("content-disposition", format!("attachment; filename=\"{filename}\""))
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds a `Set-Cookie`.
    #[must_use]
    pub fn with_cookie(self, cookie: String) -> Self {
        self.with_header("set-cookie", cookie)
    }

    /// Every header of the answer: the security set, then this answer's own.
    #[must_use]
    pub fn all_headers(&self) -> Vec<(&'static str, String)> {
        let cacheable = self.headers.iter().any(|(name, _)| *name == "cache-control");
        let mut out = vec![
            ("content-type", self.content_type.to_string()),
            ("content-security-policy", CSP.to_string()),
            ("x-content-type-options", "nosniff".to_string()),
            ("referrer-policy", "no-referrer".to_string()),
            ("x-frame-options", "DENY".to_string()),
            ("cross-origin-opener-policy", "same-origin".to_string()),
            ("cross-origin-resource-policy", "same-origin".to_string()),
            ("permissions-policy", "camera=(), microphone=(), geolocation=(), usb=()".to_string()),
        ];
        if !cacheable {
            out.push(("cache-control", "no-store".to_string()));
        }
        out.extend(self.headers.iter().cloned());
        out
    }
}
