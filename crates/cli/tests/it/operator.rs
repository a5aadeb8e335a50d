//! Issue 12 (what a first-time operator trips on), items 3, 7, 8 and 10, with the real binary:
//! davpush's own variables in one environment, errors and exit codes, plain logs when stderr is
//! not a terminal, each subcommand's options, the database's mode, the gateway's log lines.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_davpush");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// `davpush args` with exactly the `DAVPUSH_*` variables of `env` (none of the caller's).
pub(crate) fn command(args: &[&str], env: &BTreeMap<String, String>) -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DAVPUSH_")) {
        c.env_remove(k);
    }
    c.env_remove("RUST_LOG").env_remove("NO_COLOR").envs(env).args(args).stdin(Stdio::null());
    c
}

pub(crate) fn run(args: &[&str], env: &BTreeMap<String, String>) -> Output {
    command(args, env).output().unwrap()
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A server subcommand running, its stderr collected line by line.
pub(crate) struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    new_line: Receiver<()>,
}

impl Running {
    pub(crate) fn start(mut c: Command) -> Running {
        let mut child = c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, new_line) = std::sync::mpsc::channel();
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                collected.lock().unwrap().push(line);
                let _ = tx.send(());
            }
        });
        Running { child, lines, new_line }
    }

    /// The first line containing `needle`; panics with the log if the process ends first (or
    /// after a minute, so that a broken build cannot hang the suite).
    pub(crate) fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            match self.new_line.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(()) => {}
                Err(RecvTimeoutError::Disconnected | RecvTimeoutError::Timeout) => {
                    panic!("no line with {needle:?}; log:\n{}", self.log())
                }
            }
        }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// SIGTERM, then the whole log once the process has ended, and its exit status.
    pub(crate) fn terminate(mut self) -> (String, std::process::ExitStatus) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        // The reader ends at EOF.
        while self.new_line.recv_timeout(Duration::from_secs(10)).is_ok() {}
        (self.log(), status)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `DAVPUSH_*` name the README, docs/, examples/, the CLI's and the test kit's sources and
/// `.ci/run` mention, and the Director's list of variables that are not keys.
fn documented_variables() -> Vec<String> {
    let mut files: Vec<PathBuf> = vec![Path::new(ROOT).join("README.md"), Path::new(ROOT).join(".ci/run")];
    for dir in ["docs", "examples", "crates/cli/src", "crates/testkit/src"] {
        for e in std::fs::read_dir(Path::new(ROOT).join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "md" || x == "toml" || x == "rs") || p.ends_with("run") {
                files.push(p);
            }
        }
    }
    let mut names: std::collections::BTreeSet<String> =
        davpush_director::config::OTHER_VARIABLES.iter().map(|v| v.to_string()).collect();
    for f in files {
        let t = std::fs::read_to_string(&f).unwrap();
        let mut rest = t.as_str();
        while let Some(i) = rest.find("DAVPUSH_") {
            let name: String =
                rest[i..].chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
            rest = &rest[i + name.len()..];
            // `DAVPUSH_<SECTION>__<KEY>` spelt out as a pattern, and Rust constants.
            if name.ends_with('_') || name == "DAVPUSH_JS" {
                continue;
            }
            names.insert(name);
        }
    }
    names.into_iter().collect()
}

