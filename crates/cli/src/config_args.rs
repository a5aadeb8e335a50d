//! The configuration flags shared by the subcommands that read the Director's configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use davpush_director::config::{Overrides, RawConfig};
use davpush_director::{Config, Startup};

/// Exit code for a bad configuration (EX_USAGE).
pub(crate) const EXIT_CONFIG: u8 = 64;

/// Where the configuration comes from.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, short, env = "DAVPUSH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (server.listen), e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<String>,
    /// Directory for the database and generated secrets (server.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    /// File, then `DAVPUSH_*` environment, then flags; an error is printed and becomes exit 64.
    pub(crate) fn raw(&self) -> Result<RawConfig, ExitCode> {
        let env: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("DAVPUSH_")).collect();
        let flags = Overrides { listen: self.listen.clone(), data_dir: self.data_dir.clone() };
        RawConfig::load(self.config.as_deref(), &env, &flags).map_err(|e| {
            eprintln!("davpush: {e}");
            ExitCode::from(EXIT_CONFIG)
        })
    }

    /// The validated configuration, prepared for start-up (creates the data directory and
    /// missing secrets). Secrets generated now are announced once, by location; they are never
    /// printed.
    pub(crate) fn load(&self) -> Result<(Config, Startup), ExitCode> {
        let usage = |e: davpush_director::ConfigError| {
            eprintln!("davpush: {e}");
            ExitCode::from(EXIT_CONFIG)
        };
        let config = Config::from_raw(self.raw()?).map_err(usage)?;
        let startup = config.prepare().map_err(usage)?;
        for (key, path) in &startup.generated_secrets {
            eprintln!("davpush: generated `{key}` in {} (mode 0600)", path.display());
        }
        Ok((config, startup))
    }
}
