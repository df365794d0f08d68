//! Configuration: a TOML file and command-line flags merged into one validated [`Settings`].
//!
//! The file is parsed from a `&str` ([`RawConfig::parse`]) so it is testable without files.
//! Unknown keys are errors naming the key; every value is checked once, here, and errors name
//! the key they belong to.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::cache::{StalePolicy, TtlPolicy};
use crate::clients::{ClientSettings, RateLimit, loopback_nets};
use crate::control::{ControlSettings, RawControl};
use crate::listener::tcp::TcpLimits;
use crate::logging::LogFormat;
use crate::resolver::ResolverOptions;
use crate::router::{RouterOptions, Strategy};
use crate::upstream::pin::parse_pin;
use crate::upstream::{ConnectOptions, UpstreamSpec};

/// Where dnsward listens when nothing else is configured.
pub const DEFAULT_LISTEN: [&str; 2] = ["127.0.0.1:53", "[::1]:53"];

/// Well-known public resolvers, with their addresses so they never need a plaintext lookup.
pub const DEFAULT_UPSTREAMS: [&str; 5] = [
    "https://dns.quad9.net/dns-query#9.9.9.9,149.112.112.112,2620:fe::fe,2620:fe::9",
    "https://cloudflare-dns.com/dns-query#1.1.1.1,1.0.0.1,2606:4700:4700::1111,2606:4700:4700::1001",
    "https://dns.google/dns-query#8.8.8.8,8.8.4.4,2001:4860:4860::8888,2001:4860:4860::8844",
    "tls://dns.quad9.net#9.9.9.9,149.112.112.112,2620:fe::fe,2620:fe::9",
    "tls://one.one.one.one#1.1.1.1,1.0.0.1,2606:4700:4700::1111,2606:4700:4700::1001",
];

/// Connectivity-check names of common operating systems and browsers.
pub const DEFAULT_CAPTIVE_NAMES: &[&str] = &[
    "captive.apple.com",
    "connectivitycheck.gstatic.com",
    "connectivitycheck.android.com",
    "clients3.google.com",
    "detectportal.firefox.com",
    "www.msftconnecttest.com",
    "www.msftncsi.com",
    "nmcheck.gnome.org",
    "network-test.debian.org",
    "networkcheck.kde.org",
];

/// The hosts file answered locally unless configured otherwise.
pub const DEFAULT_HOSTS_FILE: &str = "/etc/hosts";

/// Plain-DNS servers used only to look up upstream names given without addresses.
pub const DEFAULT_BOOTSTRAP: [&str; 2] = ["9.9.9.9:53", "149.112.112.112:53"];

/// Longest query deadline accepted; stub clients retry after a few seconds anyway.
const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// A configuration problem, naming the key or file it concerns.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrongly typed values.
    #[error("{origin}: {message}")]
    Parse {
        /// The file (or "configuration").
        origin: String,
        /// The TOML error, which names the key and line.
        message: String,
    },
    /// A value is of the right type but not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, e.g. `upstreams[2]` or `cache.max-ttl`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.to_string(),
    }
}

