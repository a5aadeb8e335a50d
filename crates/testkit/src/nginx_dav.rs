//! A real nginx WebDAV server (Debian's `nginx` with `libnginx-mod-http-dav-ext`) on a free
//! loopback port: `assets/nginx-dav/nginx.conf`, plain files under `/files/<user>/` (PUT,
//! DELETE, MKCOL, COPY, MOVE; PROPFIND, OPTIONS, LOCK and UNLOCK from dav-ext), Basic
//! authentication (`{SSHA}` hashes in an htpasswd file) for the users of
//! [`crate::radicale::USERS`], each only in its own folder. Stopped, and its folder removed, on
//! drop or when the test process exits.
//!
//! No PROPPATCH (405), no sync-collection: clients see changes through ETags and
//! `getlastmodified`.

use crate::launch;
use std::path::PathBuf;

/// What to install when nginx or dav-ext is missing.
pub const INSTALL: &str = "apt-get install nginx libnginx-mod-http-dav-ext";

/// A running nginx.
pub struct NginxDav {
    /// `http://127.0.0.1:<port>/`
    pub url: String,
    /// Its port.
    pub port: u16,
    /// Its folder: `nginx.conf`, `htpasswd`, `data/files/<user>/`, `error.log` (kept until drop).
    pub dir: PathBuf,
    _process: launch::Watched,
}

impl NginxDav {
    /// Starts nginx; `None` (skip) if not installed and skipping was chosen ([`crate::require`]).
    pub fn start() -> Option<NginxDav> {
        launch::require(&["nginx"], &["/usr/lib/nginx/modules/ngx_http_dav_ext_module.so"], INSTALL)?;
        let port = crate::free_port();
        let dir = launch::instance_dir("nginx-dav", port);
        let htpasswd: String = crate::radicale::USERS
            .iter()
            .map(|(u, p)| {
                let salt = launch::salt(8);
                format!("{u}:{{SSHA}}{}\n", launch::salted_sha1(p, salt.as_bytes()))
            })
            .collect();
        std::fs::write(dir.join("htpasswd"), htpasswd).expect("htpasswd");
        for (u, _) in crate::radicale::USERS {
            std::fs::create_dir_all(dir.join("data/files").join(u)).expect("data dir");
        }
        std::fs::create_dir_all(dir.join("tmp")).expect("tmp dir");
        let user = if launch::is_root() { "user www-data;" } else { "" };
        let d = dir.display().to_string();
        let conf =
            launch::template("nginx-dav/nginx.conf", &[("@DIR@", &d), ("@PORT@", &port.to_string()), ("@USER@", user)]);
        std::fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
        launch::give_to_daemon(&[&dir.join("data"), &dir.join("tmp")]);
        let log = dir.join("error.log");
        let args = vec![
            "-p".to_owned(),
            d.clone(),
            "-c".to_owned(),
            format!("{d}/nginx.conf"),
            "-e".to_owned(),
            log.display().to_string(),
            "-g".to_owned(),
            "daemon off;".to_owned(),
        ];
        // SIGTERM: the master stops its workers and leaves.
        let cleanup = format!("rm -rf {}", launch::quote(&d));
        let mut process =
            launch::Watched::spawn(&launch::program("nginx"), &args, &[], &dir.join("stderr.log"), &cleanup);
        launch::wait_listening(port, 20, "nginx", &log, &mut process);
        let server = NginxDav { url: format!("http://127.0.0.1:{port}/"), port, dir, _process: process };
        Some(server)
    }

    /// The path of `user`'s folder.
    pub fn files_path(user: &str) -> String {
        format!("/files/{user}/")
    }

    /// nginx's error log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}
