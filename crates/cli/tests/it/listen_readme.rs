//! Issue 12, item 5: `davpush listen` with only a WebDAV account, through the gateway's
//! WebSocket: the README's command as printed (only the host replaced), against `davpush serve`,
//! `davpush gateway` and Radicale; and a usage error when the server wants a login.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{self, ALICE, Radicale};

/// The host of the README's example.
const HOST: &str = "https://dav.example.org/";

/// A Radicale without hook, `davpush serve` and `davpush gateway` in front of it.
struct Stack {
    dir: tempfile::TempDir,
    gateway: procs::Proc,
    director: Option<procs::Proc>,
    _radicale: Radicale,
}

fn stack() -> Option<Stack> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let storage = dir.path().join("collections");
    let radicale =
        Radicale::start(dir.path(), &format!("[storage]\nfilesystem_folder = {}\n", storage.display()), &[])?;
    let director = procs::director(&data);
    let gateway = procs::gateway(&data, &radicale.url, &director.url());
    Some(Stack { dir, gateway, director: Some(director), _radicale: radicale })
}

/// Waits for `cond` (at most `within`), checking that `child` still runs.
async fn eventually(
    child: &mut std::process::Child,
    stderr: &std::path::Path,
    what: &str,
    within: Duration,
    cond: impl Fn() -> bool,
) {
    let start = Instant::now();
    let log = || std::fs::read_to_string(stderr).unwrap_or_default();
    while !cond() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("davpush listen exited ({status}) before {what}: {}", log());
        }
        assert!(start.elapsed() < within, "not within {within:?}: {what}: {}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_the_readme_listen_command_runs_its_exec_with_only_a_webdav_account() {
    let readme = procs::fenced_block(&procs::repo_file("README.md"), "sh", "davpush listen");
    let clients = procs::fenced_block(&procs::repo_file("docs/clients.md"), "sh", "davpush listen");
    assert_eq!(readme, clients, "README.md and docs/clients.md show the same command");
    assert!(readme.contains(HOST) && readme.contains("--password-file pw") && !readme.contains("token"), "{readme}");
    let Some(s) = stack() else { return };
    let cal = "/alice/calendar/";
    assert_eq!(procs::dav("MKCALENDAR", &format!("{}{}", s.gateway.url(), &cal[1..]), "").await, 201);

    // The working directory holds `pw`, as the command expects; `vdirsyncer` is a script that
    // notes its arguments and the collection it was run for (vdirsyncer itself is not needed
    // to see that the command ran).
    let cwd = s.dir.path().join("home");
    let bin = s.dir.path().join("bin");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(cwd.join("pw"), format!("{}\n", ALICE.1)).unwrap();
    let runs = s.dir.path().join("vdirsyncer-runs");
    let shim = bin.join("vdirsyncer");
    std::fs::write(&shim, format!("#!/bin/sh\necho \"$* $DAVPUSH_COLLECTION\" >> '{}'\n", runs.display())).unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let command = readme.trim().replace(HOST, &s.gateway.url());
    let mut sh = Command::new("sh");
    procs::clean_env(&mut sh);
    let path = format!("{}:{}", bin.display(), procs::path_with_davpush());
    let stderr_file = s.dir.path().join("listen.stderr");
    let stdout_file = s.dir.path().join("listen.stdout");
    let child = sh
        .current_dir(&cwd)
        .env("PATH", &path)
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_file).unwrap())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let stderr = || std::fs::read_to_string(&stderr_file).unwrap_or_default();
    eventually(&mut child.0, &stderr_file, "subscribed", Duration::from_secs(20), || {
        stderr().contains("subscribed 1 collection(s)")
    })
    .await;

    // A change through the gateway.
    let event = format!("{}{}e1.ics", s.gateway.url(), &cal[1..]);
    assert_eq!(procs::dav("PUT", &event, &procs::event("e1")).await, 201);
    let collection = format!("{}{}", s.gateway.url(), &cal[1..]);
    let ran = || std::fs::read_to_string(&runs).unwrap_or_default();
    eventually(&mut child.0, &stderr_file, "`vdirsyncer sync` ran", Duration::from_secs(15), || !ran().is_empty())
        .await;
    assert_eq!(ran(), format!("sync {collection}\n"), "stderr: {}", stderr());
    let stdout = std::fs::read_to_string(&stdout_file).unwrap();
    let update: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!((update["type"].as_str(), update["collection"].as_str()), (Some("update"), Some(collection.as_str())));
    assert!(!stderr().contains("refused"), "{}", stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_listen_without_user_against_a_server_that_wants_one_is_a_usage_error() {
    let Some(s) = stack() else { return };
    let cal = "/alice/calendar/";
    assert_eq!(procs::dav("MKCALENDAR", &format!("{}{}", s.gateway.url(), &cal[1..]), "").await, 201);
    let url = format!("{}{}", s.gateway.url(), &cal[1..]);
    let out = procs::davpush().args(["listen", &url]).stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("requires a login") && stderr.contains("--user"), "{stderr}");

    // A wrong password is not a usage error: the credentials were refused (77).
    std::fs::write(s.dir.path().join("wrong"), "wrong\n").unwrap();
    let out = procs::davpush()
        .args(["listen", &url, "--user", ALICE.0, "--password-file"])
        .arg(s.dir.path().join("wrong"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_listen_through_the_gateway_reconnects_after_a_director_restart() {
    let Some(mut s) = stack() else { return };
    let cal = "/alice/restart/";
    let collection = format!("{}{}", s.gateway.url(), &cal[1..]);
    assert_eq!(procs::dav("MKCALENDAR", &collection, "").await, 201);
    let pw = s.dir.path().join("pw");
    std::fs::write(&pw, format!("{}\n", ALICE.1)).unwrap();
    let stderr_file = s.dir.path().join("listen.stderr");
    let stdout_file = s.dir.path().join("listen.stdout");
    let child = procs::davpush()
        .args(["listen", &collection, "--user", ALICE.0, "--password-file"])
        .arg(&pw)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_file).unwrap())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let stderr = || std::fs::read_to_string(&stderr_file).unwrap_or_default();
    let subscribed = || stderr().matches("subscribed 1 collection(s)").count();
    eventually(&mut child.0, &stderr_file, "subscribed", Duration::from_secs(20), || subscribed() == 1).await;

    // The Director goes away and comes back on the same address.
    let addr = s.director.take().unwrap().addr.to_string();
    eventually(&mut child.0, &stderr_file, "disconnected", Duration::from_secs(20), || {
        stderr().contains("disconnected")
    })
    .await;
    s.director = Some(procs::director_on(&s.dir.path().join("data"), &addr));
    eventually(&mut child.0, &stderr_file, "subscribed again", Duration::from_secs(40), || subscribed() == 2).await;

    assert_eq!(procs::dav("PUT", &format!("{collection}after.ics"), &procs::event("after")).await, 201);
    let updates = || {
        std::fs::read_to_string(&stdout_file).unwrap_or_default().lines().filter(|l| l.contains("\"update\"")).count()
    };
    eventually(&mut child.0, &stderr_file, "the change after the restart", Duration::from_secs(15), || updates() == 1)
        .await;
    assert!(std::fs::read_to_string(&stdout_file).unwrap().contains("\"resync\""), "a resync after the reconnect");
}
