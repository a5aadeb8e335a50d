//! The SSRF guard. The Director sends requests to URLs that clients choose (push endpoints), so
//! a client could aim it at the Director's own network. Every such URL must be `https` and
//! resolve only to public addresses; loopback, private, link-local, multicast, unspecified and
//! other special-purpose ranges (IPv4 and IPv6, IPv4-mapped included) are refused unless the
//! configuration allow-lists the host or its network. The check runs on the URL (IP literals),
//! at subscribe time after DNS resolution, and again inside the HTTP client's resolver on every
//! new connection, so a name that later resolves elsewhere (DNS rebinding) is caught too.
//! Redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// Not https (or http where allowed).
    #[error("the endpoint must be an https URL, not `{0}:`")]
    Scheme(String),
    /// No host.
    #[error("the endpoint has no host")]
    NoHost,
    /// The host is, or resolves to, an address that is not public.
    #[error("the endpoint's host {host} is (or resolves to) {addr}, which is not a public address")]
    NotPublic {
        /// The URL's host.
        host: String,
        /// The refused address.
        addr: IpAddr,
    },
    /// Strict privacy: the host is public but not allow-listed.
    #[error(
        "the endpoint's host {host} is (or resolves to) {addr}, which is not allow-listed (server.privacy = \"strict\")"
    )]
    NotAllowed {
        /// The URL's host.
        host: String,
        /// The refused address.
        addr: IpAddr,
    },
    /// DNS resolution failed.
    #[error("the endpoint's host {0} does not resolve")]
    Unresolvable(String),
}

#[derive(Debug, Clone)]
enum Allow {
    Host(String),
    Net(IpAddr, u8),
}

