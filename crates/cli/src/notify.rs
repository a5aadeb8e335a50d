//! `davpush topic` and `davpush notify`: a collection's topic, and telling the Director that it
//! changed, with the gateway's configuration (its topic secret and notify token).

use std::process::ExitCode;
use std::time::Duration;

use davpush_client::{DirectorClient, DirectorError};
use davpush_gateway::config::{GatewayOverrides, RawGatewayConfig};
use davpush_gateway::topic::{TopicKey, canonical_path, parent_path};
use davpush_proto::notify::TopicEntry;
use davpush_proto::{NotifyRequest, NotifyTopic, Trigger};

use crate::config_args::EXIT_CONFIG;
use crate::gateway::{GatewayConfigArgs, GatewayFileArgs, path_of, raw};

/// A file the command needs does not exist: the gateway's topic secret (EX_NOINPUT).
pub(crate) const EXIT_NO_INPUT: u8 = 66;
/// A path that is not under `--strip-prefix`: it names no collection (EX_DATAERR).
pub(crate) const EXIT_DATA: u8 = 65;
/// The Director is unreachable (EX_UNAVAILABLE).
pub(crate) const EXIT_UNAVAILABLE: u8 = 69;
/// The Director refused the notify token (EX_NOPERM).
pub(crate) const EXIT_REFUSED: u8 = 77;

/// Print the topic of a collection (for application servers that integrate by hand), computed
/// with the gateway's topic secret, which only the gateway creates.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 printed; 64 bad arguments or configuration; 66 no topic secret in \
the data directory (only the gateway creates it: start `davpush gateway` once with this data directory, or \
pass the gateway's --data-dir or --config).")]
pub(crate) struct TopicArgs {
    #[command(flatten)]
    config: GatewayFileArgs,
    /// The collection's URL or path on the WebDAV server, e.g. /alice/calendar/.
    url: String,
}

/// Tell the Director that a collection changed (for cron jobs and server hooks, e.g. Radicale's
/// storage hook). Prints the Director's answer on stdout and every error on stderr.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 notified (also when nobody subscribes to the collection: \
\"addressed\":0); 64 bad arguments or configuration (e.g. no notify-token); 65 a --collection/--item path \
that is not under --strip-prefix; 66 no topic secret in the data directory (only the gateway creates it: \
start `davpush gateway` once with this data directory, or pass the gateway's --data-dir or --config); 69 the \
Director is unreachable; 77 the Director refused the notify token; 1 any other refusal.")]
pub(crate) struct NotifyArgs {
    #[command(flatten)]
    config: GatewayConfigArgs,
    /// The topic that changed.
    #[arg(long, conflicts_with_all = ["collection", "item"], required_unless_present_any = ["collection", "item"])]
    topic: Option<String>,
    /// The collection (URL or path) that changed; its topic is computed as the gateway does.
    #[arg(long, conflicts_with = "item")]
    collection: Option<String>,
    /// A member (URL or path) that changed: its collection is notified. Takes several: a move
    /// names its source and its destination (Radicale's `%(path)s %(to_path)s`, where `%(to_path)s`
    /// is empty for every other write), and each distinct collection is notified once.
    #[arg(long, num_args = 1.., value_name = "ITEM")]
    item: Vec<String>,
    /// Remove this prefix from --collection/--item first: for hooks that pass a file path,
    /// e.g. Radicale's `%(path)s` with `--strip-prefix /var/lib/radicale/collections/collection-root`.
    /// A path not under it is an error (exit 65).
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
    let key = match existing_topic_key(&raw) {
        Ok(k) => k,
        Err(c) => return c,
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
    let topics = match (&args.topic, &args.collection) {
        (Some(t), _) => vec![t.clone()],
        (None, c) => {
            let key = match existing_topic_key(&raw) {
                Ok(k) => k,
                Err(c) => return c,
            };
            let strip = |p: &str| -> Result<String, ExitCode> {
                let p = path_of(p);
                match &args.strip_prefix {
                    Some(prefix) => strip_prefix(&p, prefix).map(str::to_owned).ok_or_else(|| {
                        eprintln!(
                            "davpush: {p} is not under --strip-prefix {prefix}: it names no collection, \
                             nothing was notified"
                        );
                        ExitCode::from(EXIT_DATA)
                    }),
                    None => Ok(p),
                }
            };
            let mut paths = Vec::new();
            match c {
                Some(c) => match strip(c) {
                    Ok(p) => paths.push(canonical_path(&p)),
                    Err(code) => return code,
                },
                None => {
                    for i in &args.item {
                        let item = match strip(i) {
                            Ok(p) => p,
                            Err(code) => return code,
                        };
                        if canonical_path(&item).as_deref() == Some("/") {
                            // The root has no collection above it (Radicale's hook also runs for it).
                            eprintln!("davpush: {item} is the root: nothing to notify");
                            continue;
                        }
                        paths.push(parent_path(&item));
                    }
                    if paths.is_empty() {
                        return ExitCode::SUCCESS;
                    }
                }
            }
            let mut topics: Vec<String> = Vec::with_capacity(paths.len());
            for path in paths {
                match path {
                    Some(p) => {
                        let topic = key.topic_of_canonical(&p);
                        if !topics.contains(&topic) {
                            topics.push(topic);
                        }
                    }
                    None => {
                        eprintln!("davpush: not a valid collection path");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                }
            }
            if topics.len() > 1 && args.sync_token.is_some() {
                eprintln!(
                    "davpush: --sync-token names one collection's state, but the items are in {} collections",
                    topics.len()
                );
                return ExitCode::from(EXIT_CONFIG);
            }
            topics
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
        topics: Some(
            topics
                .into_iter()
                .map(|topic| {
                    NotifyTopic::Detailed(TopicEntry {
                        topic,
                        sync_token: args.sync_token.clone(),
                        trigger: Some(trigger),
                    })
                })
                .collect(),
        ),
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
        Err(e @ DirectorError::Refused { status: 401 | 403, .. }) => {
            eprintln!("davpush: {e} (is the notify token the Director's?)");
            ExitCode::from(EXIT_REFUSED)
        }
        Err(e @ DirectorError::Refused { .. }) => {
            eprintln!("davpush: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("davpush: cannot reach the Director at {}: {e}", raw.director_url);
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

/// The gateway's topic key; never created here (exit 66 when there is none).
fn existing_topic_key(raw: &RawGatewayConfig) -> Result<TopicKey, ExitCode> {
    let missing = !raw.topic_secret_path().exists();
    raw.existing_topic_key().map_err(|e| {
        eprintln!("davpush: {}", e.message);
        ExitCode::from(if missing { EXIT_NO_INPUT } else { EXIT_CONFIG })
    })
}

/// `path` without `prefix` (a whole number of segments), or `None` if it is not under it.
fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix.trim_end_matches('/'))?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::strip_prefix;

    #[test]
    fn strip_prefix_takes_whole_segments_only() {
        let root = "/var/lib/radicale/collections/collection-root";
        assert_eq!(
            strip_prefix("/var/lib/radicale/collections/collection-root/alice/cal/e.ics", root),
            Some("/alice/cal/e.ics")
        );
        assert_eq!(strip_prefix("/var/lib/radicale/collections/collection-root", root), Some(""));
        assert_eq!(strip_prefix("/var/lib/radicale/collections/collection-root/", &format!("{root}/")), Some("/"));
        assert_eq!(strip_prefix("/var/lib/radicale/collections/collection-rootx/a/", root), None);
        assert_eq!(strip_prefix("/srv/other/alice/cal/e.ics", root), None);
    }
}
