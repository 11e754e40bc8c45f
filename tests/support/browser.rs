//! A real browser for the admin UI's tests: Debian's `chromium`, headless, driven through
//! Debian's `chromedriver` (WebDriver, with `fantoccini`) on a free loopback port. The
//! driver runs in its own process group, so the browser processes it starts are stopped
//! with it (by PID, on drop) even when a test fails half-way. Downloads land in a
//! temporary directory of the test's own.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

/// Where Debian's packages put the driver and the browser.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromedriver's browser-log command (`POST /session/{id}/se/log`, type `browser`): the
/// console messages since the last call, CSP violations and script errors among them.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (hyper::Method, Option<String>) {
        (hyper::Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

/// One serious or critical axe-core finding: rule id, impact, how many elements.
pub type AxeViolation = (String, String, usize);

/// A chromedriver process and a browser session.
pub struct Browser {
    driver: Child,
    /// The WebDriver session.
    pub client: Client,
    /// Where the browser saves downloads.
    pub downloads: tempfile::TempDir,
    _profile: tempfile::TempDir,
}

/// axe-core's script (installed by `scripts/ui-test-deps.sh`).
pub fn axe_source() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ui/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{} ({err}): run scripts/ui-test-deps.sh (npm axe-core)", path.display()))
}

/// base64(sha256(SubjectPublicKeyInfo)) of the first certificate in `cert` (PEM): what
/// chromium's `--ignore-certificate-errors-spki-list` takes.
fn spki_pin(cert: &Path) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let pem = std::fs::read(cert).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice()).next().unwrap().unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(parsed.tbs_certificate.subject_pki.raw))
}

