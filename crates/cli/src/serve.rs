//! `davpush serve`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use davpush_director::config::{Overrides, RawConfig};
use davpush_director::{Config, app};
use tracing_subscriber::EnvFilter;

/// Exit code for a bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// Run the Push Director.
///
/// Configuration comes from defaults, then the TOML file (`--config`), then environment
/// variables `DAVPUSH_<SECTION>__<KEY>` (e.g. `DAVPUSH_SERVER__LISTEN=0.0.0.0:8080`,
/// `DAVPUSH_NOTIFY__TOKENS='["…"]'`), then these flags. Every key is documented in
/// `examples/davpush.toml` (also printed by `--print-example-config`).
/// With no configuration at all the Director listens on 127.0.0.1:8080, keeps its SQLite database
/// in ./davpush-data/ and generates the notify and subscription tokens there (mode 0600).
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short, env = "DAVPUSH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (server.listen), e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<String>,
    /// Directory for the database and generated secrets (server.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log format: text or json. The level comes from RUST_LOG (default: info).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    dump_config: bool,
    /// Print the commented example configuration and exit.
    #[arg(long)]
    print_example_config: bool,
}

fn init_logs(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub(crate) async fn run(args: ServeArgs) -> ExitCode {
    if args.print_example_config {
        print!("{}", davpush_director::config::EXAMPLE);
        return ExitCode::SUCCESS;
    }
    init_logs(&args.log_format);
    let env: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("DAVPUSH_")).collect();
    let flags = Overrides { listen: args.listen.clone(), data_dir: args.data_dir.clone() };
    let raw = match RawConfig::load(args.config.as_deref(), &env, &flags) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("davpush: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.dump_config {
        print!("{}", raw.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_raw(raw) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("davpush: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("davpush: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    for (key, path) in &config.generated_secrets {
        // Printed once, when generated; the secret itself is never printed or logged.
        eprintln!("davpush: generated a token for `{key}` in {} (mode 0600)", path.display());
    }
    let addr = config.listen;
    let state = app::build(config).await.context("cannot start the Director")?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "Push Director listening");
    app::serve(listener, state, shutdown_signal()).await.context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
