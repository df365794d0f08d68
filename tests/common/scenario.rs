//! Scenario files of the hijack-audit corpus (`tests/scenarios/*.toml`): a trusted zone, a
//! scripted plain resolver, TLS sites, public resolvers probed for interception, and what the
//! audit is expected to say. See tests/scenarios/README.md for the format.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use serde::Deserialize;

use super::scripted::{Action, Rule, Script};
use super::sites::{CertKind, SiteSpec};
use super::zone::{Zone, name};

/// Verdicts of `dnsward audit`, in the order the confusion matrix lists them.
pub const VERDICTS: [&str; 5] = [
    "consistent",
    "benign-variation",
    "suspicious",
    "hijacked",
    "inconclusive",
];

/// Every reason code of audit-spec.md (expectations may only name these).
pub const REASONS: [&str; 19] = [
    "same-addresses",
    "round-robin-subset",
    "certificate-valid",
    "same-asn",
    "allowlisted",
    "bogon-answer",
    "sinkhole-ip",
    "nxdomain-rewrite",
    "tls-mismatch",
    "unexpected-nxdomain",
    "unexpected-answer",
    "injected-reply",
    "unverified-ip",
    "same-address-for-all",
    "plain-servfail",
    "plain-refused",
    "plain-timeout",
    "unreliable-resolver",
    "no-trusted-answer",
];

