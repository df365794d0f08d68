//! `dnsward audit`: the network's plaintext resolver side by side with the trusted
//! encrypted upstreams.
//!
//! 1. NXDOMAIN probes: invented names under real TLDs and under an invented TLD. If at least
//!    two of three come back with addresses while the trusted upstreams say NXDOMAIN, the
//!    resolver rewrites NXDOMAIN, and the addresses are learned as its redirect targets.
//! 2. Every name and type is asked of the plaintext resolver (holding the socket open to see
//!    injected replies) and of every trusted upstream, then classified
//!    ([`crate::hijack::classify`]), verifying unexplained addresses by TLS.
//! 3. Failures are retried between two control names that worked (control, test, control),
//!    so a flaky resolver is reported as unreliable, not as tampering.
//! 4. Many names answered with one and the same address is a captive portal or wildcard.
//! 5. Interception probes: identity queries sent in plaintext to public resolvers' addresses;
//!    an answer that is not theirs means someone on the path answers in their name.

pub mod observe;
pub mod probes;
pub mod report;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use thiserror::Error;

use super::addrs::{AddressBook, Allowlist};
use super::classify::{self, AddrCheck, AsnLookup, Context, Plain, Reply};
use super::verify::Verifier;
use super::{Finding, Reason, Verdict};
use crate::config::Settings;
use crate::dns::wire::{TYPE_A, TYPE_AAAA};
use crate::upstream::pin::format_pin;
use crate::upstream::{Upstream, UpstreamError};
use observe::{observe, plain_query, reply_of};
use probes::{InterceptionResult, NxdomainResult};

/// The built-in list of names.
const DEFAULT_NAMES: &str = include_str!("../../../data/audit-names.txt");

/// Why an audit could not run.
#[derive(Debug, Error)]
pub enum AuditError {
    /// A names file that cannot be read or has a bad line.
    #[error("names file {path}: {message}")]
    Names {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// No plaintext resolver given and none in /etc/resolv.conf.
    #[error("no plaintext resolver to audit: give --plain ADDR[:PORT]")]
    NoPlainResolver,
    /// TLS or upstream set-up.
    #[error(transparent)]
    Setup(#[from] crate::SetupError),
    /// The ASN database could not be opened.
    #[error("ASN database {path}: {message}")]
    AsnDb {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// No trusted upstream answered anything: nothing to compare with.
    #[error("no trusted upstream answered; check --upstream and --ca-file")]
    NoTrustedAnswer,
}

/// One name and the types to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameSpec {
    /// The name.
    pub name: String,
    /// A and/or AAAA.
    pub types: Vec<u16>,
}

/// Parses a names list: one name per line, optional comma-separated types (`A,AAAA`);
/// `#` comments and blank lines ignored.
pub fn parse_names(text: &str, default_types: &[u16]) -> Result<Vec<NameSpec>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let name = fields.next().unwrap_or_default();
        if crate::dns::wire::name_from_str(name).is_none() {
            return Err(format!("line {}: {name:?} is not a domain name", i + 1));
        }
        let types = match fields.next() {
            None => default_types.to_vec(),
            Some(list) => parse_types(list).map_err(|e| format!("line {}: {e}", i + 1))?,
        };
        out.push(NameSpec {
            name: name.trim_end_matches('.').to_string(),
            types,
        });
    }
    if out.is_empty() {
        return Err("no names in it".into());
    }
    Ok(out)
}

/// `A`, `AAAA` or `A,AAAA`.
pub fn parse_types(list: &str) -> Result<Vec<u16>, String> {
    list.split(',')
        .map(|t| match t.trim().to_ascii_uppercase().as_str() {
            "A" => Ok(TYPE_A),
            "AAAA" => Ok(TYPE_AAAA),
            other => Err(format!("type {other:?}: only A and AAAA are compared")),
        })
        .collect()
}

/// The built-in names.
pub fn default_names(types: &[u16]) -> Vec<NameSpec> {
    parse_names(DEFAULT_NAMES, types).expect("built-in list parses")
}