/// The configuration file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    /// Addresses to listen on (UDP and TCP), `ADDR:PORT` or `ADDR` (port 53).
    pub listen: Option<Vec<String>>,
    /// Upstreams: URLs, or tables with a URL and options.
    pub upstreams: Option<Vec<RawUpstream>>,
    /// Plain DNS servers to resolve upstream names without addresses.
    pub bootstrap: Option<Vec<String>>,
    /// Extra CA certificates (PEM files) to trust.
    pub ca_files: Option<Vec<PathBuf>>,
    /// `fastest` or `strict`.
    pub strategy: Option<Strategy>,
    /// Overall time for one query, in milliseconds.
    pub query_timeout_ms: Option<u64>,
    /// Time before a slow upstream is hedged with the next, in milliseconds.
    pub attempt_timeout_ms: Option<u64>,
    /// Time allowed to connect to an upstream (TCP + TLS), in milliseconds.
    pub connect_timeout_ms: Option<u64>,
    /// UDP queries resolved at once.
    pub udp_max_in_flight: Option<usize>,
    /// hosts(5) file answered locally ("" for none).
    pub hosts_file: Option<PathBuf>,
    /// Static records answered locally, in presentation form.
    pub records: Option<Vec<String>>,
    /// TTL of hosts-file answers (and static records written without one), in seconds.
    pub hosts_ttl: Option<u32>,
    /// Split-DNS rules: domains forwarded in plain DNS to the resolvers that serve them.
    pub forward: Option<Vec<RawForward>>,
    /// Captive-portal policy.
    pub captive_portal: Option<RawCaptive>,
    /// Cache settings.
    pub cache: Option<RawCache>,
    /// TCP listener settings.
    pub tcp: Option<RawTcp>,
    /// Per-answer hijack checks.
    pub hijack: Option<crate::hijack::config::RawHijack>,
    /// `dnsward audit` settings.
    pub audit: Option<crate::hijack::config::RawAudit>,
    /// Who may query, and how fast.
    pub clients: Option<RawClients>,
    /// The user to switch to after binding the listening sockets, when started as root.
    pub user: Option<String>,
    /// The control endpoint (health, metrics, stats, cache flush).
    pub control: Option<RawControl>,
    /// `text` or `json` (the command line and DNSWARD_LOG_FORMAT take precedence).
    pub log_format: Option<LogFormat>,
}

/// `[clients]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawClients {
    /// Networks (CIDR) or addresses that may query besides loopback.
    pub allow: Option<Vec<String>>,
    /// Queries per second per client network (0 turns rate limiting off).
    pub rate_limit: Option<u32>,
    /// Queries a quiet client may send at once.
    pub rate_limit_burst: Option<u32>,
    /// Every Nth UDP query over the limit gets a truncated reply (0: drop them all).
    pub slip: Option<u32>,
    /// IPv4 prefix length that makes one client network.
    pub ipv4_prefix: Option<u8>,
    /// IPv6 prefix length that makes one client network.
    pub ipv6_prefix: Option<u8>,
}

/// `[cache]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCache {
    /// Most answers kept (0 disables the cache).
    pub size: Option<u64>,
    /// Minimum TTL in seconds.
    pub min_ttl: Option<u32>,
    /// Maximum TTL in seconds for positive answers.
    pub max_ttl: Option<u32>,
    /// Maximum TTL in seconds for NXDOMAIN/NODATA.
    pub negative_max_ttl: Option<u32>,
    /// Serve expired answers when no upstream answers (RFC 8767).
    pub serve_stale: Option<bool>,
    /// Seconds past expiry an answer may still be served.
    pub stale_max_age: Option<u32>,
    /// TTL of a stale answer, in seconds.
    pub stale_answer_ttl: Option<u32>,
    /// Milliseconds a client waits for a fresh answer before getting a stale one.
    pub stale_answer_timeout_ms: Option<u64>,
    /// Refresh popular answers shortly before they expire.
    pub prefetch: Option<bool>,
}

/// An upstream as written: a bare URL, or `{ url = "...", pin-sha256 = ["..."] }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawUpstream {
    /// Just the URL.
    Url(String),
    /// A URL with options.
    Table(RawUpstreamTable),
}

/// The table form of an upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawUpstreamTable {
    /// The URL.
    pub url: String,
    /// SHA-256 pins of a public key in the certificate chain (base64); fails closed.
    #[serde(default)]
    pub pin_sha256: Vec<String>,
}

/// One `[[forward]]` rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawForward {
    /// Domains this rule covers (with their subdomains).
    pub domains: Vec<String>,
    /// Plain DNS servers that serve them.
    pub servers: Vec<String>,
}

/// `[captive-portal]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCaptive {
    /// Whether the exception is in force.
    pub enabled: Option<bool>,
    /// Connectivity-check names.
    pub names: Option<Vec<String>>,
    /// The network's resolvers, or "auto".
    pub resolvers: Option<Vec<String>>,
}

/// `[tcp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTcp {
    /// Connections served at once.
    pub max_connections: Option<usize>,
    /// Queries per connection resolved at once.
    pub max_in_flight: Option<usize>,
    /// Idle connection timeout in milliseconds.
    pub idle_timeout_ms: Option<u64>,
}

impl RawConfig {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        RawConfig::parse(&text, &path.display().to_string())
    }
}