/// Interception probe verdicts.
pub const INTERCEPTION_VERDICTS: [&str; 3] = ["not-intercepted", "intercepted", "unreachable"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Scenario {
    /// File stem, filled in by `load`.
    #[serde(skip)]
    pub id: String,
    pub description: String,
    /// True when nothing in the scenario is a hijack: the audit must judge nothing hijacked and
    /// exit 0. False: it must find the hijack and exit 3.
    pub benign: bool,
    /// Records the trusted DoT upstream serves (tests/common/zone.rs syntax, one per line).
    /// Every other name is NXDOMAIN there.
    pub trusted: String,
    /// Names the trusted upstream answers SERVFAIL (e.g. a validating resolver on a name with
    /// broken DNSSEC); honest resolvers (the plain one's mirror) still answer them from `trusted`.
    #[serde(default)]
    pub trusted_servfail: Vec<String>,
    #[serde(default)]
    pub plain: PlainSpec,
    #[serde(default)]
    pub sites: Vec<SiteEntry>,
    /// Public resolvers probed for interception. When empty, the harness adds one honest
    /// resolver, so the audit never falls back to its built-in list of real addresses.
    #[serde(default)]
    pub interception: Vec<InterceptionEntry>,
    /// Extra `[audit]` settings.
    #[serde(default)]
    pub audit: AuditSpec,
    /// The names file is made from these: one expected result per name and type.
    pub expect: Vec<Expectation>,
    #[serde(default)]
    pub nxdomain_probes: NxdomainExpectation,
    /// An ASN database for the audit (`--asn-db`), written at test time when given.
    #[serde(default)]
    pub asn: Vec<AsnEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AsnEntry {
    /// An IPv4 network, "127.100.1.0/24".
    pub network: String,
    /// Its AS number.
    pub number: u32,
}

impl AsnEntry {
    /// (network address, prefix length, AS number), as tests/common/mmdb.rs takes them.
    pub fn parsed(&self) -> (Ipv4Addr, u8, u32) {
        let parsed = self.network.split_once('/').and_then(|(ip, len)| {
            Some((
                ip.parse::<Ipv4Addr>().ok()?,
                len.parse::<u8>().ok().filter(|l| (1..=32).contains(l))?,
            ))
        });
        let (ip, len) =
            parsed.unwrap_or_else(|| panic!("asn network {:?}: want a.b.c.d/len", self.network));
        (ip, len, self.number)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PlainSpec {
    /// TXT string answered to CHAOS id.server / hostname.bind.
    pub identity: Option<String>,
    /// Tried in order, first match wins; a query no rule matches is mirrored.
    #[serde(default)]
    pub rules: Vec<RuleEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuleEntry {
    /// A name, or "*" for every name.
    pub name: String,
    /// A type (A, AAAA, ...); every type when absent.
    #[serde(rename = "type")]
    pub rtype: Option<String>,
    /// mirror | answer | rewrite-nxdomain | nxdomain | servfail | servfail-once | refused |
    /// drop | inject
    pub action: String,
    /// answer / rewrite-nxdomain: the addresses to answer.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// answer: a CNAME target the addresses hang off.
    pub cname: Option<String>,
    /// inject: the forged reply's addresses.
    #[serde(default)]
    pub forged: Vec<IpAddr>,
    /// inject: delay of the genuine reply after the forged one.
    pub after_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SiteEntry {
    pub address: IpAddr,
    /// valid | wrong-name | untrusted | closed
    pub cert: String,
    /// Names on the certificate.
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InterceptionEntry {
    pub label: String,
    /// The public resolver's address (a 127.100.x.y standing for it; the port is chosen).
    pub address: IpAddr,
    /// Who answers queries sent there: "genuine" (the public resolver, saying `identity`),
    /// "plain" (intercepted: the resolver under audit, with its script and identity) or
    /// "nobody" (nothing listens).
    pub answered_by: String,
    /// The genuine resolver's identity (answered-by = "genuine").
    pub identity: Option<String>,
    /// The glob the audit matches the identity against.
    pub expect: String,
    /// Expected probe verdict: not-intercepted | intercepted | unreachable.
    pub verdict: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuditSpec {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub sinkhole_addresses: Vec<IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Expectation {
    pub name: String,
    #[serde(rename = "type", default = "default_type")]
    pub rtype: String,
    /// What the trusted zone answers for this name (NOERROR or NXDOMAIN); checked against the
    /// zone before the audit runs, so a typo in a name cannot go unnoticed.
    #[serde(default = "default_rcode")]
    pub trusted_rcode: String,
    pub verdict: String,
    /// Reasons that must all be present (others may be too).
    #[serde(default)]
    pub reasons: Vec<String>,
    /// When given: the addresses the audit must report for the plain resolver (any order).
    pub plain_addresses: Option<Vec<IpAddr>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NxdomainExpectation {
    /// Whether the NXDOMAIN probes must find rewriting (default: no).
    #[serde(default)]
    pub rewriting: bool,
    /// Addresses that must be among the learned redirect addresses.
    #[serde(default)]
    pub redirect_addresses: Vec<IpAddr>,
}

fn default_type() -> String {
    "A".to_string()
}

fn default_rcode() -> String {
    "NOERROR".to_string()
}

/// The directory of scenario files.
pub fn scenario_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

/// Every scenario file, sorted by name; each parsed and checked (panics on a bad file).
pub fn load_all() -> Vec<Scenario> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(scenario_dir())
        .expect("read tests/scenarios")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load(p)).collect()
}

/// Parses and checks one scenario file (panics with the file name on any problem).
pub fn load(path: &Path) -> Scenario {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let id = path.file_stem().unwrap().to_string_lossy();
    parse(&id, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses and checks a scenario's text.
pub fn parse(id: &str, text: &str) -> Result<Scenario, String> {
    let mut s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
    s.id = id.to_string();
    s.check()?;
    Ok(s)
}

impl Scenario {
    /// What an honest resolver answers: the records of `trusted`.
    pub fn zone(&self) -> Zone {
        Zone::new().records(&self.trusted)
    }

    /// What the trusted upstream serves: `zone()`, with SERVFAIL for `trusted-servfail` names.
    pub fn trusted_zone(&self) -> Zone {
        self.trusted_servfail
            .iter()
            .fold(self.zone(), |z, n| z.rcode(n, ResponseCode::ServFail))
    }

    /// The plain resolver's script.
    pub fn script(&self) -> Script {
        Script {
            zone: self.zone(),
            rules: self.plain.rules.iter().map(RuleEntry::rule).collect(),
            identity: self.plain.identity.clone(),
        }
    }

    pub fn site_specs(&self) -> Vec<SiteSpec> {
        self.sites.iter().map(SiteEntry::spec).collect()
    }

    /// The names file: one line per name, its types comma-separated, in first-seen order.
    pub fn names_file(&self) -> String {
        let mut lines: Vec<(String, Vec<String>)> = Vec::new();
        for e in &self.expect {
            match lines.iter_mut().find(|(n, _)| *n == e.name) {
                Some((_, types)) => types.push(e.rtype.clone()),
                None => lines.push((e.name.clone(), vec![e.rtype.clone()])),
            }
        }
        lines
            .iter()
            .map(|(n, t)| format!("{n} {}\n", t.join(",")))
            .collect()
    }

    /// The public resolvers to probe: the file's, or one honest stand-in when it lists none, so
    /// the audit never falls back to its built-in list of real resolvers' addresses.
    pub fn interception_targets(&self) -> Vec<InterceptionEntry> {
        if !self.interception.is_empty() {
            return self.interception.clone();
        }
        vec![InterceptionEntry {
            label: "PubDNS".into(),
            address: IpAddr::from([127, 100, 53, 53]),
            answered_by: "genuine".into(),
            identity: Some("fra1.anycast.pubdns.test".into()),
            expect: "*.anycast.pubdns.test".into(),
            verdict: "not-intercepted".into(),
        }]
    }

    /// Whether the expectations say the audit must exit 3.
    pub fn expects_hijack(&self) -> bool {
        self.expect.iter().any(|e| e.verdict == "hijacked")
            || self.interception.iter().any(|i| i.verdict == "intercepted")
            || self.nxdomain_probes.rewriting
    }

    /// Consistency of the file: known verdicts, reasons, actions and types; expected trusted
    /// rcodes match the zone; `benign` agrees with the expectations.
    fn check(&self) -> Result<(), String> {
        let zone = self.trusted_zone();
        for r in &self.plain.rules {
            let _ = r.rule();
        }
        for s in &self.sites {
            let _ = s.spec();
        }
        for a in &self.asn {
            let (ip, _, _) = a.parsed();
            if !ip.is_loopback() {
                return Err(format!("asn network {}: loopback only", a.network));
            }
        }
        for e in &self.expect {
            let what = format!("expect {} {}", e.name, e.rtype);
            if !VERDICTS.contains(&e.verdict.as_str()) {
                return Err(format!("{what}: unknown verdict {:?}", e.verdict));
            }
            if let Some(r) = e.reasons.iter().find(|r| !REASONS.contains(&r.as_str())) {
                return Err(format!("{what}: unknown reason {r:?}"));
            }
            let rtype = parse_type(&e.rtype);
            let mut q = Message::new(0, MessageType::Query, hickory_proto::op::OpCode::Query);
            q.queries.push(Query::query(name(&e.name), rtype));
            let got = zone.answer(&q).metadata.response_code;
            let want = match e.trusted_rcode.as_str() {
                "NOERROR" => ResponseCode::NoError,
                "NXDOMAIN" => ResponseCode::NXDomain,
                "SERVFAIL" => ResponseCode::ServFail,
                other => {
                    return Err(format!(
                        "{what}: trusted-rcode {other:?}: NOERROR or NXDOMAIN"
                    ));
                }
            };
            if got != want {
                return Err(format!(
                    "{what}: the trusted zone answers {}, the file says trusted-rcode = {:?}",
                    match got {
                        ResponseCode::NXDomain => "NXDOMAIN",
                        ResponseCode::ServFail => "SERVFAIL",
                        _ => "NOERROR",
                    },
                    e.trusted_rcode
                ));
            }
        }
        for ip in self.addresses() {
            if !stays_on_this_machine(ip) {
                return Err(format!(
                    "address {ip}: only 127.100.0.0/16 (public stand-ins), other loopback and \
                     special-use addresses the audit never contacts may appear"
                ));
            }
        }
        for i in &self.interception {
            if !INTERCEPTION_VERDICTS.contains(&i.verdict.as_str()) {
                return Err(format!(
                    "interception {}: unknown verdict {:?}",
                    i.label, i.verdict
                ));
            }
            match (i.answered_by.as_str(), &i.identity) {
                ("genuine", Some(_)) | ("plain" | "nobody", None) => {}
                ("genuine", None) => {
                    return Err(format!("interception {}: genuine needs identity", i.label));
                }
                (other, _) => {
                    return Err(format!("interception {}: answered-by {other:?}", i.label));
                }
            }
        }
        if self.benign == self.expects_hijack() {
            return Err(format!(
                "benign = {} but the expectations {} a hijacked verdict, interception or NXDOMAIN rewriting",
                self.benign,
                if self.benign { "include" } else { "include no" }
            ));
        }
        Ok(())
    }
}

impl Scenario {
    /// Every address the scenario mentions: zone records, scripted answers, sites, targets.
    fn addresses(&self) -> Vec<IpAddr> {
        let mut all: Vec<IpAddr> = self
            .zone()
            .all_records()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        for r in &self.plain.rules {
            all.extend(r.addresses.iter().chain(&r.forged));
        }
        all.extend(self.sites.iter().map(|s| s.address));
        all.extend(self.interception.iter().map(|i| i.address));
        all.extend(&self.audit.sinkhole_addresses);
        all
    }
}

/// Whether `ip` may appear in a scenario without any traffic leaving this machine: loopback
/// (127/8, ::1, IPv4-mapped 127/8), where the fixtures listen, or a special-use address that
/// the audit judges by its kind alone and never connects to (0/8, 10/8, 172.16/12,
/// 192.168/16, ::, fc00::/7, 2001:db8::/32). Real public addresses are never allowed.
fn stays_on_this_machine(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.octets()[0] == 0,
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                || v6.segments()[0] & 0xfe00 == 0xfc00
                || v6.segments()[..2] == [0x2001, 0x0db8]
        }
    }
}

impl RuleEntry {
    fn rule(&self) -> Rule {
        let action = match self.action.as_str() {
            "mirror" => Action::Mirror,
            "answer" => Action::Answer {
                addresses: self.addresses.clone(),
                cname: self.cname.as_deref().map(name),
            },
            "rewrite-nxdomain" => Action::RewriteNxdomain(self.addresses.clone()),
            "nxdomain" => Action::Rcode(ResponseCode::NXDomain),
            "servfail" => Action::Rcode(ResponseCode::ServFail),
            "refused" => Action::Rcode(ResponseCode::Refused),
            "drop" => Action::Drop,
            "servfail-once" => Action::FailFirst(ResponseCode::ServFail),
            "inject" => Action::Inject {
                forged: self.forged.clone(),
                after: Duration::from_millis(self.after_ms.expect("inject needs after-ms")),
            },
            other => panic!("rule for {}: unknown action {other:?}", self.name),
        };
        Rule {
            name: (self.name != "*").then(|| name(&self.name)),
            rtype: self.rtype.as_deref().map(parse_type),
            action,
        }
    }
}

impl SiteEntry {
    fn spec(&self) -> SiteSpec {
        let cert = match self.cert.as_str() {
            "valid" => CertKind::Valid,
            "wrong-name" => CertKind::WrongName,
            "untrusted" => CertKind::Untrusted,
            "closed" => CertKind::Closed,
            other => panic!("site {}: unknown cert {other:?}", self.address),
        };
        assert!(
            cert == CertKind::Closed || !self.names.is_empty(),
            "site {}: a certificate needs names",
            self.address
        );
        SiteSpec {
            ip: self.address,
            cert,
            names: self.names.clone(),
        }
    }
}

fn parse_type(t: &str) -> RecordType {
    RecordType::from_str(t).unwrap_or_else(|_| panic!("unknown record type {t:?}"))
}
