//! The admin web UI in a real browser (Debian's chromium, headless, through chromedriver):
//! a walkthrough over 10,000 runs (sign in, find a run by filter, open it, export and
//! download its bundle and verify it offline, issue and revoke a key, verify the audit
//! chain, sign out), each page checked with axe-core and timed; roles (an auditor sees no
//! write controls and a forged write is refused and audited, a service key cannot sign in);
//! and hostile input (ids that are markup render as text, CSRF and cross-origin requests
//! are refused, the CSP is on every answer and the browser reports no violation, the
//! cookie's prefix and flags, the old cookie refused after sign-out). Screenshots of the
//! main pages go to `target/ui-screenshots/`.

use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::Locator;
use serde_json::{json, Value};

use crate::support::browser::{AxeViolation, Browser};
use crate::support::{binary, metric_value, sample_spec, tls_config, Client, Daemon, DaemonOptions};

const HOSTILE_SCENARIO: &str = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// An HTTPS client trusting the daemon's certificate that does not follow redirects.
fn raw_agent(daemon: &Daemon) -> ureq::Agent {
    let config = tls_config(&daemon.data_dir().join("tls/cert.pem"));
    ureq::AgentBuilder::new().tls_config(config).redirects(0).timeout(Duration::from_secs(30)).build()
}

/// Status, headers and body of a UI request made outside the browser.
fn raw(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    form: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let mut request = agent.request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match form {
        Some(body) => request.set("content-type", "application/x-www-form-urlencoded").send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(err) => panic!("transport error: {err}"),
    };
    let headers = response
        .headers_names()
        .iter()
        .flat_map(|name| response.all(name).into_iter().map(|v| (name.clone(), v.to_string())).collect::<Vec<_>>())
        .collect();
    (response.status(), headers, response.into_string().unwrap_or_default())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn start_run(client: &Client, scenario: &str, run: &str) {
    let started = client.tool(
        "scenario_start",
        json!({"scenario_id": scenario, "run_config": {"tenant_id": 2, "namespace_id": 3, "run_id": run,
            "scenario_id": scenario, "dispatch_targets": [], "policy_tags": []},
            "started_at": {"kind": "logical", "value": 1}, "issue_entry_packets": false}),
    );
    assert!(matches!(started, Some(Ok(_))), "scenario_start {run}: {started:?}");
}

fn finish_run(daemon: &Daemon, scenario: &str, run: &str) {
    // Two steps: the gate passes (to the terminal stage), then the run completes there.
    for step in 0..2 {
        let next = daemon.tool(
            "scenario_next",
            json!({"scenario_id": scenario, "request": {"run_id": run, "tenant_id": 2, "namespace_id": 3,
                "trigger_id": format!("{run}-t{step}"), "agent_id": "a", "time": {"kind": "logical", "value": 9 + step},
                "correlation_id": null}}),
        );
        assert!(next.is_ok(), "{next:?}");
    }
    let state = daemon.admin("run_get", json!({"tenant_id": 2, "namespace_id": 3, "run_id": run})).unwrap();
    assert_eq!(state["state"]["status"], "completed", "{state}");
}

/// Starts `count` runs of `scenario` from four client threads.
fn seed_runs(daemon: &Daemon, scenario: &str, count: usize) {
    let started = Instant::now();
    let cert = daemon.data_dir().join("tls/cert.pem");
    let (base, key) = (daemon.base.clone(), daemon.key.clone());
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let (cert, base, key) = (cert.clone(), base.clone(), key.clone());
            scope.spawn(move || {
                let client = Client::new(&base, &key, &cert);
                for i in (worker..count).step_by(4) {
                    start_run(&client, scenario, &format!("seed-{i:05}"));
                }
            });
        }
    });
    eprintln!("seeded {count} runs in {:.1} s", started.elapsed().as_secs_f64());
}

/// Signs in through the form with `key`.
async fn sign_in(browser: &Browser, daemon: &Daemon, key: &str) {
    browser.open(&format!("{}/ui/", daemon.base)).await;
    let url = browser.client.current_url().await.unwrap();
    assert!(url.path().ends_with("/ui/sign-in"), "an anonymous visit lands on the sign-in page: {url}");
    browser.client.find(Locator::Css("#f-api_key")).await.unwrap().send_keys(key).await.unwrap();
    let submit = browser.client.find(Locator::Css("form.panel button[type=submit]")).await.unwrap();
    browser.click_and_load(submit).await;
}

async fn click_button(browser: &Browser, text: &str) {
    let buttons = browser.client.find_all(Locator::Css("button")).await.unwrap();
    for button in buttons {
        if button.text().await.unwrap().trim() == text {
            browser.click_and_load(button).await;
            return;
        }
    }
    panic!("no button {text:?} on {}", browser.client.current_url().await.unwrap());
}

