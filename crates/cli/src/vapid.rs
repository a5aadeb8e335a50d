//! `davpush vapid`: print the advertised VAPID public key; `vapid rotate` retires it for a new
//! one, `vapid list` lists the keys (`davpush_director::vapid`). The keys live in the store, so
//! rotation works while the Director runs, on one node or several (docs/operations.md, "Rotate
//! the VAPID key"): each node takes the new key up at its next outbox tick.

use std::process::ExitCode;

use crate::config_args::{ConfigArgs, EXIT_CONFIG};

/// `davpush vapid`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct VapidArgs {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Retire the advertised key for a new one (the Director may be running). Subscriptions
    /// keep being signed with the key they were made with; each distinct Web Push endpoint of
    /// the retired key gets the spec's key-rotation message, sent by one running node.
    Rotate(ConfigArgs),
    /// List the keys: the advertised one and the retired ones kept for their subscriptions.
    List(ConfigArgs),
}

pub(crate) async fn run(args: VapidArgs) -> ExitCode {
    let (config_args, rotate) = match &args.action {
        None => (&args.config, None),
        Some(Action::Rotate(c)) => (c, Some(true)),
        Some(Action::List(c)) => (c, Some(false)),
    };
    let (config, startup) = match config_args.load() {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(key) = startup.vapid_key.as_ref().filter(|_| config.web_push.is_some()) else {
        eprintln!("davpush: Web Push is disabled (web_push.enabled = false)");
        return ExitCode::from(EXIT_CONFIG);
    };
    let Some(rotate) = rotate else {
        println!("{}", key.public_key());
        return ExitCode::SUCCESS;
    };
    let store = match davpush_store::open(&config.store_url).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("davpush: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if rotate {
        davpush_director::vapid::rotate(&config, &startup, store.as_ref()).await.map(|r| {
            eprintln!(
                "davpush: retired VAPID key {} (kept in the store and {} while subscriptions use it); {} \
                 key-rotation message(s) queued, one per Web Push endpoint, sent by the running Director \
                 (or at its next start). New key {}:",
                r.retired_id,
                davpush_director::vapid::retired_dir(
                    &config.web_push.as_ref().map(|w| w.vapid_key_file.clone()).unwrap_or_default()
                )
                .display(),
                r.queued,
                r.new_id,
            );
            println!("{}", r.new_public_key);
        })
    } else {
        davpush_director::vapid::list(&config, &startup, store.as_ref()).await.map(|lines| {
            for l in lines {
                println!("{l}");
            }
        })
    };
    store.close().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("davpush: {e}");
            ExitCode::FAILURE
        }
    }
}