/// Where screenshots go (a CI artifact): `target/ui-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    /// Starts chromedriver and a headless chromium session (window 1280x800) that trusts
    /// the server certificate in `cert` (PEM): by its public key's pin, so the page is a
    /// secure context without certificate errors (`__Host-` cookies need one).
    pub async fn start(cert: &Path) -> Self {
        Self::start_trusting(&[cert]).await
    }

    /// [`Self::start`] trusting several servers' certificates (the daemon and an identity
    /// provider).
    pub async fn start_trusting(certs: &[&Path]) -> Self {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "the browser tests need Debian's chromium and chromium-driver (.ci/run installs them)"
        );
        let port = super::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg("--log-level=SEVERE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let downloads = tempfile::tempdir().unwrap();
        let profile = tempfile::tempdir().unwrap();
        let pin: Vec<String> = certs.iter().map(|cert| spki_pin(cert)).collect();
        let pin = pin.join(",");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,800",
                    format!("--ignore-certificate-errors-spki-list={pin}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.path().to_str().unwrap(),
                    "download.prompt_for_download": false,
                    "safebrowsing.enabled": false,
                },
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("no WebDriver session from chromedriver: {err}"),
            }
        };
        Self { driver, client, downloads, _profile: profile }
    }

    /// Loads `url` and returns how long the first view took, in ms, as the browser measured
    /// it (first contentful paint; the DOM's content loaded when no paint entry exists).
    pub async fn open(&self, url: &str) -> f64 {
        self.client.goto(url).await.unwrap();
        let timing = self
            .client
            .execute(
                "const paint = performance.getEntriesByName('first-contentful-paint')[0];
                 const nav = performance.getEntriesByType('navigation')[0];
                 return paint ? paint.startTime : nav.domContentLoadedEventEnd;",
                vec![],
            )
            .await
            .unwrap();
        timing.as_f64().unwrap_or(f64::MAX)
    }

    /// Clicks `element` and waits (at most 15 s) until the page it leads to has loaded: the
    /// old document gone (its root element stale) and the new one complete.
    pub async fn click_and_load(&self, element: fantoccini::elements::Element) {
        let root = self.client.find(fantoccini::Locator::Css("html")).await.unwrap();
        element.click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while root.tag_name().await.is_ok() {
            assert!(Instant::now() < deadline, "the click loaded no new page");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        loop {
            let state = self.client.execute("return document.readyState;", vec![]).await;
            if matches!(&state, Ok(Value::String(s)) if s == "complete") {
                return;
            }
            assert!(Instant::now() < deadline, "the new page did not finish loading");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Presses and releases one key (sent to whatever has the focus).
    pub async fn press(&self, key: fantoccini::key::Key) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let c: char = key.into();
        let actions =
            KeyActions::new("keyboard".to_string()).then(KeyAction::Down { value: c }).then(KeyAction::Up { value: c });
        self.client.perform_actions(actions).await.unwrap();
        self.client.release_actions().await.unwrap();
    }

    /// The focused element: (tag, id, text or value, whether its focus is visible: an
    /// outline wider than 0 px that is not `none`).
    pub async fn focused(&self) -> (String, String, String, bool) {
        let found = self
            .client
            .execute(
                "const e = document.activeElement; const s = getComputedStyle(e);
                 return [e.tagName.toLowerCase(), e.id || '', (e.innerText || e.value || '').trim(),
                         s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0];",
                vec![],
            )
            .await
            .unwrap();
        let text = |i: usize| found[i].as_str().unwrap_or("").to_string();
        (text(0), text(1), text(2), found[3].as_bool().unwrap_or(false))
    }

    /// The visible text of the page's `main`.
    pub async fn main_text(&self) -> String {
        self.client.find(fantoccini::Locator::Css("main")).await.unwrap().text().await.unwrap()
    }

    /// Runs axe-core on the page; returns the serious and critical violations (rule id,
    /// impact, how many nodes).
    pub async fn axe_serious(&self, axe: &str) -> Vec<AxeViolation> {
        self.client.execute(axe, vec![]).await.unwrap();
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v =>
                   ({id: v.id, impact: v.impact, nodes: v.nodes.length, html: v.nodes.map(n => n.html).slice(0, 3)}))))
                   .catch(e => done([{id: 'axe-error', impact: 'critical', nodes: 0, html: [String(e)]}]));",
                vec![],
            )
            .await
            .unwrap();
        let mut serious = Vec::new();
        for violation in result.as_array().cloned().unwrap_or_default() {
            let impact = violation["impact"].as_str().unwrap_or("").to_string();
            if impact == "serious" || impact == "critical" {
                eprintln!("axe: {violation}");
                serious.push((
                    violation["id"].as_str().unwrap_or("").to_string(),
                    impact,
                    usize::try_from(violation["nodes"].as_u64().unwrap_or(0)).unwrap(),
                ));
            }
        }
        serious
    }

    /// Saves a screenshot as `target/ui-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
    }

    /// The browser console's errors since the last call (level `SEVERE`): script errors,
    /// CSP violations, failed loads. Entries that the test's own injected scripts cause
    /// are the caller's to expect.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self.client.issue_cmd(BrowserLog).await.unwrap();
        entries
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Whether a JavaScript dialog (alert, confirm, prompt) is open.
    pub async fn dialog_open(&self) -> bool {
        self.client.get_alert_text().await.is_ok()
    }

    /// The session cookie as the browser holds it: (value, secure, http_only, same_site).
    pub async fn session_cookie(&self) -> Option<(String, bool, bool, String)> {
        let cookies = self.client.get_all_cookies().await.unwrap();
        cookies.iter().find(|c| c.name() == "__Host-dg_session").map(|c| {
            (
                c.value().to_string(),
                c.secure().unwrap_or(false),
                c.http_only().unwrap_or(false),
                c.same_site().map(|s| format!("{s:?}")).unwrap_or_default(),
            )
        })
    }

    /// Waits (at most 30 s) for a finished download and returns its path. Chromium writes a
    /// download under a temporary name (`*.crdownload`, or a hidden `.org.chromium.*` file)
    /// and renames it when it is complete: only a visible, final name counts.
    pub fn wait_for_download(&self) -> PathBuf {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let done: Vec<PathBuf> = std::fs::read_dir(self.downloads.path())
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    !name.starts_with('.') && !name.ends_with(".crdownload")
                })
                .collect();
            if let Some(path) = done.into_iter().next() {
                return path;
            }
            assert!(Instant::now() < deadline, "no download arrived in {}", self.downloads.path().display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ends the session; the driver and its browser stop when `self` is dropped.
    pub async fn stop(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// Stops the driver's process group (driver and browser) by PID: SIGTERM, then SIGKILL.
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.driver);
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::Term);
        super::stop_by_pid(&mut self.driver, Duration::from_secs(5));
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::Kill);
    }
}