/// The CSRF token of the page's sign-out form.
async fn csrf_of(browser: &Browser) -> String {
    browser.client.find(Locator::Css("input[name=csrf]")).await.unwrap().attr("value").await.unwrap().unwrap()
}

/// Forms that change state on the page, apart from sign-out.
async fn write_forms(browser: &Browser) -> usize {
    let forms = browser.client.find_all(Locator::Css("form[method=post]")).await.unwrap();
    let mut count = 0;
    for form in forms {
        if form.attr("action").await.unwrap().as_deref() != Some("/ui/sign-out") {
            count += 1;
        }
    }
    count
}

/// The middle value of `loads` (three of them).
fn median(loads: &[f64]) -> f64 {
    let mut sorted = loads.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

#[test]
fn walkthrough_over_ten_thousand_runs_in_a_real_browser() {
    // Seeding 10,000 runs goes faster than the default per-key rate limit allows.
    let config = dg_appliance::config::DEFAULT_CONFIG
        .replace("requests_per_second = 500\nburst = 1000", "requests_per_second = 100000\nburst = 100000")
        .replace("requests_per_second = 2000\nburst = 4000", "requests_per_second = 100000\nburst = 100000");
    assert!(config.matches("100000").count() == 4, "the default's rate limits moved");
    let daemon = Daemon::start_with(DaemonOptions { config: Some(config), ..DaemonOptions::default() });
    daemon.tool("scenario_define", json!({"spec": sample_spec("ui-bulk")})).unwrap();
    daemon.tool("scenario_define", json!({"spec": sample_spec("ui-target")})).unwrap();
    seed_runs(&daemon, "ui-bulk", 10_000);
    let client = Client::new(&daemon.base, &daemon.key, &daemon.data_dir().join("tls/cert.pem"));
    start_run(&client, "ui-target", "find-me");
    finish_run(&daemon, "ui-target", "find-me");
    start_run(&client, "ui-target", "still-waiting");
    let axe = crate::support::browser::axe_source();
    runtime().block_on(async {
        let browser = Browser::start(&daemon.data_dir().join("tls/cert.pem")).await;
        let mut timings: Vec<(String, Vec<f64>)> = Vec::new();
        let mut accessibility: Vec<(String, Vec<AxeViolation>)> = Vec::new();
        let mut console: Vec<String> = Vec::new();
        // Sign in with the keyboard alone: Tab to the skip link, Tab to the key field, type,
        // Enter. Each focused element shows its focus.
        browser.open(&format!("{}/ui/sign-in", daemon.base)).await;
        browser.press(Key::Tab).await;
        let (tag, _, text, visible) = browser.focused().await;
        assert_eq!((tag.as_str(), text.as_str(), visible), ("a", "Skip to content", true));
        browser.press(Key::Tab).await;
        let (tag, id, _, visible) = browser.focused().await;
        assert_eq!((tag.as_str(), id.as_str(), visible), ("input", "f-api_key", true));
        browser.client.active_element().await.unwrap().send_keys(&daemon.key).await.unwrap();
        browser.press(Key::Enter).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !browser.client.current_url().await.unwrap().path().ends_with("/ui/runs") {
            assert!(Instant::now() < deadline, "Enter did not sign in");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Every section is reachable by Tab, each with a visible focus.
        let mut reached = Vec::new();
        for _ in 0..12 {
            browser.press(Key::Tab).await;
            let (tag, _, text, visible) = browser.focused().await;
            assert!(visible, "{tag} {text:?} is focused without a visible outline");
            reached.push(text);
        }
        for (_, label) in
            [("", "Runs"), ("", "Scenarios"), ("", "Tenants"), ("", "API keys"), ("", "Audit"), ("", "Sign out")]
        {
            assert!(reached.iter().any(|t| t == label), "{label} is not reachable by Tab: {reached:?}");
        }
        let (value, secure, http_only, same_site) = browser.session_cookie().await.expect("a session cookie");
        assert_eq!(value.len(), 64);
        assert!(secure && http_only && same_site == "Strict", "cookie flags: {secure} {http_only} {same_site}");
        assert!(browser.main_text().await.contains("10002 runs"), "{}", browser.main_text().await);

        // Every main page: first view timed, axe-core, a screenshot.
        for (path, name) in [
            ("/ui/runs", "runs"),
            ("/ui/scenarios?tenant=2&namespace=3", "scenarios"),
            ("/ui/tenants", "tenants"),
            ("/ui/keys", "keys"),
            ("/ui/audit", "audit"),
            ("/ui/usage?tenant=2", "usage"),
            ("/ui/health", "health"),
            ("/ui/account", "account"),
            ("/ui/runs?scenario=ui-bulk&sort=run_id&order=asc&page=17", "runs-page-17"),
        ] {
            // Three loads: the median is the page's figure, so one stall of this shared
            // machine (other tests run beside this one) does not decide it; a page that is
            // slow every time still fails.
            let mut loads = Vec::new();
            for _ in 0..3 {
                loads.push(browser.open(&format!("{}{path}", daemon.base)).await);
            }
            timings.push((path.to_string(), loads));
            accessibility.push((path.to_string(), browser.axe_serious(&axe).await));
            browser.screenshot(name).await;
            console.extend(browser.console_errors().await.into_iter().map(|e| format!("{path}: {e}")));
        }
        assert!(browser.main_text().await.contains("seed-00800"), "page 17 sorted by run id starts at seed-00800");

        // Find a run by filter and open it.
        browser.open(&format!("{}/ui/runs", daemon.base)).await;
        browser.client.find(Locator::Css("#f-scenario")).await.unwrap().send_keys("ui-target").await.unwrap();
        browser.client.find(Locator::Css("#f-status option[value=completed]")).await.unwrap().click().await.unwrap();
        click_button(&browser, "Filter").await;
        let text = browser.main_text().await;
        assert!(text.contains("1 runs") && text.contains("find-me") && !text.contains("still-waiting"), "{text}");
        browser.click_and_load(browser.client.find(Locator::LinkText("find-me")).await.unwrap()).await;
        let text = browser.main_text().await;
        assert!(text.contains("Run find-me") && text.contains("completed"), "{text}");
        assert!(text.contains("Decisions") && text.contains("find-me-t0"), "the decision's trigger is listed: {text}");
        accessibility.push(("/ui/runs/2/3/find-me".into(), browser.axe_serious(&axe).await));
        browser.screenshot("run-detail").await;

        // Export, download the signed bundle, verify it offline.
        click_button(&browser, "Export runpack").await;
        assert!(browser.main_text().await.contains("Runpack exported"));
        browser.client.find(Locator::LinkText("Download the signed bundle")).await.unwrap().click().await.unwrap();
        let bundle = browser.wait_for_download();
        assert_eq!(bundle.file_name().unwrap(), "find-me.tar.zst");
        let verified = std::process::Command::new(binary())
            .args(["runpack", "verify"])
            .arg(&bundle)
            .arg("--pubkey")
            .arg(daemon.data_dir().join("keys/keyring.json"))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&verified.stdout);
        assert!(verified.status.success() && said.contains("VERIFIED"), "{said}");

        // Issue a key (the token shown once), use it, revoke it.
        browser.open(&format!("{}/ui/keys", daemon.base)).await;
        browser.client.find(Locator::Css("#f-label")).await.unwrap().send_keys("issued-in-the-ui").await.unwrap();
        browser.client.find(Locator::Css("#f-tenant_id")).await.unwrap().clear().await.unwrap();
        browser.client.find(Locator::Css("#f-tenant_id")).await.unwrap().send_keys("2").await.unwrap();
        browser.client.find(Locator::Css("#f-namespaces")).await.unwrap().send_keys("3").await.unwrap();
        click_button(&browser, "Issue key").await;
        let token = browser.client.find(Locator::Css("#new-token")).await.unwrap().text().await.unwrap();
        browser.screenshot("key-issued").await;
        accessibility.push(("key issued".into(), browser.axe_serious(&axe).await));
        let issued = Client::new(&daemon.base, token.trim(), &daemon.data_dir().join("tls/cert.pem"));
        let listed = issued.tool("scenarios_list", json!({"tenant_id": 2, "namespace_id": 3}));
        assert!(matches!(listed, Some(Ok(_))), "the issued key works: {listed:?}");
        let key_id = daemon
            .admin("key_list", json!({"tenant_id": 2}))
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["label"] == "issued-in-the-ui")
            .unwrap()["key_id"]
            .as_str()
            .unwrap()
            .to_string();
        browser.open(&format!("{}/ui/keys", daemon.base)).await;
        click_button(&browser, &format!("Revoke {key_id}")).await;
        assert!(browser.main_text().await.contains("Key revoked"));
        let refused = issued.tool("scenarios_list", json!({"tenant_id": 2, "namespace_id": 3}));
        assert!(matches!(&refused, Some(Err(e)) if e["code"] == -32001), "the revoked key is refused: {refused:?}");

        // Rotate a key with an overlap: the new token is shown once, the old one keeps
        // working for the overlap.
        let (old_id, old_token) = {
            let issued =
                daemon.admin("key_issue", json!({"role": "service", "tenant_id": 2, "label": "to-rotate"})).unwrap();
            (issued["key"]["key_id"].as_str().unwrap().to_string(), issued["token"].as_str().unwrap().to_string())
        };
        browser.open(&format!("{}/ui/keys", daemon.base)).await;
        click_button(&browser, &format!("Rotate {old_id}")).await;
        let new_token = browser.client.find(Locator::Css("#new-token")).await.unwrap().text().await.unwrap();
        assert_ne!(new_token.trim(), old_token);
        let cert = daemon.data_dir().join("tls/cert.pem");
        for token in [new_token.trim(), old_token.as_str()] {
            let works = Client::new(&daemon.base, token, &cert)
                .tool("scenarios_list", json!({"tenant_id": 2, "namespace_id": 3}));
            assert!(matches!(works, Some(Ok(_))), "both keys work during the overlap: {works:?}");
        }

        // Tenants and namespaces: create, suspend, delete a namespace.
        browser.open(&format!("{}/ui/tenants", daemon.base)).await;
        browser.client.find(Locator::Css("#f-namespace_id_2")).await.unwrap().send_keys("44").await.unwrap();
        browser.client.find(Locator::Css("#f-name_2")).await.unwrap().send_keys("made-in-the-ui").await.unwrap();
        let create = browser
            .client
            .find(Locator::XPath("//input[@id='f-namespace_id_2']/ancestor::form//button"))
            .await
            .unwrap();
        browser.click_and_load(create).await;
        assert!(browser.main_text().await.contains("Namespace created."));
        assert!(browser.main_text().await.contains("made-in-the-ui"));
        click_button(&browser, "Suspend namespace 44").await;
        assert!(browser.main_text().await.contains("Namespace status changed."));
        let listed = daemon.admin("namespace_list", json!({"tenant_id": 2})).unwrap();
        let ns44 = listed.as_array().unwrap().iter().find(|n| n["namespace_id"] == 44).unwrap().clone();
        assert_eq!(ns44["status"], "disabled", "{ns44}");
        click_button(&browser, "Delete namespace 44").await;
        assert!(browser.main_text().await.contains("Namespace deleted."));
        assert!(!browser.main_text().await.contains("made-in-the-ui"));
        // A namespace holding runs is not deleted: the page says why.
        console.extend(browser.console_errors().await);
        click_button(&browser, "Delete namespace 3").await;
        let text = browser.main_text().await;
        assert!(text.contains("Failed:"), "{text}");
        // That answer's status (400) is the console's one expected error.
        let refused = browser.console_errors().await;
        assert!(
            refused.len() == 1 && refused[0].contains("namespace_delete") && refused[0].contains("400"),
            "{refused:?}"
        );
        browser.screenshot("namespace-delete-refused").await;

        // Audit verify, and the sign-in is in the chain.
        browser.open(&format!("{}/ui/audit?action=ui_sign_in", daemon.base)).await;
        assert!(browser.main_text().await.contains("ui_sign_in"));
        browser.click_and_load(browser.client.find(Locator::LinkText("Verify the chain")).await.unwrap()).await;
        let verdict = browser.client.find(Locator::Css("#verdict")).await.unwrap().text().await.unwrap();
        assert!(verdict.starts_with("Verified"), "{verdict}");
        browser.screenshot("audit-verify").await;
        accessibility.push(("/ui/audit/verify".into(), browser.axe_serious(&axe).await));
        // The audit export downloaded from the UI verifies offline with the key ring alone.
        std::fs::remove_file(&bundle).unwrap();
        browser.open(&format!("{}/ui/audit", daemon.base)).await;
        browser.client.find(Locator::LinkText("Download the export (JSONL)")).await.unwrap().click().await.unwrap();
        let export = browser.wait_for_download();
        assert_eq!(export.file_name().unwrap(), "audit-export.jsonl");
        let verified = std::process::Command::new(binary())
            .args(["audit", "verify", "--export"])
            .arg(&export)
            .arg("--pubkey")
            .arg(daemon.data_dir().join("keys/keyring.json"))
            .output()
            .unwrap();
        assert!(
            verified.status.success(),
            "{}{}",
            String::from_utf8_lossy(&verified.stdout),
            String::from_utf8_lossy(&verified.stderr)
        );
        daemon
            .tool(
                "schemas_register",
                json!({"record": {"tenant_id": 2, "namespace_id": 3, "schema_id": "ui-shape", "version": "1",
                    "schema": {"type": "object"}, "description": "shown in the UI",
                    "created_at": {"kind": "unix_millis", "value": 1}}}),
            )
            .unwrap();
        browser.open(&format!("{}/ui/scenarios?tenant=2&namespace=3", daemon.base)).await;
        browser.click_and_load(browser.client.find(Locator::LinkText("ui-shape")).await.unwrap()).await;
        let shown = browser.client.find(Locator::Css("dd code")).await.unwrap().text().await.unwrap();
        let stored: String = rusqlite::Connection::open(daemon.data_dir().join("state.db"))
            .unwrap()
            .query_row("SELECT record_sha256 FROM data_shapes WHERE schema_id = 'ui-shape'", [], |row| row.get(0))
            .unwrap();
        assert_eq!(shown, stored, "the schema page shows the stored record's sha256");
        accessibility.push(("schema".into(), browser.axe_serious(&axe).await));
        browser.open(&format!("{}/ui/scenarios/2/3/ui-target", daemon.base)).await;
        assert!(browser.main_text().await.contains("Spec sha256"));
        accessibility.push(("/ui/scenarios/2/3/ui-target".into(), browser.axe_serious(&axe).await));
        browser.screenshot("scenario").await;
        console.extend(browser.console_errors().await);

        console.extend(browser.console_errors().await);
        // The accessibility check finds what it should: an unlabelled field put into a
        // page by hand is reported (so the empty results above mean something).
        browser.open(&format!("{}/ui/account", daemon.base)).await;
        browser
            .client
            .execute(
                "document.querySelector('main').insertAdjacentHTML('beforeend', '<input type=text>'); return 1;",
                vec![],
            )
            .await
            .unwrap();
        let found = browser.axe_serious(&axe).await;
        assert!(found.iter().any(|(id, ..)| id == "label"), "axe-core reports an unlabelled field: {found:?}");

        // A narrow window.
        browser.client.set_window_size(400, 800).await.unwrap();
        browser.open(&format!("{}/ui/runs", daemon.base)).await;
        accessibility.push(("/ui/runs (400 px wide)".into(), browser.axe_serious(&axe).await));
        browser.screenshot("runs-narrow").await;
        browser.client.set_window_size(1280, 800).await.unwrap();

        // Sign out: the old cookie is refused from then on.
        click_button(&browser, "Sign out").await;
        assert!(browser.client.current_url().await.unwrap().path().ends_with("/ui/sign-in"));
        let agent = raw_agent(&daemon);
        let cookie = format!("__Host-dg_session={value}");
        let (status, headers, _) =
            raw(&agent, "GET", &format!("{}/ui/runs", daemon.base), &[("cookie", &cookie)], None);
        assert_eq!((status, header(&headers, "location")), (303, Some("/ui/sign-in")));
        assert!(!browser.dialog_open().await, "no script ran");
        browser.stop().await;

        // Printed, and kept in target/ui-first-view.txt for the suite's log (a passing
        // test's output is captured).
        let mut table =
            String::from("admin UI first view with 10,002 runs in the store (ms, as the browser measured it; median of three loads, then each load):\n");
        for (path, loads) in &timings {
            let each: Vec<String> = loads.iter().map(|ms| format!("{ms:.1}")).collect();
            table.push_str(&format!("  {:>7.1}  {path}  ({})\n", median(loads), each.join(", ")));
        }
        eprint!("{table}");
        let binary_name = binary().display().to_string();
        let report = crate::support::browser::screenshot_dir().join("../ui-first-view.txt");
        std::fs::write(report, format!("{table}  (binary: {binary_name})\n")).unwrap();
        for (path, loads) in &timings {
            let ms = median(loads);
            assert!(ms < 300.0, "{path} took {ms:.1} ms to its first view (median of {loads:?})");
        }
        for (path, violations) in &accessibility {
            assert!(violations.is_empty(), "axe-core: serious or critical violations on {path}: {violations:?}");
        }
        assert!(console.is_empty(), "the browser console reported errors: {console:#?}");
    });
    assert_eq!(daemon.metric("dg_ui_csp_reports_total"), Some(0.0), "the browser reported no CSP violation");
}

