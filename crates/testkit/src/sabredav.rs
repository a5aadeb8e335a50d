//! A real SabreDAV server (Debian's `php-sabre-dav` 1.8, the library behind Baïkal, Nextcloud
//! and Davis) on a free loopback port: `assets/sabredav/server.php` under PHP's built-in
//! server, mounted at `/dav.php/` like Baïkal, with CalDAV, CardDAV, WebDAV files and locks,
//! PDO SQLite, Basic authentication and the users of [`crate::radicale::USERS`] (each with a
//! calendar and an address book `default`, made by `assets/sabredav/setup.php`). Stopped, and
//! its folder removed, on drop or when the test process exits.
//!
//! SabreDAV 1.8 has no sync-collection REPORT (it came with 2.0): clients see changes through
//! the `getctag` of calendarserver.org and the members' ETags.

use std::path::PathBuf;
use std::process::Command;

use crate::launch;

/// What to install when SabreDAV is missing.
pub const INSTALL: &str = "apt-get install php-cli php-sabre-dav php-sqlite3 php-xml php-mbstring";

/// A running SabreDAV.
pub struct SabreDav {
    /// `http://127.0.0.1:<port>/`
    pub url: String,
    /// Its port.
    pub port: u16,
    /// Data folder: `db.sqlite` and `files/` (kept until drop).
    pub dir: PathBuf,
    _process: launch::Watched,
}

impl SabreDav {
    /// The mount point of the DAV tree.
    pub const PREFIX: &'static str = "/dav.php/";

    /// Starts SabreDAV; `None` (skip) if PHP or SabreDAV is not installed and skipping was
    /// chosen ([`crate::require`]).
    pub fn start() -> Option<SabreDav> {
        launch::require(&["php"], &["/usr/share/php/Sabre/DAV/Server.php"], INSTALL)?;
        let modules = launch::run(Command::new("php").arg("-m"), "php -m");
        for (module, package) in [("pdo_sqlite", "php-sqlite3"), ("dom", "php-xml"), ("mbstring", "php-mbstring")] {
            if !modules.lines().any(|l| l.trim() == module) {
                crate::require::missing(
                    &format!("PHP's {module} module is not installed"),
                    &format!("apt-get install {package}"),
                );
                return None;
            }
        }
        let port = crate::free_port();
        let dir = launch::instance_dir("sabredav", port);
        let users: Vec<String> = crate::radicale::USERS.iter().map(|(u, p)| format!("{u}:{p}")).collect();
        // bcrypt's minimum cost: SabreDAV checks the password on every request (90 ms each at
        // PHP's default cost on a busy machine; litmus makes about a thousand requests).
        launch::run(
            Command::new("php")
                .arg(launch::asset("sabredav/setup.php"))
                .arg(&dir)
                .args(&users)
                .env("SABREDAV_PASSWORD_COST", "4"),
            "sabredav/setup.php",
        );
        let docroot = dir.join("www");
        std::fs::create_dir_all(&docroot).expect("docroot");
        let log = dir.join("php.log");
        // One PHP process serves the requests one after the other: PHP_CLI_SERVER_WORKERS'
        // workers would outlive a stopped parent.
        let args = vec![
            "-S".to_owned(),
            format!("127.0.0.1:{port}"),
            "-t".to_owned(),
            docroot.display().to_string(),
            launch::asset("sabredav/server.php").display().to_string(),
        ];
        let cleanup = format!("rm -rf {}", launch::quote(&dir.display().to_string()));
        let mut process =
            launch::Watched::spawn("php", &args, &[("SABREDAV_DATA", dir.display().to_string())], &log, &cleanup);
        launch::wait_listening(port, 30, "SabreDAV (php -S)", &log, &mut process);
        let server = SabreDav { url: format!("http://127.0.0.1:{port}/"), port, dir, _process: process };
        Some(server)
    }

    /// `http://127.0.0.1:<port>/dav.php/`
    pub fn dav_url(&self) -> String {
        format!("{}dav.php/", self.url)
    }

    /// The path of `user`'s calendar `default`.
    pub fn calendar_path(user: &str) -> String {
        format!("/dav.php/calendars/{user}/default/")
    }

    /// The path of `user`'s address book `default`.
    pub fn addressbook_path(user: &str) -> String {
        format!("/dav.php/addressbooks/{user}/default/")
    }

    /// The path of `user`'s folder of plain files.
    pub fn files_path(user: &str) -> String {
        format!("/dav.php/files/{user}/")
    }

    /// The SQLite database.
    pub fn database(&self) -> PathBuf {
        self.dir.join("db.sqlite")
    }

    /// PHP's log (its built-in server logs each request and PHP's warnings).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("php.log")).unwrap_or_default()
    }
}