/// Command-line values that override or extend the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen` (replaces the file's list).
    pub listen: Vec<String>,
    /// `--upstream` (replaces the file's list).
    pub upstreams: Vec<String>,
    /// `--bootstrap` (replaces the file's list).
    pub bootstrap: Vec<String>,
    /// `--ca-file` (added to the file's list).
    pub ca_files: Vec<PathBuf>,
    /// `--user` (replaces the file's `user`).
    pub user: Option<String>,
}

/// A validated split-DNS rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRule {
    /// Domains covered.
    pub domains: Vec<String>,
    /// Plain resolvers for them.
    pub servers: Vec<SocketAddr>,
}

/// A validated captive-portal policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptiveSettings {
    /// Connectivity-check names.
    pub names: Vec<String>,
    /// Fixed resolvers; empty means "auto" (the system's resolv.conf files).
    pub resolvers: Vec<SocketAddr>,
}

/// Everything dnsward needs to run, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listening addresses.
    pub listen: Vec<SocketAddr>,
    /// True if `listen` is the built-in default (then a missing IPv6 loopback is tolerated).
    pub listen_is_default: bool,
    /// Upstreams in configuration order.
    pub upstreams: Vec<UpstreamSpec>,
    /// Bootstrap resolvers.
    pub bootstrap: Vec<SocketAddr>,
    /// Extra trusted CA files.
    pub ca_files: Vec<PathBuf>,
    /// Failover policy.
    pub router: RouterOptions,
    /// Upstream connection timeouts.
    pub connect: ConnectOptions,
    /// Cache capacity in answers.
    pub cache_size: u64,
    /// TTL clamps.
    pub ttl: TtlPolicy,
    /// Serving expired answers.
    pub stale: StalePolicy,
    /// Prefetch and stale timing.
    pub resolver: ResolverOptions,
    /// hosts file answered locally.
    pub hosts_file: Option<PathBuf>,
    /// Static local records (validated when the local table is built).
    pub records: Vec<String>,
    /// TTL of hosts-file answers.
    pub hosts_ttl: u32,
    /// Split-DNS rules.
    pub forward: Vec<ForwardRule>,
    /// Captive-portal exception, when enabled.
    pub captive: Option<CaptiveSettings>,
    /// TCP limits.
    pub tcp: TcpLimits,
    /// UDP in-flight limit.
    pub udp_max_in_flight: usize,
    /// Per-answer hijack checks.
    pub hijack: crate::hijack::config::HijackSettings,
    /// `dnsward audit` settings.
    pub audit: crate::hijack::config::AuditSettings,
    /// Access list and rate limiting.
    pub clients: ClientSettings,
    /// User to switch to after binding, when started as root.
    pub user: Option<String>,
    /// The control endpoint, when enabled.
    pub control: Option<ControlSettings>,
    /// Log format from the file.
    pub log_format: LogFormat,
}