/// Which destinations outgoing requests may reach.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allow: Vec<Allow>,
    allow_http: bool,
    /// Public addresses are refused too: only allow-listed destinations (`privacy = "strict"`).
    allowed_only: bool,
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Whether `ip` is a public unicast address (not loopback, private, link-local, shared,
/// multicast, unspecified, broadcast, documentation, benchmarking or reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let special: [(Ipv6Addr, u8); 14] = [
                (Ipv6Addr::UNSPECIFIED, 128),
                (Ipv6Addr::UNSPECIFIED, 96), // IPv4-compatible (deprecated): ::a.b.c.d
                (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16), // 6to4: would reach an embedded IPv4
                (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32), // Teredo
                (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use NAT64
                (Ipv6Addr::LOCALHOST, 128),
                (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96), // IPv4-mapped (handled above)
                (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96), // NAT64: could reach private v4
                (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),  // discard-only
                (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
                (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),  // unique local
                (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
                (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // site-local (deprecated)
                (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),  // multicast
            ];
            !special.iter().any(|(net, p)| in_net(ip, IpAddr::V6(*net), *p))
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let special: [(Ipv4Addr, u8); 15] = [
        (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network", unspecified
        (Ipv4Addr::new(10, 0, 0, 0), 8),      // private
        (Ipv4Addr::new(100, 64, 0, 0), 10),   // shared (CGNAT)
        (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
        (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local (cloud metadata)
        (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
        (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
        (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation
        (Ipv4Addr::new(192, 88, 99, 0), 24),  // 6to4 relay anycast (deprecated)
        (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
        (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
        (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation
        (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation
        (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
        (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, broadcast
    ];
    !special.iter().any(|(net, p)| in_net(IpAddr::V4(v4), IpAddr::V4(*net), *p))
}

impl EgressPolicy {
    /// `allow`: host names (exact, case-insensitive), IP addresses or CIDR networks that may be
    /// reached although not public. `allow_http`: plain `http` is accepted for allow-listed
    /// hosts (for tests and closed networks; never for the public Internet).
    pub fn new(allow: &[String], allow_http: bool) -> Result<Self, String> {
        let mut out = Vec::new();
        for entry in allow {
            let e = entry.trim();
            let (addr, prefix) = match e.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (e, None),
            };
            let addr = addr.trim_start_matches('[').trim_end_matches(']');
            match addr.parse::<IpAddr>() {
                Ok(ip) => {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    let p = match prefix {
                        Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or(format!("bad prefix in `{e}`"))?,
                        None => max,
                    };
                    out.push(Allow::Net(ip, p));
                }
                Err(_) if prefix.is_none() && !e.is_empty() => out.push(Allow::Host(e.to_ascii_lowercase())),
                Err(_) => return Err(format!("`{e}` is neither a host name, an IP address nor a CIDR network")),
            }
        }
        Ok(EgressPolicy { allow: out, allow_http, allowed_only: false })
    }

    /// The same policy, but public addresses are refused as well: only allow-listed hosts and
    /// networks may be reached (for `server.privacy = "strict"`).
    pub fn allowed_only(mut self) -> Self {
        self.allowed_only = true;
        self
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.allow.iter().any(|a| matches!(a, Allow::Host(h) if h.eq_ignore_ascii_case(host)))
    }

    fn addr_allowed(&self, host: &str, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        (is_public(ip) && !self.allowed_only)
            || self.host_allowed(host)
            || self.allow.iter().any(|a| matches!(a, Allow::Net(n, p) if in_net(ip, *n, *p)))
    }

    /// Checks scheme and, for IP literals, the address. Host names are checked when resolved.
    pub fn check_url(&self, url: &Url) -> Result<(), EgressError> {
        let host = url.host().ok_or(EgressError::NoHost)?;
        let (name, literal) = match host {
            Host::Domain(d) => (d.to_owned(), None),
            Host::Ipv4(a) => (a.to_string(), Some(IpAddr::V4(a))),
            Host::Ipv6(a) => (a.to_string(), Some(IpAddr::V6(a))),
        };
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http && (self.host_allowed(&name) || literal.is_some_and(|ip| self.listed(ip))) => {}
            other => return Err(EgressError::Scheme(other.to_owned())),
        }
        if let Some(ip) = literal
            && !self.addr_allowed(&name, ip)
        {
            return Err(self.refusal(name, ip));
        }
        Ok(())
    }

    fn refusal(&self, host: String, addr: IpAddr) -> EgressError {
        if self.allowed_only && is_public(addr) {
            EgressError::NotAllowed { host, addr }
        } else {
            EgressError::NotPublic { host, addr }
        }
    }

    fn listed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|a| matches!(a, Allow::Net(n, p) if in_net(ip, *n, *p)))
    }

    /// Checks every address of `addrs` that `host` resolved to.
    pub fn check_addrs(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), EgressError> {
        if addrs.is_empty() {
            return Err(EgressError::Unresolvable(host.to_owned()));
        }
        match addrs.iter().find(|a| !self.addr_allowed(host, a.ip())) {
            Some(bad) => Err(self.refusal(host.to_owned(), bad.ip())),
            None => Ok(()),
        }
    }

    /// [`EgressPolicy::check_url`], then resolves a host name and checks every address.
    pub async fn check_resolved(&self, url: &Url) -> Result<(), EgressError> {
        self.check_url(url)?;
        if let Some(Host::Domain(d)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(443);
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((d, port))
                .await
                .map_err(|_| EgressError::Unresolvable(d.to_owned()))?
                .collect();
            self.check_addrs(d, &addrs)?;
        }
        Ok(())
    }

    /// A shared HTTP client that enforces this policy on every connection: resolver-level
    /// address checks, no redirects, connect and request timeouts, HTTP/2 where offered.
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { policy: self.clone() }))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("davpush/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .build()
    }
}

/// DNS resolution that refuses names resolving to addresses the policy does not allow.
struct GuardedResolver {
    policy: EgressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            policy.check_addrs(&host, &addrs).map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn special_addresses_are_not_public() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a} must not be public");
        }
        for a in ["1.1.1.1", "8.8.8.8", "172.32.0.1", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(a.parse().unwrap()), "{a} is public");
        }
    }

    #[test]
    fn urls_are_checked() {
        let p = EgressPolicy::default();
        assert!(p.check_url(&url("https://push.example.net/x")).is_ok());
        assert_eq!(p.check_url(&url("http://push.example.net/x")), Err(EgressError::Scheme("http".into())));
        assert!(matches!(p.check_url(&url("https://127.0.0.1/x")), Err(EgressError::NotPublic { .. })));
        assert!(matches!(p.check_url(&url("https://10.0.0.7:8443/x")), Err(EgressError::NotPublic { .. })));
        assert!(matches!(p.check_url(&url("https://[::1]/x")), Err(EgressError::NotPublic { .. })));
        assert!(matches!(p.check_url(&url("https://[::ffff:192.168.0.1]/x")), Err(EgressError::NotPublic { .. })));
        assert_eq!(p.check_url(&url("ftp://push.example.net/")), Err(EgressError::Scheme("ftp".into())));

        let p = EgressPolicy::new(&["127.0.0.1".into(), "10.0.0.0/8".into(), "Localhost".into()], true).unwrap();
        assert!(p.check_url(&url("http://127.0.0.1:9/x")).is_ok());
        assert!(p.check_url(&url("https://10.200.0.7/x")).is_ok());
        assert!(p.check_url(&url("http://localhost:9/x")).is_ok());
        assert!(matches!(p.check_url(&url("https://127.0.0.2/x")), Err(EgressError::NotPublic { .. })));
        assert!(p.check_url(&url("http://push.example.net/x")).is_err(), "http only for allow-listed hosts");
        assert!(EgressPolicy::new(&["10.0.0.0/33".into()], false).is_err());

        let strict = EgressPolicy::new(&["push.lan".into(), "192.168.1.0/24".into()], false).unwrap().allowed_only();
        assert!(matches!(strict.check_url(&url("https://1.1.1.1/x")), Err(EgressError::NotAllowed { .. })));
        assert!(strict.check_url(&url("https://192.168.1.7/x")).is_ok());
        assert!(strict.check_addrs("push.example.net", &["8.8.8.8:443".parse().unwrap()]).is_err());
        assert!(strict.check_addrs("push.lan", &["10.9.9.9:443".parse().unwrap()]).is_ok());
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let p = EgressPolicy::default();
        let e = p.check_resolved(&url("https://localhost/push")).await.unwrap_err();
        assert!(matches!(e, EgressError::NotPublic { ref host, .. } if host == "localhost"), "{e}");
        let allowed = EgressPolicy::new(&["localhost".into()], false).unwrap();
        allowed.check_resolved(&url("https://localhost/push")).await.unwrap();
    }
}
