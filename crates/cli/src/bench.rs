//! `davpush bench`: the load tool (being written).

use std::process::ExitCode;

/// Load tool options.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {}

pub(crate) async fn run(_args: BenchArgs) -> ExitCode {
    eprintln!("davpush bench: not built yet");
    ExitCode::FAILURE
}
