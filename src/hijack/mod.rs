//! Hijack detection.
//!
//! Differing answers are not proof of tampering: round-robin records, GeoDNS and CDNs make
//! honest resolvers disagree all the time. So every judgement here rests on evidence, and the
//! evidence is written down as reason codes next to the verdict:
//!
//! - [`addrs`]: what an address is (special-use, a known block page, a learned redirect);
//! - [`verify`]: whether an address really serves a name (a TLS handshake with the name as
//!   SNI, validated like a browser would);
//! - [`classify`]: one plaintext observation against the trusted ones, to a [`Finding`];
//! - [`inspect`]: the cheap checks the proxy runs on every upstream answer;
//! - [`log`]: the JSON-lines hijack log;
//! - [`recent`]: the allocation-free memory of names seen with public addresses;
//! - [`audit`]: `dnsward audit`, comparing the network's plaintext resolver with the trusted
//!   encrypted upstreams, with probes for NXDOMAIN rewriting, interception and injection.

pub mod addrs;
pub mod audit;
pub mod classify;
pub mod config;
pub mod inspect;
pub mod log;
pub mod recent;
pub mod verify;

use std::fmt;

use serde::Serialize;

/// How an answer compares with what trusted resolvers say, worst last (so `max` combines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The same answer.
    Consistent,
    /// Different, for a reason honest DNS has (round-robin, GeoDNS, CDN).
    BenignVariation,
    /// Nothing could be compared (no trusted answer, or the resolver fails on everything).
    Inconclusive,
    /// Different and unexplained, but without proof of tampering.
    Suspicious,
    /// Tampering, with evidence.
    Hijacked,
}

impl Verdict {
    /// Every verdict, best first (for summaries).
    pub const ALL: [Verdict; 5] = [
        Verdict::Consistent,
        Verdict::BenignVariation,
        Verdict::Suspicious,
        Verdict::Hijacked,
        Verdict::Inconclusive,
    ];

    /// The kebab-case name used in reports and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Consistent => "consistent",
            Verdict::BenignVariation => "benign-variation",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Suspicious => "suspicious",
            Verdict::Hijacked => "hijacked",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a verdict was reached. Each code names one piece of evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The plaintext answer equals one trusted answer.
    SameAddresses,
    /// The plaintext addresses are some of the trusted ones (round-robin, rotation).
    RoundRobinSubset,
    /// An address only the plaintext resolver gave presented a valid certificate for the name.
    CertificateValid,
    /// An address only the plaintext resolver gave is in the same network (ASN) as the
    /// trusted ones.
    SameAsn,
    /// The name is on the allowlist of names expected to resolve to private addresses.
    Allowlisted,
    /// A special-use address (private, loopback, link-local, documentation, 0.0.0.0/8,
    /// 127.0.53.53, ...) for a public name.
    BogonAnswer,
    /// A known sinkhole or block-page address.
    SinkholeIp,
    /// An address the NXDOMAIN probes learned as the resolver's redirect target, or data for a
    /// name that does not exist while the resolver is known to rewrite NXDOMAIN.
    NxdomainRewrite,
    /// The address presented a certificate that is wrong for the name or untrusted, while the
    /// trusted addresses validate.
    TlsMismatch,
    /// NXDOMAIN for a name the trusted resolvers answer.
    UnexpectedNxdomain,
    /// Data for a name the trusted resolvers say does not exist.
    UnexpectedAnswer,
    /// More than one different reply to a single query: someone raced a forged reply.
    InjectedReply,
    /// An address nobody trusted gave, and it could not be verified (no TLS handshake).
    UnverifiedIp,
    /// Many different names all answered with the same single address (captive portal,
    /// wildcard redirect).
    SameAddressForAll,
    /// A name that resolved to public addresses now resolves to special-use ones (DNS
    /// rebinding).
    Rebinding,
    /// The plaintext resolver answered SERVFAIL while control names worked.
    PlainServfail,
    /// The plaintext resolver answered REFUSED while control names worked.
    PlainRefused,
    /// The plaintext resolver did not answer while control names worked.
    PlainTimeout,
    /// The plaintext resolver also failed on control names: it is unreliable, not tampering.
    UnreliableResolver,
    /// No trusted upstream answered, so there was nothing to compare with.
    NoTrustedAnswer,
    /// Another trusted upstream disagreed (proxy cross-check).
    CrossCheckMismatch,
    /// No addresses where the trusted resolvers have some (NODATA, e.g. AAAA filtering).
    MissingAnswer,
}

impl Reason {
    /// Every reason code.
    pub const ALL: [Reason; 22] = [
        Reason::SameAddresses,
        Reason::RoundRobinSubset,
        Reason::CertificateValid,
        Reason::SameAsn,
        Reason::Allowlisted,
        Reason::BogonAnswer,
        Reason::SinkholeIp,
        Reason::NxdomainRewrite,
        Reason::TlsMismatch,
        Reason::UnexpectedNxdomain,
        Reason::UnexpectedAnswer,
        Reason::InjectedReply,
        Reason::UnverifiedIp,
        Reason::SameAddressForAll,
        Reason::Rebinding,
        Reason::PlainServfail,
        Reason::PlainRefused,
        Reason::PlainTimeout,
        Reason::UnreliableResolver,
        Reason::NoTrustedAnswer,
        Reason::CrossCheckMismatch,
        Reason::MissingAnswer,
    ];

    /// The kebab-case code used in reports and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SameAddresses => "same-addresses",
            Reason::RoundRobinSubset => "round-robin-subset",
            Reason::CertificateValid => "certificate-valid",
            Reason::SameAsn => "same-asn",
            Reason::Allowlisted => "allowlisted",
            Reason::BogonAnswer => "bogon-answer",
            Reason::SinkholeIp => "sinkhole-ip",
            Reason::NxdomainRewrite => "nxdomain-rewrite",
            Reason::TlsMismatch => "tls-mismatch",
            Reason::UnexpectedNxdomain => "unexpected-nxdomain",
            Reason::UnexpectedAnswer => "unexpected-answer",
            Reason::InjectedReply => "injected-reply",
            Reason::UnverifiedIp => "unverified-ip",
            Reason::SameAddressForAll => "same-address-for-all",
            Reason::Rebinding => "rebinding",
            Reason::PlainServfail => "plain-servfail",
            Reason::PlainRefused => "plain-refused",
            Reason::PlainTimeout => "plain-timeout",
            Reason::UnreliableResolver => "unreliable-resolver",
            Reason::NoTrustedAnswer => "no-trusted-answer",
            Reason::CrossCheckMismatch => "cross-check-mismatch",
            Reason::MissingAnswer => "missing-answer",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verdict with the evidence behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The overall judgement.
    pub verdict: Verdict,
    /// Evidence, in the order it was found, without duplicates.
    pub reasons: Vec<Reason>,
}

impl Finding {
    /// A finding with one reason.
    pub fn new(verdict: Verdict, reason: Reason) -> Finding {
        Finding {
            verdict,
            reasons: vec![reason],
        }
    }

    /// Adds evidence, raising the verdict to `verdict` if that is worse.
    pub fn add(&mut self, verdict: Verdict, reason: Reason) {
        self.verdict = self.verdict.max(verdict);
        if !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }

    /// Whether the finding is worth reporting (worse than a benign variation).
    pub fn is_alarming(&self) -> bool {
        self.verdict >= Verdict::Suspicious
    }
}
