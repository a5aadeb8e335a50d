//! Issue 16, "also through the davpush gateway": `davpush listen --push-service` for a
//! collection behind `davpush gateway` whose operator offers only Web Push (its Director has no
//! WebSocket, so the gateway advertises neither the Director's nor its own WebSocket, only
//! `transports` with the Director's VAPID key), while the user brings a Director of their own as
//! push service. This is what a user runs against a provider that offers only Web Push (as for
//! DAVx⁵): where the gateway does advertise a WebSocket, `listen` rightly prefers it and needs no
//! push service at all.
//!
//! The path: listen makes a push subscription at its Director (restricted to the advertised VAPID
//! key), registers it at the gateway by `push-register`; the gateway stores it as a Web Push
//! subscription at its Director; a PUT through the gateway makes that Director send RFC 8291
//! Web Push, VAPID-signed, to the push service's endpoint (loopback, allow-listed in
//! `[web_push]`); the push service hands the ciphertext to listen, which decrypts it and prints
//! the change with the gateway's topic. On exit listen removes its registration at the gateway
//! and its push subscription: the endpoint answers 410.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::procs::{self, ALICE, Radicale};

/// Forwards `listener` to `backend`, noting the first line of each connection's first read
/// (the request line of the push the gateway's Director sends: `POST /push/<id> HTTP/1.1`).
fn recording_proxy(listener: tokio::net::TcpListener, backend: std::net::SocketAddr) -> Arc<Mutex<Vec<String>>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut down, _)) = listener.accept().await else { return };
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(mut up) = tokio::net::TcpStream::connect(backend).await else { return };
                let mut first = vec![0u8; 8192];
                let Ok(n) = down.read(&mut first).await else { return };
                let text = String::from_utf8_lossy(&first[..n]);
                record.lock().unwrap().push(text.lines().next().unwrap_or_default().to_owned());
                if up.write_all(&first[..n]).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            });
        }
    });
    seen
}

/// `davpush serve --config` with `toml`.
fn serve(dir: &std::path::Path, name: &str, toml: &str) -> procs::Proc {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, toml).unwrap();
    let mut cmd = procs::davpush();
    cmd.args(["serve", "--config"]).arg(&file);
    procs::Proc::start(cmd, "Push Director listening")
}

/// Web Push subscriptions of `topic` at the Director of `data` (`GET /topics/active`).
async fn web_push_subscriptions(director: &procs::Proc, data: &std::path::Path, topic: &str) -> u64 {
    let token = std::fs::read_to_string(data.join("notify-token")).unwrap();
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{}topics/active", director.url()))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let topics = v["topics"].as_array().unwrap_or_else(|| panic!("{v}"));
    topics.iter().filter(|t| t["topic"] == topic).map(|t| t["services"]["web_push"].as_u64().unwrap_or(0)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_listen_receives_web_push_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("collections");
    let Some(radicale) =
        Radicale::start(dir.path(), &format!("[storage]\nfilesystem_folder = {}\n", storage.display()), &[])
    else {
        return;
    };

    // The user's push service: a Director reached through a recording forwarder.
    let ps_data = dir.path().join("push-service");
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_port = front.local_addr().unwrap().port();
    let ps = serve(
        dir.path(),
        "push-service",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[subscription]\nauth = \"none\"\n\
             [push_service]\nenabled = true\npublic_url = \"http://127.0.0.1:{front_port}\"\n",
            ps_data.display().to_string()
        ),
    );
    let seen = recording_proxy(front, ps.addr);

    // The provider: a Director with Web Push only (no WebSocket), allowed to push to the
    // loopback push service over http, and the gateway in front of Radicale.
    let data = dir.path().join("data");
    let director = serve(
        dir.path(),
        "director",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[websocket]\nenabled = false\n\
             [web_push]\nallow_hosts = [\"127.0.0.1:{front_port}\"]\nallow_http = true\n",
            data.display().to_string()
        ),
    );
    let gateway = procs::gateway(&data, &radicale.url, &director.url());
    let cal = format!("{}alice/calendar/", gateway.url());
    assert_eq!(procs::dav("MKCALENDAR", &cal, "").await, 201);
    let topic = procs::advertised_topic(&cal).await;
    // The text after `<P:vapid-public-key type="p256ecdsa">`.
    let transports = procs::alice_prop(
        &cal,
        r#"<propfind xmlns="DAV:" xmlns:P="https://bitfire.at/webdav-push"><prop><P:transports/></prop></propfind>"#,
        r#"type="p256ecdsa""#,
    )
    .await;
    assert!(transports.len() > 80, "the gateway advertises its Director's VAPID key: {transports}");

    // listen as a user runs it: the WebDAV login, the push service's WebSocket.
    std::fs::write(dir.path().join("pw"), format!("{}\n", ALICE.1)).unwrap();
    let listen = procs::davpush()
        .args(["listen", "--push-service", &format!("ws://{}/ws", ps.addr), "--user", ALICE.0, "--password-file"])
        .arg(dir.path().join("pw"))
        .arg(&cal)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut listen = Killed(Some(listen));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    let stdout = listen.0.as_mut().unwrap().stdout.take().unwrap();
    let stderr = listen.0.as_mut().unwrap().stderr.take().unwrap();
    std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    std::thread::spawn(move || {
        BufReader::new(stderr).lines().map_while(Result::ok).for_each(|l| drop(tx2.send(format!("stderr: {l}"))))
    });
    let logs =
        || format!("gateway: {:?}\ndirector: {:?}", gateway.stderr.lock().unwrap(), director.stderr.lock().unwrap());
    let wait_for = |what: &str| -> String {
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => continue,
                Err(_) => panic!("no `{what}` from davpush listen\n{}", logs()),
            }
        }
    };
    wait_for("subscribed 1 collection");
    assert_eq!(web_push_subscriptions(&director, &data, &topic).await, 1, "the gateway stored the registration");

    assert_eq!(procs::dav("PUT", &format!("{cal}e1.ics"), &procs::event("e1")).await, 201);
    let line = wait_for("\"update\"");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["collection"], cal.as_str());
    assert_eq!(v["topic"], topic.as_str(), "the gateway's topic");
    let pushed = seen.lock().unwrap().clone();
    let path = pushed
        .iter()
        .find_map(|l| l.strip_prefix("POST ").and_then(|l| l.split(' ').next()))
        .unwrap_or_else(|| panic!("the Director pushed to the push service: {pushed:?}"))
        .to_owned();
    assert!(path.starts_with("/push/"), "{path}");

    // The push subscription is restricted to the gateway's VAPID key: an unsigned push is refused.
    let post = async || {
        reqwest::Client::new()
            .post(format!("http://{}{path}", ps.addr))
            .header("content-encoding", "aes128gcm")
            .header("ttl", "60")
            .body(vec![0u8; 100])
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(post().await, 401, "an unsigned push to a VAPID-restricted subscription");

    // Exit: the registration is gone at the gateway, the endpoint answers 410.
    let mut child = listen.0.take().unwrap();
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(web_push_subscriptions(&director, &data, &topic).await, 0, "unregistered at the gateway\n{}", logs());
    assert_eq!(post().await, 410, "the push subscription ended with listen");
}

/// A child process killed when dropped (unless taken).
struct Killed(Option<std::process::Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
