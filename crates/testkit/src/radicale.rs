//! A real Radicale server (from PyPI) on a free loopback port, with users `alice`/`bob`
//! (htpasswd, plain) and `owner_only` rights, in a temporary storage folder. Killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Radicale.
pub struct Radicale {
    /// `http://127.0.0.1:<port>/`
    pub url: String,
    /// Its port.
    pub port: u16,
    child: Child,
    /// Storage and config folder (kept until drop).
    pub dir: PathBuf,
}

/// The test users and their passwords.
pub const USERS: &[(&str, &str)] = &[("alice", "alice-password"), ("bob", "bob-password")];

impl Radicale {
    /// Starts Radicale with `extra` command-line arguments; `None` (skip) if it is not
    /// installed and skipping was chosen ([`crate::require`]).
    pub fn start(extra: &[&str]) -> Option<Radicale> {
        let py = crate::python::python_with(&["radicale"])?;
        let port = crate::free_port();
        let dir = std::env::temp_dir().join(format!("davpush-radicale-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let users = dir.join("users");
        std::fs::write(&users, USERS.iter().map(|(u, p)| format!("{u}:{p}\n")).collect::<String>()).expect("users");
        let mut cmd = Command::new(py);
        cmd.args(["-m", "radicale", "--server-hosts", &format!("127.0.0.1:{port}")])
            .args(["--auth-type", "htpasswd", "--auth-htpasswd-encryption", "plain"])
            .arg("--auth-htpasswd-filename")
            .arg(&users)
            .args(["--rights-type", "owner_only", "--logging-level", "warning"])
            .arg("--storage-filesystem-folder")
            .arg(dir.join("collections"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("radicale.log")).map(Stdio::from).unwrap_or(Stdio::null()));
        let child = cmd.spawn().expect("start radicale");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "Radicale did not start within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Radicale { url: format!("http://127.0.0.1:{port}/"), port, child, dir })
    }
}

impl Drop for Radicale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
