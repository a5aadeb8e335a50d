//! Issue 13 (systemd units, `Type=notify`): `davpush serve` and `davpush gateway`, started with
//! a `NOTIFY_SOCKET` the test holds, send `READY=1` once their port answers HTTP, nothing before,
//! and `STOPPING=1` on SIGTERM, then exit 0. The Director's socket is a path, the gateway's one
//! in the abstract namespace (systemd uses both forms).

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills the child on drop (also when an assertion fails).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    crate::documented::free_port()
}

/// The next datagram on `socket`, within 60 s (a cold start under load), as text.
fn next_message(socket: &UnixDatagram, log: &Path) -> String {
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = [0u8; 512];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8(buf[..n].to_vec()).unwrap(),
        Err(e) => {
            panic!("no notification within 60 s ({e}); log:\n{}", std::fs::read_to_string(log).unwrap_or_default())
        }
    }
}

/// Asserts nothing more was sent.
fn assert_no_message(socket: &UnixDatagram) {
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    match socket.recv(&mut buf) {
        Ok(n) => panic!("unexpected notification {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
    socket.set_nonblocking(false).unwrap();
}

/// One HTTP/1.1 GET on a fresh connection: status and body. Fails if the port does not accept.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the port accepts connections");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Starts `davpush <args>` with `NOTIFY_SOCKET=<notify_socket>`, its log in `log`.
fn start(args: &[&str], notify_socket: &str, log: &Path) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_davpush"))
        .args(args)
        .env("NOTIFY_SOCKET", notify_socket)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Killed(child)
}

/// SIGTERM, then `STOPPING=1` and exit status 0.
fn terminate_and_expect_stopping(mut child: Killed, socket: &UnixDatagram, log: &Path) {
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert_eq!(next_message(socket, log), "STOPPING=1");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "exit {status}; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
    assert_no_message(socket);
}

fn director_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let config = dir.join("davpush.toml");
    let data = dir.join("data").display().to_string();
    std::fs::write(&config, format!("[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = {data:?}\n")).unwrap();
    config
}

#[test]
fn issue_13_serve_notifies_ready_once_it_answers_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let port = free_port();
    let config = director_config(dir.path(), port);
    let log = dir.path().join("serve.log");
    let child = start(&["serve", "--config", config.to_str().unwrap()], path.to_str().unwrap(), &log);

    assert_eq!(next_message(&socket, &log), "READY=1");
    // Ready means serving: the first request after READY=1 is answered.
    let (status, body) = get(port, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert_no_message(&socket);
    terminate_and_expect_stopping(child, &socket, &log);
}

#[test]
fn issue_13_gateway_notifies_ready_once_it_answers_and_stopping_on_sigterm() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::tempdir().unwrap();
    // The Director the gateway talks to (it generates the tokens the gateway reads).
    let director_socket_path = dir.path().join("director.sock");
    let director_socket = UnixDatagram::bind(&director_socket_path).unwrap();
    let director_port = free_port();
    let config = director_config(dir.path(), director_port);
    let director_log = dir.path().join("serve.log");
    let _director =
        start(&["serve", "--config", config.to_str().unwrap()], director_socket_path.to_str().unwrap(), &director_log);
    assert_eq!(next_message(&director_socket, &director_log), "READY=1");

    let name = format!("davpush-test-gateway-{}-{director_port}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let port = free_port();
    let gateway_config = dir.path().join("gateway.toml");
    std::fs::write(
        &gateway_config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nupstream = \"http://127.0.0.1:9/\"\n\
             director_url = \"http://127.0.0.1:{director_port}\"\ndata_dir = {:?}\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let log = dir.path().join("gateway.log");
    let child = start(&["gateway", "--config", gateway_config.to_str().unwrap()], &format!("@{name}"), &log);

    assert_eq!(next_message(&socket, &log), "READY=1");
    // The gateway serves its own browser client without the upstream.
    let (status, body) = get(port, "/.davpush/client/davpush.js");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("export"), "{body}");
    assert_no_message(&socket);
    terminate_and_expect_stopping(child, &socket, &log);
}

#[test]
fn issue_13_a_bad_configuration_exits_64_and_never_notifies_ready() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let config = dir.path().join("davpush.toml");
    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:0\"\nno_such_key = 1\n").unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_davpush"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &path)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(64));
    assert_no_message(&socket);
}
