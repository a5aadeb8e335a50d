//! A real DAViCal (Debian's `davical`: PHP and PostgreSQL) under Apache with mod_php on a free
//! loopback port, mounted at `/caldav.php/`, with a database of its own on the machine's
//! PostgreSQL (`$DAVPUSH_TEST_POSTGRES`, see [`crate::services`]): `davical_<pid>_<n>`, made by
//! DAViCal's `create-database.sh` and dropped on drop. Users of [`crate::radicale::USERS`]
//! (salted SHA-1 passwords, as DAViCal's admin pages set them); calendars and address books are
//! made by the clients (MKCALENDAR, extended MKCOL). Apache is stopped, the database dropped and
//! the folder removed on drop or when the test process exits.
//!
//! Apache runs with `assets/davical/httpd.conf` in the instance's folder; DAViCal reads
//! `config/config.php` there (`assets/davical/config.php`), never `/etc/davical` (outside PHP's
//! `open_basedir`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::launch;

/// What to install when DAViCal is missing.
pub const INSTALL: &str = "apt-get install davical apache2 libapache2-mod-php postgresql-client";

/// Where DAViCal's database lives (from `$DAVPUSH_TEST_POSTGRES`).
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// A superuser (trusted on loopback: `postgres` on the test machines).
    pub user: String,
}

impl PgTarget {
    fn from_env() -> PgTarget {
        let raw =
            std::env::var("DAVPUSH_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".to_owned());
        let url = url::Url::parse(&raw).expect("DAVPUSH_TEST_POSTGRES is a URL");
        PgTarget {
            host: url.host_str().unwrap_or("127.0.0.1").to_owned(),
            port: url.port().unwrap_or(5432),
            user: if url.username().is_empty() { "postgres".to_owned() } else { url.username().to_owned() },
        }
    }

    /// `psql`, `createdb` … with this target in `PGHOST`/`PGPORT`/`PGUSER`.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("PGHOST", &self.host).env("PGPORT", self.port.to_string()).env("PGUSER", &self.user);
        cmd
    }
}

/// A running DAViCal.
pub struct Davical {
    /// `http://127.0.0.1:<port>/`
    pub url: String,
    /// Its port.
    pub port: u16,
    /// Apache's and DAViCal's folder (kept until drop).
    pub dir: PathBuf,
    /// Its database's name.
    pub database: String,
    /// Where that database is.
    pub pg: PgTarget,
    apache: Option<launch::Watched>,
}

impl Davical {
    /// The mount point of the DAV tree.
    pub const PREFIX: &'static str = "/caldav.php/";

    /// Creates the database and starts Apache; `None` (skip) if something is missing and
    /// skipping was chosen ([`crate::require`]).
    pub fn start() -> Option<Davical> {
        launch::require(
            &["apache2", "psql", "createdb"],
            &["/usr/share/davical/dba/create-database.sh", "/usr/lib/apache2/modules/libphp8.2.so"],
            INSTALL,
        )?;
        let pg = PgTarget::from_env();
        let ready = pg.command("psql").args(["-qXAt", "-c", "SELECT 1", "postgres"]).output();
        if !ready.as_ref().is_ok_and(|o| o.status.success()) {
            crate::require::missing(
                &format!("PostgreSQL at {}:{} does not answer as {}", pg.host, pg.port, pg.user),
                "apt-get install postgresql and start it, or set DAVPUSH_TEST_POSTGRES to one that runs",
            );
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let database = format!("davical_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let port = crate::free_port();
        let dir = launch::instance_dir("davical", port);
        let mut server = Davical { url: format!("http://127.0.0.1:{port}/"), port, dir, database, pg, apache: None };
        server.create_database();
        server.start_apache();
        Some(server)
    }

    fn create_database(&self) {
        // A leftover of a killed run of the same pid: gone first.
        self.drop_database();
        // The superuser is DAViCal's owner and application user: no roles are created.
        let admin_password = launch::salt(16);
        let out = launch::run(
            self.pg
                .command("/usr/share/davical/dba/create-database.sh")
                .args([&self.database, &admin_password, &self.pg.user, &self.pg.user])
                .current_dir(&self.dir),
            "DAViCal's create-database.sh",
        );
        assert!(out.contains("has been set"), "create-database.sh did not finish:\n{out}");
        let mut sql = String::new();
        for (user, password) in crate::radicale::USERS {
            let salt = launch::salt(9);
            let hash = format!("*{salt}*{{SSHA}}{}", launch::salted_sha1(password, salt.as_bytes()));
            sql.push_str(&format!(
                "INSERT INTO usr (username, password, fullname, email) VALUES ('{user}', '{hash}', '{user}', '{user}@example.org');\n\
                 INSERT INTO principal (type_id, user_no, displayname, default_privileges) \
                 SELECT 1, user_no, fullname, 0::BIT(24) FROM usr WHERE username = '{user}';\n"
            ));
        }
        self.psql(&sql);
    }

    /// Runs `sql` in DAViCal's database as the superuser; returns psql's unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        launch::run(
            self.pg.command("psql").args(["-qXAt", "-v", "ON_ERROR_STOP=1", "-d", &self.database, "-c", sql]),
            "psql",
        )
    }

