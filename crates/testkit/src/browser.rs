//! Headless Chromium (Debian's `chromium`) driven by ChromeDriver (`chromium-driver`) over the
//! W3C WebDriver HTTP API: no browser download, no extra crate. One browser per test, with a
//! fresh profile; the driver is killed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// Flags for Chromium on a closed, headless machine (no background connections to Google).
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1440,900",
];

/// `web/davpush.js`, for pages that are not served by the gateway ([`Browser::import_davpush_js`]).
pub const DAVPUSH_JS: &str = include_str!("../../../web/davpush.js");
/// `web/webpush.js`, which `davpush.js` imports.
pub const WEBPUSH_JS: &str = include_str!("../../../web/webpush.js");

/// Loads the two modules as `blob:` URLs (the first with its import pointed at the second).
const IMPORT_DAVPUSH: &str = r#"
const blob = (src) => URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
const webpush = blob(arguments[1]);
const main = blob(arguments[0].replaceAll('"./webpush.js"', JSON.stringify(webpush)));
return import(main).then((m) => { window.davpush = m; return true; });
"#;

/// A browser session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    profile: std::path::PathBuf,
}

fn installed(name: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success())
}

/// The Chromium binary, if installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| installed(c))
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium session. If they are not installed the test
    /// fails, or is skipped (`None`) when skipping was chosen ([`crate::require`]).
    pub async fn start() -> Option<Browser> {
        Browser::start_with_args(&[]).await
    }

    /// [`Browser::start`] with Chromium flags of the test's own besides [`CHROMIUM_ARGS`]
    /// (e.g. `--ignore-certificate-errors-spki-list=…` to trust a test certificate).
    pub async fn start_with_args(extra: &[String]) -> Option<Browser> {
        let bin = chromium();
        if bin.is_none() || !installed("chromedriver") {
            crate::require::missing(
                "chromium and chromedriver are not installed",
                "apt-get install chromium chromium-driver",
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "chromedriver did not start within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = std::env::temp_dir().join(format!("davpush-chromium-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra.iter().cloned());
        let binary = Command::new("sh")
            .args(["-c", &format!("command -v {}", bin.expect("checked"))])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .expect("path of chromium");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": binary, "args": args}
        }}});
        let mut b = Browser { driver, base, session: String::new(), http, profile };
        let v = b.call(reqwest::Method::POST, "/session", Some(caps)).await;
        b.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {v}")).to_owned();
        Some(b)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).timeout(Duration::from_secs(60));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("WebDriver request");
        let status = resp.status();
        let v: Value = resp.json().await.expect("WebDriver JSON");
        assert!(status.is_success(), "WebDriver {path}: {status} {v}");
        v["value"].clone()
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, &self.path("/url"), Some(json!({"url": url}))).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; returns its value.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.call(reqwest::Method::POST, &self.path("/execute/sync"), Some(json!({"script": script, "args": args})))
            .await
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let v = self.call(reqwest::Method::GET, &self.path("/screenshot"), None).await;
        base64::engine::general_purpose::STANDARD.decode(v.as_str().expect("base64 PNG")).expect("base64")
    }

    /// Imports `davpush.js` (as it is in the repository) into the current page as
    /// `window.davpush`, for pages of an origin that does not serve it (the Director's, a
    /// WebDAV server's). The page must allow `blob:` scripts (no Content-Security-Policy).
    pub async fn import_davpush_js(&self) {
        let ok = self.eval(IMPORT_DAVPUSH, json!([DAVPUSH_JS, WEBPUSH_JS])).await;
        assert_eq!(ok, true, "davpush.js imported");
    }

    /// Waits until `script` returns `true`, polling every 20 ms for at most `within`; panics
    /// naming `what`. Returns how long it took.
    pub async fn wait_for(&self, what: &str, script: &str, within: Duration) -> Duration {
        let start = tokio::time::Instant::now();
        loop {
            if self.eval(script, json!([])).await == true {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "not within {within:?}: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs a Chrome DevTools Protocol command (ChromeDriver's `goog/cdp/execute`).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.call(reqwest::Method::POST, &self.path("/goog/cdp/execute"), Some(json!({"cmd": cmd, "params": params})))
            .await
    }

    /// Emulates a phone's screen of `width` x `height` CSS pixels (mobile layout: the page's
    /// `<meta name="viewport">` applies) for the pages loaded from now on.
    pub async fn phone_viewport(&self, width: u32, height: u32) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 2, "mobile": true}),
        )
        .await;
    }

    /// Runs `source` in every document loaded from now on, before the page's own scripts (and
    /// not subject to its Content-Security-Policy).
    pub async fn on_new_document(&self, source: &str) {
        self.cdp("Page.addScriptToEvaluateOnNewDocument", json!({"source": source})).await;
    }

    /// The browser console's messages since the last call, as `"LEVEL message"` lines
    /// (ChromeDriver's log endpoint; it keeps warnings and errors).
    pub async fn console(&self) -> Vec<String> {
        let v = self.call(reqwest::Method::POST, &self.path("/se/log"), Some(json!({"type": "browser"}))).await;
        v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("{} {}", e["level"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends the session (closes Chromium).
    pub async fn quit(mut self) {
        if !self.session.is_empty() {
            let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send().await;
            self.session.clear();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A test that panicked did not `quit`: end the Chromium processes of this session's
        // profile, each by its id.
        let profile = self.profile.display().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&profile) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
