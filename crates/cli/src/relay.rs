//! `davpush relay`: the FCM relay a client vendor runs (`docs/relay.md`), and its key management.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use davpush_relay::config::{RawRelayConfig, RelayConfig};
use davpush_relay::keys;

use crate::config_args::EXIT_CONFIG;

/// Run the FCM relay, or manage its installation keys.
#[derive(Debug, clap::Args)]
pub(crate) struct RelayArgs {
    #[command(subcommand)]
    command: RelayCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RelayCommand {
    /// Serve the relay (POST /v1/push, POST /v1/membership, /healthz, /metrics).
    Serve {
        /// TOML configuration file (see examples/relay.toml).
        #[arg(long, short, env = "DAVPUSH_RELAY_CONFIG")]
        config: PathBuf,
        /// Address to listen on (server.listen).
        #[arg(long)]
        listen: Option<String>,
        /// Log format: text or json. The level comes from RUST_LOG (default: info).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// Issue an installation key for one Director; prints it once (only its hash is stored).
    IssueKey {
        /// The keys file (keys.file of the relay's configuration).
        #[arg(long)]
        keys_file: PathBuf,
        /// Whom the key is for (free text, e.g. the Director's host name).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke an installation key by its id; a running relay stops accepting it within
    /// keys.reload_secs.
    RevokeKey {
        /// The keys file.
        #[arg(long)]
        keys_file: PathBuf,
        /// The key's id (the part after `dpr1.`).
        id: String,
    },
    /// List installation keys (ids, labels, state; never secrets).
    ListKeys {
        /// The keys file.
        #[arg(long)]
        keys_file: PathBuf,
    },
}

pub(crate) async fn run(args: RelayArgs) -> ExitCode {
    let now = davpush_core::unix_now();
    let result = match args.command {
        RelayCommand::Serve { config, listen, log_format } => {
            crate::logs::init_logs(&log_format);
            let mut raw = match RawRelayConfig::load(&config) {
                Ok(r) => r,
                Err(e) => return config_error(e),
            };
            if let Some(l) = listen {
                raw.server.listen = l;
            }
            match RelayConfig::from_raw(raw) {
                Ok(c) => serve(c).await,
                Err(e) => return config_error(e),
            }
        }
        RelayCommand::IssueKey { keys_file, label } => keys::issue(&keys_file, &label, now)
            .map(|(id, key)| {
                eprintln!("davpush: issued key `{id}`; give this key to the Director's operator (it is not stored):");
                println!("{key}");
            })
            .map_err(anyhow::Error::from),
        RelayCommand::RevokeKey { keys_file, id } => keys::revoke(&keys_file, &id, now)
            .map(|()| eprintln!("davpush: key `{id}` revoked"))
            .map_err(anyhow::Error::from),
        RelayCommand::ListKeys { keys_file } => keys::KeysFile::read(&keys_file)
            .map(|f| {
                for k in f.keys {
                    let state = if k.revoked.is_some() { "revoked" } else { "active" };
                    println!("{}\t{state}\tcreated {}\t{}", k.id, k.created, k.label);
                }
            })
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("davpush: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(e: davpush_relay::config::ConfigError) -> ExitCode {
    eprintln!("davpush: {e}");
    ExitCode::from(EXIT_CONFIG)
}

async fn serve(config: RelayConfig) -> anyhow::Result<()> {
    let addr = config.listen;
    let state = davpush_relay::build(config).context("cannot start the relay")?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "FCM relay listening");
    davpush_relay::serve(listener, state, crate::serve::shutdown_signal()).await.context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}
