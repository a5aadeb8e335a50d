//! A documented command is a tested command: every shell block of the README, `docs/` and
//! `examples/` is run by a test exactly as printed, with real software on the other end, or is
//! named in [`RUN_ELSEWHERE`] with the test or CI step that runs it. A new block that no test
//! runs fails [`every_documented_shell_block_is_run_by_a_test`].
//!
//! What a test changes in a block before running it, and only this ([`Sandbox::script`]):
//! - `cargo run [-q] --release --` and `target/release/davpush` become `davpush`, the binary
//!   built for this test from the same sources (a release build inside a test would take minutes);
//! - the documented ports (`127.0.0.1:8080`, `:8081`, `:5232`) become free ones, as two test runs
//!   on one machine must not meet; the Director and gateway are told so by `DAVPUSH_SERVER__LISTEN`
//!   and `--listen`-free configuration through the environment;
//! - `pip install …` is not run (tests touch nothing beyond loopback): `cargo xtask test` has
//!   installed `requirements-test.txt`, and `python3` is that interpreter;
//! - absolute paths of a production layout (`/var/lib/…`, `/etc/davpush/…`) move into the test's
//!   own folder.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Blocks a test elsewhere runs (file, first command line, who runs it).
const RUN_ELSEWHERE: &[(&str, &str, &str)] = &[
    ("README.md", "cargo xtask test                 # everything; what CI runs", ".ci/run runs `cargo xtask test`"),
    (
        "README.md",
        "cargo install cargo-fuzz --locked   # once; fuzz/run.sh does it when missing",
        ".ci/run runs fuzz/run.sh (installing cargo-fuzz when missing)",
    ),
];

/// Blocks this file runs (file, first command line, test).
const RUN_HERE: &[(&str, &str, &str)] = &[
    (
        "README.md",
        "cargo run --release -- serve     # runs the Push Director: 127.0.0.1:8080, SQLite in ./davpush-data/",
        "the_readme_first_lines_run_the_director_and_the_tests",
    ),
    ("README.md", "cargo run --release -- serve", "try_it_exactly_as_the_readme_prints_it"),
    ("README.md", "pip install websockets", "try_it_exactly_as_the_readme_prints_it"),
    ("README.md", "curl -sS -X POST http://127.0.0.1:8080/notify \\", "try_it_exactly_as_the_readme_prints_it"),
    (
        "README.md",
        "davpush serve &                                          # the Director (embedded defaults)",
        "the_gateway_block_of_the_readme_in_front_of_radicale",
    ),
    ("README.md", "cargo build --release", "the_load_tool_block_of_the_readme"),
    (
        "docs/relay.md",
        "davpush relay issue-key --keys-file /var/lib/davpush-relay/keys.json --label dav.example.org",
        "the_relay_key_commands_of_docs_relay_md",
    ),
];

/// A fenced shell block (```sh, ```bash, ```console, ```shell) of a doc.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) file: String,
    pub(crate) line: usize,
    pub(crate) text: String,
}

impl Block {
    /// The first line that is not a comment.
    pub(crate) fn first_command(&self) -> &str {
        self.text.lines().find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).unwrap_or("")
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every shell block of the README, `docs/*.md` and `examples/*` (in Markdown files).
pub(crate) fn blocks() -> Vec<Block> {
    let root = root();
    let mut files = vec!["README.md".to_owned()];
    for dir in ["docs", "examples"] {
        let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".md"))
            .map(|n| format!("{dir}/{n}"))
            .collect();
        names.sort();
        files.extend(names);
    }
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        let mut open: Option<(usize, String)> = None;
        for (i, line) in text.lines().enumerate() {
            match &mut open {
                None => {
                    let fence = line.trim_start();
                    if let Some(lang) = fence.strip_prefix("```")
                        && matches!(lang.trim(), "sh" | "bash" | "console" | "shell")
                    {
                        open = Some((i + 2, String::new()));
                    }
                }
                Some((start, body)) => {
                    if line.trim_start().starts_with("```") {
                        out.push(Block { file: file.clone(), line: *start, text: std::mem::take(body) });
                        open = None;
                    } else {
                        body.push_str(line);
                        body.push('\n');
                    }
                }
            }
        }
    }
    out
}