/// The value of each documented variable in the shared environment of the test.
fn value_of(name: &str, dir: &Path) -> String {
    let path = |p: &str| dir.join(p).display().to_string();
    match name {
        "DAVPUSH_CONFIG" => path("davpush.toml"),
        "DAVPUSH_GATEWAY_CONFIG" => path("gateway.toml"),
        "DAVPUSH_RELAY_CONFIG" => format!("{ROOT}/examples/relay.toml"),
        "DAVPUSH_USER" => "alice".into(),
        "DAVPUSH_TOKEN" | "DAVPUSH_SYNC_TOKEN" | "DAVPUSH_PASSWORD" => "a-value-0123456789abcdef".into(),
        "DAVPUSH_TOKEN_FILE" | "DAVPUSH_PASSWORD_FILE" => path("secret"),
        "DAVPUSH_COLLECTIONS" | "DAVPUSH_COLLECTION" => "http://127.0.0.1:5232/alice/cal/".into(),
        "DAVPUSH_PYTHON" => "python3".into(),
        "DAVPUSH_CI_CACHE" => path("ci"),
        "DAVPUSH_ALLOW_SKIP" => "1".into(),
        "DAVPUSH_SKIP_LOG" => path("skipped.log"),
        "DAVPUSH_FUZZ_SECONDS" => "0".into(),
        "DAVPUSH_LOG" => "info".into(),
        "DAVPUSH_WRITE_SCREENSHOT" => path("screenshot.png"),
        // The Director's keys the docs give as examples.
        "DAVPUSH_SERVER__LISTEN" => "127.0.0.1:0".into(),
        "DAVPUSH_NOTIFY__TOKENS" => r#"["token-of-app-server-1"]"#.into(),
        "DAVPUSH_FCM__WORKERS" => "64".into(),
        "DAVPUSH_SUBSCRIPTION__AUTH" => "token".into(),
        "DAVPUSH_SUBSCRIPTION__GRANTS" => "required".into(),
        "DAVPUSH_WEBSOCKET__QUEUE_FRAMES" => "256".into(),
        // The gateway's keys the docs give as examples.
        "DAVPUSH_GATEWAY__UPSTREAM" => "http://127.0.0.1:9/".into(),
        "DAVPUSH_GATEWAY__TIMEOUT_SECS" => "30".into(),
        n if n.starts_with("DAVPUSH_TEST_") => "unused-by-davpush".into(),
        other => panic!("{other} is documented: give it a value in this test"),
    }
}

/// Item 3: a systemd `EnvironmentFile` or a shell holding every variable davpush documents
/// breaks none of its subcommands.
#[test]
fn issue_12_every_documented_variable_works_in_one_environment_with_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(dir.path().join("davpush.toml"), format!("[server]\ndata_dir = {:?}\n", data.display().to_string()))
        .unwrap();
    std::fs::write(
        dir.path().join("gateway.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:9/\"\ndata_dir = {:?}\nnotify_token_file = {:?}\n",
            data.display().to_string(),
            dir.path().join("secret").display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("secret"), "a-value-0123456789abcdef\n").unwrap();
    let names = documented_variables();
    for must in ["DAVPUSH_TOKEN", "DAVPUSH_USER", "DAVPUSH_GATEWAY_CONFIG", "DAVPUSH_RELAY_CONFIG", "DAVPUSH_PYTHON"] {
        assert!(names.iter().any(|n| n == must), "{must} not found in the docs: {names:?}");
    }
    let env: BTreeMap<String, String> = names.iter().map(|n| (n.clone(), value_of(n, dir.path()))).collect();

    let dump = run(&["serve", "--dump-config"], &env);
    assert!(dump.status.success(), "serve --dump-config: {}", text(&dump.stderr));
    assert!(text(&dump.stdout).contains("queue_frames = 256"), "{}", text(&dump.stdout));
    let vapid = run(&["vapid"], &env);
    assert!(vapid.status.success(), "vapid: {}", text(&vapid.stderr));
    // (After `vapid`, which makes the Director's secrets the gateway reads.)
    let dump = run(&["gateway", "--dump-config"], &env);
    assert!(dump.status.success(), "gateway --dump-config: {}", text(&dump.stderr));
    assert!(text(&dump.stdout).contains("timeout_secs = 30"), "{}", text(&dump.stdout));

    let director = Running::start(command(&["serve"], &env));
    director.wait_for("Push Director listening");
    let gateway = Running::start(command(&["gateway"], &env));
    gateway.wait_for("WebDAV gateway listening");
    // (`topic` after the gateway, which makes the topic secret.)
    for args in
        [&["grant", "cal-1"][..], &["topic", "/alice/cal/"], &["relay", "list-keys", "--keys-file", "/nonexistent"]]
    {
        let out = run(args, &env);
        let err = text(&out.stderr);
        assert!(!err.contains("DAVPUSH_<SECTION>__<KEY>") && !err.contains("environment variable"), "{args:?}: {err}");
        if args[0] != "relay" {
            assert!(out.status.success(), "{args:?}: {err}");
        }
    }
    for (name, server) in [("serve", director), ("gateway", gateway)] {
        let (log, status) = server.terminate();
        assert!(status.success(), "{name}: {log}");
        // Item 10: both say that they stopped; item 8: no colour into a pipe.
        assert!(log.lines().any(|l| l.contains("stopped")), "{name}: {log}");
        assert!(!log.contains('\u{1b}'), "{name} wrote ANSI escapes into a pipe: {log:?}");
    }
}