/// Reads a names file.
pub fn load_names(path: &Path, types: &[u16]) -> Result<Vec<NameSpec>, AuditError> {
    let bad = |message: String| AuditError::Names {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    parse_names(&text, types).map_err(bad)
}

/// The first usable nameserver in a resolv.conf text. A link-local IPv6 server keeps its
/// scope (`fe80::1%eth0`); one without a scope is unusable and skipped.
pub fn resolv_conf_nameserver(text: &str) -> Option<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| {
            let mut parts = rest.trim().splitn(2, '%');
            let ip: IpAddr = parts.next()?.parse().ok()?;
            match (ip, parts.next()) {
                (IpAddr::V6(v6), Some(scope)) => {
                    let index = scope.parse::<u32>().ok().or_else(|| {
                        std::fs::read_to_string(format!("/sys/class/net/{scope}/ifindex"))
                            .ok()?
                            .trim()
                            .parse()
                            .ok()
                    })?;
                    Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                        v6, 53, 0, index,
                    )))
                }
                (IpAddr::V6(v6), None) if v6.is_unicast_link_local() => None,
                (ip, _) => Some(SocketAddr::new(ip, 53)),
            }
        })
        .next()
}

fn type_name(t: u16) -> &'static str {
    if t == TYPE_AAAA { "AAAA" } else { "A" }
}

/// A response code as dig prints it.
pub fn rcode_name(rcode: u8) -> String {
    crate::dig::rcode_name(u16::from(rcode))
}

/// The whole report, as written with `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Format version.
    pub version: u32,
    /// The resolver audited.
    pub plain_resolver: String,
    /// The trusted upstreams.
    pub trusted: Vec<String>,
    /// How many results got each verdict.
    pub summary: BTreeMap<&'static str, usize>,
    /// One per name and type.
    pub results: Vec<NameResult>,
    /// The resolver-wide probes.
    pub probes: Probes,
}

impl Report {
    /// Whether anything was judged hijacked (a result, NXDOMAIN rewriting, or an
    /// interception probe).
    pub fn found_hijacking(&self) -> bool {
        self.probes.nxdomain.rewriting
            || self.results.iter().any(|r| r.verdict == Verdict::Hijacked)
            || self
                .probes
                .interception
                .iter()
                .any(|p| p.verdict == probes::Interception::Intercepted)
    }
}

/// Resolver-wide probes.
#[derive(Debug, Serialize)]
pub struct Probes {
    /// NXDOMAIN rewriting.
    pub nxdomain: NxdomainResult,
    /// Transparent interception.
    pub interception: Vec<InterceptionResult>,
}

/// One name and type.
#[derive(Debug, Clone, Serialize)]
pub struct NameResult {
    /// The name.
    pub name: String,
    /// A or AAAA.
    #[serde(rename = "type")]
    pub rtype: &'static str,
    /// The judgement.
    pub verdict: Verdict,
    /// The evidence.
    pub reasons: Vec<Reason>,
    /// What the plaintext resolver said.
    pub plain: PlainView,
    /// What each trusted upstream said.
    pub trusted: Vec<TrustedView>,
    /// Addresses only the plaintext resolver gave, and what was found about them.
    pub checks: Vec<AddrCheck>,
}

/// The plaintext side of a result.
#[derive(Debug, Clone, Serialize)]
pub struct PlainView {
    /// Response code of the first reply.
    pub rcode: Option<String>,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// How many different replies arrived for the query.
    pub replies: usize,
    /// Addresses of the later, different replies (injection evidence).
    pub other_replies: Vec<Vec<IpAddr>>,
    /// Why there is no reply.
    pub error: Option<String>,
}

/// One trusted upstream's side of a result.
#[derive(Debug, Clone, Serialize)]
pub struct TrustedView {
    /// The upstream URL.
    pub upstream: String,
    /// Response code.
    pub rcode: Option<String>,
    /// Addresses.
    pub addresses: Vec<IpAddr>,
    /// SHA-256 of the server certificate's public key (base64), as seen on the connection.
    pub tls_spki_sha256: Option<String>,
    /// Why there is no answer.
    pub error: Option<String>,
}

impl PlainView {
    fn of(plain: &Plain) -> PlainView {
        match plain {
            Plain::Timeout => PlainView {
                rcode: None,
                addresses: Vec::new(),
                replies: 0,
                other_replies: Vec::new(),
                error: Some("no reply".into()),
            },
            Plain::Replies(replies) => PlainView {
                rcode: replies.first().map(|r| rcode_name(r.rcode)),
                addresses: replies
                    .first()
                    .map(|r| r.addrs.iter().copied().collect())
                    .unwrap_or_default(),
                replies: replies.len(),
                other_replies: replies
                    .iter()
                    .skip(1)
                    .map(|r| r.addrs.iter().copied().collect())
                    .collect(),
                error: None,
            },
        }
    }
}

