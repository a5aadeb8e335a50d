//! `davpush topic` and `davpush notify`: a collection's topic, and telling the Director that it
//! changed, with the gateway's configuration (its topic secret and notify token).

use std::process::ExitCode;
use std::time::Duration;

use davpush_client::{DirectorClient, DirectorError};
use davpush_gateway::config::GatewayOverrides;
use davpush_gateway::topic::{canonical_path, parent_path};
use davpush_proto::notify::TopicEntry;
use davpush_proto::{NotifyRequest, NotifyTopic, Trigger};

use crate::config_args::EXIT_CONFIG;
use crate::gateway::{GatewayConfigArgs, GatewayFileArgs, path_of, raw};

/// Print the topic of a collection (for application servers that integrate by hand).
#[derive(Debug, clap::Args)]
pub(crate) struct TopicArgs {
    #[command(flatten)]
    config: GatewayFileArgs,
    /// The collection's URL or path on the WebDAV server, e.g. /alice/calendar/.
    url: String,
}

/// Tell the Director that a collection changed (for cron jobs and server hooks, e.g. Radicale's
/// storage hook).
#[derive(Debug, clap::Args)]
pub(crate) struct NotifyArgs {
    #[command(flatten)]
    config: GatewayConfigArgs,
    /// The topic that changed.
    #[arg(long, conflicts_with_all = ["collection", "item"], required_unless_present_any = ["collection", "item"])]
    topic: Option<String>,
    /// The collection (URL or path) that changed; its topic is computed as the gateway does.
    #[arg(long, conflicts_with = "item")]
    collection: Option<String>,
    /// A member (URL or path) that changed: its collection is notified.
    #[arg(long)]
    item: Option<String>,
    /// Remove this prefix from --collection/--item first: for hooks that pass a file path,
    /// e.g. Radicale's `%(path)s` with `--strip-prefix /var/lib/radicale/collections/collection-root`.
    #[arg(long)]
    strip_prefix: Option<String>,
    /// The collection's new sync-token.
    #[arg(long)]
    sync_token: Option<String>,
    /// A property of the collection changed (rather than its content).
    #[arg(long)]
    property: bool,
}

pub(crate) fn run_topic(args: TopicArgs) -> ExitCode {
    let raw = match raw(&args.config, GatewayOverrides::default()) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let (key, _) = match raw.topic_key() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("davpush: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match key.topic(&path_of(&args.url)) {
        Some(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("davpush: `{}` is not a valid collection path", args.url);
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

pub(crate) async fn run_notify(args: NotifyArgs) -> ExitCode {
    let raw = match raw(&args.config, GatewayOverrides::default()) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let topic = match (&args.topic, &args.collection, &args.item) {
        (Some(t), _, _) => t.clone(),
        (None, c, i) => {
            let (key, _) = match raw.topic_key() {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("davpush: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let strip = |p: &str| -> String {
                let p = path_of(p);
                match &args.strip_prefix {
                    Some(prefix) => p.strip_prefix(prefix.trim_end_matches('/')).unwrap_or(&p).to_owned(),
                    None => p,
                }
            };
            let path = match (c, i) {
                (Some(c), _) => canonical_path(&strip(c)),
                (None, Some(i)) => {
                    let item = strip(i);
                    if canonical_path(&item).as_deref() == Some("/") {
                        // The root has no collection above it (Radicale's hook also runs for it).
                        eprintln!("davpush: {item} is the root: nothing to notify");
                        return ExitCode::SUCCESS;
                    }
                    parent_path(&item)
                }
                (None, None) => None,
            };
            match path {
                Some(p) => key.topic_of_canonical(&p),
                None => {
                    eprintln!("davpush: not a valid collection path");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
    };
    let token = match raw.notify_token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("davpush: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let trigger = if args.property { Trigger::Property } else { Trigger::Content };
    let req = NotifyRequest {
        topics: Some(vec![NotifyTopic::Detailed(TopicEntry {
            topic,
            sync_token: args.sync_token,
            trigger: Some(trigger),
        })]),
        ..Default::default()
    };
    let director = match url::Url::parse(&raw.director_url)
        .map_err(|e| e.to_string())
        .and_then(|u| DirectorClient::new(u, Duration::from_secs(30)).map_err(|e| e.to_string()))
    {
        Ok(d) => d.notify_token(token),
        Err(e) => {
            eprintln!("davpush: `director_url` {}: {e}", raw.director_url);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match director.notify(&req).await {
        Ok(answer) => {
            println!("{}", serde_json::to_string(&answer).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e @ DirectorError::Refused { .. }) => {
            eprintln!("davpush: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("davpush: cannot reach the Director at {}: {e}", raw.director_url);
            ExitCode::from(69) // EX_UNAVAILABLE
        }
    }
}