/// Item 3: a misspelt key still fails, and says which variable it was.
#[test]
fn issue_12_a_misspelt_or_bad_variable_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    for (name, value) in [
        ("DAVPUSH_SERVER__LISTN", "127.0.0.1:0"),
        ("DAVPUSH_SERVER_LISTEN", "127.0.0.1:0"),
        ("DAVPUSH_WEBSOCKET__QUEUE_FRAMES", "lots"),
        ("DAVPUSH_WEBSOCKET__QUEUE_FRAMES", "0"),
    ] {
        let env = BTreeMap::from([(name.to_owned(), value.to_owned())]);
        let out = run(&["vapid", "--data-dir", &data], &env);
        assert_eq!(out.status.code(), Some(64), "{name}={value}");
        assert!(text(&out.stderr).contains(name), "{name}={value}: {}", text(&out.stderr));
    }
}

fn config_file(dir: &Path, body: &str) -> String {
    let p = dir.join("davpush.toml");
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

/// Item 7: a data directory davpush cannot make or write is exit 73 (EX_CANTCREAT) with a
/// message that says why, not "invalid config" and 64.
#[test]
fn issue_12_a_data_dir_that_cannot_be_created_is_exit_73_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let none = BTreeMap::new();
    for (data, expect) in [(file.clone(), "is a file, not a directory"), (file.join("data"), "not a directory")] {
        let out = run(&["vapid", "--data-dir", &data.display().to_string()], &none);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(73), "{}: {err}", data.display());
        assert!(err.contains(expect) && err.contains("server.data_dir") && err.contains("--data-dir"), "{err}");
        assert!(!err.contains("invalid config"), "{err}");
    }
}

/// Item 7: permission denied, as a user who may not write there. Root may write anywhere, so
/// the binary runs as `nobody` (through `setpriv`) when the tests run as root.
#[test]
fn issue_12_a_data_dir_without_permission_is_exit_73_and_says_so() {
    let root = Command::new("id").arg("-u").output().map(|o| text(&o.stdout).trim() == "0").unwrap_or(false);
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    if !(root && setpriv) {
        // Fails, or is skipped when skipping was chosen (never in CI, which runs as root).
        davpush_testkit::require::missing(
            "root and setpriv, to run davpush as another user",
            "run the tests as root; setpriv is in util-linux",
        );
        return;
    }
    // A directory of root's, 0755: nobody may enter it but not create anything in it.
    let dir = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    for data in [dir.path().join("data"), existing] {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", BIN, "vapid", "--data-dir"]).arg(&data);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DAVPUSH_")) {
            c.env_remove(k);
        }
        let out = c.current_dir("/").output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(73), "{}: {err}", data.display());
        assert!(err.contains("ermission denied") && err.contains("the user davpush runs as"), "{err}");
        assert!(std::fs::read_dir(&data).map_or(0, |d| d.count()) == 0, "nothing was created");
    }
}

/// Item 7: `--dump-config` validates; a `listen` with a host name is resolved.
#[test]
fn issue_12_dump_config_validates_and_localhost_is_a_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let none = BTreeMap::new();
    let cfg = config_file(dir.path(), &format!("[server]\ndata_dir = {data:?}\n[websocket]\nqueue_frames = 0\n"));
    let out = run(&["serve", "--dump-config", "--config", &cfg], &none);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("websocket.queue_frames"), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "an invalid configuration is not printed");

    let out = run(&["serve", "--dump-config", "--listen", "localhost:8080", "--data-dir", &data], &none);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["serve", "--dump-config", "--listen", "no-such-host.invalid:8080", "--data-dir", &data], &none);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("server.listen"), "{}", text(&out.stderr));

    let director = Running::start(command(&["serve", "--listen", "localhost:0", "--data-dir", &data], &none));
    let line = director.wait_for("Push Director listening");
    assert!(line.contains("127.0.0.1:"), "{line}");
    // Item 10: the database holds Web Push keys and endpoints: owner only, like the secrets.
    use std::os::unix::fs::PermissionsExt;
    for f in ["davpush.sqlite", "davpush.sqlite-wal", "davpush.sqlite-shm"] {
        let p = Path::new(&data).join(f);
        if f == "davpush.sqlite" || p.exists() {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }
}