/// The block of `file` whose first command line is `first`.
pub(crate) fn block(file: &str, first: &str) -> Block {
    blocks()
        .into_iter()
        .find(|b| b.file == file && b.first_command() == first)
        .unwrap_or_else(|| panic!("{file} has no shell block starting with {first:?}"))
}

#[test]
fn every_documented_shell_block_is_run_by_a_test() {
    let all = blocks();
    assert!(all.len() >= 8, "the docs' shell blocks were not found: {all:?}");
    let claimed: Vec<(&str, &str)> = RUN_ELSEWHERE
        .iter()
        .chain(RUN_HERE)
        .chain(crate::documented_elsewhere::CLAIMS)
        .map(|(f, c, _)| (*f, *c))
        .collect();
    let unclaimed: Vec<String> = all
        .iter()
        .filter(|b| !claimed.contains(&(b.file.as_str(), b.first_command())))
        .map(|b| format!("{}:{}: {}", b.file, b.line, b.first_command()))
        .collect();
    assert!(unclaimed.is_empty(), "documented commands that no test runs:\n{}", unclaimed.join("\n"));
    let stale: Vec<String> = claimed
        .iter()
        .filter(|(f, c)| !all.iter().any(|b| b.file == *f && b.first_command() == *c))
        .map(|(f, c)| format!("{f}: {c}"))
        .collect();
    assert!(stale.is_empty(), "claimed blocks that are no longer in the docs:\n{}", stale.join("\n"));
}

/// A folder with `davpush` and `python3` first on `PATH`, where blocks run as scripts.
pub(crate) struct Sandbox {
    pub(crate) dir: tempfile::TempDir,
    path: String,
    /// Documented `from` → actual `to`, applied to every script.
    replace: Vec<(String, String)>,
    children: Vec<Child>,
}

/// A port free now for a process this test starts ([`davpush_testkit::free_port`]).
pub(crate) fn free_port() -> u16 {
    davpush_testkit::free_port()
}

impl Sandbox {
    pub(crate) fn new() -> Option<Sandbox> {
        let py = davpush_testkit::python::python_with(&["websockets"])?;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join(".bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_davpush"), bin.join("davpush")).unwrap();
        // A wrapper, not a symlink: a virtualenv's interpreter finds its packages from its path.
        let wrapper = bin.join("python3");
        std::fs::write(&wrapper, format!("#!/bin/sh\nexec '{py}' \"$@\"\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let replace = vec![
            ("cargo run -q --release --".to_owned(), "davpush".to_owned()),
            ("cargo run --release --".to_owned(), "davpush".to_owned()),
            ("target/release/davpush".to_owned(), "davpush".to_owned()),
        ];
        Some(Sandbox { dir, path, replace, children: Vec::new() })
    }

    /// Replaces `from` by `to` in every script from now on.
    pub(crate) fn replace(&mut self, from: &str, to: &str) {
        self.replace.push((from.to_owned(), to.to_owned()));
    }

    /// The block's text with the replacements, without `pip install` lines.
    pub(crate) fn script(&self, block: &Block) -> String {
        let mut text: String = block
            .text
            .lines()
            .filter(|l| !l.trim_start().starts_with("pip install"))
            .map(|l| format!("{l}\n"))
            .collect();
        for (from, to) in &self.replace {
            text = text.replace(from, to);
        }
        text
    }

