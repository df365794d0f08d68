//! The `[hijack]` (proxy checks) and `[audit]` sections of the configuration file.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::{ConfigError, parse_addr};

/// Names whose private answers are expected unless the user configures otherwise:
/// `plex.direct` encodes a LAN address in the name by design.
pub const DEFAULT_ALLOW: &[&str] = &["plex.direct"];

/// `[hijack]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawHijack {
    /// Run the per-answer checks at all (default true).
    pub enabled: Option<bool>,
    /// What to do per finding: `{ bogon-answer = "block", ... }`; `default` sets the rest.
    pub policy: Option<BTreeMap<String, Action>>,
    /// JSON-lines log of findings.
    pub log_file: Option<PathBuf>,
    /// Size at which the log is rotated to `<file>.1`, in bytes.
    pub log_max_bytes: Option<u64>,
    /// Names whose special-use answers are expected.
    pub allow: Option<Vec<String>>,
    /// Extra known block-page addresses.
    pub sinkhole_addresses: Option<Vec<String>>,
    /// Fraction (0..=1) of cache misses also asked of a second upstream and compared.
    pub cross_check: Option<f64>,
    /// TLS port used to verify addresses when a cross-check finds a difference.
    pub verify_port: Option<u16>,
    /// Test setups only: ranges treated as public.
    pub assume_public: Option<Vec<String>>,
}

/// `[audit]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAudit {
    /// The plaintext resolver under audit, `ADDR[:PORT]`.
    pub plain: Option<String>,
    /// Per query, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// How long the plain socket stays open after the first reply, in milliseconds.
    pub hold_ms: Option<u64>,
    /// TLS port used to verify suspect addresses.
    pub verify_port: Option<u16>,
    /// Time allowed for one verification handshake, in milliseconds.
    pub verify_timeout_ms: Option<u64>,
    /// Test setups only: ranges treated as public.
    pub assume_public: Option<Vec<String>>,
    /// Names whose special-use answers are expected.
    pub allow: Option<Vec<String>>,
    /// Extra known block-page addresses.
    pub sinkhole_addresses: Option<Vec<String>>,
    /// Real TLDs under which the NXDOMAIN probes invent names.
    pub nxdomain_tlds: Option<Vec<String>>,
    /// Interception probes; replaces the built-in list.
    pub interception: Option<Vec<RawInterception>>,
    /// Queries in flight at once.
    pub concurrency: Option<usize>,
}

/// One `[[audit.interception]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawInterception {
    /// Operator name for the report.
    pub label: String,
    /// The public resolver's address, `ADDR[:PORT]`.
    pub server: String,
    /// Identity query name, e.g. `id.server`.
    pub name: String,
    /// `CH` or `IN`.
    pub class: Option<String>,
    /// Record type (only `TXT` is compared).
    #[serde(rename = "type")]
    pub rtype: Option<String>,
    /// Glob (`*`, `?`) the real resolver's TXT answer matches.
    pub expect: String,
}

/// What to do with an answer that raised a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Log it and answer as usual.
    Log,
    /// Log it and answer REFUSED (with an Extended DNS Error) instead of the data.
    Block,
}

/// Validated `[hijack]`.
#[derive(Debug, Clone)]
pub struct HijackSettings {
    /// Run the per-answer checks.
    pub enabled: bool,
    /// Per reason code; reasons not listed use `default_action`.
    pub actions: BTreeMap<String, Action>,
    /// For reasons not in `actions`.
    pub default_action: Action,
    /// JSON-lines log.
    pub log_file: Option<PathBuf>,
    /// Rotation size.
    pub log_max_bytes: u64,
    /// Allowlisted names.
    pub allow: Vec<String>,
    /// Extra block-page addresses.
    pub sinkholes: Vec<IpAddr>,
    /// Fraction of misses cross-checked.
    pub cross_check: f64,
    /// TLS port for verification.
    pub verify_port: u16,
    /// Test-only public ranges.
    pub assume_public: Vec<IpNet>,
}

impl Default for HijackSettings {
    fn default() -> Self {
        HijackSettings {
            enabled: true,
            actions: BTreeMap::new(),
            default_action: Action::Log,
            log_file: None,
            log_max_bytes: 10 << 20,
            allow: DEFAULT_ALLOW.iter().map(|s| s.to_string()).collect(),
            sinkholes: Vec::new(),
            cross_check: 0.0,
            verify_port: 443,
            assume_public: Vec::new(),
        }
    }
}