/// Item 7: a start that fails leaves no new secret behind; the next one announces every secret
/// it generates.
#[test]
fn issue_12_a_failed_start_generates_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let none = BTreeMap::new();
    let d = data.display().to_string();
    let bad = config_file(
        dir.path(),
        &format!("[server]\ndata_dir = {d:?}\n[subscription]\ntoken_files = [\"/nonexistent/token\"]\n"),
    );
    let out = run(&["vapid", "--config", &bad], &none);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("/nonexistent/token"), "{}", text(&out.stderr));
    let secrets: Vec<_> =
        std::fs::read_dir(&data).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
    assert!(secrets.is_empty(), "a failed start left {secrets:?}");

    let good = config_file(dir.path(), &format!("[server]\ndata_dir = {d:?}\n"));
    let out = run(&["vapid", "--config", &good], &none);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    for key in ["notify.tokens", "subscription.tokens", "subscription.grant_key_file", "web_push.vapid_key_file"] {
        assert!(err.contains(&format!("generated `{key}`")), "{key}: {err}");
    }
}

/// Item 7: network errors say why (the cause, not just "error sending request").
#[test]
fn issue_12_an_unreachable_director_is_reported_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    // A port nobody listens on: bound, then closed.
    let port = crate::documented::free_port();
    // The Director's secrets, which the gateway reads.
    assert!(run(&["vapid", "--data-dir", &data], &BTreeMap::new()).status.success());
    let args = ["gateway", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:9/", "--data-dir", &data];
    let director_url = format!("http://127.0.0.1:{port}");
    let mut c = command(&args, &BTreeMap::new());
    c.args(["--director", &director_url]);
    let gateway = Running::start(c);
    let line = gateway.wait_for("cannot read the Director's /info");
    assert!(line.to_lowercase().contains("connection refused"), "{line}");

    // Item 10: the gateway says when the Director answers again.
    let secrets = BTreeMap::new();
    let director =
        Running::start(command(&["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", &data], &secrets));
    director.wait_for("Push Director listening");
    gateway.wait_for("/info answered");
}

/// Item 7: a TLS failure names the certificate as its cause: `davpush notify` against an HTTPS
/// Director whose certificate this machine does not trust (the local APNs fake's, issued by a
/// CA of its own) exits 69 and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_an_untrusted_certificate_is_reported_as_the_cause() {
    let apns = davpush_testkit::fakes::apns::FakeApns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    assert!(run(&["vapid", "--data-dir", &data], &BTreeMap::new()).status.success());
    let url = apns.url();
    let out = tokio::task::spawn_blocking(move || {
        run(&["notify", "--data-dir", &data, "--director", &url, "--topic", "t"], &BTreeMap::new())
    })
    .await
    .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "the cause is not named: {err}");
}

/// Item 10: each subcommand offers only the options it uses; `davpush --help` lists the servers
/// first and `bench` last.
#[test]
fn issue_12_help_lists_only_what_each_subcommand_uses() {
    let none = BTreeMap::new();
    let help = |args: &[&str]| {
        let out = run(args, &none);
        assert!(out.status.success());
        text(&out.stdout)
    };
    assert!(!help(&["vapid", "--help"]).contains("--listen"));
    assert!(!help(&["grant", "--help"]).contains("--listen"));
    assert!(help(&["serve", "--help"]).contains("--listen"));
    assert!(!help(&["topic", "--help"]).contains("--director"));
    assert!(help(&["notify", "--help"]).contains("--director"));
    let top = help(&["--help"]);
    let order: Vec<usize> = ["serve", "gateway", "relay", "listen", "notify", "topic", "grant", "vapid", "bench"]
        .iter()
        .map(|c| top.find(&format!("\n  {c} ")).unwrap_or_else(|| panic!("{c} in {top}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{top}");
}