    pub(crate) fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", script])
            .current_dir(self.dir.path())
            .env("PATH", &self.path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `script` to its end; (stdout, stderr), panicking on a non-zero exit. What the
    /// script started in the background (`… &`) is stopped when it ends.
    pub(crate) fn run(&self, script: &str, envs: &[(&str, &str)]) -> (String, String) {
        let (out_path, err_path) = (self.dir.path().join(".stdout"), self.dir.path().join(".stderr"));
        let mut child = self
            .command(script)
            .envs(envs.iter().copied())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        let status = child.wait().unwrap();
        stop_group(child.id());
        let (stdout, stderr) =
            (std::fs::read_to_string(&out_path).unwrap(), std::fs::read_to_string(&err_path).unwrap());
        assert!(status.success(), "{script}\nexited {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        (stdout, stderr)
    }

    /// Starts `script` in the background (killed with the sandbox); stdout and stderr piped.
    pub(crate) fn spawn(&mut self, script: &str, envs: &[(&str, &str)]) -> usize {
        let child = self
            .command(script)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    pub(crate) fn child(&mut self, i: usize) -> &mut Child {
        &mut self.children[i]
    }
}

use std::os::unix::process::CommandExt;

/// SIGTERM to every process of group `pgid` (a script's shell and what it started). `pkill -g`,
/// as procps 4.0's `kill -TERM -<pgid>` is not reliable about negative ids.
fn stop_group(pgid: u32) {
    if pgid > 1 {
        let _ = Command::new("pkill").args(["-TERM", "-g", &pgid.to_string()]).status();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for c in &mut self.children {
            // The whole process group: bash and what it started in the background.
            stop_group(c.id());
            let _ = c.wait();
        }
    }
}

/// Reads lines from `r` on a thread of their own; they arrive on the returned channel.
pub(crate) fn lines_of(r: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects lines from `rx` until `done(lines)` holds (30 s at most).
pub(crate) fn read_until(
    rx: &std::sync::mpsc::Receiver<String>,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    while !done(&lines) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("{what}: not within 30 s; got:\n{}", lines.join("\n")),
        }
    }
    lines
}

pub(crate) fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port} after 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The README's first lines: the Director with the embedded defaults, and the tests.
#[test]
fn the_readme_first_lines_run_the_director_and_the_tests() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let head = block("README.md", RUN_HERE[0].1);
    let commands: Vec<&str> = head.text.lines().collect();
    assert!(readme.find("```sh").unwrap() < 200, "the README does not open with its two commands");
    assert_eq!(commands.len(), 2, "{head:?}");
    // The second is what CI runs: .ci/run ends with it.
    let test_cmd = commands[1].split('#').next().unwrap().trim();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(ci.lines().any(|l| l.trim() == test_cmd), ".ci/run does not run the README's test command {test_cmd:?}");
    // The first is the Try-it start, run below.
    let serve = commands[0].split('#').next().unwrap().trim();
    assert_eq!(serve, block("README.md", "cargo run --release -- serve").first_command());
}

