//! The SSRF guard. The Director sends requests to URLs that clients choose (push endpoints), so
//! a client could aim it at the Director's own network. Every such URL must be `https` and
//! resolve only to public addresses; loopback, private, link-local, multicast, unspecified and
//! other special-purpose ranges (IPv4 and IPv6, IPv4-mapped included) are refused unless the
//! configuration allow-lists the host or its network, on a port. The check runs on the URL (IP
//! literals), at subscribe time after DNS resolution, and again inside the HTTP client's
//! resolver on every new connection, so a name that later resolves elsewhere (DNS rebinding) is
//! caught too. Redirects are never followed.
//!
//! An allow-list entry names a port (`push.lan:8080`, `[fd00::1]:8080`) or stands for the
//! scheme's standard port (443 for https, 80 for http): allowing a LAN distributor does not
//! open the other services of its host (`http://127.0.0.1:6379` is Redis). A resolver does not
//! learn the port it resolves for, so [`EgressClients`] keeps one HTTP client per port class,
//! each with a resolver that knows only the entries of its ports.

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
    /// The host is allow-listed, but for other ports only.
    #[error("the endpoint's host {host} is allow-listed for other ports only, not for {port}")]
    PortNotAllowed {
        /// The URL's host.
        host: String,
        /// The URL's port.
        port: u16,
    },
    /// DNS resolution failed.
    #[error("the endpoint's host {0} does not resolve")]
    Unresolvable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    Host(String),
    Net(IpAddr, u8),
}

/// The ports an allow-list entry admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    /// The scheme's standard port: 443 for https, 80 for http.
    Standard,
    /// This port, whatever the scheme.
    Only(u16),
    /// Any: in the narrowed policy of one port class (see [`EgressClients`]).
    Any,
}

#[derive(Debug, Clone)]
struct Allow {
    dest: Dest,
    ports: Ports,
}

/// The standard port of a scheme we send to.
fn standard_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

impl Allow {
    fn port_ok(&self, scheme: &str, port: u16) -> bool {
        match self.ports {
            Ports::Standard => standard_port(scheme) == Some(port),
            Ports::Only(p) => p == port,
            Ports::Any => true,
        }
    }

    fn dest_matches(&self, host: &str, ip: Option<IpAddr>) -> bool {
        match &self.dest {
            Dest::Host(h) => h.eq_ignore_ascii_case(host),
            Dest::Net(n, p) => ip.is_some_and(|ip| in_net(ip, *n, *p)),
        }
    }
}

