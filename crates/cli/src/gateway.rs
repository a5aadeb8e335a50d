//! `davpush gateway`, `davpush topic` and `davpush notify`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use davpush_client::{DirectorClient, DirectorError};
use davpush_gateway::config::{GatewayOverrides, RawGatewayConfig};
use davpush_gateway::topic::{canonical_path, parent_path};
use davpush_gateway::{GatewayConfig, app};
use davpush_proto::notify::TopicEntry;
use davpush_proto::{NotifyRequest, NotifyTopic, Trigger};

use crate::config_args::EXIT_CONFIG;

/// Where the gateway's configuration comes from.
#[derive(Debug, clap::Args)]
pub(crate) struct GatewayConfigArgs {
    /// Gateway TOML file (keys documented in examples/gateway.toml).
    #[arg(long, short, env = "DAVPUSH_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the Director's tokens and the topic secret (default: davpush-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The Director's URL (default: http://127.0.0.1:8080).
    #[arg(long)]
    director: Option<String>,
}

/// Run the WebDAV gateway: a reverse proxy that makes the WebDAV server at --upstream
/// push-capable (discovery properties, push-register, change notifications).
#[derive(Debug, clap::Args)]
pub(crate) struct GatewayArgs {
    #[command(flatten)]
    config: GatewayConfigArgs,
    /// The WebDAV/CalDAV/CardDAV server behind the gateway, e.g. http://127.0.0.1:5232/.
    #[arg(long)]
    upstream: Option<String>,
    /// Address to listen on (default: 127.0.0.1:8081).
    #[arg(long)]
    listen: Option<String>,
    /// How clients reach the gateway, e.g. `https://dav.example.org/` (default: `http://<listen>/`).
    #[arg(long)]
    public_url: Option<String>,
}

/// Print the topic of a collection (for application servers that integrate by hand).
#[derive(Debug, clap::Args)]
pub(crate) struct TopicArgs {
    #[command(flatten)]
    config: GatewayConfigArgs,
    /// The collection's URL or path on the WebDAV server, e.g. /alice/calendar/.
    url: String,
}

/// Tell the Director that a collection changed (for cron jobs and server hooks, e.g. Radicale's
/// storage hook).
#[derive(Debug, clap::Args)]
pub(crate) struct NotifyArgs {
    #[command(flatten)]
    config: GatewayConfigArgs,
    /// The topic that changed.
    #[arg(long, conflicts_with_all = ["collection", "item"], required_unless_present_any = ["collection", "item"])]
    topic: Option<String>,
    /// The collection (URL or path) that changed; its topic is computed as the gateway does.
    #[arg(long, conflicts_with = "item")]
    collection: Option<String>,
    /// A member (URL or path) that changed: its collection is notified.
    #[arg(long)]
    item: Option<String>,
    /// Remove this prefix from --collection/--item first: for hooks that pass a file path,
    /// e.g. Radicale's `%(path)s` with `--strip-prefix /var/lib/radicale/collections/collection-root`.
    #[arg(long)]
    strip_prefix: Option<String>,
    /// The collection's new sync-token.
    #[arg(long)]
    sync_token: Option<String>,
    /// A property of the collection changed (rather than its content).
    #[arg(long)]
    property: bool,
}

fn raw(args: &GatewayConfigArgs, extra: GatewayOverrides) -> Result<RawGatewayConfig, ExitCode> {
    let flags = GatewayOverrides { data_dir: args.data_dir.clone(), director: args.director.clone(), ..extra };
    RawGatewayConfig::load(args.config.as_deref(), &flags).map_err(|e| {
        eprintln!("davpush: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn path_of(s: &str) -> String {
    url::Url::parse(s).map(|u| u.path().to_owned()).unwrap_or_else(|_| s.to_owned())
}

pub(crate) async fn run_gateway(args: GatewayArgs) -> ExitCode {
    let extra = GatewayOverrides {
        listen: args.listen.clone(),
        upstream: args.upstream.clone(),
        public_url: args.public_url.clone(),
        ..Default::default()
    };
    let raw = match raw(&args.config, extra) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let cfg = match GatewayConfig::from_raw(raw) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("davpush: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    crate::serve::init_logs("text");
    if let Some(p) = &cfg.generated_topic_secret {
        eprintln!("davpush: generated the topic secret in {} (mode 0600); keep it: topics depend on it", p.display());
    }
    match gateway(cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("davpush: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn gateway(cfg: GatewayConfig) -> anyhow::Result<()> {
    let addr = cfg.listen;
    let upstream = cfg.upstream.clone();
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let state = davpush_gateway::GatewayState::build(cfg).await?;
    tracing::info!(addr = %listener.local_addr()?, %upstream, "WebDAV gateway listening");
    app::serve(listener, state, crate::serve::shutdown_signal()).await?;
    Ok(())
}

pub(crate) fn run_topic(args: TopicArgs) -> ExitCode {
    let raw = match raw(&args.config, GatewayOverrides::default()) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let (key, _) = match raw.topic_key() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("davpush: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match key.topic(&path_of(&args.url)) {
        Some(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("davpush: `{}` is not a valid collection path", args.url);
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

pub(crate) async fn run_notify(args: NotifyArgs) -> ExitCode {
    let raw = match raw(&args.config, GatewayOverrides::default()) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let topic = match (&args.topic, &args.collection, &args.item) {
        (Some(t), _, _) => t.clone(),
        (None, c, i) => {
            let (key, _) = match raw.topic_key() {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("davpush: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let strip = |p: &str| -> String {
                let p = path_of(p);
                match &args.strip_prefix {
                    Some(prefix) => p.strip_prefix(prefix.trim_end_matches('/')).unwrap_or(&p).to_owned(),
                    None => p,
                }
            };
            let path = match (c, i) {
                (Some(c), _) => canonical_path(&strip(c)),
                (None, Some(i)) => {
                    let item = strip(i);
                    if canonical_path(&item).as_deref() == Some("/") {
                        // The root has no collection above it (Radicale's hook also runs for it).
                        eprintln!("davpush: {item} is the root: nothing to notify");
                        return ExitCode::SUCCESS;
                    }
                    parent_path(&item)
                }
                (None, None) => None,
            };
            match path {
                Some(p) => key.topic_of_canonical(&p),
                None => {
                    eprintln!("davpush: not a valid collection path");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
    };
    let token = match raw.notify_token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("davpush: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let trigger = if args.property { Trigger::Property } else { Trigger::Content };
    let req = NotifyRequest {
        topics: Some(vec![NotifyTopic::Detailed(TopicEntry {
            topic,
            sync_token: args.sync_token,
            trigger: Some(trigger),
        })]),
        ..Default::default()
    };
    let director = match url::Url::parse(&raw.director_url)
        .map_err(|e| e.to_string())
        .and_then(|u| DirectorClient::new(u, Duration::from_secs(30)).map_err(|e| e.to_string()))
    {
        Ok(d) => d.notify_token(token),
        Err(e) => {
            eprintln!("davpush: `director_url` {}: {e}", raw.director_url);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match director.notify(&req).await {
        Ok(answer) => {
            println!("{}", serde_json::to_string(&answer).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e @ DirectorError::Refused { .. }) => {
            eprintln!("davpush: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("davpush: cannot reach the Director at {}: {e}", raw.director_url);
            ExitCode::from(69) // EX_UNAVAILABLE
        }
    }
}
