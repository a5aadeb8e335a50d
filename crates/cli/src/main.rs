//! `davpush`: the one binary. Subcommands: `serve` (the Push Director), `gateway`, `relay`,
//! `listen` (a push client for scripts), `notify`, `topic`, `grant`, `vapid` and `bench` (the load
//! tool).

mod bench;
mod config_args;
mod gateway;
mod listen;
mod logs;
mod manual;
mod notify;
mod relay;
mod sd_notify;
mod serve;
mod vapid;

use clap::{CommandFactory, Parser, Subcommand};

/// `davpush --version`: the crate's version and the git commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("BUILD_GIT_COMMIT"), ")");

/// WebDAV Push for any WebDAV, CalDAV or CardDAV server.
#[derive(Debug, Parser)]
#[command(name = "davpush", version = VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Push Director (Notify API, Subscription API, WebSocket push).
    Serve(serve::ServeArgs),
    /// Run the WebDAV gateway in front of a WebDAV/CalDAV/CardDAV server.
    Gateway(gateway::GatewayArgs),
    /// Run the FCM relay (for client vendors), or manage its keys.
    Relay(relay::RelayArgs),
    /// Watch collections: one JSON line per change, or run a command (e.g. vdirsyncer sync).
    Listen(listen::ListenArgs),
    /// Tell the Director that a collection changed (cron jobs, server hooks).
    Notify(notify::NotifyArgs),
    /// Print the topic of a collection.
    Topic(notify::TopicArgs),
    /// Print a subscription grant for topics (what an application server gives users who may
    /// read the collections), signed with the Director's grant key.
    Grant(GrantArgs),
    /// Print the Director's VAPID public key (generating the key pair on first use), the
    /// `applicationServerKey` / `vapid-public-key` that Web Push clients subscribe with; `vapid
    /// rotate` replaces it, `vapid list` lists the keys.
    Vapid(vapid::VapidArgs),
    /// Load tool: WebSocket clients on loopback against a running Director.
    Bench(bench::BenchArgs),
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions(manual::CompletionsArgs),
    /// Write the man pages into a directory (the Debian package's build uses it).
    #[command(hide = true)]
    Manual(manual::ManualArgs),
}

/// `davpush grant`.
#[derive(Debug, clap::Args)]
struct GrantArgs {
    #[command(flatten)]
    config: config_args::ConfigArgs,
    /// How long the grant may be used to subscribe, seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    seconds: u32,
    /// The topics it names.
    #[arg(required = true)]
    topics: Vec<String>,
}

fn grant(args: GrantArgs) -> std::process::ExitCode {
    let startup = match args.config.load() {
        Ok((_, startup)) => startup,
        Err(code) => return code,
    };
    match &startup.grant_keys {
        Some(keys) => {
            let until = davpush_core::unix_now() + i64::from(args.seconds);
            println!("{}", keys.sign(args.topics.iter().map(String::as_str), until));
            std::process::ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "davpush: grants are off on this Director (subscription.grants = \"off\"): subscribe without one"
            );
            std::process::ExitCode::from(config_args::EXIT_CONFIG)
        }
    }
}

/// jemalloc rather than glibc's malloc, for the C libraries linked in (SQLite) as well
/// (issue 11): a big topic's hand-over to the delivery engine allocates for every row it reads
/// and parses, and spent a fifth of its CPU in glibc's `malloc` and `free`. See "Durable
/// subscriptions at scale" in the README for what it changed.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("davpush: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Gateway(args) => gateway::run_gateway(args).await,
            Command::Relay(args) => relay::run(args).await,
            Command::Topic(args) => notify::run_topic(args),
            Command::Notify(args) => notify::run_notify(args).await,
            Command::Grant(args) => grant(args),
            Command::Listen(args) => listen::run(args).await,
            Command::Completions(args) => manual::completions(Cli::command(), &args),
            Command::Manual(args) => manual::manual(Cli::command(), &args),
            Command::Vapid(args) => vapid::run(args).await,
        }
    })
}
