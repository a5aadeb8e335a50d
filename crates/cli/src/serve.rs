//! `davpush serve`.

use std::process::ExitCode;

use anyhow::Context;
use davpush_director::{Config, Startup, app};

use crate::config_args::ConfigArgs;

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
    #[command(flatten)]
    config: ConfigArgs,
    /// Address to listen on (server.listen), e.g. 127.0.0.1:8080 or localhost:8080.
    #[arg(long)]
    listen: Option<String>,
    /// Log format: text or json. The level comes from RUST_LOG (default: info).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Check the configuration, print it (secrets redacted) and exit; exit 64 if it is invalid.
    #[arg(long)]
    dump_config: bool,
    /// Print the commented example configuration and exit.
    #[arg(long)]
    print_example_config: bool,
}

pub(crate) async fn run(mut args: ServeArgs) -> ExitCode {
    args.config.listen = args.listen.take();
    if args.print_example_config {
        print!("{}", davpush_director::config::EXAMPLE);
        return ExitCode::SUCCESS;
    }
    if args.dump_config {
        return match args.config.raw() {
            Ok(raw) => match args.config.validated() {
                Ok(_) => {
                    print!("{}", raw.to_redacted_toml());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            },
            Err(code) => code,
        };
    }
    crate::logs::init_logs(&args.log_format);
    let (config, startup) = match args.config.load() {
        Ok(c) => c,
        Err(code) => return code,
    };
    match serve(config, startup).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("davpush: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, startup: Startup) -> anyhow::Result<()> {
    let addr = config.listen;
    let state = app::build_prepared(config, startup).await.context("cannot start the Director")?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "Push Director listening");
    crate::sd_notify::ready();
    app::serve(listener, state, shutdown_signal()).await.context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}

pub(crate) async fn shutdown_signal() {
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
    crate::sd_notify::stopping();
}
