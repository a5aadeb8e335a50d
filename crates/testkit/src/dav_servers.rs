//! The real WebDAV servers of the gateway's server matrix (issue 14), each described by a
//! [`DavServer`] that the matrix (`crates/gateway/tests/it/matrix.rs`) runs the same checklist on.
//!
//! # The contract a launcher fulfils
//!
//! A launcher is a function `fn start() -> Option<DavServer>` (e.g. [`radicale`], [`xandikos`],
//! [`apache`]), registered by name in [`start`]. It:
//!
//! 1. starts the server on 127.0.0.1, on a port from [`crate::free_port`] (never a fixed one),
//!    with its data in a fresh temporary folder, and returns once it answers HTTP;
//! 2. returns `None` only when a tool is missing and skipping was chosen: a missing tool goes
//!    through [`crate::require::missing`] (fails the test in CI), never a silent `None`;
//! 3. ties every process it starts to the test process with [`Tied`]: the matrix keeps servers
//!    in a `static` (one per server for all its checks), which is never dropped, so a server must
//!    stop by itself when the test binary exits (the [`Tied`] wrapper kills it when its stdin, a
//!    pipe from the test process, closes, and removes its folder);
//! 4. configures two users, [`DavServer::owner`] and [`DavServer::other`], each with a password,
//!    authenticated by the server itself (or by the reverse proxy it is normally deployed
//!    behind) with HTTP **Basic** ([`AuthScheme::Basic`]). `other` must be refused (401 or 403)
//!    by the server's own rights check on everything of `owner`'s. Digest is named in
//!    [`AuthScheme`] for completeness but the gateway cannot work with it (see there): a server
//!    that defaults to Digest (SabreDAV) is configured for Basic;
//! 5. fills in the paths. Every path is an **upstream path**: absolute, starting with the
//!    server's mount [`DavServer::prefix`], percent-encoded as the server would send it, and a
//!    collection's ends in `/`. [`DavServer::url`] is what the gateway's `upstream` is set to:
//!    `http://127.0.0.1:<port>` followed by the prefix (e.g. `http://127.0.0.1:28001/dav.php/`);
//!    the gateway is published at `/`, so a public path is the upstream path without the prefix
//!    (`/dav.php/calendars/alice/` ↔ `/calendars/alice/`; [`DavServer::public`]);
//! 6. creates, for `owner`, one collection of each kind the server has ([`Kind`]): a calendar
//!    ([`DavServer::calendar`]), an address book ([`DavServer::addressbook`]), a folder of plain
//!    files ([`DavServer::files`]), and names the homes where the owner may create more
//!    (`*_home`; the matrix creates its own collections there with [`DavServer::create`], one
//!    per check, so that checks sharing a server do not see each other's notifications);
//! 7. states its capabilities ([`Caps`]): the matrix tests what a server has and asserts the
//!    documented fallback where it has not (e.g. no `sync-token` in push messages without
//!    sync-collection);
//! 8. names where litmus runs ([`DavServer::litmus`]).
//!
//! Launchers of this crate: [`radicale`] (Radicale 3.9, PyPI), [`xandikos`] (Xandikos, PyPI,
//! behind Apache as its authenticating reverse proxy, mounted under `/xandikos/`), [`apache`]
//! (Apache httpd mod_dav, plain files, Basic auth per user folder), [`sabredav()`] (SabreDAV 1.8
//! at `/dav.php/`), [`davical()`] (DAViCal at `/caldav.php/`, its own PostgreSQL database) and
//! [`nginx()`] (nginx dav + dav-ext, plain files); the last three wrap the servers of
//! [`crate::sabredav`], [`crate::davical`] and [`crate::nginx_dav`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// How the server authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// HTTP Basic (RFC 7617): the gateway can check a user's access on its own requests with the
    /// same `Authorization` header, and tell users apart by name.
    Basic,
    /// HTTP Digest (RFC 7616). Not usable behind the gateway: a Digest `Authorization` is bound
    /// to the request's method and URI, so the gateway cannot reuse it for the `PROPFIND` with
    /// which it checks a registration's access (nor recognise the same user on the next request).
    Digest,
}

