//! TLS-terminating reverse proxies as deployed (issue 13, docs/operations.md "Behind a reverse
//! proxy (TLS)"): a test CA with a server certificate for `localhost`, and real nginx and Caddy
//! (Debian's packages) started as non-daemon children on a free port with the shipped
//! configuration files (`packaging/proxy/`), rendered by [`render`] with only the documented
//! substitutions. Each proxy is stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio_rustls::rustls;

/// The public host name of the shipped configurations, which tests replace.
pub const PUBLIC_HOST: &str = "dav.example.org";

/// A new private CA and a server certificate it signed for `localhost` and `127.0.0.1`.
struct Generated {
    ca_pem: String,
    leaf: rcgen::Certificate,
    leaf_key: rcgen::KeyPair,
}

fn generate() -> Generated {
    let ca_key = rcgen::KeyPair::generate().expect("test certificate");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("test certificate");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "davpush test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("test certificate");
    let leaf_key = rcgen::KeyPair::generate().expect("test certificate");
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).expect("test certificate");
    // rustls refuses a CA used as an end entity: the leaf is signed by the CA.
    leaf_params.is_ca = rcgen::IsCa::ExplicitNoCa;
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("test certificate");
    Generated { ca_pem: ca.pem(), leaf, leaf_key }
}

/// Terminates TLS on `listener` with a server certificate for `localhost` from a new test CA
/// and forwards each connection to `backend`, as a TLS-terminating reverse proxy does in
/// production; returns the CA (PEM) for clients to trust. Runs on the current tokio runtime.
pub fn rustls_proxy(listener: tokio::net::TcpListener, backend: std::net::SocketAddr) -> String {
    let g = generate();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(g.leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS settings")
        .with_no_client_auth()
        .with_single_cert(vec![g.leaf.der().clone()], key)
        .expect("test certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut up) = tokio::net::TcpStream::connect(backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    g.ca_pem
}

/// A private CA and a server certificate it signed for `localhost` and `127.0.0.1`, as PEM
/// files in a folder (for nginx and Caddy).
pub struct TestCa {
    /// The CA's certificate (PEM), what clients are told to trust.
    pub ca_pem: String,
    /// Its file.
    pub ca_file: PathBuf,
    /// The server certificate (PEM), followed by nothing else: the CA is the root.
    pub cert_file: PathBuf,
    /// The server's private key (PKCS#8 PEM).
    pub key_file: PathBuf,
    /// base64 of the SHA-256 of the server key's SubjectPublicKeyInfo: Chromium's
    /// `--ignore-certificate-errors-spki-list` value, which makes it trust this certificate.
    pub spki_sha256: String,
}

impl TestCa {
    /// Generates the CA and the server certificate into `dir`.
    pub fn create(dir: &Path) -> TestCa {
        use rcgen::PublicKeyData as _;
        let g = generate();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &g.leaf_key.subject_public_key_info());
        let out = TestCa {
            ca_pem: g.ca_pem,
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server-key.pem"),
            spki_sha256: base64::engine::general_purpose::STANDARD.encode(digest.as_ref()),
        };
        std::fs::write(&out.ca_file, &out.ca_pem).unwrap();
        std::fs::write(&out.cert_file, g.leaf.pem()).unwrap();
        std::fs::write(&out.key_file, g.leaf_key.serialize_pem()).unwrap();
        out
    }

    /// An HTTP client that trusts the test CA (and nothing else new).
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_merge([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()])
            .no_proxy()
            .build()
            .unwrap()
    }

    /// TLS settings for WebSocket clients: the test CA as the only root.
    pub fn rustls_client(&self) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// `template` with every `(from, to)` replaced; each `from` must occur, so that a changed
/// shipped file fails the test instead of being run half-substituted.
pub fn render(template: &str, substitutions: &[(&str, String)]) -> String {
    let mut out = template.to_owned();
    for (from, to) in substitutions {
        assert!(out.contains(from), "the configuration has no `{from}` to replace");
        out = out.replace(from, to);
    }
    out
}

/// Which proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// nginx (Debian's `nginx`).
    Nginx,
    /// Caddy (Debian's `caddy`).
    Caddy,
}