#[test]
fn try_it_exactly_as_the_readme_prints_it() {
    let Some(mut sb) = Sandbox::new() else { return };
    let port = free_port();
    sb.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let listen = format!("127.0.0.1:{port}");
    let envs = [("DAVPUSH_SERVER__LISTEN", listen.as_str())];

    // 1. The Director, which announces the secrets it generated, as the comment shows.
    let serve = block("README.md", "cargo run --release -- serve");
    let expected: Vec<String> = serve
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .filter(|l| l.starts_with("davpush: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(expected.len(), 4, "{serve:?}");
    let s = sb.spawn(&sb.script(&serve), &envs);
    let stderr = lines_of(sb.child(s).stderr.take().unwrap());
    let _ = sb.child(s).stdout.take();
    let got =
        read_until(&stderr, "the Director's announcements", |l| expected.iter().all(|e| l.iter().any(|g| g == e)));
    for e in &expected {
        assert!(got.contains(e), "missing {e:?} in\n{}", got.join("\n"));
    }
    wait_for_port(port);

    // 2. The WebSocket listener (Python's websockets), with a grant from `davpush grant`.
    let listener = block("README.md", "pip install websockets");
    let l = sb.spawn(&sb.script(&listener), &envs);
    let out = lines_of(sb.child(l).stdout.take().unwrap());
    let err = sb.child(l).stderr.take().unwrap();
    let first = read_until(&out, "hello and subscribed", |l| l.len() >= 2);
    let hello: serde_json::Value = serde_json::from_str(&first[0]).unwrap();
    assert_eq!(hello["type"], "hello", "{first:?}");
    let subscribed: serde_json::Value = serde_json::from_str(&first[1]).unwrap();
    assert_eq!(subscribed["type"], "subscribed", "{first:?}");
    assert_eq!(subscribed["topic"], "my-calendar");

    // 3. The notify, whose answer is the comment under it.
    let notify = block("README.md", "curl -sS -X POST http://127.0.0.1:8080/notify \\");
    let answer = notify.text.lines().find_map(|l| l.strip_prefix("# {")).map(|rest| format!("{{{rest}")).unwrap();
    let (stdout, _) = sb.run(&sb.script(&notify), &envs);
    let got: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let want: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(got, want);

    // 4. The listener got the change and ends.
    let third = read_until(&out, "the notification", |l| !l.is_empty());
    let frame: serde_json::Value = serde_json::from_str(&third[0]).unwrap();
    assert_eq!(frame["type"], "notify", "{frame}");
    assert_eq!(frame["topic"], "my-calendar");
    assert_eq!(frame["sync_token"], "42");
    let status = wait_exit(sb.child(l), Duration::from_secs(10));
    let mut stderr_text = String::new();
    let mut err = err;
    let _ = err.read_to_string(&mut stderr_text);
    assert!(status.is_some_and(|s| s.success()), "the listener failed: {stderr_text}");
}

/// Waits (30 s at most) until `port` accepts connections while background block `i` runs; if
/// the block exits first, fails with what it wrote to stderr (`err`).
fn wait_listening(sb: &mut Sandbox, i: usize, err: &std::sync::mpsc::Receiver<String>, port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = sb.child(i).try_wait() {
            let text: Vec<String> = err.try_iter().collect();
            panic!("{what} exited {status}:\n{}", text.join("\n"));
        }
        assert!(Instant::now() < deadline, "{what} does not listen after 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_key_commands_of_docs_relay_md() {
    let Some(mut sb) = Sandbox::new() else { return };
    let keys = sb.dir.path().join("keys.json");
    sb.replace("/var/lib/davpush-relay/keys.json", &keys.display().to_string());
    let doc = block("docs/relay.md", RUN_HERE[6].1);
    let lines: Vec<&str> = doc.text.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    assert_eq!(lines.len(), 4, "{doc:?}");

    // issue-key prints dpr1.<id>.<secret> once.
    let (out, _) = sb.run(&sb.script(&Block { text: format!("{}\n", lines[0]), ..doc.clone() }), &[]);
    let key = out.lines().find(|l| l.starts_with("dpr1.")).unwrap_or_else(|| panic!("no key in {out:?}"));
    let parts: Vec<&str> = key.split('.').collect();
    assert_eq!(parts.len(), 3, "{key}");
    let id = parts[1].to_owned();
    let stored = std::fs::read_to_string(&keys).unwrap();
    assert!(stored.contains(&id) && !stored.contains(parts[2]), "the keys file holds the id, never the secret");

    // list-keys names it with its label.
    let (list, _) = sb.run(&sb.script(&Block { text: format!("{}\n", lines[3]), ..doc.clone() }), &[]);
    assert!(list.contains(&id) && list.contains("dav.example.org"), "{list}");

    // serve: with the documented configuration (every key of examples/relay.toml), its keys file
    // the one above, and FCM the local fake (its service-account key, its URLs).
    let fcm = davpush_testkit::fakes::fcm::FakeFcm::start().await;
    let sa = sb.dir.path().join("service-account.json");
    std::fs::write(&sa, &fcm.service_account).unwrap();
    let port = free_port();
    let etc = sb.dir.path().join("relay.toml");
    let example = std::fs::read_to_string(root().join("examples/relay.toml")).unwrap();
    let config = example
        .replace("listen = \"127.0.0.1:8090\"", &format!("listen = \"127.0.0.1:{port}\""))
        .replace("file = \"relay-keys.json\"", &format!("file = {:?}", keys.display().to_string()))
        .replace("credentials_file = \"\"", &format!("credentials_file = {:?}", sa.display().to_string()))
        .replace("\"https://fcm.googleapis.com\"", &format!("{:?}", fcm.url()))
        .replace("\"https://iid.googleapis.com\"", &format!("{:?}", fcm.url()));
    assert_eq!(config.matches(&fcm.url()).count(), 2, "examples/relay.toml changed its FCM URLs");
    std::fs::write(&etc, config).unwrap();
    sb.replace("/etc/davpush/relay.toml", &etc.display().to_string());
    let serve = sb.script(&Block { text: format!("{}\n", lines[1]), ..doc.clone() });
    let s = sb.spawn(&serve, &[]);
    let err = lines_of(sb.child(s).stderr.take().unwrap());
    wait_listening(&mut sb, s, &err, port, "the relay");

    // revoke-key <id> removes it.
    sb.replace("<id>", &id);
    sb.run(&sb.script(&Block { text: format!("{}\n", lines[2]), ..doc.clone() }), &[]);
    let (list, _) = sb.run(&sb.script(&Block { text: format!("{}\n", lines[3]), ..doc }), &[]);
    assert!(!list.contains(&format!("{id} ")) || list.contains("revoked"), "{list}");
}

#[test]
fn the_gateway_block_of_the_readme_in_front_of_radicale() {
    let Some(mut sb) = Sandbox::new() else { return };
    let Some(radicale) = davpush_testkit::radicale::Radicale::start(&[]) else { return };
    let (director, gateway) = (free_port(), free_port());
    sb.replace("127.0.0.1:5232", &format!("127.0.0.1:{}", radicale.port));
    // The gateway's port and its Director's address come from its configuration file, named by
    // the environment, as the command line stays as printed. Both commands see the variable.
    let config = sb.dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{gateway}\"\ndirector_url = \"http://127.0.0.1:{director}\"\n"),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{director}");
    let config = config.display().to_string();
    let envs = [("DAVPUSH_SERVER__LISTEN", listen.as_str()), ("DAVPUSH_GATEWAY_CONFIG", config.as_str())];
    let doc = block(
        "README.md",
        "davpush serve &                                          # the Director (embedded defaults)",
    );
    assert!(doc.text.contains("listens on 127.0.0.1:8081"), "{doc:?}");
    let g = sb.spawn(&sb.script(&doc), &envs);
    let err = lines_of(sb.child(g).stderr.take().unwrap());
    wait_listening(&mut sb, g, &err, gateway, "the gateway block");
    wait_for_port(director);

    // Through the gateway: a calendar of alice's, advertised with push.
    let base = format!("http://127.0.0.1:{gateway}");
    let (alice, pw) = davpush_testkit::radicale::USERS[0];
    let script = format!(
        "curl -sS -f -u {alice}:{pw} -X MKCALENDAR {base}/{alice}/cal/ -o /dev/null\n\
         curl -sS -f -i -u {alice}:{pw} -X OPTIONS {base}/{alice}/cal/\n\
         curl -sS -f -u {alice}:{pw} -X PROPFIND -H 'Depth: 0' -H 'Content-Type: application/xml' \
         --data '<propfind xmlns=\"DAV:\" xmlns:P=\"https://bitfire.at/webdav-push\"><prop><P:transports/><P:topic/></prop></propfind>' \
         {base}/{alice}/cal/\n"
    );
    sb.run(&script.lines().next().map(|l| format!("{l}\n")).unwrap(), &[]);
    let rest: String = script.lines().skip(1).map(|l| format!("{l}\n")).collect();
    // The gateway started with the Director: its push properties are complete once the
    // Director's /info answered (it asks again within a second).
    let deadline = Instant::now() + Duration::from_secs(15);
    let out = loop {
        let (out, _) = sb.run(&rest, &[]);
        if out.contains("vapid-public-key") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let dav = out.lines().find(|l| l.to_ascii_lowercase().starts_with("dav:")).unwrap_or("");
    assert!(dav.contains("webdav-push"), "no webdav-push in DAV of OPTIONS:\n{out}");
    assert!(out.contains("topic>") && out.contains("vapid-public-key"), "no push properties:\n{out}");
}

#[test]
fn the_load_tool_block_of_the_readme() {
    let Some(mut sb) = Sandbox::new() else { return };
    let dp = sb.dir.path().join("dp");
    sb.replace("/tmp/dp", &dp.display().to_string());
    let port = free_port();
    sb.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let listen = format!("127.0.0.1:{port}");
    let doc = block("README.md", "cargo build --release");
    // `cargo build --release` is the one line not run: the binary under test is built already.
    let text: String = doc.text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let script = sb.script(&Block { text, ..doc });
    let (out, err) = sb.run(&script, &[("DAVPUSH_SERVER__LISTEN", listen.as_str())]);
    let report = format!("{out}{err}");
    assert!(report.contains("10000"), "the report does not count 10000 connections:\n{report}");
    assert!(!report.to_ascii_lowercase().contains("error"), "{report}");
}