#[test]
fn an_auditor_reads_only_and_a_service_key_cannot_sign_in() {
    let daemon = Daemon::start();
    daemon.tool("scenario_define", json!({"spec": sample_spec("ui-roles")})).unwrap();
    let client = Client::new(&daemon.base, &daemon.key, &daemon.data_dir().join("tls/cert.pem"));
    start_run(&client, "ui-roles", "r1");
    let issue = |role: &str| {
        let issued =
            daemon.admin("key_issue", json!({"role": role, "tenant_id": 2, "label": format!("{role}-ui")})).unwrap();
        (issued["key"]["key_id"].as_str().unwrap().to_string(), issued["token"].as_str().unwrap().to_string())
    };
    let (auditor_id, auditor) = issue("auditor");
    let (service_id, service) = issue("service");
    let axe = crate::support::browser::axe_source();
    runtime().block_on(async {
        let browser = Browser::start(&daemon.data_dir().join("tls/cert.pem")).await;
        // A service key is refused.
        sign_in(&browser, &daemon, &service).await;
        assert!(browser.client.current_url().await.unwrap().path().ends_with("/ui/sign-in"));
        assert!(browser.main_text().await.contains("Service keys are for programs"), "{}", browser.main_text().await);
        assert!(browser.session_cookie().await.is_none());
        browser.screenshot("sign-in-refused").await;
        assert!(browser.axe_serious(&axe).await.is_empty());

        // The auditor reads every page and finds no write control.
        sign_in(&browser, &daemon, &auditor).await;
        assert!(browser.client.current_url().await.unwrap().path().ends_with("/ui/runs"));
        for path in [
            "/ui/runs",
            "/ui/runs/2/3/r1",
            "/ui/tenants",
            "/ui/keys",
            "/ui/audit",
            "/ui/scenarios?tenant=2&namespace=3",
        ] {
            browser.open(&format!("{}{path}", daemon.base)).await;
            let text = browser.main_text().await;
            assert_eq!(write_forms(&browser).await, 0, "{path} shows a write control to an auditor: {text}");
            assert!(!text.contains("Failed:"), "{path}: {text}");
        }
        browser.open(&format!("{}/ui/runs/2/3/r1", daemon.base)).await;
        assert!(browser.main_text().await.contains("Download the signed bundle"), "auditors download runpacks");
        // A forged write with the auditor's session and a valid CSRF token: refused by the
        // request path's policy, 403, and audited.
        let csrf = csrf_of(&browser).await;
        let (cookie, ..) = browser.session_cookie().await.unwrap();
        let agent = raw_agent(&daemon);
        let form = format!("csrf={csrf}&role=service&tenant_id=2&label=forged");
        let (status, _, body) = raw(
            &agent,
            "POST",
            &format!("{}/ui/keys/issue", daemon.base),
            &[
                ("cookie", &format!("__Host-dg_session={cookie}")),
                ("origin", &daemon.base),
                ("sec-fetch-site", "same-origin"),
            ],
            Some(&form),
        );
        assert_eq!(status, 403, "{body}");
        let (status, _, _) = raw(
            &agent,
            "POST",
            &format!("{}/ui/runs/2/3/r1/export", daemon.base),
            &[("cookie", &format!("__Host-dg_session={cookie}"))],
            Some(&format!("csrf={csrf}&scenario_id=ui-roles")),
        );
        assert_eq!(status, 403);
        browser.stop().await;
    });
    let denied = daemon.admin("audit_list", json!({"principal": auditor_id, "outcome": "deny"})).unwrap();
    let denied: Vec<&Value> = denied["entries"].as_array().unwrap().iter().collect();
    assert!(
        denied.iter().any(|e| e["target"].as_str().unwrap_or("").contains("key_issue")
            || e["reason"].as_str().unwrap_or("").contains("key_issue")),
        "the forged key_issue is audited as denied: {denied:?}"
    );
    assert!(
        denied.iter().any(|e| e["reason"].as_str().unwrap_or("").contains("runpack_export")),
        "the forged export is audited as denied: {denied:?}"
    );
    let refused = daemon.admin("audit_list", json!({"principal": service_id, "action": "ui_sign_in"})).unwrap();
    assert_eq!(refused["entries"][0]["outcome"], "deny", "{refused}");
    let signed_in = daemon.admin("audit_list", json!({"principal": auditor_id, "action": "ui_sign_in"})).unwrap();
    assert_eq!(signed_in["entries"][0]["outcome"], "ok", "{signed_in}");
}

