//! `davpush completions <shell>` and the hidden `davpush manual <dir>`: shell completions and
//! man pages, generated from the command-line definition itself (the Debian package ships both).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Command;

/// `davpush completions`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// `davpush manual`.
#[derive(Debug, clap::Args)]
pub(crate) struct ManualArgs {
    /// Directory to write `davpush.1` and `davpush-<subcommand>.1` into (created if missing).
    dir: PathBuf,
}

/// Prints the completion script of `args.shell` for `cmd`.
pub(crate) fn completions(mut cmd: Command, args: &CompletionsArgs) -> ExitCode {
    clap_complete::generate(args.shell, &mut cmd, "davpush", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Writes the man pages of `cmd` and its visible subcommands.
pub(crate) fn manual(cmd: Command, args: &ManualArgs) -> ExitCode {
    match write_pages(cmd, &args.dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("davpush: cannot write the man pages to {}: {e}", args.dir.display());
            ExitCode::FAILURE
        }
    }
}

fn write_pages(cmd: Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // `build()` names the subcommands `davpush-x` (their pages' names).
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    // The footer: "davpush <version>" on every page, not "<subcommand> <version>".
    let source = format!("davpush {}", cmd.get_version().unwrap_or_default());
    write_page(&cmd, &source, dir)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page(sub, &source, dir)?;
    }
    Ok(())
}

fn write_page(cmd: &Command, source: &str, dir: &Path) -> std::io::Result<()> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).title(name).source(source.to_owned()).render(&mut out)?;
    std::fs::write(dir.join(format!("{name}.1")), out)
}