    fn start_apache(&mut self) {
        let d = self.dir.display().to_string();
        let port = self.port.to_string();
        let user = if launch::is_root() { "User www-data\nGroup www-data" } else { "" };
        std::fs::create_dir_all(self.dir.join("htdocs")).expect("htdocs");
        std::fs::create_dir_all(self.dir.join("config")).expect("config");
        // DAViCal puts ../inc (from htdocs/) on its include path.
        std::os::unix::fs::symlink("/usr/share/davical/inc", self.dir.join("inc")).expect("inc");
        for f in ["caldav.php", "always.php"] {
            std::fs::copy(launch::asset(&format!("davical/htdocs/{f}")), self.dir.join("htdocs").join(f))
                .expect("htdocs");
        }
        let conf = launch::template("davical/httpd.conf", &[("@DIR@", &d), ("@PORT@", &port), ("@USER@", user)]);
        std::fs::write(self.dir.join("httpd.conf"), conf).expect("httpd.conf");
        let config = launch::template(
            "davical/config.php",
            &[
                ("@PGHOST@", &self.pg.host),
                ("@PGPORT@", &self.pg.port.to_string()),
                ("@DB@", &self.database),
                ("@PGUSER@", &self.pg.user),
            ],
        );
        std::fs::write(self.dir.join("config/config.php"), config).expect("config.php");
        let log = self.dir.join("error.log");
        let args = vec!["-f".to_owned(), format!("{d}/httpd.conf"), "-DFOREGROUND".to_owned()];
        // After Apache: the database goes, then the folder.
        let cleanup = format!(
            "psql -qXAt -d postgres -c {} >/dev/null 2>&1; rm -rf {}",
            launch::quote(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database)),
            launch::quote(&d)
        );
        let env =
            [("PGHOST", self.pg.host.clone()), ("PGPORT", self.pg.port.to_string()), ("PGUSER", self.pg.user.clone())];
        let mut apache =
            launch::Watched::spawn(&launch::program("apache2"), &args, &env, &self.dir.join("apache.log"), &cleanup);
        launch::wait_listening(self.port, 30, "Apache (DAViCal)", &log, &mut apache);
        self.apache = Some(apache);
    }

    /// The path of `user`'s principal (also the home of its calendars and address books).
    pub fn principal_path(user: &str) -> String {
        format!("/caldav.php/{user}/")
    }

    /// Apache's error log (DAViCal logs there too).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    fn drop_database(&self) {
        let _ = self
            .pg
            .command("psql")
            .args(["-qXAt", "-d", "postgres", "-c", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database)])
            .output();
    }
}

impl Drop for Davical {
    fn drop(&mut self) {
        match self.apache.take() {
            // Stops Apache, drops the database, removes the folder.
            Some(apache) => drop(apache),
            None => {
                self.drop_database();
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}
