//! Logging of the long-running subcommands (`serve`, `gateway`, `relay`): to stderr, as text or
//! JSON lines, the level from `RUST_LOG` (default `info`). Text is coloured only when stderr is a
//! terminal and `NO_COLOR` is unset: journald, a file or a pipe get plain text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `format` is `text` or `json`.
pub(crate) fn init_logs(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
