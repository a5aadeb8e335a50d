//! `davpush gateway`, and the gateway configuration `topic` and `notify` read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use davpush_gateway::config::{GatewayOverrides, RawGatewayConfig};
use davpush_gateway::{GatewayConfig, app};

use crate::config_args::EXIT_CONFIG;

/// Where the gateway's configuration comes from (what `topic` needs).
#[derive(Debug, clap::Args)]
pub(crate) struct GatewayFileArgs {
    /// Gateway TOML file (keys documented in examples/gateway.toml).
    #[arg(long, short, env = "DAVPUSH_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the Director's tokens and the topic secret (default: davpush-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The gateway's configuration and the Director it talks to (`gateway`, `notify`).
#[derive(Debug, clap::Args)]
pub(crate) struct GatewayConfigArgs {
    #[command(flatten)]
    files: GatewayFileArgs,
    /// The Director's URL (default: http://127.0.0.1:8080).
    #[arg(long)]
    director: Option<String>,
}

/// Either set of gateway configuration flags.
pub(crate) trait GatewaySource {
    /// `--config`.
    fn file(&self) -> Option<&Path>;
    /// The overrides the flags make.
    fn overrides(&self) -> GatewayOverrides;
}

impl GatewaySource for GatewayFileArgs {
    fn file(&self) -> Option<&Path> {
        self.config.as_deref()
    }
    fn overrides(&self) -> GatewayOverrides {
        GatewayOverrides { data_dir: self.data_dir.clone(), ..Default::default() }
    }
}

impl GatewaySource for GatewayConfigArgs {
    fn file(&self) -> Option<&Path> {
        self.files.file()
    }
    fn overrides(&self) -> GatewayOverrides {
        GatewayOverrides { director: self.director.clone(), ..self.files.overrides() }
    }
}

/// Run the WebDAV gateway: a reverse proxy that makes the WebDAV server at --upstream
/// push-capable (discovery properties, push-register, change notifications).
///
/// Configuration comes from defaults, then the TOML file (`--config`), then environment
/// variables `DAVPUSH_GATEWAY__<KEY>` (e.g. `DAVPUSH_GATEWAY__UPSTREAM=http://127.0.0.1:5232/`),
/// then these flags. Every key is documented in `examples/gateway.toml` (also printed by
/// `--print-example-config`). Health, readiness and metrics: `/.davpush/healthz`,
/// `/.davpush/readyz`, `/.davpush/metrics`.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
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
    /// Log format: text or json. The level comes from RUST_LOG (default: info); the access log
    /// is the target davpush_gateway::access.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Check the configuration, print it (secrets redacted) and exit; exit 64 if it is invalid.
    #[arg(long)]
    dump_config: bool,
    /// Print the commented example configuration and exit.
    #[arg(long)]
    print_example_config: bool,
}

pub(crate) fn raw<A: GatewaySource>(args: &A, extra: GatewayOverrides) -> Result<RawGatewayConfig, ExitCode> {
    let own = args.overrides();
    let flags = GatewayOverrides { data_dir: own.data_dir, director: own.director, ..extra };
    let env: BTreeMap<String, String> =
        std::env::vars().filter(|(k, _)| k.starts_with(davpush_gateway::config::ENV_PREFIX)).collect();
    RawGatewayConfig::load(args.file(), &env, &flags).map_err(|e| {
        eprintln!("davpush: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

pub(crate) fn path_of(s: &str) -> String {
    url::Url::parse(s).map(|u| u.path().to_owned()).unwrap_or_else(|_| s.to_owned())
}

pub(crate) async fn run_gateway(args: GatewayArgs) -> ExitCode {
    if args.print_example_config {
        print!("{}", davpush_gateway::config::EXAMPLE);
        return ExitCode::SUCCESS;
    }
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
    if args.dump_config {
        let text = raw.to_redacted_toml();
        return match GatewayConfig::check(raw) {
            Ok(()) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("davpush: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    wait_for_director_secrets(&raw).await;
    let cfg = match GatewayConfig::from_raw(raw) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("davpush: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    crate::logs::init_logs(&args.log_format);
    if let Some(p) = &cfg.generated_topic_secret {
        if args.log_format == "json" {
            // Every line of a JSON log is a JSON object.
            tracing::warn!(path = %p.display(), "generated the topic secret (mode 0600); keep it: topics depend on it");
        } else {
            eprintln!(
                "davpush: generated the topic secret in {} (mode 0600); keep it: topics depend on it",
                p.display()
            );
        }
    }
    match gateway(cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("davpush: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn gateway(mut cfg: GatewayConfig) -> anyhow::Result<()> {
    let addr = cfg.listen;
    let upstream = cfg.upstream.clone();
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    // `--listen 127.0.0.1:0` without --public-url: clients reach the port actually bound.
    if cfg.public_url.port() == Some(0) {
        let _ = cfg.public_url.set_port(Some(listener.local_addr()?.port()));
    }
    let state = davpush_gateway::GatewayState::build(cfg).await?;
    tracing::info!(addr = %listener.local_addr()?, %upstream, "WebDAV gateway listening");
    crate::sd_notify::ready();
    app::serve(listener, state, crate::serve::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// How long a gateway started with the Director (`davpush serve & davpush gateway …`, or two
/// units started at once) waits for the Director's first start to write its secrets.
const SECRETS_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits (at most [`SECRETS_WAIT`]) until the Director's secret files exist; the configuration's
/// validation then reads them, or names the one still missing.
async fn wait_for_director_secrets(raw: &RawGatewayConfig) {
    let files = raw.director_secret_files();
    let missing = || files.iter().find(|f| !f.exists());
    let Some(first) = missing() else { return };
    eprintln!("davpush: waiting up to {} s for the Director to create {}", SECRETS_WAIT.as_secs(), first.display());
    let deadline = tokio::time::Instant::now() + SECRETS_WAIT;
    while missing().is_some() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