/// An ASN database in MaxMind format (GeoLite2-ASN or compatible).
pub struct AsnDb {
    /// The opened database.
    reader: maxminddb::Reader<Vec<u8>>,
}

impl AsnDb {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<AsnDb, AuditError> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|e| AuditError::AsnDb {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(AsnDb { reader })
    }
}

impl AsnLookup for AsnDb {
    fn asn(&self, addr: IpAddr) -> Option<u32> {
        let result = self.reader.lookup(addr).ok()?;
        let asn: maxminddb::geoip2::Asn = result.decode().ok()??;
        asn.autonomous_system_number
    }
}

/// Everything an audit run needs.
pub struct Audit {
    /// The resolver audited.
    plain: SocketAddr,
    /// What to check.
    names: Vec<NameSpec>,
    /// The `[audit]` settings.
    settings: crate::hijack::config::AuditSettings,
    /// The trusted upstreams, each asked separately (to see their natural variation).
    upstreams: Vec<Arc<Upstream>>,
    /// Deadline for one trusted exchange.
    trusted_timeout: Duration,
    /// Address kinds; learns redirect targets.
    book: AddressBook,
    /// Allowlisted names.
    allow: Allowlist,
    /// TLS verification of suspect addresses.
    verifier: Verifier,
    /// Optional ASN database.
    asn: Option<AsnDb>,
}

/// A trusted upstream's answer (or failure) to one question.
struct TrustedAnswer {
    /// Parsed reply, if any.
    reply: Option<Reply>,
    /// What went wrong otherwise.
    error: Option<String>,
}

impl Audit {
    /// Prepares an audit of `plain` over `names` against `settings`' upstreams.
    pub fn new(
        settings: &Settings,
        plain: SocketAddr,
        names: Vec<NameSpec>,
        asn: Option<AsnDb>,
    ) -> Result<Audit, AuditError> {
        let tls = crate::upstream::tls::TlsConfigs::new(&settings.ca_files)
            .map_err(crate::SetupError::from)?;
        let upstreams = crate::build_upstreams(settings)?
            .into_iter()
            .map(Arc::new)
            .collect();
        let audit = &settings.audit;
        Ok(Audit {
            plain,
            names,
            settings: audit.clone(),
            upstreams,
            trusted_timeout: settings.router.query_timeout,
            book: AddressBook::new(&audit.sinkholes, &audit.assume_public),
            allow: Allowlist::new(&audit.allow),
            verifier: Verifier::new(tls.dot.clone(), audit.verify_port, audit.verify_timeout),
            asn,
        })
    }

