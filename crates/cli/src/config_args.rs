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
    /// `--listen` of `serve` (the other subcommands listen on nothing).
    #[arg(skip)]
    pub(crate) listen: Option<String>,
    /// Directory for the database and generated secrets (server.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    /// File, then `DAVPUSH_*` environment, then flags; an error is printed and becomes exit 64.
    /// The variables davpush's own arguments read (`DAVPUSH_CONFIG`, `DAVPUSH_TOKEN`, …) are
    /// not configuration keys.
    pub(crate) fn raw(&self) -> Result<RawConfig, ExitCode> {
        let own = argument_variables();
        let env: BTreeMap<String, String> =
            std::env::vars().filter(|(k, _)| k.starts_with("DAVPUSH_") && !own.contains(k)).collect();
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
        let config = self.validated()?;
        let startup = config.prepare().map_err(failed)?;
        for (key, path) in &startup.generated_secrets {
            eprintln!("davpush: generated `{key}` in {} (mode 0600)", path.display());
        }
        Ok((config, startup))
    }

    /// The validated configuration; creates nothing (`--dump-config`).
    pub(crate) fn validated(&self) -> Result<Config, ExitCode> {
        Config::from_raw(self.raw()?).map_err(failed)
    }
}

/// Prints `e`; its exit code (64, or 73 when the data directory or a secret cannot be written).
fn failed(e: davpush_director::ConfigError) -> ExitCode {
    eprintln!("davpush: {e}");
    ExitCode::from(e.exit_code())
}

/// The `DAVPUSH_*` variables that davpush's arguments read (`env = …` of every subcommand):
/// never configuration keys of the Director.
pub(crate) fn argument_variables() -> Vec<String> {
    fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if let Some(name) = arg.get_env().and_then(|n| n.to_str()) {
                out.push(name.to_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = Vec::new();
    walk(&<crate::Cli as clap::CommandFactory>::command(), &mut out);
    out
}
