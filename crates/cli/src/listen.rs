//! `davpush listen URL…`: watch collections, print one JSON line per change, optionally run a
//! command per change, coalesced and never concurrently with itself (vdirsyncer and friends).

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use davpush_client::{
    ClientOptions, Collection, Credentials, DirectorAuth, Discovery, Error, Event, PushClient, WebPushReceiver,
};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use url::Url;

/// Bad arguments (as for configuration errors).
pub(crate) const EXIT_USAGE: u8 = 64;
/// A collection does not offer WebDAV Push.
pub(crate) const EXIT_NO_PUSH: u8 = 65;
/// The WebDAV server or the Director is unreachable.
pub(crate) const EXIT_UNREACHABLE: u8 = 69;
/// The WebDAV server or the Director refused the credentials.
pub(crate) const EXIT_UNAUTHORIZED: u8 = 77;

/// Watch collections for changes: one JSON line per change on stdout; `--exec` runs a command
/// per burst of changes, never concurrently with itself. The WebDAV account is enough behind
/// `davpush gateway` (its WebSocket takes the WebDAV login); the Director's subscription token
/// (--token/--token-file) connects to the Director directly instead. Exit codes: 64 bad
/// arguments, or the server wants a login (--user) or a token that was not given; 65 a
/// collection does not offer push; 69 the WebDAV server or the Director is unreachable at start;
/// 77 credentials refused.
#[derive(Debug, clap::Args)]
pub(crate) struct ListenArgs {
    /// Collection URLs (on a push-capable server, e.g. behind `davpush gateway`).
    #[arg(required = true)]
    urls: Vec<Url>,
    /// WebDAV user name.
    #[arg(long, env = "DAVPUSH_USER")]
    user: Option<String>,
    /// Name of the environment variable that holds the password.
    #[arg(long, value_name = "VAR", conflicts_with = "password_file")]
    password_env: Option<String>,
    /// File that holds the password (first line).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// The Director's subscription token: connect to the Director directly (not needed behind
    /// `davpush gateway`, whose WebSocket takes the WebDAV login).
    #[arg(long, env = "DAVPUSH_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    token: Option<String>,
    /// File that holds the Director's subscription token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Run this shell command after changes: never twice at once; changes while it runs make it
    /// run once more afterwards. It gets DAVPUSH_COLLECTIONS (space-separated URLs),
    /// DAVPUSH_COLLECTION and DAVPUSH_SYNC_TOKEN (of the latest change).
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,
    /// Before running --exec, wait until no change came for this long (a burst of changes is
    /// one run), but never longer than ten times this since the first waiting change.
    #[arg(long, value_name = "MS", default_value_t = 300)]
    settle_ms: u64,
    /// PEM file of an extra trusted CA (besides the system's roots), for `https://` collections
    /// and a `wss://` WebSocket: e.g. a reverse proxy's private CA.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The WebSocket URL of a Director acting as push service (`ws[s]://host/ws`, with
    /// `[push_service]` enabled): collections that offer Web Push but no davpush WebSocket (a
    /// server that pushes natively, or a gateway whose Director has WebSockets off) are
    /// registered there (`push-register`) and their pushes received through it.
    /// --token/--token-file authenticate to it.
    #[arg(long, value_name = "URL")]
    push_service: Option<Url>,
}

/// Where events come from: a Director's (or gateway's) WebSocket, or Web Push received through
/// a Director as push service.
enum Source {
    Director(PushClient),
    WebPush(WebPushReceiver),
}

impl futures_util::Stream for Source {
    type Item = Event;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Event>> {
        match self.get_mut() {
            Source::Director(c) => c.poll_next_unpin(cx),
            Source::WebPush(r) => r.poll_next_unpin(cx),
        }
    }
}

impl Source {
    async fn close(self) {
        match self {
            Source::Director(c) => c.close().await,
            Source::WebPush(r) => r.close().await,
        }
    }
}

fn read_secret(path: &PathBuf) -> Result<String, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(s.lines().next().unwrap_or("").trim_end_matches('\r').to_owned())
}

impl ListenArgs {
    fn credentials(&self) -> Result<Credentials, String> {
        let password = match (&self.password_env, &self.password_file) {
            (Some(var), _) => Some(std::env::var(var).map_err(|_| format!("${var} is not set"))?),
            (None, Some(f)) => Some(read_secret(f)?),
            (None, None) => None,
        };
        match (&self.user, password) {
            (Some(user), Some(password)) => Ok(Credentials::Basic { user: user.clone(), password }),
            (Some(_), None) => Err("--user needs --password-env or --password-file".into()),
            (None, Some(_)) => Err("a password needs --user".into()),
            (None, None) => Ok(Credentials::None),
        }
    }