#[test]
fn hostile_ids_render_as_text_and_forged_requests_are_refused() {
    let daemon = Daemon::start();
    let mut spec = sample_spec(HOSTILE_SCENARIO);
    spec["stages"][0]["stage_id"] = json!("<svg onload=alert(4)>");
    spec["stages"][0]["advance_to"] = json!({"kind": "fixed", "stage_id": "done"});
    let defined = daemon.tool("scenario_define", json!({"spec": spec}));
    let spec = if defined.is_ok() { spec } else { sample_spec(HOSTILE_SCENARIO) };
    if defined.is_err() {
        daemon.tool("scenario_define", json!({"spec": spec})).unwrap();
    }
    let client = Client::new(&daemon.base, &daemon.key, &daemon.data_dir().join("tls/cert.pem"));
    let hostile_run = "r\"><img src=x onerror=alert(3)>";
    start_run(&client, HOSTILE_SCENARIO, hostile_run);
    daemon
        .admin("key_issue", json!({"role": "service", "tenant_id": 2, "label": "<script>alert(5)</script>"}))
        .unwrap();
    let agent = raw_agent(&daemon);

    // The cookie's prefix and flags as the server sets them.
    let (status, headers, _) = raw(
        &agent,
        "POST",
        &format!("{}/ui/sign-in", daemon.base),
        &[("origin", &daemon.base)],
        Some(&format!("api_key={}", daemon.key)),
    );
    assert_eq!(status, 303);
    let set_cookie = header(&headers, "set-cookie").unwrap().to_string();
    assert!(set_cookie.starts_with("__Host-dg_session="), "{set_cookie}");
    for flag in ["; Path=/", "; Secure", "; HttpOnly", "; SameSite=Strict"] {
        assert!(set_cookie.contains(flag), "{set_cookie} lacks {flag}");
    }
    assert!(!set_cookie.contains("Domain="), "{set_cookie}");
    let session = set_cookie.split(';').next().unwrap().to_string();
    // A sign-in posted from another site is refused.
    let (status, _, _) = raw(
        &agent,
        "POST",
        &format!("{}/ui/sign-in", daemon.base),
        &[("origin", "https://evil.example")],
        Some(&format!("api_key={}", daemon.key)),
    );
    assert_eq!(status, 403);

    // The CSP and the other headers on every answer, signed in or not.
    let pages = [
        "/ui/sign-in",
        "/ui/runs",
        "/ui/tenants",
        "/ui/keys",
        "/ui/audit",
        "/ui/usage",
        "/ui/health",
        "/ui/account",
        "/ui/scenarios",
        "/ui/nowhere",
        "/ui/assets/ui.css",
    ];
    for path in pages {
        let (status, headers, _) = raw(&agent, "GET", &format!("{}{path}", daemon.base), &[("cookie", &session)], None);
        let csp = header(&headers, "content-security-policy").unwrap_or_else(|| panic!("{path}: no CSP"));
        for directive in ["default-src 'self'", "script-src 'none'", "frame-ancestors 'none'", "style-src 'self'"] {
            assert!(csp.contains(directive), "{path} ({status}): {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(header(&headers, "referrer-policy"), Some("no-referrer"), "{path}");
    }

    // State-changing requests: the CSRF token and the origin are both checked.
    let (_, _, page) = raw(&agent, "GET", &format!("{}/ui/keys", daemon.base), &[("cookie", &session)], None);
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let url = format!("{}/ui/tenants/namespace_create", daemon.base);
    let good = format!("csrf={csrf}&tenant_id=2&namespace_id_2=77&name_2=made-here");
    let wrong = good.replace(&csrf, &"0".repeat(64));
    let missing = "tenant_id=2&namespace_id_2=78&name_2=x".to_string();
    let before = daemon.metric("dg_ui_csrf_refused_total").unwrap();
    for (headers, form, why) in [
        (vec![("cookie", session.as_str())], missing.as_str(), "no token"),
        (vec![("cookie", session.as_str())], wrong.as_str(), "a wrong token"),
        (vec![("cookie", session.as_str()), ("origin", "https://evil.example")], good.as_str(), "another origin"),
        (vec![("cookie", session.as_str()), ("sec-fetch-site", "cross-site")], good.as_str(), "a cross-site fetch"),
        (vec![("cookie", session.as_str()), ("origin", "null")], good.as_str(), "an opaque origin"),
        (vec![], good.as_str(), "no session"),
    ] {
        let (status, _, body) = raw(&agent, "POST", &url, &headers, Some(form));
        assert!(status == 403 || (why == "no session" && status == 401), "{why}: {status} {body}");
    }
    assert_eq!(daemon.metric("dg_ui_csrf_refused_total").unwrap() - before, 5.0);
    let namespaces = daemon.admin("namespace_list", json!({"tenant_id": 2})).unwrap();
    assert!(!namespaces.to_string().contains("made-here"), "nothing refused was done");
    let (status, _, _) = raw(&agent, "POST", &url, &[("cookie", &session), ("origin", &daemon.base)], Some(&good));
    assert_eq!(status, 303, "the same request with its token and origin goes through");
    assert!(daemon.admin("namespace_list", json!({"tenant_id": 2})).unwrap().to_string().contains("made-here"));
    let csrf_audit = daemon.admin("audit_list", json!({"action": "ui_csrf"})).unwrap();
    assert_eq!(csrf_audit["entries"].as_array().unwrap().len(), 5, "{csrf_audit}");

    // In the browser: markup in ids is text, no script runs, no CSP violation.
    runtime().block_on(async {
        let browser = Browser::start(&daemon.data_dir().join("tls/cert.pem")).await;
        sign_in(&browser, &daemon, &daemon.key).await;
        let encoded: String = hostile_run.bytes().map(|b| format!("%{b:02X}")).collect();
        let scenario_encoded: String = HOSTILE_SCENARIO.bytes().map(|b| format!("%{b:02X}")).collect();
        for (path, shown) in [
            ("/ui/runs".to_string(), "<script>alert(1)</script>"),
            (format!("/ui/runs/2/3/{encoded}"), "onerror=alert(3)"),
            (format!("/ui/scenarios/2/3/{scenario_encoded}"), "<script>alert(1)</script>"),
            ("/ui/scenarios?tenant=2&namespace=3".to_string(), "<script>alert(1)</script>"),
            ("/ui/keys".to_string(), "<script>alert(5)</script>"),
            (format!("/ui/runs?scenario={scenario_encoded}"), "<script>alert(1)</script>"),
            ("/ui/audit?principal=%22%3E%3Cscript%3Ealert(6)%3C%2Fscript%3E".to_string(), ""),
        ] {
            browser.open(&format!("{}{path}", daemon.base)).await;
            assert!(!browser.dialog_open().await, "a script ran on {path}");
            let text = browser.main_text().await;
            assert!(text.contains(shown), "{path} shows the hostile text as text: {text}");
            let scripts = browser.client.find_all(Locator::Css("script")).await.unwrap().len();
            let images = browser.client.find_all(Locator::Css("main img, main svg")).await.unwrap().len();
            assert_eq!((scripts, images), (0, 0), "{path}: markup from an id became elements");
        }
        let reflected = browser.client.find(Locator::Css("#f-principal")).await.unwrap().prop("value").await.unwrap();
        assert_eq!(reflected.as_deref(), Some("\"><script>alert(6)</script>"), "a filter is reflected as a value");
        browser.screenshot("hostile-ids").await;
        assert_eq!(daemon.metric("dg_ui_csp_reports_total"), Some(0.0));
        let console = browser.console_errors().await;
        assert!(console.is_empty(), "the browser console reported errors: {console:#?}");
        // The report channel works: an inline script put into the page by hand is blocked
        // and reported (so the zero above means something).
        browser
            .client
            .execute(
                "const s = document.createElement('script'); s.textContent = 'window.ran = 1'; document.body.appendChild(s); return 1;",
                vec![],
            )
            .await
            .unwrap();
        let ran = browser.client.execute("return window.ran === 1;", vec![]).await.unwrap();
        assert_eq!(ran, json!(false), "the CSP blocked the inline script");
        let deadline = Instant::now() + Duration::from_secs(10);
        while daemon.metric("dg_ui_csp_reports_total") == Some(0.0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(daemon.metric("dg_ui_csp_reports_total").unwrap() >= 1.0, "the browser reports violations");
        let console = browser.console_errors().await;
        assert!(console.iter().any(|e| e.contains("Content Security Policy")), "and logs them: {console:?}");
        // After sign-out the old cookie is refused.
        let (value, ..) = browser.session_cookie().await.unwrap();
        click_button(&browser, "Sign out").await;
        let cookie = format!("__Host-dg_session={value}");
        let (status, _, _) = raw(&agent, "GET", &format!("{}/ui/keys", daemon.base), &[("cookie", &cookie)], None);
        assert_eq!(status, 303);
        let (_, _, page) = raw(&agent, "GET", &format!("{}/ui/keys", daemon.base), &[("cookie", &session)], None);
        let csrf = page.split("name=\"csrf\" value=\"").nth(1).map(|s| s.split('"').next().unwrap().to_string());
        let (status, _, _) = raw(
            &agent,
            "POST",
            &format!("{}/ui/sign-out", daemon.base),
            &[("cookie", &cookie)],
            Some(&format!("csrf={}", csrf.unwrap_or_default())),
        );
        assert_eq!(status, 401, "a POST with the ended session is refused");
        browser.stop().await;
    });
    let text = daemon.get_authed("/metrics").1;
    assert!(metric_value(&text, "dg_ui_sign_ins_total{outcome=\"ok\"}").unwrap() >= 2.0);
    // Guessing keys in the sign-in form is throttled like guessing them at the API.
    let statuses: Vec<u16> = (0..25)
        .map(|i| {
            let form = format!("api_key=dgk_{i:032}");
            raw(&agent, "POST", &format!("{}/ui/sign-in", daemon.base), &[("origin", &daemon.base)], Some(&form)).0
        })
        .collect();
    assert_eq!(statuses[0], 401, "{statuses:?}");
    assert_eq!(statuses[24], 429, "{statuses:?}");
    let (status, _, _) = raw(
        &agent,
        "POST",
        &format!("{}/ui/sign-in", daemon.base),
        &[("origin", &daemon.base)],
        Some(&format!("api_key={}", daemon.key)),
    );
    assert_eq!(status, 303, "a valid key from the same address still signs in");
}