    /// Runs the audit; `progress(done, total)` is called as names complete.
    pub async fn run(
        &self,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Report, AuditError> {
        let nxdomain = probes::nxdomain(self).await;
        if nxdomain.rewriting {
            self.book
                .learn_redirects(nxdomain.redirect_addresses.iter().copied());
        }
        let questions: Vec<(String, u16)> = self
            .names
            .iter()
            .flat_map(|n| n.types.iter().map(|&t| (n.name.clone(), t)))
            .collect();
        let total = questions.len();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let mut results: Vec<(NameResult, Plain, Vec<Reply>)> = stream::iter(questions)
            .map(|(name, qtype)| {
                let done = &done;
                async move {
                    let r = self.check(&name, qtype, nxdomain.rewriting).await;
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    progress(n, total);
                    r
                }
            })
            .buffered(self.settings.concurrency)
            .collect()
            .await;
        if results
            .iter()
            .all(|(r, _, _)| r.trusted.iter().all(|t| t.error.is_some()))
        {
            return Err(AuditError::NoTrustedAnswer);
        }
        self.sandwich(&mut results, nxdomain.rewriting).await;
        same_address_for_all(&mut results);
        let interception = probes::interception(self).await;
        let results: Vec<NameResult> = results.into_iter().map(|(r, _, _)| r).collect();
        let mut summary: BTreeMap<&'static str, usize> =
            Verdict::ALL.iter().map(|v| (v.as_str(), 0)).collect();
        for r in &results {
            *summary.entry(r.verdict.as_str()).or_default() += 1;
        }
        Ok(Report {
            version: 1,
            plain_resolver: self.plain.to_string(),
            trusted: self
                .upstreams
                .iter()
                .map(|u| u.spec().url.clone())
                .collect(),
            summary,
            results,
            probes: Probes {
                nxdomain,
                interception,
            },
        })
    }

    /// Asks the plaintext resolver `name`/`qtype` once, holding for injected replies.
    async fn ask_plain(&self, name: &str, qtype: u16) -> Plain {
        let Some(query) = plain_query(name, qtype, 1) else {
            return Plain::Timeout;
        };
        observe(
            self.plain,
            &query,
            self.settings.timeout,
            self.settings.hold,
        )
        .await
        .0
    }

    /// Asks every trusted upstream, concurrently.
    async fn ask_trusted(&self, name: &str, qtype: u16) -> Vec<TrustedAnswer> {
        let Some(query) = crate::dns::new_query(name, qtype, false) else {
            return Vec::new();
        };
        let asks = self.upstreams.iter().map(|u| {
            let query = query.clone();
            async move {
                match tokio::time::timeout(self.trusted_timeout, u.exchange(&query)).await {
                    Ok(Ok(answer)) => TrustedAnswer {
                        reply: reply_of(&answer),
                        error: None,
                    },
                    Ok(Err(UpstreamError::ServFail(answer))) => TrustedAnswer {
                        reply: reply_of(&answer),
                        error: None,
                    },
                    Ok(Err(UpstreamError::Refused)) => TrustedAnswer {
                        reply: Some(Reply {
                            rcode: classify::REFUSED,
                            addrs: BTreeSet::new(),
                        }),
                        error: None,
                    },
                    Ok(Err(e)) => TrustedAnswer {
                        reply: None,
                        error: Some(e.to_string()),
                    },
                    Err(_) => TrustedAnswer {
                        reply: None,
                        error: Some("timed out".into()),
                    },
                }
            }
        });
        futures_util::future::join_all(asks).await
    }

    /// The trusted answers a classification compares with: NOERROR and NXDOMAIN only (a
    /// trusted SERVFAIL says nothing about the name).
    fn usable(answers: &[TrustedAnswer]) -> Vec<Reply> {
        answers
            .iter()
            .filter_map(|a| a.reply.clone())
            .filter(|r| r.rcode == classify::NOERROR || r.rcode == classify::NXDOMAIN)
            .collect()
    }

    fn context(&self, rewriting: bool) -> Context<'_> {
        Context {
            book: &self.book,
            allow: &self.allow,
            verifier: Some(&self.verifier),
            asn: self.asn.as_ref().map(|a| a as &dyn AsnLookup),
            nxdomain_rewriting: rewriting,
        }
    }

    /// Checks one name and type.
    async fn check(
        &self,
        name: &str,
        qtype: u16,
        rewriting: bool,
    ) -> (NameResult, Plain, Vec<Reply>) {
        let (plain, trusted) =
            tokio::join!(self.ask_plain(name, qtype), self.ask_trusted(name, qtype));
        let usable = Self::usable(&trusted);
        let (finding, checks) =
            classify::classify(name, &plain, &usable, &self.context(rewriting)).await;
        let trusted_views = self
            .upstreams
            .iter()
            .zip(&trusted)
            .map(|(u, a)| TrustedView {
                upstream: u.spec().url.clone(),
                rcode: a.reply.as_ref().map(|r| rcode_name(r.rcode)),
                addresses: a
                    .reply
                    .as_ref()
                    .map(|r| r.addrs.iter().copied().collect())
                    .unwrap_or_default(),
                tls_spki_sha256: u.peer().map(|(_, spki)| format_pin(&spki)),
                error: a.error.clone(),
            })
            .collect();
        let result = NameResult {
            name: name.to_string(),
            rtype: type_name(qtype),
            verdict: finding.verdict,
            reasons: finding.reasons,
            plain: PlainView::of(&plain),
            trusted: trusted_views,
            checks,
        };
        (result, plain, usable)
    }