/// A running reverse proxy terminating TLS on `127.0.0.1:<port>`.
pub struct Proxy {
    child: Child,
    kind: Kind,
    /// The TLS port.
    pub port: u16,
    log: PathBuf,
}

fn installed(name: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success())
}

impl Proxy {
    /// Runs nginx in `dir` with `site` (the rendered `packaging/proxy/nginx/davpush.conf`,
    /// which listens on `port`) included in a minimal main configuration of the test's own:
    /// `nginx -p <dir> -c <dir>/nginx.conf -g 'daemon off;'`. `None`: skipped (no nginx,
    /// [`crate::require`]).
    pub fn nginx(dir: &Path, site: &str, port: u16) -> Option<Proxy> {
        if !installed("nginx") {
            crate::require::missing("nginx is not installed", "apt-get install nginx");
            return None;
        }
        // nginx's workers (www-data when started as root) create their temp folders here.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let d = dir.display();
        std::fs::write(dir.join("davpush.conf"), site).unwrap();
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
                 events {{ worker_connections 512; }}\n\
                 http {{\n  client_body_temp_path {d}/tmp-body;\n  proxy_temp_path {d}/tmp-proxy;\n\
                 fastcgi_temp_path {d}/tmp-fastcgi;\n  uwsgi_temp_path {d}/tmp-uwsgi;\n  scgi_temp_path {d}/tmp-scgi;\n\
                 include {d}/davpush.conf;\n}}\n"
            ),
        )
        .unwrap();
        let log = dir.join("error.log");
        let mut cmd = Command::new("nginx");
        cmd.arg("-p")
            .arg(format!("{d}/"))
            .arg("-e")
            .arg(&log)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"]);
        Some(Proxy::spawn(cmd, Kind::Nginx, port, log))
    }

    /// Runs Caddy in `dir` with `caddyfile` (the rendered `packaging/proxy/caddy/Caddyfile`,
    /// serving `localhost:<port>`): `caddy run --config Caddyfile --adapter caddyfile`, its
    /// state in `dir`. `None`: skipped (no Caddy, [`crate::require`]).
    pub fn caddy(dir: &Path, caddyfile: &str, port: u16) -> Option<Proxy> {
        if !installed("caddy") {
            crate::require::missing("caddy is not installed", "apt-get install caddy");
            return None;
        }
        std::fs::write(dir.join("Caddyfile"), caddyfile).unwrap();
        let log = dir.join("caddy.log");
        let mut cmd = Command::new("caddy");
        cmd.current_dir(dir)
            .args(["run", "--config", "Caddyfile", "--adapter", "caddyfile"])
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"));
        Some(Proxy::spawn(cmd, Kind::Caddy, port, log))
    }

    fn spawn(mut cmd: Command, kind: Kind, port: u16, log: PathBuf) -> Proxy {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir_of(&log).join(format!("{kind:?}.stdout"))).unwrap())
            .stderr(std::fs::File::create(log.with_extension("stderr")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {kind:?}: {e}"));
        let mut proxy = Proxy { child, kind, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                panic!("{kind:?} exited ({status}) before listening on {port}: {}", proxy.log());
            }
            assert!(Instant::now() < deadline, "{kind:?} did not listen on {port} within 30 s: {}", proxy.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        proxy
    }

    /// `https://localhost:<port>`, the public origin (no trailing slash).
    pub fn origin(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// What the proxy logged (its error log and stderr).
    pub fn log(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(&self.log), read(&self.log.with_extension("stderr")))
    }
}

fn dir_of(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("."))
}

impl Drop for Proxy {
    fn drop(&mut self) {
        match self.kind {
            // The master stops its workers on TERM (fast shutdown); killed, it would leave them
            // holding the port.
            Kind::Nginx => {
                let _ = Command::new("kill")
                    .args(["-TERM", &self.child.id().to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            Kind::Caddy => {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}
