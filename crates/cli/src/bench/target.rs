//! Reaching the Director: URL, tokens, HTTP client, and its metrics.

use super::*;

// ---------------------------------------------------------------------------------------------
// Target: URL, tokens, HTTP client.

/// Where and how to reach the Director.
pub(super) struct Target {
    pub(super) base: reqwest::Url,
    pub(super) http: reqwest::Client,
    /// The Director's API client (on `http`'s connection pool) with the notify token.
    pub(super) director: davpush_client::DirectorClient,
}

impl Target {
    pub(super) fn endpoint(&self, path: &str) -> anyhow::Result<reqwest::Url> {
        self.base.join(path).with_context(|| format!("cannot build the URL of {path}"))
    }
}

pub(super) fn read_token(inline: Option<String>, file: Option<&Path>, what: &str) -> anyhow::Result<Option<String>> {
    let token = match (inline, file) {
        (Some(t), _) => t,
        (None, Some(p)) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read the {what} token file {}", p.display()))?
        }
        (None, None) => return Ok(None),
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("the {what} token is empty");
    }
    Ok(Some(token))
}

/// Parses `--url` and resolves it; only loopback addresses are accepted.
pub(super) async fn resolve(url: &str) -> anyhow::Result<(reqwest::Url, SocketAddr)> {
    let mut base = reqwest::Url::parse(url).with_context(|| format!("--url {url:?} is not a URL"))?;
    if base.scheme() != "http" {
        bail!("--url must be a plain http:// URL on this machine (got {url:?})");
    }
    if !base.path().ends_with('/') {
        let p = format!("{}/", base.path());
        base.set_path(&p);
    }
    let host = base
        .host_str()
        .ok_or_else(|| anyhow!("--url {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = base.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    let Some(first) = addrs.first().copied() else {
        bail!("{host} resolves to no address");
    };
    if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!("--url must name a loopback address (127.0.0.0/8 or ::1): {host} resolves to {}", bad.ip());
    }
    Ok((base, first))
}

pub(super) fn http_client(max_idle: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(max_idle)
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")
}

// ---------------------------------------------------------------------------------------------
// Metrics.

/// What we read from `GET /metrics`.
#[derive(Debug, Clone, Default)]
pub(super) struct Scrape {
    pub(super) rss: Option<u64>,
    pub(super) ws_connections: Option<u64>,
    pub(super) ws_subscriptions: Option<u64>,
    /// `davpush_deliveries_total{service="websocket"}` by outcome (queued, coalesced, sent, …).
    pub(super) ws_outcomes: BTreeMap<String, u64>,
    /// `davpush_websocket_closed_total` by reason.
    pub(super) closed: BTreeMap<String, u64>,
}

impl Scrape {
    /// `self - before`, per key, leaving out zeros.
    pub(super) fn delta(now: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        now.iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).copied().unwrap_or(0))))
            .filter(|(_, v)| *v > 0)
            .collect()
    }
}

/// The value of the sample named exactly `name` (with its labels, as rendered).
pub(super) fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = rest.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

pub(super) fn parse_scrape(text: &str) -> Scrape {
    let mut closed = BTreeMap::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("davpush_websocket_closed_total{reason=\"")
            && let Some((reason, v)) = rest.split_once("\"} ")
            && let Ok(v) = v.trim().parse::<f64>()
        {
            closed.insert(reason.to_owned(), v as u64);
        }
    }
    let mut ws_outcomes = BTreeMap::new();
    for l in text.lines() {
        let Some(labels) = l.strip_prefix("davpush_deliveries_total{") else { continue };
        let Some((labels, v)) = labels.split_once("} ") else { continue };
        if !labels.split(',').any(|kv| kv == "service=\"websocket\"") {
            continue;
        }
        let outcome = labels.split(',').find_map(|kv| kv.strip_prefix("outcome=\"")?.strip_suffix('"'));
        if let (Some(outcome), Ok(v)) = (outcome, v.trim().parse::<f64>()) {
            *ws_outcomes.entry(outcome.to_owned()).or_default() += v as u64;
        }
    }
    Scrape {
        rss: sample(text, "davpush_process_resident_memory_bytes").map(|v| v as u64),
        ws_connections: sample(text, "davpush_websocket_connections").map(|v| v as u64),
        ws_subscriptions: sample(text, "davpush_subscriptions{service=\"websocket\"}").map(|v| v as u64),
        ws_outcomes,
        closed,
    }
}

/// Reads the Director's metrics; `None` when it serves none (server.metrics = false).
pub(super) async fn scrape(t: &Target) -> anyhow::Result<Option<Scrape>> {
    let url = t.endpoint("metrics")?;
    let resp = t
        .http
        .get(url.clone())
        .send()
        .await
        .map_err(|e| anyhow!("the Director at {} is unreachable: {}", t.base, error_chain(&e)))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        bail!("GET {url} answered {}", resp.status());
    }
    let text = resp.text().await.context("cannot read /metrics")?;
    Ok(Some(parse_scrape(&text)))
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