    fn token(&self) -> Result<Option<String>, String> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Some(f)) => read_secret(f).map(Some),
            (None, None) => Ok(None),
        }
    }
}

fn exit_code(e: &Error) -> u8 {
    match e {
        Error::NoPush { .. } => EXIT_NO_PUSH,
        Error::Unauthorized { .. } => EXIT_UNAUTHORIZED,
        Error::TokenRequired | Error::LoginRequired { .. } => EXIT_USAGE,
        Error::Unreachable { .. } | Error::Http { .. } | Error::Closed => EXIT_UNREACHABLE,
        Error::Protocol { .. } => 1,
    }
}

fn fail(context: &str, e: &Error) -> ExitCode {
    let hint = match e {
        Error::TokenRequired => " (pass --token or --token-file)",
        Error::LoginRequired { .. } => " (pass --user, with --password-file or --password-env)",
        _ => "",
    };
    eprintln!("davpush listen: {context}: {e}{hint}");
    ExitCode::from(exit_code(e))
}

/// What the status line shows.
#[derive(Debug, Default)]
struct Status {
    tty: bool,
    connected: usize,
    clients: usize,
    subscribed: BTreeSet<Url>,
    watched: usize,
    last: Option<String>,
}

impl Status {
    fn line(&self) {
        if !self.tty {
            return;
        }
        let state = if self.connected == self.clients { "connected" } else { "reconnecting" };
        let last = self.last.as_deref().map(|l| format!(" · last event: {l}")).unwrap_or_default();
        let mut err = std::io::stderr().lock();
        let _ =
            write!(err, "\r\x1b[2K{state} · {}/{} collections subscribed{last}", self.subscribed.len(), self.watched);
        let _ = err.flush();
    }

    /// A message of its own line (above the status line on a terminal).
    fn say(&self, msg: &str) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
        eprintln!("davpush listen: {msg}");
        self.line();
    }
}

/// Changed collections since the last run, and the latest change (collection, sync-token).
#[derive(Debug, Default)]
struct Pending {
    collections: BTreeSet<String>,
    last: Option<(String, Option<String>)>,
}

/// The `--exec` runner: a one-slot trigger, so a burst while the command runs is one more run.
#[derive(Clone)]
struct Exec {
    trigger: mpsc::Sender<()>,
    pending: Arc<Mutex<Pending>>,
}

impl Exec {
    fn start(cmd: String, settle: Duration) -> Exec {
        let (trigger, mut rx) = mpsc::channel::<()>(1);
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let p = pending.clone();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Let a burst settle: run when it is quiet, or after ten settle times at most.
                let first = tokio::time::Instant::now();
                while !settle.is_zero() && first.elapsed() < settle * 10 {
                    match tokio::time::timeout(settle, rx.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                let (collections, last) = {
                    let mut g = p.lock().unwrap_or_else(|e| e.into_inner());
                    (std::mem::take(&mut g.collections), g.last.clone())
                };
                if collections.is_empty() {
                    continue;
                }
                let (collection, token) = last.unwrap_or_default();
                let status = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(&cmd)
                    .env("DAVPUSH_COLLECTIONS", collections.into_iter().collect::<Vec<_>>().join(" "))
                    .env("DAVPUSH_COLLECTION", collection)
                    .env("DAVPUSH_SYNC_TOKEN", token.unwrap_or_default())
                    .stdin(std::process::Stdio::null())
                    .status()
                    .await;
                match status {
                    Ok(s) if s.success() => {}
                    Ok(s) => eprintln!("davpush listen: --exec command failed ({s})"),
                    Err(e) => eprintln!("davpush listen: cannot run --exec command: {e}"),
                }
            }
        });
        Exec { trigger, pending }
    }

    fn changed(&self, collection: &Url, sync_token: Option<&str>) {
        {
            let mut g = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            g.collections.insert(collection.to_string());
            g.last = Some((collection.to_string(), sync_token.map(str::to_owned)));
        }
        // Full: a run is already due and will see this change.
        let _ = self.trigger.try_send(());
    }
}