/// The kinds of collection a server may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A CalDAV calendar (created with `MKCALENDAR`).
    Calendar,
    /// A CardDAV address book (created with an extended `MKCOL`, RFC 5689).
    Addressbook,
    /// A plain WebDAV folder (created with `MKCOL`).
    Files,
}

/// What a server supports (what the matrix expects of it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    /// RFC 6578 `sync-collection` and `DAV:sync-token` on collections.
    pub sync_collection: bool,
    /// CalDAV (the Python `caldav` library's checks run).
    pub caldav: bool,
    /// CardDAV.
    pub carddav: bool,
    /// `LOCK`/`UNLOCK` (class 2).
    pub lock: bool,
    /// `MKCALENDAR`.
    pub mkcalendar: bool,
    /// `COPY` of members (`MOVE` every server has).
    pub copy: bool,
    /// `PROPPATCH` (nginx has none: 405).
    pub proppatch: bool,
    /// `/.well-known/caldav` (and `carddav`) redirect to the server's context path (RFC 6764).
    pub well_known: bool,
}

/// A user and their password.
#[derive(Debug, Clone)]
pub struct User {
    /// The login name.
    pub name: String,
    /// The password.
    pub password: String,
}

impl User {
    fn new(name: &str, password: &str) -> User {
        User { name: name.to_owned(), password: password.to_owned() }
    }

    /// The `Authorization` header value (Basic).
    pub fn basic(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.name, self.password));
        format!("Basic {b64}")
    }
}

/// A running WebDAV server, described for the matrix (see the module documentation).
pub struct DavServer {
    /// Its name in the matrix (`radicale`, `xandikos`, `apache`, …).
    pub name: &'static str,
    /// `http://127.0.0.1:<port><prefix>`: the gateway's `upstream`.
    pub url: String,
    /// The mount prefix, `/` or e.g. `/dav.php/`, `/caldav.php/`, `/xandikos/`.
    pub prefix: String,
    /// How users authenticate.
    pub auth: AuthScheme,
    /// The user whose collections the checks use.
    pub owner: User,
    /// Another user, refused on `owner`'s collections by the server.
    pub other: User,
    /// `owner`'s principal (upstream path), if the server has principals.
    pub principal: Option<String>,
    /// `owner`'s calendar home (where `MKCALENDAR` creates calendars).
    pub calendar_home: Option<String>,
    /// `owner`'s address-book home.
    pub addressbook_home: Option<String>,
    /// `owner`'s folder where plain folders can be created.
    pub files_home: Option<String>,
    /// An existing calendar of `owner`.
    pub calendar: Option<String>,
    /// An existing address book of `owner`.
    pub addressbook: Option<String>,
    /// An existing plain folder of `owner`.
    pub files: Option<String>,
    /// Where the matrix runs litmus (`litmus <url> <user> <password>`): a collection of
    /// `owner`'s in which litmus may create its `litmus/` collection (plain `MKCOL`). A server of
    /// calendars and address books only names the place where litmus gets furthest (the
    /// principal or home); if the server refuses a plain `MKCOL` there, litmus stops at its
    /// `begin` test, the same way directly and through the gateway.
    pub litmus: String,
    /// What it supports.
    pub caps: Caps,
    /// Its data folder (for checks of changes made outside HTTP), if it has one.
    pub data_dir: Option<PathBuf>,
    /// Keeps its processes (tied to the test process) and anything else it needs.
    pub guard: Vec<Tied>,
}

impl std::fmt::Debug for DavServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DavServer").field("name", &self.name).field("url", &self.url).finish_non_exhaustive()
    }
}

