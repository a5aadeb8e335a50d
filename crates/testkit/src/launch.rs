//! What the launchers of real servers share: looking for a program or file, the instance's
//! folder, readiness, the unprivileged user a root-started daemon switches to.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Whether `name` is a program on `PATH` (or in sbin, where daemons live).
pub(crate) fn has_program(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("PATH=\"$PATH:/usr/sbin:/sbin\" command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The full path of program `name` (found on `PATH` or in sbin).
pub(crate) fn program(name: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("PATH=\"$PATH:/usr/sbin:/sbin\" command -v {name}")])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if path.is_empty() { name.to_owned() } else { path }
}

/// Fails the test (or records a skip, [`crate::require`]) unless every program and file is
/// there; `install` names the packages that bring them.
#[track_caller]
pub(crate) fn require(programs: &[&str], files: &[&str], install: &str) -> Option<()> {
    for p in programs {
        if !has_program(p) {
            crate::require::missing(&format!("`{p}` is not installed"), install);
            return None;
        }
    }
    for f in files {
        if !Path::new(f).exists() {
            crate::require::missing(&format!("{f} does not exist"), install);
            return None;
        }
    }
    Some(())
}

/// An empty folder of the instance's own under the temporary folder, readable by the daemon's
/// unprivileged user.
pub(crate) fn instance_dir(kind: &str, port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("davpush-{kind}-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    set_mode(&dir, 0o755);
    dir
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Whether the tests run as root (CI does): daemons then switch to `www-data`.
pub(crate) fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Gives `paths` to `www-data` when running as root (the daemon's workers write there).
pub(crate) fn give_to_daemon(paths: &[&Path]) {
    if is_root() {
        let status = Command::new("chown").args(["-R", "www-data:www-data"]).args(paths).status().expect("chown");
        assert!(status.success(), "chown www-data {paths:?}");
    }
}

/// The template `name` of `assets/` with every `(placeholder, value)` replaced.
pub(crate) fn template(name: &str, values: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(asset(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    for (k, v) in values {
        text = text.replace(k, v);
    }
    assert!(!text.contains("@DIR@") && !text.contains("@PORT@"), "{name}: a placeholder is left");
    text
}

/// The path of a file of `crates/testkit/assets/`.
pub fn asset(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/assets")).join(name)
}

/// Waits until something accepts connections on `port`; panics after `secs`, or when the
/// server has exited, naming `what` and its log.
pub(crate) fn wait_listening(port: u16, secs: u64, what: &str, log: &Path, server: &mut Watched) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline || !server.running() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not listen on 127.0.0.1:{port} within {secs} s; {}:\n{text}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd`; panics with its output unless it succeeds.
pub(crate) fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `{SSHA}`-style salted SHA-1 of `password` with `salt`: base64(sha1(password + salt) + salt),
/// the hash nginx's auth_basic (`{SSHA}…`) and DAViCal (`*salt*{SSHA}…`) both check.
pub(crate) fn salted_sha1(password: &str, salt: &[u8]) -> String {
    use base64::Engine as _;
    let mut input = password.as_bytes().to_vec();
    input.extend_from_slice(salt);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    let mut out = digest.as_ref().to_vec();
    out.extend_from_slice(salt);
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// A random salt of `n` letters and digits.
pub(crate) fn salt(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS has randomness");
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    b.iter().map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char).collect()
}

/// A server process tied to the test process: it runs under `sh`, which stops it (SIGTERM),
/// waits for it and then runs a clean-up command when its stdin — a pipe this process holds —
/// closes: when the [`Watched`] is dropped, or when the test process exits however it ends
/// (a server kept in a `static` is never dropped).
pub(crate) struct Watched {
    child: std::process::Child,
}

impl Watched {
    /// Starts `program args…` with `env` added, its output appended to `log`; `cleanup` (a shell
    /// command) runs after it stopped.
    pub(crate) fn spawn(program: &str, args: &[String], env: &[(&str, String)], log: &Path, cleanup: &str) -> Watched {
        // `setsid`: the server gets a process group of its own. Apache in the foreground
        // signals its whole process group when it stops (prefork and event MPMs alike), which
        // would otherwise be the test binary's and cargo's. (A background job of `sh -c` is no
        // group leader, so setsid does not fork: `$!` stays the server's pid.)
        let script = r#"cleanup="$1"; shift; setsid "$@" </dev/null & pid=$!; cat >/dev/null; kill -TERM "$pid" 2>/dev/null; wait "$pid"; sh -c "$cleanup"; exit 0"#;
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let child = Command::new("sh")
            .args(["-c", script, "sh", cleanup, program])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::from(out.try_clone().expect("log file")))
            .stderr(std::process::Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Watched { child }
    }

    /// Whether the watchdog (and so the server, or its clean-up) still runs.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// A shell word for `s` (single-quoted).
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