pub(crate) async fn run(args: ListenArgs) -> ExitCode {
    let (credentials, token) = match (args.credentials(), args.token()) {
        (Ok(c), Ok(t)) => (c, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("davpush listen: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let extra_ca = match &args.ca_file {
        Some(f) => match std::fs::read_to_string(f) {
            Ok(pem) => Some(pem),
            Err(e) => {
                eprintln!("davpush listen: cannot read {}: {e}", f.display());
                return ExitCode::from(64);
            }
        },
        None => None,
    };
    let discovery = match Discovery::with_extra_ca(extra_ca.as_deref()) {
        Ok(d) => d,
        Err(e) => return fail("discovery", &e),
    };
    let found = futures_util::future::join_all(args.urls.iter().map(|u| discovery.discover(u, &credentials))).await;
    let mut collections: Vec<Collection> = Vec::new();
    for (url, r) in args.urls.iter().zip(found) {
        match r {
            Ok(c) => collections.push(c),
            Err(e) => return fail(url.as_str(), &e),
        }
    }
    // One connection per Director (and authentication).
    let mut groups: Vec<(ClientOptions, Vec<Collection>)> = Vec::new();
    let mut native: Vec<Collection> = Vec::new();
    for c in collections {
        // A server that pushes by itself, without a davpush WebSocket: through the push service.
        if args.push_service.is_some() && c.websocket_url.is_none() && c.gateway_websocket_url.is_none() {
            native.push(c);
            continue;
        }
        let mut opts = match ClientOptions::for_collection(&c, &credentials, token.as_deref()) {
            Ok(o) => o,
            Err(e) => return fail(c.url.as_str(), &e),
        };
        opts.extra_ca_pem = extra_ca.clone();
        match groups.iter_mut().find(|(o, _)| o.websocket_url == opts.websocket_url) {
            Some((_, v)) => v.push(c),
            None => groups.push((opts, vec![c])),
        }
    }
    let mut status = Status {
        tty: std::io::stderr().is_terminal(),
        clients: groups.len() + usize::from(!native.is_empty()),
        ..Default::default()
    };
    let mut clients = Vec::new();
    if let (Some(url), false) = (&args.push_service, native.is_empty()) {
        let auth = token.clone().map_or(DirectorAuth::None, DirectorAuth::Bearer);
        let mut opts = ClientOptions::new(url.clone(), auth);
        opts.extra_ca_pem = extra_ca.clone();
        status.watched += native.len();
        match WebPushReceiver::start(opts, credentials.clone(), native).await {
            Ok(r) => clients.push(Source::WebPush(r)),
            Err(e) => return fail(&format!("the push service at {url}"), &e),
        }
    }
    for (opts, cols) in groups {
        let url = opts.websocket_url.clone();
        let client = match PushClient::connect(opts).await {
            Ok(c) => c,
            Err(e) => return fail(&format!("the Director at {url}"), &e),
        };
        for c in &cols {
            if let Err(e) = client.watch(c).await {
                return fail(c.url.as_str(), &e);
            }
        }
        status.watched += cols.len();
        clients.push(Source::Director(client));
    }
    status.connected = clients.len();
    let settle = Duration::from_millis(args.settle_ms);
    let exec = args.exec.clone().map(|cmd| Exec::start(cmd, settle));
    let mut events = futures_util::stream::select_all(clients);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = &mut shutdown => break,
        };
        let Some(event) = event else { break };
        match event {
            Event::Update(u) => {
                let line = json!({
                    "type": "update",
                    "collection": u.collection.as_str(),
                    "topic": u.topic,
                    "sync_token": u.sync_token,
                    "trigger": u.trigger,
                });
                println!("{line}");
                status.last = Some(u.collection.to_string());
                if let Some(x) = &exec {
                    x.changed(&u.collection, u.sync_token.as_deref());
                }
                status.line();
            }
            Event::Resync { collection } => {
                println!("{}", json!({"type": "resync", "collection": collection.as_str()}));
                if let Some(x) = &exec {
                    x.changed(&collection, None);
                }
            }
            Event::Subscribed { collection, .. } => {
                let new = status.subscribed.insert(collection);
                if new && status.subscribed.len() == status.watched {
                    status.say(&format!("subscribed {} collection(s)", status.watched));
                }
                status.line();
            }
            Event::Connected { reconnect, .. } => {
                if reconnect {
                    status.connected += 1;
                    status.say("reconnected; subscribing again");
                }
            }
            Event::Disconnected { reason, retry_in } => {
                if status.subscribed.is_empty() && status.connected < status.clients {
                    // Still down: one line per attempt would flood a log; the status line shows it.
                    status.line();
                } else {
                    status.connected = status.connected.saturating_sub(1);
                    status.subscribed.clear();
                    status.say(&format!("disconnected ({reason}); retrying in {:.1} s", retry_in.as_secs_f64()));
                }
            }
            Event::Refused { collection, error, message } => {
                status.say(&format!("{collection}: the Director refused the subscription: {error}: {message}"));
            }
        }
    }
    if status.tty {
        eprintln!();
    }
    // Unsubscribe and close politely, but do not hang on a dead connection.
    let close = futures_util::future::join_all(events.into_iter().map(Source::close));
    let _ = tokio::time::timeout(Duration::from_secs(3), close).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