/// The servers of the matrix, by name (`None`: skipped because a tool is missing and skipping
/// was chosen). Unknown names panic.
pub fn start(name: &str) -> Option<DavServer> {
    match name {
        "radicale" => radicale(),
        "xandikos" => xandikos(),
        "apache" => apache(),
        "sabredav" => sabredav(),
        "davical" => davical(),
        "nginx" => nginx(),
        other => panic!("no launcher for the WebDAV server {other:?}"),
    }
}

impl DavServer {
    /// `http://127.0.0.1:<port>` (no path).
    pub fn origin(&self) -> String {
        let u = url::Url::parse(&self.url).expect("a URL");
        u.origin().ascii_serialization()
    }

    /// The absolute URL of an upstream path.
    pub fn direct(&self, up_path: &str) -> String {
        format!("{}{up_path}", self.origin())
    }

    /// The public path (behind a gateway published at `/`) of an upstream path.
    pub fn public(&self, up_path: &str) -> String {
        let rest = up_path.strip_prefix(self.prefix.as_str()).unwrap_or_else(|| panic!("{up_path} outside the prefix"));
        format!("/{rest}")
    }

    /// The home in which collections of `kind` are created, if the server has that kind.
    pub fn home(&self, kind: Kind) -> Option<&str> {
        match kind {
            Kind::Calendar => self.calendar_home.as_deref(),
            Kind::Addressbook => self.addressbook_home.as_deref(),
            Kind::Files => self.files_home.as_deref(),
        }
    }

    /// Creates a collection of `kind` named `name` in `owner`'s home, directly at the server
    /// (not through a gateway); returns its upstream path.
    pub async fn create(&self, kind: Kind, name: &str) -> String {
        let home = self.home(kind).unwrap_or_else(|| panic!("{} has no {kind:?} home", self.name));
        let path = format!("{home}{name}/");
        let (method, body) = create_request(kind);
        let resp = reqwest::Client::new()
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), self.direct(&path))
            .header("Authorization", self.owner.basic())
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert_eq!(status, 201, "{} {method} {path}: {}", self.name, resp.text().await.unwrap_or_default());
        path
    }
}

/// The method and body that create a collection of `kind`.
pub fn create_request(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Calendar => (
            "MKCALENDAR",
            r#"<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop><D:displayname>matrix</D:displayname></D:prop></D:set></C:mkcalendar>"#,
        ),
        Kind::Addressbook => (
            "MKCOL",
            r#"<?xml version="1.0" encoding="utf-8"?><D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>"#,
        ),
        Kind::Files => ("MKCOL", ""),
    }
}

/// A process tied to the test process: run under `sh`, which kills it (SIGTERM) and removes its
/// folder when its stdin — a pipe the test process holds — closes, i.e. when the [`Tied`] is
/// dropped or the test process exits, however it ends.
pub struct Tied {
    child: Option<Child>,
    /// A server whose launcher ties its processes itself ([`Tied::holding`]).
    _held: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// What it runs (for messages).
    pub what: String,
}

