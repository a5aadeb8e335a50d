//! `cargo xtask test`: the README's test command.
//!
//! A test that needs a tool which is not there must not pass silently. This command provisions
//! what it can without root (a Python virtualenv in `.venv/` with `requirements-test.txt`),
//! checks the system packages and services the tests use, and then runs
//! `cargo test --workspace` with them. When something is missing it stops before any test runs
//! and prints the one `apt-get install` line that fixes it — unless `--allow-skip` is given:
//! then the tests that need it are skipped and the summary counts them as skipped.

use std::ffi::OsString;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

const USAGE: &str = "\
usage: cargo xtask test [--allow-skip] [ARGS...]

Provisions the Python tools of the tests (.venv/, from requirements-test.txt), checks the system
packages and services they need, and runs `cargo test --workspace ARGS...`.

  --allow-skip   run even when a system package or service is missing: the tests that need it
                 are skipped (and counted as skipped), not failed. Refused in CI (CI=true).

Environment: DAVPUSH_PYTHON (an interpreter that has the tools; else .venv/ is made),
DAVPUSH_TEST_POSTGRES (default postgres://postgres@127.0.0.1/test),
DAVPUSH_TEST_REDIS (default redis://127.0.0.1:6379).";

/// Python modules the tests import (requirements-test.txt installs them).
const PY_MODULES: &[&str] = &["http_ece", "py_vapid", "cryptography", "radicale", "websockets"];

/// Commands the tests run, each with the Debian package that has it.
const TOOLS: &[(&[&str], &str, &str)] = &[
    (&["litmus"], "litmus", "the WebDAV compliance suite (gateway transparency)"),
    (&["apache2"], "apache2", "Apache mod_dav, litmus's reference server"),
    (&["chromium", "chromium-browser"], "chromium", "the browser of the web client's tests"),
    (&["chromedriver"], "chromium-driver", "WebDriver for that browser"),
    (&["redis-server"], "redis-server", "Redis servers the failover tests start and stop"),
    (&["prometheus"], "prometheus", "Prometheus and promtool, for the alert rules and dashboard (monitoring)"),
    (&["nginx"], "nginx", "the TLS reverse proxy of docs/operations.md (proxy_tls tests)"),
    (&["caddy"], "caddy", "the other TLS reverse proxy of docs/operations.md (proxy_tls tests)"),
    (&["php"], "php-cli", "PHP, which runs SabreDAV (and DAViCal, under Apache's mod_php)"),
    (&["sqlite3"], "sqlite3", "the SabreDAV out-of-band recipe's database tool"),
    (&["psql"], "postgresql-client", "DAViCal's database set-up and out-of-band recipe"),
];

/// Files of packages that bring no command of their own (libraries, modules), each with its
/// Debian package.
const FILES: &[(&str, &str, &str)] = &[
    ("/usr/share/php/Sabre/DAV/Server.php", "php-sabre-dav", "SabreDAV, a real WebDAV server of the gateway's tests"),
    ("/usr/share/davical/dba/create-database.sh", "davical", "DAViCal, a real CalDAV server of the gateway's tests"),
    ("/usr/lib/apache2/modules/libphp8.2.so", "libapache2-mod-php", "mod_php, which runs DAViCal"),
    ("/usr/lib/nginx/modules/ngx_http_dav_ext_module.so", "libnginx-mod-http-dav-ext", "nginx's PROPFIND and LOCK"),
];

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    match args.next().as_deref().and_then(|a| a.to_str()) {
        Some("test") => test(args.collect()),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("xtask: unknown task {other:?}\n\n{USAGE}");
            ExitCode::from(64)
        }
    }
}

