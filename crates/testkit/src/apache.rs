//! Apache httpd with mod_dav (Debian's `apache2`), the reference WebDAV server that litmus fully
//! exercises, on a free loopback port in a temporary root. Stopped on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running Apache.
pub struct Apache {
    /// `http://127.0.0.1:<port>/`
    pub url: String,
    dir: PathBuf,
}

#[track_caller]
fn tool(name: &str) -> Option<()> {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success());
    if found {
        return Some(());
    }
    crate::require::missing(&format!("`{name}` is not installed"), &format!("apt-get install {name}"));
    None
}

/// Whether litmus is installed (fails, or skips when chosen, when not: [`crate::require`]).
pub fn litmus() -> Option<()> {
    tool("litmus")
}

impl Apache {
    /// Starts Apache with mod_dav serving an empty folder; `None` (skip) if not installed and
    /// skipping was chosen ([`crate::require`]).
    pub fn start() -> Option<Apache> {
        tool("apache2")?;
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let dir = std::env::temp_dir().join(format!("davpush-apache-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("dav")).expect("temp dir");
        std::fs::create_dir_all(dir.join("lock")).expect("temp dir");
        let modules = "/usr/lib/apache2/modules";
        let root = unsafe_root();
        let user = if root { "User www-data\nGroup www-data\n" } else { "" };
        let conf = format!(
            "ServerRoot \"{d}\"\nServerName 127.0.0.1\nListen 127.0.0.1:{port}\nPidFile {d}/httpd.pid\nErrorLog {d}/error.log\n\
             LoadModule mpm_event_module {modules}/mod_mpm_event.so\nLoadModule authz_core_module {modules}/mod_authz_core.so\n\
             LoadModule dav_module {modules}/mod_dav.so\nLoadModule dav_fs_module {modules}/mod_dav_fs.so\n\
             LoadModule dav_lock_module {modules}/mod_dav_lock.so\nLoadModule mime_module {modules}/mod_mime.so\n\
             LoadModule dir_module {modules}/mod_dir.so\nTypesConfig /etc/mime.types\n{user}\
             DavLockDB {d}/lock/DavLock\nDocumentRoot {d}/dav\n<Directory {d}/dav>\n  Dav On\n  Require all granted\n</Directory>\n",
            d = dir.display()
        );
        std::fs::write(dir.join("httpd.conf"), conf).expect("config");
        if root {
            let _ = Command::new("chown")
                .args(["-R", "www-data:www-data"])
                .arg(dir.join("dav"))
                .arg(dir.join("lock"))
                .status();
        }
        let status = Command::new("apache2")
            .arg("-f")
            .arg(dir.join("httpd.conf"))
            .args(["-k", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run apache2");
        assert!(status.success(), "apache2 did not start; see {}/error.log", dir.display());
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "Apache did not start within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Apache { url: format!("http://127.0.0.1:{port}/"), dir })
    }
}

fn unsafe_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Drop for Apache {
    fn drop(&mut self) {
        let _ = Command::new("apache2")
            .arg("-f")
            .arg(self.dir.join("httpd.conf"))
            .args(["-k", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs one litmus suite against `url`; returns (tests run, passed).
pub fn run_litmus(suite: &str, url: &str) -> (u32, u32) {
    // litmus writes child.log and debug.log into its working folder: one of its own.
    let cwd = std::env::temp_dir().join(format!("davpush-litmus-{}-{suite}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&cwd).expect("temp dir");
    let out = Command::new("litmus")
        .env("TESTS", suite)
        .arg(url)
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run litmus");
    let _ = std::fs::remove_dir_all(&cwd);
    let text = String::from_utf8_lossy(&out.stdout);
    // "<- summary for `basic': of 16 tests run: 16 passed, 0 failed. 100.0%"
    let line = text.lines().find(|l| l.contains("summary for")).unwrap_or_else(|| panic!("no litmus summary:\n{text}"));
    let num = |after: &str| -> u32 {
        let rest = &line[line.find(after).expect("summary shape") + after.len()..];
        rest.split_whitespace().next().and_then(|n| n.parse().ok()).expect("a number")
    };
    (num("of "), num("run: "))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Runs one litmus suite against `url` (with `auth` as user and password); returns each test's
/// name and outcome (`pass`, `FAIL`, `SKIPPED`, …) in order.
pub fn litmus_tests(suite: &str, url: &str, auth: Option<(&str, &str)>) -> Vec<(String, String)> {
    let cwd = std::env::temp_dir().join(format!("davpush-litmus-{}-{suite}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&cwd).expect("temp dir");
    let mut cmd = Command::new("litmus");
    cmd.env("TESTS", suite).arg(url);
    if let Some((u, p)) = auth {
        cmd.args([u, p]);
    }
    let out = cmd.current_dir(&cwd).stdin(Stdio::null()).output().expect("run litmus");
    let _ = std::fs::remove_dir_all(&cwd);
    let text = String::from_utf8_lossy(&out.stdout);
    // " 3. put_get_utf8_segment.... pass" (on a pipe, litmus repeats the "N. name...." part).
    text.lines()
        .filter_map(|l| {
            let dots = l.rfind("..")?;
            let outcome = l[dots..].trim_start_matches('.').split_whitespace().next()?.to_owned();
            let name = l[..dots].trim_end_matches('.').split_whitespace().last()?.to_owned();
            Some((name, outcome))
        })
        .collect()
}