impl Tied {
    /// Starts `program args…` in `cwd`, with `env`, stdout and stderr appended to `log`; `cleanup`
    /// is removed after it stopped.
    pub fn spawn(program: &str, args: &[String], env: &[(&str, &str)], log: &Path, cleanup: Option<&Path>) -> Tied {
        // `setsid`: a process group of its own. Apache in the foreground signals its whole
        // process group when it stops (every Unix MPM), which would otherwise be the test
        // binary's and cargo's. (A background job of `sh -c` is no group leader, so setsid does
        // not fork: `$!` stays the program's pid.)
        let script = r#"dir="$1"; shift; setsid "$@" </dev/null & pid=$!; cat >/dev/null; kill -TERM "$pid" 2>/dev/null; wait "$pid"; [ -n "$dir" ] && rm -rf "$dir"; exit 0"#;
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(cleanup.map(|p| p.display().to_string()).unwrap_or_default())
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(out.try_clone().expect("log file")))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Tied { child: Some(child), _held: None, what: program.to_owned() }
    }

    /// Keeps `server` — a running server of a launcher that ties its processes to the test
    /// process itself ([`crate::sabredav`], [`crate::davical`], [`crate::nginx_dav`]) — for as
    /// long as the [`DavServer`] lives; dropping it stops the server.
    pub fn holding<T: Send + Sync + 'static>(what: &str, server: T) -> Tied {
        Tied { child: None, _held: Some(Box::new(server)), what: what.to_owned() }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Tied {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// Waits until `port` accepts connections (60 s at most: servers start in parallel on a busy
/// machine), failing with `log`'s text if `tied` exits first.
pub fn wait_port(port: u16, tied: &mut Tied, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if !tied.running() || Instant::now() > deadline {
            panic!("{} does not listen on {port}:\n{}", tied.what, std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("davpush-{name}-{}-{}", std::process::id(), crate::free_port()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[track_caller]
fn tool(name: &str, install: &str) -> Option<()> {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success());
    if found {
        return Some(());
    }
    crate::require::missing(&format!("`{name}` is not installed"), install);
    None
}

fn block_on<F: std::future::Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    // Launchers are synchronous; their few HTTP requests run on a runtime of their own, on a
    // thread of their own (the caller may be inside a runtime).
    std::thread::scope(|s| {
        s.spawn(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f))
            .join()
            .unwrap()
    })
}

fn users() -> (User, User) {
    (User::new("alice", "alice-password"), User::new("bob", "bob-password"))
}

/// Radicale 3.9 (PyPI) at `/`: htpasswd users, `owner_only` rights, a calendar and an address
/// book of alice's.
pub fn radicale() -> Option<DavServer> {
    let py = crate::python::python_with(&["radicale"])?;
    let (owner, other) = users();
    let port = crate::free_port();
    let dir = temp_dir("radicale");
    let htpasswd = dir.join("users");
    std::fs::write(&htpasswd, format!("{}:{}\n{}:{}\n", owner.name, owner.password, other.name, other.password))
        .expect("users");
    let args: Vec<String> = [
        "-m",
        "radicale",
        "--server-hosts",
        &format!("127.0.0.1:{port}"),
        "--auth-type",
        "htpasswd",
        "--auth-htpasswd-encryption",
        "plain",
        "--auth-htpasswd-filename",
        &htpasswd.display().to_string(),
        "--rights-type",
        "owner_only",
        "--logging-level",
        "warning",
        "--storage-filesystem-folder",
        &dir.join("collections").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = dir.join("server.log");
    let mut tied = Tied::spawn(&py, &args, &[], &log, Some(&dir));
    wait_port(port, &mut tied, &log);
    let mut s = DavServer {
        name: "radicale",
        url: format!("http://127.0.0.1:{port}/"),
        prefix: "/".into(),
        auth: AuthScheme::Basic,
        principal: Some(format!("/{}/", owner.name)),
        calendar_home: Some(format!("/{}/", owner.name)),
        addressbook_home: Some(format!("/{}/", owner.name)),
        files_home: None,
        calendar: None,
        addressbook: None,
        files: None,
        litmus: format!("/{}/", owner.name),
        caps: Caps {
            sync_collection: true,
            caldav: true,
            carddav: true,
            lock: false,
            mkcalendar: true,
            copy: false,
            proppatch: true,
            well_known: true,
        },
        data_dir: Some(dir.join("collections")),
        owner,
        other,
        guard: vec![tied],
    };
    block_on(async {
        s.calendar = Some(s.create(Kind::Calendar, "calendar").await);
        s.addressbook = Some(s.create(Kind::Addressbook, "contacts").await);
    });
    Some(s)
}

/// An Apache httpd of its own (Debian's `apache2`), in the foreground under [`Tied`], with the
/// modules of the matrix's sites, `site` appended to its configuration, and the `users` in a
/// password file `<dir>/htpasswd` (`{SHA}` hashes, which Apache accepts everywhere).
fn apache_site(name: &str, users: &[&User], site: impl FnOnce(&Path) -> String) -> Option<(u16, PathBuf, Tied)> {
    tool("apache2", "apt-get install apache2")?;
    let port = crate::free_port();
    let dir = temp_dir(name);
    for sub in ["dav", "lock"] {
        std::fs::create_dir_all(dir.join(sub)).expect("temp dir");
    }
    let mut pw = String::new();
    for u in users {
        let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, u.password.as_bytes());
        pw.push_str(&format!("{}:{{SHA}}{}\n", u.name, base64::engine::general_purpose::STANDARD.encode(sha)));
    }
    std::fs::write(dir.join("htpasswd"), pw).expect("htpasswd");
    let m = "/usr/lib/apache2/modules";
    let modules: String = [
        "mpm_event",
        "authz_core",
        "authn_core",
        "authn_file",
        "auth_basic",
        "authz_user",
        "dav",
        "dav_fs",
        "dav_lock",
        "mime",
        "dir",
        "alias",
        "headers",
        "proxy",
        "proxy_http",
    ]
    .iter()
    .map(|n| format!("LoadModule {n}_module {m}/mod_{n}.so\n"))
    .collect();
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let user = if root { "User www-data\nGroup www-data\n" } else { "" };
    let conf = format!(
        "ServerRoot \"{d}\"\nServerName 127.0.0.1\nListen 127.0.0.1:{port}\nPidFile {d}/httpd.pid\nErrorLog {d}/error.log\n\
         {modules}TypesConfig /etc/mime.types\n{user}DavLockDB {d}/lock/DavLock\nDocumentRoot {d}/dav\n{site}",
        d = dir.display(),
        site = site(&dir),
    );
    std::fs::write(dir.join("httpd.conf"), conf).expect("config");
    if root {
        let _ =
            Command::new("chown").args(["-R", "www-data:www-data"]).arg(dir.join("dav")).arg(dir.join("lock")).status();
    }
    let log = dir.join("server.log");
    let args = vec!["-f".to_owned(), dir.join("httpd.conf").display().to_string(), "-DFOREGROUND".to_owned()];
    let mut tied = Tied::spawn("apache2", &args, &[("APACHE_LOG_DIR", &dir.display().to_string())], &log, Some(&dir));
    wait_port(port, &mut tied, &log);
    Some((port, dir, tied))
}

/// Apache mod_dav serving plain files: `/alice/` only for alice, `/bob/` only for bob (Basic),
/// alice's folder `/alice/files/`.
pub fn apache() -> Option<DavServer> {
    let (owner, other) = users();
    let site = |d: &Path| {
        let mut s = format!(
            "<Directory {d}/dav>\n  Dav On\n  AuthType Basic\n  AuthName \"davpush matrix\"\n  AuthBasicProvider file\n  \
             AuthUserFile {d}/htpasswd\n  Require valid-user\n</Directory>\n",
            d = d.display()
        );
        for u in [&owner, &other] {
            std::fs::create_dir_all(d.join("dav").join(&u.name)).expect("user folder");
            s.push_str(&format!(
                "<Directory {}/dav/{}>\n  Require user {}\n</Directory>\n",
                d.display(),
                u.name,
                u.name
            ));
        }
        std::fs::create_dir_all(d.join("dav").join(&owner.name).join("files")).expect("files folder");
        s
    };
    let (port, dir, tied) = apache_site("apache-dav", &[&owner, &other], site)?;
    Some(DavServer {
        name: "apache",
        url: format!("http://127.0.0.1:{port}/"),
        prefix: "/".into(),
        auth: AuthScheme::Basic,
        principal: None,
        calendar_home: None,
        addressbook_home: None,
        files_home: Some(format!("/{}/", owner.name)),
        calendar: None,
        addressbook: None,
        files: Some(format!("/{}/files/", owner.name)),
        litmus: format!("/{}/", owner.name),
        caps: Caps { lock: true, copy: true, proppatch: true, ..Caps::default() },
        data_dir: Some(dir.join("dav")),
        owner,
        other,
        guard: vec![tied],
    })
}

/// Xandikos (PyPI, `xandikos serve --defaults`), mounted under `/xandikos/`
/// (`--route-prefix`), behind Apache as the authenticating reverse proxy its documentation
/// recommends (Xandikos has no users of its own: one principal, `/xandikos/user/`, which the
/// proxy lets only alice reach). The proxy also forwards `/.well-known/` to Xandikos, which
/// redirects it to the prefix.
pub fn xandikos() -> Option<DavServer> {
    let py = crate::python::python_with(&["xandikos"])?;
    let (owner, other) = users();
    let xport = crate::free_port();
    let dir = temp_dir("xandikos");
    let args: Vec<String> = [
        "-m",
        "xandikos",
        "serve",
        "--defaults",
        "-d",
        &dir.join("data").display().to_string(),
        "--state-dir",
        &dir.join("state").display().to_string(),
        "-l",
        "127.0.0.1",
        "-p",
        &xport.to_string(),
        "--route-prefix",
        "/xandikos/",
        "--no-detect-systemd",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = dir.join("server.log");
    let mut tied = Tied::spawn(&py, &args, &[], &log, Some(&dir));
    wait_port(xport, &mut tied, &log);
    let owner_name = owner.name.clone();
    let site = move |d: &Path| {
        format!(
            "ProxyPreserveHost On\n\
             <Location /xandikos/>\n  AuthType Basic\n  AuthName \"xandikos\"\n  AuthBasicProvider file\n  \
             AuthUserFile {d}/htpasswd\n  Require user {owner_name}\n  \
             ProxyPass http://127.0.0.1:{xport}/xandikos/\n  ProxyPassReverse http://127.0.0.1:{xport}/xandikos/\n</Location>\n\
             <Location /.well-known/>\n  ProxyPass http://127.0.0.1:{xport}/.well-known/\n</Location>\n",
            d = d.display()
        )
    };
    let (port, _adir, proxy) = apache_site("xandikos-proxy", &[&owner, &other], site)?;
    let p = "/xandikos/user";
    Some(DavServer {
        name: "xandikos",
        url: format!("http://127.0.0.1:{port}/xandikos/"),
        prefix: "/xandikos/".into(),
        auth: AuthScheme::Basic,
        principal: Some(format!("{p}/")),
        calendar_home: Some(format!("{p}/calendars/")),
        addressbook_home: Some(format!("{p}/contacts/")),
        files_home: None,
        calendar: Some(format!("{p}/calendars/calendar/")),
        addressbook: Some(format!("{p}/contacts/addressbook/")),
        files: None,
        litmus: format!("{p}/"),
        caps: Caps {
            sync_collection: true,
            caldav: true,
            carddav: true,
            lock: false,
            mkcalendar: true,
            copy: true,
            proppatch: true,
            well_known: true,
        },
        data_dir: Some(dir.join("data")),
        owner,
        other,
        guard: vec![proxy, tied],
    })
}

fn users_of(list: &[(&str, &str)]) -> (User, User) {
    (User::new(list[0].0, list[0].1), User::new(list[1].0, list[1].1))
}

/// SabreDAV 1.8 ([`crate::sabredav`]) mounted at `/dav.php/` like Baïkal: alice's calendar and
/// address book `default`, her folder of plain files `/dav.php/files/alice/files/`. The matrix
/// runs on its calendars (CalDAV is what SabreDAV's users run). No sync-collection (SabreDAV
/// 1.8 has none: push messages carry no sync-token).
pub fn sabredav() -> Option<DavServer> {
    use crate::sabredav::SabreDav;
    let server = SabreDav::start()?;
    let (owner, other) = users_of(crate::radicale::USERS);
    let files = format!("{}files/", SabreDav::files_path(&owner.name));
    let mut s = DavServer {
        name: "sabredav",
        url: server.dav_url(),
        prefix: SabreDav::PREFIX.into(),
        auth: AuthScheme::Basic,
        principal: Some(format!("/dav.php/principals/{}/", owner.name)),
        calendar_home: Some(format!("/dav.php/calendars/{}/", owner.name)),
        addressbook_home: Some(format!("/dav.php/addressbooks/{}/", owner.name)),
        files_home: None,
        calendar: Some(SabreDav::calendar_path(&owner.name)),
        addressbook: Some(SabreDav::addressbook_path(&owner.name)),
        files: None,
        litmus: SabreDav::files_path(&owner.name),
        caps: Caps {
            sync_collection: false,
            caldav: true,
            carddav: true,
            // Locks are for files; a LOCK of a new member of a calendar makes an empty resource
            // that is no calendar object.
            lock: false,
            mkcalendar: true,
            copy: true,
            proppatch: true,
            well_known: true,
        },
        data_dir: Some(server.dir.clone()),
        owner,
        other,
        guard: Vec::new(),
    };
    let folder = block_on(async {
        let resp = reqwest::Client::new()
            .request(reqwest::Method::from_bytes(b"MKCOL").unwrap(), s.direct(&files))
            .header("Authorization", s.owner.basic())
            .send()
            .await
            .unwrap();
        resp.status().as_u16()
    });
    assert_eq!(folder, 201, "sabredav: MKCOL {files}");
    s.files = Some(files);
    s.guard.push(Tied::holding("sabredav", server));
    Some(s)
}

/// DAViCal ([`crate::davical`]) at `/caldav.php/`, with a PostgreSQL database of its own: alice's
/// principal is also her calendar and address-book home; her calendar `calendar` and address
/// book `addresses` are made here. sync-collection, no COPY, no locks on calendar members.
pub fn davical() -> Option<DavServer> {
    use crate::davical::Davical;
    let server = Davical::start()?;
    let (owner, other) = users_of(crate::radicale::USERS);
    let home = Davical::principal_path(&owner.name);
    let mut s = DavServer {
        name: "davical",
        url: format!("{}caldav.php/", server.url),
        prefix: Davical::PREFIX.into(),
        auth: AuthScheme::Basic,
        principal: Some(home.clone()),
        calendar_home: Some(home.clone()),
        addressbook_home: Some(home),
        files_home: None,
        calendar: None,
        addressbook: None,
        files: None,
        litmus: Davical::principal_path(&owner.name),
        caps: Caps {
            sync_collection: true,
            caldav: true,
            carddav: true,
            lock: false,
            mkcalendar: true,
            copy: false,
            proppatch: true,
            well_known: true,
        },
        data_dir: None,
        owner,
        other,
        guard: vec![Tied::holding("davical", server)],
    };
    block_on(async {
        s.calendar = Some(s.create(Kind::Calendar, "calendar").await);
        s.addressbook = Some(s.create(Kind::Addressbook, "addresses").await);
    });
    Some(s)
}

/// nginx with dav and dav-ext ([`crate::nginx_dav`]): plain files, alice's folder
/// `/files/alice/` (only hers), `/files/alice/files/` made here. LOCK/UNLOCK, COPY and MOVE; no
/// PROPPATCH, no sync-collection.
pub fn nginx() -> Option<DavServer> {
    use crate::nginx_dav::NginxDav;
    let server = NginxDav::start()?;
    let (owner, other) = users_of(crate::radicale::USERS);
    let home = NginxDav::files_path(&owner.name);
    let mut s = DavServer {
        name: "nginx",
        url: server.url.clone(),
        prefix: "/".into(),
        auth: AuthScheme::Basic,
        principal: None,
        calendar_home: None,
        addressbook_home: None,
        files_home: Some(home),
        calendar: None,
        addressbook: None,
        files: None,
        litmus: NginxDav::files_path(&owner.name),
        caps: Caps { lock: true, copy: true, ..Caps::default() },
        data_dir: Some(server.dir.join("data")),
        owner,
        other,
        guard: vec![Tied::holding("nginx", server)],
    };
    block_on(async { s.files = Some(s.create(Kind::Files, "files").await) });
    Some(s)
}