    /// Control–test–control for results where the plaintext resolver failed: if the controls
    /// fail too, or no name worked to serve as a control, the resolver is unreliable
    /// (inconclusive); if the retest succeeds, the
    /// failure was transient and the retest is judged instead.
    async fn sandwich(&self, results: &mut [(NameResult, Plain, Vec<Reply>)], rewriting: bool) {
        const FAILURES: [Reason; 3] = [
            Reason::PlainTimeout,
            Reason::PlainServfail,
            Reason::PlainRefused,
        ];
        let controls: Vec<(String, u16)> = results
            .iter()
            .filter(|(r, _, _)| r.verdict == Verdict::Consistent && r.plain.rcode.is_some())
            .filter(|(r, _, _)| r.plain.rcode.as_deref() == Some("NOERROR"))
            .map(|(r, _, _)| {
                (
                    r.name.clone(),
                    if r.rtype == "AAAA" { TYPE_AAAA } else { TYPE_A },
                )
            })
            .take(2)
            .collect();
        let works = |p: &Plain| matches!(p, Plain::Replies(r) if r.first().is_some_and(|r| r.rcode == classify::NOERROR || r.rcode == classify::NXDOMAIN));
        for (result, _, trusted) in results.iter_mut() {
            // Only failures are retried; evidence of tampering found alongside a failure
            // (an injected reply, say) is never retried away.
            if !result.reasons.iter().any(|r| FAILURES.contains(r))
                || result.verdict == Verdict::Hijacked
            {
                continue;
            }
            // Without a single name that worked there is nothing to confirm the failure
            // against: the resolver fails across the board, which is unreliability, not
            // evidence about this name.
            let Some(first) = controls.first() else {
                result.verdict = Verdict::Inconclusive;
                result.reasons.push(Reason::UnreliableResolver);
                continue;
            };
            let last = controls.last().unwrap_or(first);
            let qtype = if result.rtype == "AAAA" {
                TYPE_AAAA
            } else {
                TYPE_A
            };
            let before = self.ask_plain(&first.0, first.1).await;
            let retest = self.ask_plain(&result.name, qtype).await;
            let after = self.ask_plain(&last.0, last.1).await;
            if !works(&before) || !works(&after) {
                result.verdict = Verdict::Inconclusive;
                result.reasons.push(Reason::UnreliableResolver);
                continue;
            }
            let (finding, checks): (Finding, _) =
                classify::classify(&result.name, &retest, trusted, &self.context(rewriting)).await;
            if finding.verdict <= Verdict::BenignVariation {
                result.verdict = finding.verdict;
                result.reasons = finding.reasons;
                result.checks = checks;
                result.plain = PlainView::of(&retest);
            }
        }
    }

    /// The resolver audited.
    pub fn plain(&self) -> SocketAddr {
        self.plain
    }
}

/// At least this many different names answered with one identical address nobody trusted
/// gave them make a captive portal or wildcard redirect.
const SAME_ADDRESS_MIN_NAMES: usize = 3;

