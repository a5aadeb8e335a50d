//! Issue 16 end to end, against an independent server that pushes by itself: Xandikos
//! (`xandikos serve --webdav-push`, PyPI) sends RFC 8030 Web Push — encrypted and
//! VAPID-signed by `pywebpush` — to the Director acting as push service (over TLS, a test CA:
//! Xandikos only pushes to https), and `davpush listen --push-service` prints the change with
//! the topic Xandikos advertises.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;

/// A test CA and a leaf for `localhost` signed by it.
fn certificates() -> (String, rustls::pki_types::CertificateDer<'static>, rustls::pki_types::PrivateKeyDer<'static>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "davpush test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    (ca.pem(), leaf.der().clone(), key)
}

/// Terminates TLS on `listener` and forwards to `backend` (as a reverse proxy in production).
fn tls_proxy(listener: tokio::net::TcpListener, backend: std::net::SocketAddr) -> String {
    let (ca_pem, cert, key) = certificates();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
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
    ca_pem
}

/// A child process killed when dropped.
struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_xandikos_pushes_through_the_director_to_davpush_listen() {
    let Some(py) = davpush_testkit::python::python_with(&["xandikos", "pywebpush", "py_vapid"]) else { return };
    let dir = tempfile::tempdir().unwrap();

    // The Director, reached by Xandikos at https://localhost:<tls>/push/… through a TLS proxy.
    let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_port = tls.local_addr().unwrap().port();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[subscription]\nauth = \"none\"\n\
         [push_service]\nenabled = true\npublic_url = \"https://localhost:{tls_port}\"\n",
        dir.path().join("director").display().to_string()
    );
    let raw =
        davpush_director::RawConfig::from_toml(&toml, &std::collections::BTreeMap::new(), &Default::default()).unwrap();
    let director = davpush_director::spawn(davpush_director::Config::from_raw(raw).unwrap()).await.unwrap();
    let ca_pem = tls_proxy(tls, director.addr);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();

    // Xandikos with WebDAV-Push, allowed to push to loopback, trusting the test CA. Xandikos
    // sends with a `requests` session that ignores the environment (`trust_env = False`, so
    // `REQUESTS_CA_BUNDLE` is not read): a `sitecustomize` makes the CA `requests`' default
    // bundle instead, without touching Xandikos.
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join("sitecustomize.py"),
        format!(
            "import requests.adapters, requests.utils\nrequests.adapters.DEFAULT_CA_BUNDLE_PATH = {ca:?}\n\
             requests.utils.DEFAULT_CA_BUNDLE_PATH = {ca:?}\n",
            ca = ca.display().to_string()
        ),
    )
    .unwrap();
    let xport = davpush_testkit::free_port();
    let xlog = dir.path().join("xandikos.log");
    let out = std::fs::File::create(&xlog).unwrap();
    let xandikos = Command::new(&py)
        .args(["-m", "xandikos", "serve", "--defaults", "--webdav-push", "--no-detect-systemd", "-l", "127.0.0.1"])
        .args(["-p", &xport.to_string(), "-d"])
        .arg(dir.path().join("xandikos"))
        .arg("--state-dir")
        .arg(dir.path().join("xandikos-state"))
        .env("XANDIKOS_ALLOW_INTERNAL_PUSH_RESOURCE", "1")
        .env("REQUESTS_CA_BUNDLE", &ca)
        .env("PYTHONPATH", &site)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    let _xandikos = Killed(xandikos);
    let http = reqwest::Client::new();
    let calendar = format!("http://127.0.0.1:{xport}/user/calendars/calendar/");
    davpush_testkit::eventually("Xandikos answers", || async {
        http.request(reqwest::Method::OPTIONS, &calendar).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    let propfind = http
        .request(reqwest::Method::from_bytes(b"PROPFIND").unwrap(), &calendar)
        .header("depth", "0")
        .header("content-type", "application/xml")
        .body(r#"<d:propfind xmlns:d="DAV:" xmlns:p="https://bitfire.at/webdav-push"><d:prop><p:topic/></d:prop></d:propfind>"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let topic = propfind.split("topic>").nth(1).and_then(|t| t.split('<').next()).unwrap_or_default().to_owned();
    assert!(!topic.is_empty(), "Xandikos advertises a topic: {propfind}");

    let mut listen = Command::new(env!("CARGO_BIN_EXE_davpush"))
        .args(["listen", "--push-service", &format!("wss://localhost:{tls_port}/ws"), "--ca-file"])
        .arg(&ca)
        .arg(&calendar)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = listen.stdout.take().unwrap();
    let stderr = listen.stderr.take().unwrap();
    let _listen = Killed(listen);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    std::thread::spawn(move || {
        BufReader::new(stderr).lines().map_while(Result::ok).for_each(|l| drop(tx2.send(format!("stderr: {l}"))))
    });
    let wait_for = |what: &str| -> String {
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => continue,
                Err(_) => panic!(
                    "no `{what}` from davpush listen; Xandikos log:\n{}",
                    std::fs::read_to_string(&xlog).unwrap()
                ),
            }
        }
    };
    wait_for("subscribed 1 collection");

    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//davpush//test//EN\r\nBEGIN:VEVENT\r\nUID:push-1\r\n\
               DTSTAMP:20260101T000000Z\r\nDTSTART:20260102T100000Z\r\nSUMMARY:pushed\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let put = http
        .put(format!("{calendar}push-1.ics"))
        .header("content-type", "text/calendar")
        .body(ics)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let line = wait_for("\"update\"");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["collection"], calendar.as_str());
    assert_eq!(v["topic"], topic.as_str(), "the topic Xandikos advertises");
    assert!(v["sync_token"].is_string(), "Xandikos sends its new sync-token: {v}");
    director.shutdown().await.unwrap();
}