/// One validated interception probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptionProbe {
    /// Operator name.
    pub label: String,
    /// Where the query is sent in plaintext.
    pub server: SocketAddr,
    /// Identity query name.
    pub name: String,
    /// Query class (3 = CH, 1 = IN).
    pub class: u16,
    /// Query type (16 = TXT).
    pub rtype: u16,
    /// Glob the genuine answer matches.
    pub expect: String,
}

/// Validated `[audit]`.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// The plaintext resolver (None: from /etc/resolv.conf at run time).
    pub plain: Option<SocketAddr>,
    /// Per query.
    pub timeout: Duration,
    /// Hold window for injected replies.
    pub hold: Duration,
    /// TLS port for verification.
    pub verify_port: u16,
    /// Per verification handshake.
    pub verify_timeout: Duration,
    /// Test-only public ranges.
    pub assume_public: Vec<IpNet>,
    /// Allowlisted names.
    pub allow: Vec<String>,
    /// Extra block-page addresses.
    pub sinkholes: Vec<IpAddr>,
    /// TLDs for the NXDOMAIN probes.
    pub nxdomain_tlds: Vec<String>,
    /// Interception probes.
    pub interception: Vec<InterceptionProbe>,
    /// Queries in flight at once.
    pub concurrency: usize,
}

/// Public resolvers that answer an identity query, and what their genuine answer looks like:
/// Quad9 names the answering node under `rrdns.pch.net`; Cloudflare gives a three-letter
/// airport code of the data centre.
const DEFAULT_INTERCEPTION: &[(&str, &str, &str, &str)] = &[
    ("Quad9", "9.9.9.9", "id.server", "*.pch.net"),
    ("Cloudflare", "1.1.1.1", "id.server", "???"),
];

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            plain: None,
            timeout: Duration::from_secs(2),
            hold: Duration::from_millis(500),
            verify_port: 443,
            verify_timeout: Duration::from_secs(3),
            assume_public: Vec::new(),
            allow: DEFAULT_ALLOW.iter().map(|s| s.to_string()).collect(),
            sinkholes: Vec::new(),
            nxdomain_tlds: vec!["com".into(), "net".into()],
            interception: DEFAULT_INTERCEPTION
                .iter()
                .map(|(label, server, name, expect)| InterceptionProbe {
                    label: label.to_string(),
                    server: SocketAddr::new(server.parse().expect("built-in"), 53),
                    name: name.to_string(),
                    class: 3,
                    rtype: 16,
                    expect: expect.to_string(),
                })
                .collect(),
            concurrency: 8,
        }
    }
}

fn invalid(key: String, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.to_string(),
    }
}

fn nets(key: &str, values: Option<Vec<String>>) -> Result<Vec<IpNet>, ConfigError> {
    values
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    invalid(
                        format!("{key}[{i}]"),
                        format!("{v:?} is not an address range"),
                    )
                })
        })
        .collect()
}

fn addrs(key: &str, values: Option<Vec<String>>) -> Result<Vec<IpAddr>, ConfigError> {
    values
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.parse()
                .map_err(|_| invalid(format!("{key}[{i}]"), format!("{v:?} is not an IP address")))
        })
        .collect()
}

fn names(key: &str, values: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for (i, v) in values.iter().enumerate() {
        if crate::dns::wire::name_from_str(v).is_none() {
            return Err(invalid(
                format!("{key}[{i}]"),
                format!("{v:?} is not a domain name"),
            ));
        }
    }
    Ok(values)
}