/// Marks results where many different names got the same single address that the trusted
/// upstreams never gave for them. Names that honestly share one address (one CDN edge for
/// several names) have the same trusted answers too, so a group counts only if its names'
/// trusted answers differ from each other. Results already explained (allowlisted, a valid
/// certificate, the same network) are left out: only unexplained answers are upgraded.
fn same_address_for_all(results: &mut [(NameResult, Plain, Vec<Reply>)]) {
    const EXPLAINED: [Reason; 3] = [
        Reason::Allowlisted,
        Reason::CertificateValid,
        Reason::SameAsn,
    ];
    let single = |(r, _, trusted): &(NameResult, Plain, Vec<Reply>)| -> Option<IpAddr> {
        let [addr] = r.plain.addresses[..] else {
            return None;
        };
        if r.reasons.iter().any(|x| EXPLAINED.contains(x)) {
            return None;
        }
        let trusted_has = trusted.iter().any(|t| t.addrs.contains(&addr));
        (!trusted_has).then_some(addr)
    };
    // Per plain address: the names, and their trusted address sets.
    let mut groups: HashMap<IpAddr, (BTreeSet<String>, BTreeSet<BTreeSet<IpAddr>>)> =
        HashMap::new();
    for entry in results.iter() {
        let Some(addr) = single(entry) else {
            continue;
        };
        let (names, trusted_sets) = groups.entry(addr).or_default();
        names.insert(entry.0.name.to_ascii_lowercase());
        trusted_sets.insert(
            entry
                .2
                .iter()
                .flat_map(|t| t.addrs.iter().copied())
                .collect(),
        );
    }
    for entry in results.iter_mut() {
        let Some(addr) = single(entry) else {
            continue;
        };
        let (names, trusted_sets) = &groups[&addr];
        if names.len() >= SAME_ADDRESS_MIN_NAMES && trusted_sets.len() >= 2 {
            let result = &mut entry.0;
            result.verdict = Verdict::Hijacked;
            if !result.reasons.contains(&Reason::SameAddressForAll) {
                result.reasons.push(Reason::SameAddressForAll);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lists_parse_with_types_and_comments() {
        let names = parse_names(
            "# c\nexample.com\n\nfoo.test. AAAA\nbar.test A,AAAA # x\n",
            &[TYPE_A],
        )
        .unwrap();
        assert_eq!(names.len(), 3);
        assert_eq!(names[0].types, [TYPE_A]);
        assert_eq!(names[1].name, "foo.test");
        assert_eq!(names[1].types, [TYPE_AAAA]);
        assert_eq!(names[2].types, [TYPE_A, TYPE_AAAA]);
        assert!(parse_names("bad..name\n", &[TYPE_A]).is_err());
        assert!(parse_names("ok.test MX\n", &[TYPE_A]).is_err());
        assert!(parse_names("# nothing\n", &[TYPE_A]).is_err());
        assert!(default_names(&[TYPE_A]).len() > 20);
    }

    fn result(
        name: &str,
        plain: &str,
        trusted: &str,
        reasons: &[Reason],
    ) -> (NameResult, Plain, Vec<Reply>) {
        let ip: IpAddr = plain.parse().unwrap();
        let reply = Reply {
            rcode: 0,
            addrs: [ip].into(),
        };
        let t = Reply {
            rcode: 0,
            addrs: [trusted.parse().unwrap()].into(),
        };
        let r = NameResult {
            name: name.into(),
            rtype: "A",
            verdict: Verdict::Suspicious,
            reasons: reasons.to_vec(),
            plain: PlainView::of(&Plain::Replies(vec![reply.clone()])),
            trusted: Vec::new(),
            checks: Vec::new(),
        };
        (r, Plain::Replies(vec![reply]), vec![t])
    }

    #[test]
    fn same_address_for_all_needs_differing_trusted_answers_and_ignores_explained_results() {
        let portal = "1.2.3.4";
        let mut results = vec![
            result("a.test", portal, "5.5.5.1", &[Reason::UnverifiedIp]),
            result("b.test", portal, "5.5.5.2", &[Reason::UnverifiedIp]),
            result("c.test", portal, "5.5.5.3", &[Reason::TlsMismatch]),
            result("d.test", portal, "5.5.5.4", &[Reason::CertificateValid]),
            result("e.corp", portal, "5.5.5.5", &[Reason::Allowlisted]),
        ];
        same_address_for_all(&mut results);
        let got: Vec<Verdict> = results.iter().map(|r| r.0.verdict).collect();
        use Verdict::*;
        assert_eq!(got, [Hijacked, Hijacked, Hijacked, Suspicious, Suspicious]);
        // Two unexplained names are not enough.
        let mut two = vec![
            result("a.test", portal, "5.5.5.1", &[Reason::UnverifiedIp]),
            result("b.test", portal, "5.5.5.2", &[Reason::UnverifiedIp]),
            result("d.test", portal, "5.5.5.4", &[Reason::CertificateValid]),
        ];
        same_address_for_all(&mut two);
        assert!(two.iter().all(|r| r.0.verdict == Suspicious));
        // Names that share one trusted address too (one CDN edge) are not a portal.
        let mut edge = vec![
            result("a.test", portal, "5.5.5.1", &[Reason::UnverifiedIp]),
            result("b.test", portal, "5.5.5.1", &[Reason::UnverifiedIp]),
            result("c.test", portal, "5.5.5.1", &[Reason::UnverifiedIp]),
        ];
        same_address_for_all(&mut edge);
        assert!(edge.iter().all(|r| r.0.verdict == Suspicious));
    }

    #[test]
    fn resolv_conf_first_nameserver() {
        let text = "search lan\n# nameserver 1.2.3.4\nnameserver fe80::1%7\nnameserver 10.0.0.1\n";
        assert_eq!(
            resolv_conf_nameserver(text),
            Some("[fe80::1%7]:53".parse().unwrap())
        );
        // A link-local address without its interface cannot be used.
        let text = "nameserver fe80::1\nnameserver 10.0.0.1\n";
        assert_eq!(
            resolv_conf_nameserver(text),
            Some("10.0.0.1:53".parse().unwrap())
        );
        assert_eq!(resolv_conf_nameserver("options edns0\n"), None);
    }
}