/// Splits an allow-list entry into its destination and its port, if it names one:
/// `host`, `host:port`, `1.2.3.4`, `1.2.3.4:port`, `10.0.0.0/8`, `10.0.0.0/8:port`, `::1`,
/// `fd00::/8`, `[::1]`, `[::1]:port`, `[fd00::/8]:port`.
fn split_port(e: &str) -> Result<(&str, Option<u16>), String> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or(format!("bad port in `{e}`"));
    if let Some(rest) = e.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or(format!("unclosed `[` in `{e}`"))?;
        return match after {
            "" => Ok((inner, None)),
            _ => Ok((inner, Some(port(after.strip_prefix(':').ok_or(format!("bad port in `{e}`"))?)?))),
        };
    }
    match e.matches(':').count() {
        0 => Ok((e, None)),
        1 => {
            let (dest, p) = e.split_once(':').expect("one colon");
            Ok((dest, Some(port(p)?)))
        }
        _ => Ok((e, None)), // a bare IPv6 address or network: no port (write `[addr]:port`)
    }
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
    /// reached although not public, each on the port it names (`push.lan:8080`,
    /// `[fd00::1]:8080`, `10.0.0.0/8:8080`) or else on the scheme's standard port (443 for
    /// https, 80 for http). `allow_http`: plain `http` is accepted for allow-listed
    /// destinations (for tests and closed networks; never for the public Internet).
    pub fn new(allow: &[String], allow_http: bool) -> Result<Self, String> {
        let mut out = Vec::new();
        for entry in allow {
            let e = entry.trim();
            let (dest, port) = split_port(e)?;
            let ports = port.map_or(Ports::Standard, Ports::Only);
            let (addr, prefix) = match dest.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (dest, None),
            };
            let dest = match addr.parse::<IpAddr>() {
                Ok(ip) => {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    let p = match prefix {
                        Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or(format!("bad prefix in `{e}`"))?,
                        None => max,
                    };
                    Dest::Net(ip, p)
                }
                Err(_) if prefix.is_none() && !addr.is_empty() && !addr.contains(['[', ']', ':']) => {
                    Dest::Host(addr.to_ascii_lowercase())
                }
                Err(_) => return Err(format!("`{e}` is neither a host name, an IP address nor a CIDR network")),
            };
            out.push(Allow { dest, ports });
        }
        Ok(EgressPolicy { allow: out, allow_http, allowed_only: false })
    }

    /// The policy of one port class: the entries that admit `port` (`standard`: it is the
    /// scheme's standard port), each for any port. What a resolver for that class checks.
    fn narrowed(&self, port: u16, standard: bool) -> EgressPolicy {
        let allow = self
            .allow
            .iter()
            .filter(|a| match a.ports {
                Ports::Standard => standard,
                Ports::Only(p) => p == port,
                Ports::Any => true,
            })
            .map(|a| Allow { dest: a.dest.clone(), ports: Ports::Any })
            .collect();
        EgressPolicy { allow, ..self.clone() }
    }

    /// The same policy, but public addresses are refused as well: only allow-listed hosts and
    /// networks may be reached (for `server.privacy = "strict"`).
    pub fn allowed_only(mut self) -> Self {
        self.allowed_only = true;
        self
    }

    /// Whether an entry admits `host` (or the address `ip`) on `port`.
    fn listed(&self, host: &str, ip: Option<IpAddr>, scheme: &str, port: u16) -> bool {
        self.allow.iter().any(|a| a.port_ok(scheme, port) && a.dest_matches(host, ip))
    }

    fn addr_allowed(&self, host: &str, ip: IpAddr, scheme: &str, port: u16) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        (is_public(ip) && !self.allowed_only) || self.listed(host, Some(ip), scheme, port)
    }

    /// Checks scheme and, for IP literals, the address and port. Host names are checked when
    /// resolved.
    pub fn check_url(&self, url: &Url) -> Result<(), EgressError> {
        let host = url.host().ok_or(EgressError::NoHost)?;
        let (name, literal) = match host {
            Host::Domain(d) => (d.to_owned(), None),
            Host::Ipv4(a) => (a.to_string(), Some(IpAddr::V4(a))),
            Host::Ipv6(a) => (a.to_string(), Some(IpAddr::V6(a))),
        };
        let scheme = url.scheme();
        let port = url.port_or_known_default().unwrap_or(0);
        match scheme {
            "https" => {}
            "http" if self.allow_http && self.listed(&name, literal, scheme, port) => {}
            "http" if self.allow_http && self.allow.iter().any(|a| a.dest_matches(&name, literal)) => {
                return Err(EgressError::PortNotAllowed { host: name, port });
            }
            other => return Err(EgressError::Scheme(other.to_owned())),
        }
        if let Some(ip) = literal
            && !self.addr_allowed(&name, ip, scheme, port)
        {
            return Err(self.refusal(name, ip, port));
        }
        Ok(())
    }

    fn refusal(&self, host: String, addr: IpAddr, port: u16) -> EgressError {
        if self.allow.iter().any(|a| a.dest_matches(&host, Some(addr))) {
            EgressError::PortNotAllowed { host, port }
        } else if self.allowed_only && is_public(addr) {
            EgressError::NotAllowed { host, addr }
        } else {
            EgressError::NotPublic { host, addr }
        }
    }

    /// Checks every address of `addrs` that `host` resolved to, each on its port, for a URL of
    /// `scheme`.
    pub fn check_addrs(&self, scheme: &str, host: &str, addrs: &[SocketAddr]) -> Result<(), EgressError> {
        if addrs.is_empty() {
            return Err(EgressError::Unresolvable(host.to_owned()));
        }
        match addrs.iter().find(|a| !self.addr_allowed(host, a.ip(), scheme, a.port())) {
            Some(bad) => Err(self.refusal(host.to_owned(), bad.ip(), bad.port())),
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
            self.check_addrs(url.scheme(), d, &addrs)?;
        }
        Ok(())
    }

    /// Shared HTTP clients that enforce this policy on every connection (see [`EgressClients`]).
    pub fn clients(&self, timeout: Duration) -> Result<EgressClients, reqwest::Error> {
        let mut ports: Vec<u16> = self
            .allow
            .iter()
            .filter_map(|a| match a.ports {
                Ports::Only(p) => Some(p),
                _ => None,
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        let mut classes = vec![((443, true), self.narrowed(443, true).client(timeout)?)];
        classes.push(((80, true), self.narrowed(80, true).client(timeout)?));
        for p in ports {
            classes.push(((p, false), self.narrowed(p, false).client(timeout)?));
        }
        // Every other port: no entry admits it, public destinations only.
        let other = EgressPolicy { allow: Vec::new(), ..self.clone() }.client(timeout)?;
        Ok(EgressClients { classes, other })
    }

    /// One HTTP client whose resolver checks addresses against this (narrowed) policy: no
    /// redirects, connect and request timeouts, HTTP/2 where offered.
    fn client(&self, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
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

/// HTTP clients for the destinations of an [`EgressPolicy`], one per port class: the standard
/// ports of https and http, each port an allow-list entry names, and all others. Each client's
/// resolver admits a non-public address only if an entry admits it on the ports of its class,
/// so a name that resolves to an allow-listed address cannot be used to reach another port of
/// it. Pick the client with [`EgressClients::for_url`].
#[derive(Debug, Clone)]
pub struct EgressClients {
    classes: Vec<((u16, bool), reqwest::Client)>,
    other: reqwest::Client,
}

impl EgressClients {
    /// The client for requests to `url`.
    pub fn for_url(&self, url: &Url) -> &reqwest::Client {
        let Some(port) = url.port_or_known_default() else { return &self.other };
        let key = (port, standard_port(url.scheme()) == Some(port));
        self.classes.iter().find(|(k, _)| *k == key).map_or(&self.other, |(_, c)| c)
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
            // The narrowed policy of this client's port class admits any port of its entries.
            policy
                .check_addrs("", &host, &addrs)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
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

        let p = EgressPolicy::new(&["127.0.0.1:9".into(), "10.0.0.0/8".into(), "Localhost:9".into()], true).unwrap();
        assert!(p.check_url(&url("http://127.0.0.1:9/x")).is_ok());
        assert!(p.check_url(&url("https://10.200.0.7/x")).is_ok());
        assert!(p.check_url(&url("http://localhost:9/x")).is_ok());
        assert!(matches!(p.check_url(&url("https://127.0.0.2/x")), Err(EgressError::NotPublic { .. })));
        assert!(p.check_url(&url("http://push.example.net/x")).is_err(), "http only for allow-listed hosts");
        assert!(EgressPolicy::new(&["10.0.0.0/33".into()], false).is_err());

        let strict = EgressPolicy::new(&["push.lan".into(), "192.168.1.0/24".into()], false).unwrap().allowed_only();
        assert!(matches!(strict.check_url(&url("https://1.1.1.1/x")), Err(EgressError::NotAllowed { .. })));
        assert!(strict.check_url(&url("https://192.168.1.7/x")).is_ok());
        assert!(strict.check_addrs("https", "push.example.net", &["8.8.8.8:443".parse().unwrap()]).is_err());
        assert!(strict.check_addrs("https", "push.lan", &["10.9.9.9:443".parse().unwrap()]).is_ok());
    }

    #[test]
    fn issue_9_entries_admit_their_port_or_the_standard_one() {
        let p = EgressPolicy::new(
            &[
                "127.0.0.1".into(),
                "push.lan:8080".into(),
                "[::1]:8443".into(),
                "[fd00::1]".into(),
                "fd12::/16".into(),
                "[fd34::/16]:9000".into(),
                "10.0.0.0/8:5000".into(),
            ],
            true,
        )
        .unwrap();
        let ok = |u: &str| assert!(p.check_url(&url(u)).is_ok(), "{u} is allowed");
        let port_refused = |u: &str| {
            let e = p.check_url(&url(u)).unwrap_err();
            assert!(matches!(e, EgressError::PortNotAllowed { .. }), "{u}: {e}");
        };
        // No port named: the scheme's standard port only.
        ok("http://127.0.0.1/x");
        ok("https://127.0.0.1/x");
        ok("https://127.0.0.1:443/x");
        port_refused("http://127.0.0.1:6379/"); // Redis
        port_refused("https://127.0.0.1:80/x"); // 80 is standard for http, not https
        port_refused("http://127.0.0.1:443/x");
        ok("https://[fd00::1]/x");
        port_refused("https://[fd00::1]:8443/x");
        ok("https://[fd12::7]/x");
        port_refused("https://[fd12::7]:22/x");
        // A named port: that port only, whatever the scheme.
        ok("https://[::1]:8443/x");
        ok("http://[::1]:8443/x");
        port_refused("https://[::1]/x");
        ok("https://[fd34::9]:9000/x");
        port_refused("https://[fd34::9]/x");
        ok("https://10.1.2.3:5000/x");
        port_refused("https://10.1.2.3/x");
        ok("http://push.lan:8080/x");
        port_refused("http://push.lan/x");
        // Names are checked with the port of the URL, on every address.
        let lan = |port: u16| [SocketAddr::new("192.168.1.2".parse().unwrap(), port)];
        assert!(p.check_addrs("https", "push.lan", &lan(8080)).is_ok());
        assert!(matches!(
            p.check_addrs("https", "push.lan", &lan(443)),
            Err(EgressError::PortNotAllowed { port: 443, .. })
        ));
        assert!(p.check_addrs("https", "push.example.net", &["8.8.8.8:4443".parse().unwrap()]).is_ok(), "public");
        // Malformed entries.
        for bad in ["push.lan:", "push.lan:0", "push.lan:99999", "[::1", "[::1]8080", "[::1]:x", "a:b:c/7"] {
            assert!(EgressPolicy::new(&[bad.into()], false).is_err(), "`{bad}` is refused");
        }
    }

    #[test]
    fn issue_9_each_port_class_resolves_with_its_own_entries() {
        let p =
            EgressPolicy::new(&["127.0.0.1".into(), "push.lan:8080".into(), "10.0.0.0/8:8080".into()], true).unwrap();
        let loopback = ["127.0.0.1:0".parse().unwrap()];
        let ten = ["10.0.0.1:0".parse().unwrap()];
        // What the resolvers of the clients for https:443, http:80, :8080 and the rest admit.
        let standard = p.narrowed(443, true);
        assert!(standard.check_addrs("", "evil.example", &loopback).is_ok());
        assert!(standard.check_addrs("", "evil.example", &ten).is_err());
        let named = p.narrowed(8080, false);
        assert!(named.check_addrs("", "evil.example", &loopback).is_err(), "127.0.0.1 is not open on 8080");
        assert!(named.check_addrs("", "evil.example", &ten).is_ok());
        assert!(named.check_addrs("", "push.lan", &["192.168.0.9:0".parse().unwrap()]).is_ok());
        let other = p.narrowed(6379, false);
        assert!(other.check_addrs("", "evil.example", &loopback).is_err());
        assert!(other.check_addrs("", "evil.example", &["8.8.8.8:0".parse().unwrap()]).is_ok());
        let clients = p.clients(Duration::from_secs(1)).unwrap();
        assert_eq!(
            clients.classes.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [(443, true), (80, true), (8080, false)]
        );
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let p = EgressPolicy::default();
        let e = p.check_resolved(&url("https://localhost/push")).await.unwrap_err();
        assert!(matches!(e, EgressError::NotPublic { ref host, .. } if host == "localhost"), "{e}");
        let allowed = EgressPolicy::new(&["localhost".into()], false).unwrap();
        allowed.check_resolved(&url("https://localhost/push")).await.unwrap();
        let e = allowed.check_resolved(&url("https://localhost:6379/push")).await.unwrap_err();
        assert!(matches!(e, EgressError::PortNotAllowed { port: 6379, .. }), "{e}");
    }
}