fn millis(key: &str, value: Option<u64>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(invalid(key.into(), "must be greater than 0")),
        Some(ms) if ms > 60_000 => Err(invalid(key.into(), "must be at most 60000")),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

impl HijackSettings {
    /// Validates `[hijack]`.
    pub fn from_raw(raw: Option<RawHijack>) -> Result<HijackSettings, ConfigError> {
        let Some(raw) = raw else {
            return Ok(HijackSettings::default());
        };
        let defaults = HijackSettings::default();
        let mut actions = raw.policy.unwrap_or_default();
        let default_action = actions.remove("default").unwrap_or(Action::Log);
        for reason in actions.keys() {
            if !super::Reason::ALL.iter().any(|r| r.as_str() == reason) {
                return Err(invalid(
                    format!("hijack.policy.{reason}"),
                    "not a reason code (see the README's list)",
                ));
            }
        }
        let cross_check = raw.cross_check.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&cross_check) {
            return Err(invalid(
                "hijack.cross-check".into(),
                "must be between 0 and 1",
            ));
        }
        if raw.log_max_bytes == Some(0) {
            return Err(invalid(
                "hijack.log-max-bytes".into(),
                "must be greater than 0",
            ));
        }
        Ok(HijackSettings {
            enabled: raw.enabled.unwrap_or(true),
            actions,
            default_action,
            log_file: raw.log_file.filter(|p| !p.as_os_str().is_empty()),
            log_max_bytes: raw.log_max_bytes.unwrap_or(defaults.log_max_bytes),
            allow: match raw.allow {
                Some(list) => names("hijack.allow", list)?,
                None => defaults.allow,
            },
            sinkholes: addrs("hijack.sinkhole-addresses", raw.sinkhole_addresses)?,
            cross_check,
            verify_port: raw.verify_port.unwrap_or(443),
            assume_public: nets("hijack.assume-public", raw.assume_public)?,
        })
    }

    /// The action configured for a finding with `reasons` (the strictest of them).
    pub fn action_for(&self, reasons: &[super::Reason]) -> Action {
        let blocked = reasons.iter().any(|r| {
            self.actions
                .get(r.as_str())
                .copied()
                .unwrap_or(self.default_action)
                == Action::Block
        });
        if blocked { Action::Block } else { Action::Log }
    }
}

impl AuditSettings {
    /// Validates `[audit]`.
    pub fn from_raw(raw: Option<RawAudit>) -> Result<AuditSettings, ConfigError> {
        let Some(raw) = raw else {
            return Ok(AuditSettings::default());
        };
        let defaults = AuditSettings::default();
        let plain = raw
            .plain
            .map(|p| parse_addr(&p, 53).map_err(|m| invalid("audit.plain".into(), m)))
            .transpose()?;
        let interception = match raw.interception {
            None => defaults.interception,
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, p)| interception(i, p))
                .collect::<Result<_, _>>()?,
        };
        Ok(AuditSettings {
            plain,
            timeout: millis("audit.timeout-ms", raw.timeout_ms, defaults.timeout)?,
            hold: match raw.hold_ms {
                Some(ms) if ms > 10_000 => {
                    return Err(invalid("audit.hold-ms".into(), "must be at most 10000"));
                }
                Some(ms) => Duration::from_millis(ms),
                None => defaults.hold,
            },
            verify_port: raw.verify_port.unwrap_or(443),
            verify_timeout: millis(
                "audit.verify-timeout-ms",
                raw.verify_timeout_ms,
                defaults.verify_timeout,
            )?,
            assume_public: nets("audit.assume-public", raw.assume_public)?,
            allow: match raw.allow {
                Some(list) => names("audit.allow", list)?,
                None => defaults.allow,
            },
            sinkholes: addrs("audit.sinkhole-addresses", raw.sinkhole_addresses)?,
            nxdomain_tlds: match raw.nxdomain_tlds {
                Some(list) if list.is_empty() => {
                    return Err(invalid("audit.nxdomain-tlds".into(), "must not be empty"));
                }
                Some(list) => names("audit.nxdomain-tlds", list)?,
                None => defaults.nxdomain_tlds,
            },
            interception,
            concurrency: match raw.concurrency {
                Some(0) => {
                    return Err(invalid(
                        "audit.concurrency".into(),
                        "must be greater than 0",
                    ));
                }
                Some(n) => n.min(256),
                None => defaults.concurrency,
            },
        })
    }
}

fn interception(i: usize, raw: RawInterception) -> Result<InterceptionProbe, ConfigError> {
    let key = |k: &str| format!("audit.interception[{i}].{k}");
    let server = parse_addr(&raw.server, 53).map_err(|m| invalid(key("server"), m))?;
    let class = match raw
        .class
        .as_deref()
        .unwrap_or("CH")
        .to_ascii_uppercase()
        .as_str()
    {
        "CH" => 3,
        "IN" => 1,
        other => {
            return Err(invalid(
                key("class"),
                format!("{other:?}: expected CH or IN"),
            ));
        }
    };
    let rtype = match raw
        .rtype
        .as_deref()
        .unwrap_or("TXT")
        .to_ascii_uppercase()
        .as_str()
    {
        "TXT" => 16,
        other => {
            return Err(invalid(
                key("type"),
                format!("{other:?}: only TXT is compared"),
            ));
        }
    };
    if crate::dns::wire::name_from_str(&raw.name).is_none() {
        return Err(invalid(
            key("name"),
            format!("{:?} is not a domain name", raw.name),
        ));
    }
    Ok(InterceptionProbe {
        label: raw.label,
        server,
        name: raw.name,
        class,
        rtype,
        expect: raw.expect,
    })
}