impl Settings {
    /// Merges `raw` with command-line `overrides` and validates the result.
    pub fn from_raw(raw: RawConfig, overrides: Overrides) -> Result<Settings, ConfigError> {
        let (listen_key, listen_strings, listen_is_default) = if !overrides.listen.is_empty() {
            ("--listen", overrides.listen, false)
        } else if let Some(l) = raw.listen {
            ("listen", l, false)
        } else {
            ("listen", DEFAULT_LISTEN.map(String::from).to_vec(), true)
        };
        if listen_strings.is_empty() {
            return Err(invalid(listen_key, "needs at least one address"));
        }
        let listen = listen_strings
            .iter()
            .enumerate()
            .map(|(i, s)| parse_addr(s, 53).map_err(|m| invalid(format!("{listen_key}[{i}]"), m)))
            .collect::<Result<Vec<_>, _>>()?;
        let clients = clients(raw.clients.unwrap_or_default(), &listen, listen_key)?;
        let user = match overrides.user.or(raw.user) {
            Some(u) if u.is_empty() => return Err(invalid("user", "must not be empty")),
            u => u,
        };

        let (up_key, raw_upstreams) = if !overrides.upstreams.is_empty() {
            (
                "--upstream",
                overrides
                    .upstreams
                    .into_iter()
                    .map(RawUpstream::Url)
                    .collect(),
            )
        } else if let Some(u) = raw.upstreams {
            ("upstreams", u)
        } else {
            (
                "upstreams",
                DEFAULT_UPSTREAMS
                    .iter()
                    .map(|s| RawUpstream::Url(s.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        if raw_upstreams.is_empty() {
            return Err(invalid(up_key, "needs at least one upstream URL"));
        }
        let upstreams = raw_upstreams
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                upstream(raw).map_err(|(sub, m)| invalid(format!("{up_key}[{i}]{sub}"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let (boot_key, boot_strings) = if !overrides.bootstrap.is_empty() {
            ("--bootstrap", overrides.bootstrap)
        } else if let Some(b) = raw.bootstrap {
            ("bootstrap", b)
        } else {
            ("bootstrap", DEFAULT_BOOTSTRAP.map(String::from).to_vec())
        };
        let bootstrap = boot_strings
            .iter()
            .enumerate()
            .map(|(i, s)| parse_addr(s, 53).map_err(|m| invalid(format!("{boot_key}[{i}]"), m)))
            .collect::<Result<Vec<_>, _>>()?;

        let mut ca_files = raw.ca_files.unwrap_or_default();
        ca_files.extend(overrides.ca_files);

        let defaults = RouterOptions::default();
        let query_timeout = millis(
            "query-timeout-ms",
            raw.query_timeout_ms,
            defaults.query_timeout,
        )?;
        if query_timeout > MAX_QUERY_TIMEOUT {
            return Err(invalid(
                "query-timeout-ms",
                "must be at most 60000 (clients give up long before)",
            ));
        }
        let attempt_timeout = millis(
            "attempt-timeout-ms",
            raw.attempt_timeout_ms,
            defaults.attempt_timeout,
        )?;
        if attempt_timeout > query_timeout {
            return Err(invalid(
                "attempt-timeout-ms",
                "must not exceed query-timeout-ms",
            ));
        }
        let router = RouterOptions {
            strategy: raw.strategy.unwrap_or_default(),
            query_timeout,
            attempt_timeout,
            ..defaults
        };
        let connect_defaults = ConnectOptions::default();
        let connect = ConnectOptions {
            connect_timeout: millis(
                "connect-timeout-ms",
                raw.connect_timeout_ms,
                connect_defaults.connect_timeout,
            )?,
            ..connect_defaults
        };
        if connect.connect_timeout > query_timeout {
            return Err(invalid(
                "connect-timeout-ms",
                "must not exceed query-timeout-ms",
            ));
        }

        let cache = raw.cache.unwrap_or_default();
        let ttl_defaults = TtlPolicy::default();
        let ttl = TtlPolicy {
            min_ttl: cache.min_ttl.unwrap_or(ttl_defaults.min_ttl),
            max_ttl: cache.max_ttl.unwrap_or(ttl_defaults.max_ttl),
            negative_max_ttl: cache
                .negative_max_ttl
                .unwrap_or(ttl_defaults.negative_max_ttl),
        };
        if ttl.min_ttl > ttl.max_ttl {
            return Err(invalid("cache.min-ttl", "must not exceed cache.max-ttl"));
        }
        let stale_defaults = StalePolicy::default();
        let stale = StalePolicy {
            enabled: cache.serve_stale.unwrap_or(stale_defaults.enabled),
            max_stale: cache.stale_max_age.unwrap_or(stale_defaults.max_stale),
            answer_ttl: cache.stale_answer_ttl.unwrap_or(stale_defaults.answer_ttl),
        };
        let resolver_defaults = ResolverOptions::default();
        let resolver = ResolverOptions {
            prefetch: cache.prefetch.unwrap_or(resolver_defaults.prefetch),
            stale_answer_timeout: millis(
                "cache.stale-answer-timeout-ms",
                cache.stale_answer_timeout_ms,
                resolver_defaults.stale_answer_timeout,
            )?,
        };

        let hosts_file = match raw.hosts_file {
            None => Some(PathBuf::from(DEFAULT_HOSTS_FILE)),
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p),
        };
        let mut forward = Vec::new();
        for (i, rule) in raw.forward.unwrap_or_default().into_iter().enumerate() {
            let key = format!("forward[{i}]");
            if rule.domains.is_empty() {
                return Err(invalid(
                    format!("{key}.domains"),
                    "needs at least one domain",
                ));
            }
            for (j, d) in rule.domains.iter().enumerate() {
                if crate::dns::wire::name_from_str(d).is_none() {
                    return Err(invalid(
                        format!("{key}.domains[{j}]"),
                        format!("{d:?} is not a domain name"),
                    ));
                }
            }
            if rule.servers.is_empty() {
                return Err(invalid(
                    format!("{key}.servers"),
                    "needs at least one server",
                ));
            }
            let servers = rule
                .servers
                .iter()
                .enumerate()
                .map(|(j, s)| {
                    parse_addr(s, 53).map_err(|m| invalid(format!("{key}.servers[{j}]"), m))
                })
                .collect::<Result<Vec<_>, _>>()?;
            forward.push(ForwardRule {
                domains: rule.domains,
                servers,
            });
        }
        let captive_raw = raw.captive_portal.unwrap_or_default();
        let captive = if captive_raw.enabled.unwrap_or(false) {
            let names = captive_raw.names.unwrap_or_else(|| {
                DEFAULT_CAPTIVE_NAMES
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            });
            for (j, n) in names.iter().enumerate() {
                if crate::dns::wire::name_from_str(n).is_none() {
                    return Err(invalid(
                        format!("captive-portal.names[{j}]"),
                        format!("{n:?} is not a domain name"),
                    ));
                }
            }
            let mut resolvers = Vec::new();
            for (j, r) in captive_raw
                .resolvers
                .unwrap_or_else(|| vec!["auto".into()])
                .iter()
                .enumerate()
            {
                if r != "auto" {
                    resolvers.push(
                        parse_addr(r, 53)
                            .map_err(|m| invalid(format!("captive-portal.resolvers[{j}]"), m))?,
                    );
                }
            }
            Some(CaptiveSettings { names, resolvers })
        } else {
            None
        };

        let tcp_raw = raw.tcp.unwrap_or_default();
        let tcp_defaults = TcpLimits::default();
        let tcp = TcpLimits {
            max_connections: positive(
                "tcp.max-connections",
                tcp_raw.max_connections,
                tcp_defaults.max_connections,
            )?,
            max_in_flight: positive(
                "tcp.max-in-flight",
                tcp_raw.max_in_flight,
                tcp_defaults.max_in_flight,
            )?,
            idle_timeout: millis(
                "tcp.idle-timeout-ms",
                tcp_raw.idle_timeout_ms,
                tcp_defaults.idle_timeout,
            )?,
        };

        Ok(Settings {
            listen,
            listen_is_default,
            upstreams,
            bootstrap,
            ca_files,
            router,
            connect,
            cache_size: cache.size.unwrap_or(10_000),
            ttl,
            stale,
            resolver,
            hosts_file,
            records: raw.records.unwrap_or_default(),
            hosts_ttl: raw.hosts_ttl.unwrap_or(60),
            forward,
            captive,
            tcp,
            udp_max_in_flight: positive("udp-max-in-flight", raw.udp_max_in_flight, 1024)?,
            hijack: crate::hijack::config::HijackSettings::from_raw(raw.hijack)?,
            audit: crate::hijack::config::AuditSettings::from_raw(raw.audit)?,
            clients,
            user,
            control: crate::control::settings(raw.control)?,
            log_format: raw.log_format.unwrap_or_default(),
        })
    }

    /// Loads `path` (if given) and merges `overrides`.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Settings, ConfigError> {
        let raw = match path {
            Some(p) => RawConfig::load(p)?,
            None => RawConfig::default(),
        };
        Settings::from_raw(raw, overrides)
    }
}

/// Validates `[clients]`. Listening where other machines can reach (any address but
/// loopback) needs an access list: without one every such query would be refused, and a
/// silent "nothing works" on the LAN is worse than an error naming the fix.
fn clients(
    raw: RawClients,
    listen: &[SocketAddr],
    listen_key: &str,
) -> Result<ClientSettings, ConfigError> {
    let mut allow = loopback_nets();
    for (i, s) in raw.allow.iter().flatten().enumerate() {
        let net = s
            .parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                invalid(
                    format!("clients.allow[{i}]"),
                    format!(
                        "{s:?} is not a network (expected 192.168.1.0/24, fd00::/8 or an address)"
                    ),
                )
            })?;
        allow.push(net.trunc());
    }
    if raw.allow.as_ref().is_none_or(|a| a.is_empty())
        && let Some((i, addr)) = listen
            .iter()
            .enumerate()
            .find(|(_, a)| !a.ip().to_canonical().is_loopback())
    {
        return Err(invalid(
            format!("{listen_key}[{i}]"),
            format!(
                "{addr} can be reached from other machines, but only loopback may query; \
                 name the networks that may, e.g. [clients] allow = [\"192.168.1.0/24\"], \
                 or listen on 127.0.0.1 only"
            ),
        ));
    }
    let defaults = RateLimit::default();
    let rate_limit = match raw.rate_limit {
        Some(0) => None,
        per_second => {
            let prefix = |key: &str, value: Option<u8>, default: u8, max: u8| match value {
                None => Ok(default),
                Some(p) if p <= max => Ok(p),
                Some(_) => Err(invalid(key, format!("must be at most {max}"))),
            };
            Some(RateLimit {
                per_second: per_second.map_or(defaults.per_second, f64::from),
                burst: match raw.rate_limit_burst {
                    None => defaults.burst,
                    Some(0) => {
                        return Err(invalid(
                            "clients.rate-limit-burst",
                            "must be greater than 0",
                        ));
                    }
                    Some(b) => b,
                },
                slip: raw.slip.unwrap_or(defaults.slip),
                ipv4_prefix: prefix(
                    "clients.ipv4-prefix",
                    raw.ipv4_prefix,
                    defaults.ipv4_prefix,
                    32,
                )?,
                ipv6_prefix: prefix(
                    "clients.ipv6-prefix",
                    raw.ipv6_prefix,
                    defaults.ipv6_prefix,
                    128,
                )?,
                ..defaults
            })
        }
    };
    Ok(ClientSettings { allow, rate_limit })
}

/// Validates one upstream; errors carry a sub-key (e.g. ".pin-sha256[0]") and a message.
fn upstream(raw: RawUpstream) -> Result<UpstreamSpec, (String, String)> {
    let (url, pins) = match raw {
        RawUpstream::Url(url) => (url, Vec::new()),
        RawUpstream::Table(t) => (t.url, t.pin_sha256),
    };
    let mut spec = url
        .parse::<UpstreamSpec>()
        .map_err(|e| (String::new(), format!("{url:?}: {e}")))?;
    spec.pin_sha256 = pins
        .iter()
        .enumerate()
        .map(|(j, p)| parse_pin(p).map_err(|e| (format!(".pin-sha256[{j}]"), e.to_string())))
        .collect::<Result<_, _>>()?;
    Ok(spec)
}

fn millis(key: &str, value: Option<u64>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(invalid(key, "must be greater than 0")),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

fn positive(key: &str, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(invalid(key, "must be greater than 0")),
        Some(n) => Ok(n),
    }
}

/// `ADDR:PORT`, `[V6]:PORT`, or a bare address with `default_port`.
pub fn parse_addr(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| format!("{s:?} is not an address (expected 127.0.0.1:53 or [::1]:53)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_raw(RawConfig::parse(text, "test.toml")?, Overrides::default())
    }

    #[test]
    fn empty_config_gives_defaults() {
        let s = settings("").unwrap();
        assert_eq!(s.listen.len(), 2);
        assert!(s.listen_is_default);
        assert_eq!(s.upstreams.len(), DEFAULT_UPSTREAMS.len());
        assert!(s.upstreams.iter().all(|u| !u.addrs.is_empty()));
        assert_eq!(s.router.strategy, Strategy::Fastest);
    }

    #[test]
    fn full_config_is_read() {
        let s = settings(
            r#"
            listen = ["127.0.0.1:5353", "::1"]
            upstreams = ["tls://localhost:853#127.0.0.1"]
            strategy = "strict"
            query-timeout-ms = 3000
            attempt-timeout-ms = 500
            [cache]
            size = 50
            min-ttl = 10
            [tcp]
            idle-timeout-ms = 2000
            "#,
        )
        .unwrap();
        assert_eq!(s.listen[1], "[::1]:53".parse().unwrap());
        assert_eq!(s.router.strategy, Strategy::Strict);
        assert_eq!(s.router.attempt_timeout, Duration::from_millis(500));
        assert_eq!((s.cache_size, s.ttl.min_ttl), (50, 10));
        assert_eq!(s.tcp.idle_timeout, Duration::from_secs(2));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = settings("listen = []\nupstream = [\"x\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream"), "{err}");
        let err = settings("[cache]\nmax-tll = 5").unwrap_err().to_string();
        assert!(err.contains("max-tll"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = settings("upstreams = [\"tls://a#1.2.3.4\", \"udp://b\"]").unwrap_err();
        assert!(err.to_string().starts_with("upstreams[1]:"), "{err}");
        let err = settings("listen = [\"localhost:53\"]").unwrap_err();
        assert!(err.to_string().starts_with("listen[0]:"), "{err}");
        let err = settings("query-timeout-ms = 0").unwrap_err();
        assert!(err.to_string().starts_with("query-timeout-ms:"), "{err}");
        // Regression (review #13): a huge timeout overflowed `Instant + Duration`.
        let err = settings("query-timeout-ms = 18446744073709551615").unwrap_err();
        assert!(err.to_string().starts_with("query-timeout-ms:"), "{err}");
        let err = settings("query-timeout-ms = 2000\nconnect-timeout-ms = 3000").unwrap_err();
        assert!(err.to_string().starts_with("connect-timeout-ms:"), "{err}");
        let err = settings("[cache]\nmin-ttl = 10\nmax-ttl = 5").unwrap_err();
        assert!(err.to_string().starts_with("cache.min-ttl:"), "{err}");
        let err = settings("strategy = \"random\"").unwrap_err();
        assert!(err.to_string().contains("strategy"), "{err}");
    }

    #[test]
    fn local_names_split_dns_and_captive_portal() {
        let s = settings(
            r#"
            hosts-file = ""
            records = ["nas.lan. 300 IN A 192.168.1.10"]
            [[forward]]
            domains = ["lan", "168.192.in-addr.arpa"]
            servers = ["192.168.1.1", "192.168.1.2:5353"]
            [captive-portal]
            enabled = true
            resolvers = ["auto", "192.168.1.1"]
            "#,
        )
        .unwrap();
        assert_eq!(s.hosts_file, None);
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.forward[0].servers[1], "192.168.1.2:5353".parse().unwrap());
        let captive = s.captive.unwrap();
        assert_eq!(captive.resolvers, ["192.168.1.1:53".parse().unwrap()]);
        assert!(captive.names.iter().any(|n| n == "captive.apple.com"));
        let d = settings("").unwrap();
        assert_eq!(d.hosts_file, Some(PathBuf::from("/etc/hosts")));
        assert!(d.captive.is_none(), "off unless enabled");
        let err = settings("[[forward]]\ndomains = [\"lan\"]\nservers = [\"router\"]").unwrap_err();
        assert!(
            err.to_string().starts_with("forward[0].servers[0]:"),
            "{err}"
        );
        let err = settings("[[forward]]\ndomains = []\nservers = [\"192.168.1.1\"]").unwrap_err();
        assert!(err.to_string().starts_with("forward[0].domains:"), "{err}");
    }

    #[test]
    fn upstream_tables_carry_pins() {
        let pin = "sha256/".to_string() + &"A".repeat(43) + "=";
        let s = settings(&format!(
            "upstreams = [\"tls://a#127.0.0.1\", {{ url = \"https://b/dns-query#127.0.0.2\", pin-sha256 = [\"{pin}\"] }}]"
        ))
        .unwrap();
        assert!(s.upstreams[0].pin_sha256.is_empty());
        assert_eq!(s.upstreams[1].pin_sha256, [[0u8; 32]]);
        let err =
            settings("upstreams = [{ url = \"tls://a#127.0.0.1\", pin-sha256 = [\"short\"] }]")
                .unwrap_err();
        assert!(
            err.to_string().starts_with("upstreams[0].pin-sha256[0]:"),
            "{err}"
        );
        let err = settings("upstreams = [{ url = \"tls://a\", pin = [] }]").unwrap_err();
        assert!(err.to_string().contains("upstreams"), "{err}");
    }

    #[test]
    fn listening_beyond_loopback_needs_an_access_list() {
        let err = settings("listen = [\"127.0.0.1:53\", \"192.168.1.1:53\"]").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("listen[1]:"), "{msg}");
        assert!(msg.contains("[clients] allow"), "{msg}");
        let err = settings("listen = [\"[::]:53\"]\n[clients]\nallow = []").unwrap_err();
        assert!(err.to_string().starts_with("listen[0]:"), "{err}");
        let s = settings(
            "listen = [\"0.0.0.0:53\"]\n[clients]\nallow = [\"192.168.1.0/24\", \"fd00::/8\", \"10.1.2.3\"]",
        )
        .unwrap();
        let allow: Vec<String> = s.clients.allow.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            allow,
            [
                "127.0.0.0/8",
                "::1/128",
                "192.168.1.0/24",
                "fd00::/8",
                "10.1.2.3/32"
            ],
            "loopback is always allowed"
        );
        // Loopback-only listening needs nothing.
        let d = settings("listen = [\"127.0.0.2:5353\", \"[::1]:5353\"]").unwrap();
        assert_eq!(d.clients.allow, crate::clients::loopback_nets());
        let err = settings("[clients]\nallow = [\"192.168.1.0/33\"]").unwrap_err();
        assert!(err.to_string().starts_with("clients.allow[0]:"), "{err}");
    }

    #[test]
    fn rate_limit_keys() {
        let d = settings("").unwrap().clients.rate_limit.unwrap();
        assert_eq!(d, RateLimit::default());
        let s = settings(
            "[clients]\nrate-limit = 20\nrate-limit-burst = 50\nslip = 0\nipv4-prefix = 24\nipv6-prefix = 56",
        )
        .unwrap();
        let r = s.clients.rate_limit.unwrap();
        assert_eq!((r.per_second, r.burst, r.slip), (20.0, 50, 0));
        assert_eq!((r.ipv4_prefix, r.ipv6_prefix), (24, 56));
        assert_eq!(r.exempt, crate::clients::loopback_nets());
        assert!(
            settings("[clients]\nrate-limit = 0")
                .unwrap()
                .clients
                .rate_limit
                .is_none()
        );
        let err = settings("[clients]\nipv4-prefix = 33").unwrap_err();
        assert!(err.to_string().starts_with("clients.ipv4-prefix:"), "{err}");
        let err = settings("[clients]\nrate-limit-burst = 0").unwrap_err();
        assert!(
            err.to_string().starts_with("clients.rate-limit-burst:"),
            "{err}"
        );
        let err = settings("[clients]\nrate = 5").unwrap_err();
        assert!(err.to_string().contains("rate"), "{err}");
    }

    #[test]
    fn user_from_file_or_command_line() {
        assert_eq!(
            settings("user = \"nobody\"").unwrap().user.as_deref(),
            Some("nobody")
        );
        assert!(settings("user = \"\"").is_err());
        let raw = RawConfig::parse("user = \"nobody\"", "t").unwrap();
        let overrides = Overrides {
            user: Some("dnsward".into()),
            ..Overrides::default()
        };
        let s = Settings::from_raw(raw, overrides).unwrap();
        assert_eq!(s.user.as_deref(), Some("dnsward"));
    }

    #[test]
    fn command_line_replaces_lists_and_adds_ca_files() {
        let raw = RawConfig::parse(
            "upstreams = [\"tls://a#127.0.0.1\"]\nca-files = [\"a.pem\"]",
            "t",
        )
        .unwrap();
        let overrides = Overrides {
            upstreams: vec!["https://b/dns-query#127.0.0.2".into()],
            ca_files: vec!["b.pem".into()],
            ..Overrides::default()
        };
        let s = Settings::from_raw(raw, overrides).unwrap();
        assert_eq!(s.upstreams.len(), 1);
        assert_eq!(s.upstreams[0].host, "b");
        assert_eq!(s.ca_files, [PathBuf::from("a.pem"), PathBuf::from("b.pem")]);
    }
}