fn root() -> PathBuf {
    // crates/xtask -> the workspace
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn test(args: Vec<OsString>) -> ExitCode {
    let mut allow_skip = false;
    let mut cargo_args = Vec::new();
    for a in args {
        if a == "--allow-skip" {
            allow_skip = true;
        } else {
            cargo_args.push(a);
        }
    }
    if allow_skip && ci() {
        eprintln!("xtask: --allow-skip is refused in CI (CI=true): CI provides every tool the tests use");
        return ExitCode::from(64);
    }
    let root = root();
    // Daemons such as apache2 live in sbin, which a user's PATH often lacks; the tests look them
    // up on PATH, so both see the same.
    let path = with_sbin(std::env::var_os("PATH").unwrap_or_default());
    let on_path = |cmd: &str| on_path_in(&path, cmd);

    // 1. Python tools, in a virtualenv of the workspace's own (no root needed).
    let mut missing: Vec<(String, &str)> = Vec::new();
    let python = match python(&root, &on_path) {
        Ok(py) => Some(py),
        Err(Problem::Package(what, package)) => {
            missing.push((what, package));
            None
        }
        Err(Problem::Fatal(msg)) => {
            eprintln!("xtask: {msg}");
            return ExitCode::FAILURE;
        }
    };

    // 2. System packages.
    for (commands, package, what) in TOOLS {
        if !commands.iter().any(|c| on_path(c)) {
            missing.push((format!("`{}` ({what})", commands[0]), package));
        }
    }
    for (file, package, what) in FILES {
        if !Path::new(file).exists() {
            missing.push((format!("{file} ({what})"), package));
        }
    }

    // 3. Services (PostgreSQL and Redis for the scale-out tests).
    let postgres = var_or("DAVPUSH_TEST_POSTGRES", "postgres://postgres@127.0.0.1/test");
    let redis = var_or("DAVPUSH_TEST_REDIS", "redis://127.0.0.1:6379");
    for (url, default_port, package, what) in
        [(&postgres, 5432, "postgresql", "PostgreSQL"), (&redis, 6379, "redis-server", "Redis")]
    {
        if let Err(e) = reachable(url, default_port) {
            missing.push((format!("{what} at {} ({e}; start it, or set the URL)", redacted(url)), package));
        }
    }

    if !missing.is_empty() {
        let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
        packages.dedup();
        eprintln!("xtask: the tests need what this machine lacks:");
        for (what, _) in &missing {
            eprintln!("  - {what}");
        }
        eprintln!("install it with:\n  sudo apt-get install {}", packages.join(" "));
        if !allow_skip {
            eprintln!("or skip the tests that need it: cargo xtask test --allow-skip");
            return ExitCode::FAILURE;
        }
        eprintln!("--allow-skip: the tests that need it are skipped and counted below");
    }

    // 4. The tests.
    let skip_log = std::env::temp_dir().join(format!("davpush-skipped-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&skip_log);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root).args(["test", "--workspace"]).args(&cargo_args).env("PATH", &path);
    cmd.env("DAVPUSH_TEST_POSTGRES", &postgres).env("DAVPUSH_TEST_REDIS", &redis).env("DAVPUSH_SKIP_LOG", &skip_log);
    if let Some(py) = &python {
        cmd.env("DAVPUSH_PYTHON", py);
    }
    if allow_skip {
        cmd.env("DAVPUSH_ALLOW_SKIP", "1");
    } else {
        cmd.env_remove("DAVPUSH_ALLOW_SKIP");
    }
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xtask: cannot run cargo test: {e}");
            return ExitCode::FAILURE;
        }
    };
    let skipped = std::fs::read_to_string(&skip_log).unwrap_or_default();
    let _ = std::fs::remove_file(&skip_log);
    let skipped: Vec<&str> = skipped.lines().filter(|l| !l.is_empty()).collect();
    if !skipped.is_empty() {
        eprintln!("\nxtask: {} test(s) SKIPPED (libtest above counts them as passed; they are not):", skipped.len());
        for line in &skipped {
            let (test, why) = line.split_once('\t').unwrap_or((line, ""));
            eprintln!("  - {test}: {why}");
        }
    }
    if status.success() {
        eprintln!(
            "xtask: tests passed{}",
            if skipped.is_empty() { String::new() } else { format!(", {} skipped", skipped.len()) }
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("xtask: tests failed");
        ExitCode::FAILURE
    }
}

enum Problem {
    /// Something a system package provides is missing.
    Package(String, &'static str),
    /// Something else went wrong (the message says what).
    Fatal(String),
}

fn imports(py: &Path) -> bool {
    Command::new(py)
        .args(["-c", &format!("import {}", PY_MODULES.join(", "))])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An interpreter that imports [`PY_MODULES`]: `$DAVPUSH_PYTHON` if set, else `.venv/`, made or
/// completed here.
fn python(root: &Path, on_path: &dyn Fn(&str) -> bool) -> Result<PathBuf, Problem> {
    if let Some(py) = std::env::var_os("DAVPUSH_PYTHON") {
        let py = PathBuf::from(py);
        return if imports(&py) {
            Ok(py)
        } else {
            Err(Problem::Fatal(format!(
                "DAVPUSH_PYTHON={} cannot import {}: install them there (pip install -r requirements-test.txt), \
                 or unset DAVPUSH_PYTHON to let this command make .venv/",
                py.display(),
                PY_MODULES.join(", ")
            )))
        };
    }
    let venv = root.join(".venv");
    let py = venv.join("bin/python");
    if py.exists() && imports(&py) {
        return Ok(py);
    }
    if !on_path("python3") {
        return Err(Problem::Package("`python3`".into(), "python3-venv"));
    }
    if !py.exists() {
        eprintln!("xtask: making the tests' Python virtualenv in {}", venv.display());
        let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status();
        if !made.is_ok_and(|s| s.success()) || !py.exists() {
            let _ = std::fs::remove_dir_all(&venv);
            return Err(Problem::Package("Python's `venv` module".into(), "python3-venv"));
        }
    }
    eprintln!("xtask: installing requirements-test.txt into {}", venv.display());
    let pip = Command::new(&py)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(root.join("requirements-test.txt"))
        .status();
    if !pip.is_ok_and(|s| s.success()) || !imports(&py) {
        return Err(Problem::Fatal(format!(
            "pip could not install requirements-test.txt into {} (is PyPI reachable?)",
            venv.display()
        )));
    }
    Ok(py)
}

fn on_path_in(path: &OsString, cmd: &str) -> bool {
    std::env::split_paths(path).any(|dir| is_executable(&dir.join(cmd)))
}

/// `path` with `/usr/sbin` and `/sbin` appended where missing.
fn with_sbin(path: OsString) -> OsString {
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for sbin in ["/usr/sbin", "/sbin"] {
        if !dirs.iter().any(|d| d == Path::new(sbin)) && Path::new(sbin).is_dir() {
            dirs.push(sbin.into());
        }
    }
    std::env::join_paths(dirs).unwrap_or(path)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn var_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

/// `scheme://host:port` of `url` (no user information), for messages.
fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}")
}

/// Whether a TCP connection to the URL's host and port opens within 2 s.
fn reachable(url: &str, default_port: u16) -> Result<(), String> {
    let hostport = redacted(url);
    let hostport = hostport.split_once("://").map(|(_, h)| h).unwrap_or(&hostport);
    if hostport.is_empty() {
        // A Unix socket (`postgres:///db?host=/run/postgresql`): the tests will tell.
        return Ok(());
    }
    let with_port = if hostport.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        hostport.to_owned()
    } else {
        format!("{hostport}:{default_port}")
    };
    let addrs = with_port.to_socket_addrs().map_err(|e| e.to_string())?;
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}
