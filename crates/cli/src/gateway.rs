//! `davpush gateway`, and the gateway configuration `topic` and `notify` read.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use davpush_gateway::config::{GatewayOverrides, RawGatewayConfig};
use davpush_gateway::{GatewayConfig, app};

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

pub(crate) fn raw(args: &GatewayConfigArgs, extra: GatewayOverrides) -> Result<RawGatewayConfig, ExitCode> {
    let flags = GatewayOverrides { data_dir: args.data_dir.clone(), director: args.director.clone(), ..extra };
    RawGatewayConfig::load(args.config.as_deref(), &flags).map_err(|e| {
        eprintln!("davpush: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

pub(crate) fn path_of(s: &str) -> String {
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
    crate::logs::init_logs("text");
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
    crate::sd_notify::ready();
    app::serve(listener, state, crate::serve::shutdown_signal()).await?;
    Ok(())
}
