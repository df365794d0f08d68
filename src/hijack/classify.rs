//! One plaintext observation against the trusted ones.
//!
//! The rules, worst evidence wins:
//! - the same addresses as a trusted answer: consistent; some of the trusted addresses:
//!   benign variation (round-robin);
//! - an address nobody trusted gave is judged on evidence, never on being different alone:
//!   special-use, a known sinkhole or a learned NXDOMAIN redirect is hijacking; a valid
//!   certificate for the name (or the same network as the trusted answers) is benign; a
//!   wrong or untrusted certificate while a trusted address validates is hijacking; no
//!   handshake at all is only suspicious;
//! - rcode disagreements are suspicious (an honest resolver may be out of date or broken),
//!   except data for names that do not exist from a resolver known to rewrite NXDOMAIN;
//! - several different replies to one query is injection.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::addrs::{AddressBook, Allowlist, Kind};
use super::verify::{TlsCheck, Verifier};
use super::{Finding, Reason, Verdict};
use crate::dns::wire::{self, Header, Parsed, Section};

/// DNS response codes the classifier distinguishes.
pub const NOERROR: u8 = 0;
/// SERVFAIL.
pub const SERVFAIL: u8 = 2;
/// NXDOMAIN.
pub const NXDOMAIN: u8 = 3;
/// REFUSED.
pub const REFUSED: u8 = 5;

/// The part of a reply that is compared: its rcode and the addresses in its answer section.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    /// Response code (the 4-bit header code).
    pub rcode: u8,
    /// A and AAAA addresses in the answer section (after any CNAMEs).
    pub addrs: BTreeSet<IpAddr>,
}

/// The rcode and the addresses in the answer section of a reply.
pub fn reply_of(answer: &[u8]) -> Option<Reply> {
    reply_from(answer, &wire::parse(answer).ok()?)
}

/// As [`reply_of`], for a reply already parsed.
pub fn reply_from(answer: &[u8], parsed: &Parsed) -> Option<Reply> {
    let header = Header::of(answer)?;
    Some(Reply {
        rcode: header.rcode(),
        addrs: answer_addrs(answer, parsed).collect(),
    })
}

/// The A and AAAA addresses in the answer section of a parsed reply, in order, without
/// collecting them.
pub fn answer_addrs<'a>(answer: &'a [u8], parsed: &'a Parsed) -> impl Iterator<Item = IpAddr> + 'a {
    parsed.section(Section::Answer).filter_map(|r| {
        let rdata = answer.get(r.rdata.clone())?;
        match (r.rtype, rdata.len()) {
            (wire::TYPE_A, 4) => Some(IpAddr::V4(Ipv4Addr::new(
                rdata[0], rdata[1], rdata[2], rdata[3],
            ))),
            (wire::TYPE_AAAA, 16) => {
                let octets: [u8; 16] = rdata.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(octets)))
            }
            _ => None,
        }
    })
}

/// What the plaintext resolver did with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plain {
    /// Every distinct reply seen for the query, first first.
    Replies(Vec<Reply>),
    /// No reply within the time limit.
    Timeout,
}

/// Looks up an address's network (autonomous system), when the user supplied a database.
pub trait AsnLookup: Send + Sync {
    /// The AS number of `addr`, if known.
    fn asn(&self, addr: IpAddr) -> Option<u32>;
}

/// What the classifier knows beyond the two answers.
pub struct Context<'a> {
    /// Special-use ranges, sinkholes, learned redirects.
    pub book: &'a AddressBook,
    /// Names expected to have special-use addresses.
    pub allow: &'a Allowlist,
    /// TLS verification of addresses only the plaintext resolver gave.
    pub verifier: Option<&'a Verifier>,
    /// ASN database, if any.
    pub asn: Option<&'a dyn AsnLookup>,
    /// Whether the NXDOMAIN probes found the plaintext resolver rewriting NXDOMAIN.
    pub nxdomain_rewriting: bool,
}

/// The evidence gathered about one address only the plaintext resolver gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddrCheck {
    /// The address.
    pub address: IpAddr,
    /// What kind of address it is.
    pub kind: &'static str,
    /// The verification handshake, if one was made.
    pub tls: Option<&'static str>,
    /// Its AS number, if an ASN database was given and knows it.
    pub asn: Option<u32>,
}

/// Compares `plain` with the trusted `trusted` replies for `name` (successful ones only).
pub async fn classify(
    name: &str,
    plain: &Plain,
    trusted: &[Reply],
    ctx: &Context<'_>,
) -> (Finding, Vec<AddrCheck>) {
    let mut finding = Finding {
        verdict: Verdict::Consistent,
        reasons: Vec::new(),
    };
    let mut checks = Vec::new();
    if trusted.is_empty() {
        finding.add(Verdict::Inconclusive, Reason::NoTrustedAnswer);
        return (finding, checks);
    }
    let first = match plain {
        Plain::Timeout => {
            finding.add(Verdict::Suspicious, Reason::PlainTimeout);
            return (finding, checks);
        }
        Plain::Replies(replies) => {
            let Some(first) = replies.first() else {
                finding.add(Verdict::Suspicious, Reason::PlainTimeout);
                return (finding, checks);
            };
            // A resolver sends one reply per query; a second, different one was raced in
            // by somebody on the path (RFC 5452 §9.1 describes why stubs take the first).
            if replies.iter().skip(1).any(|r| r != first) {
                finding.add(Verdict::Hijacked, Reason::InjectedReply);
            }
            first
        }
    };
    let answered: Vec<&Reply> = trusted.iter().filter(|r| r.rcode == NOERROR).collect();
    let trusted_nx = trusted.iter().all(|r| r.rcode == NXDOMAIN);
    match first.rcode {
        SERVFAIL => finding.add(Verdict::Suspicious, Reason::PlainServfail),
        REFUSED => finding.add(Verdict::Suspicious, Reason::PlainRefused),
        NXDOMAIN if trusted_nx => finding.add(Verdict::Consistent, Reason::SameAddresses),
        NXDOMAIN => finding.add(Verdict::Suspicious, Reason::UnexpectedNxdomain),
        NOERROR if trusted_nx => {
            if ctx.allow.covers(name) && !first.addrs.is_empty() {
                // An internal name the public DNS does not know: expected by the user.
                finding.add(Verdict::BenignVariation, Reason::Allowlisted);
            } else if first.addrs.is_empty() {
                // NODATA against NXDOMAIN: no data either way.
                finding.add(Verdict::Consistent, Reason::SameAddresses);
            } else {
                for (i, &addr) in first.addrs.iter().enumerate() {
                    let (verdict, reason, check) =
                        judge_unknown(addr, name, ctx, &[], i < MAX_VERIFIED_PER_ANSWER).await;
                    checks.push(check);
                    finding.add(verdict, reason);
                }
                if finding.verdict < Verdict::Hijacked {
                    if ctx.nxdomain_rewriting {
                        finding.add(Verdict::Hijacked, Reason::NxdomainRewrite);
                    } else {
                        finding.add(Verdict::Suspicious, Reason::UnexpectedAnswer);
                    }
                }
            }
        }
        NOERROR => compare_addresses(name, first, &answered, ctx, &mut finding, &mut checks).await,
        _ => finding.add(Verdict::Suspicious, Reason::PlainServfail),
    }
    if finding.reasons.is_empty() {
        finding.add(Verdict::Consistent, Reason::SameAddresses);
    }
    (finding, checks)
}

/// Both sides answered NOERROR: compare the address sets.
async fn compare_addresses(
    name: &str,
    plain: &Reply,
    answered: &[&Reply],
    ctx: &Context<'_>,
    finding: &mut Finding,
    checks: &mut Vec<AddrCheck>,
) {
    let union: BTreeSet<IpAddr> = answered
        .iter()
        .flat_map(|r| r.addrs.iter().copied())
        .collect();
    if answered.iter().any(|r| r.addrs == plain.addrs) {
        finding.add(Verdict::Consistent, Reason::SameAddresses);
        return;
    }
    if plain.addrs.is_empty() {
        // NODATA where the trusted resolvers have addresses (e.g. AAAA filtering).
        finding.add(Verdict::Suspicious, Reason::MissingAnswer);
        return;
    }
    if plain.addrs.is_subset(&union) {
        finding.add(Verdict::BenignVariation, Reason::RoundRobinSubset);
        return;
    }
    let trusted: Vec<IpAddr> = union.iter().copied().collect();
    for (i, &addr) in plain.addrs.difference(&union).enumerate() {
        let (verdict, reason, check) =
            judge_unknown(addr, name, ctx, &trusted, i < MAX_VERIFIED_PER_ANSWER).await;
        checks.push(check);
        finding.add(verdict, reason);
    }
}

/// At most this many addresses of one answer are verified by TLS: the answer comes from the
/// resolver under suspicion, which must not be able to make us connect to thousands of
/// addresses of its choosing. The rest count as unverified.
const MAX_VERIFIED_PER_ANSWER: usize = 4;

/// Judges one address only the plaintext resolver gave for `name`; `trusted` are the
/// addresses the trusted resolvers gave (empty when they said the name does not exist).
/// `may_verify` allows a TLS handshake to it.
async fn judge_unknown(
    addr: IpAddr,
    name: &str,
    ctx: &Context<'_>,
    trusted: &[IpAddr],
    may_verify: bool,
) -> (Verdict, Reason, AddrCheck) {
    let mut check = AddrCheck {
        address: addr,
        kind: "public",
        tls: None,
        asn: None,
    };
    let kind = ctx.book.kind(addr);
    if ctx.allow.covers(name) {
        return (Verdict::BenignVariation, Reason::Allowlisted, check);
    }
    match kind {
        Kind::Sinkhole => {
            check.kind = "sinkhole";
            return (Verdict::Hijacked, Reason::SinkholeIp, check);
        }
        Kind::LearnedRedirect => {
            check.kind = "nxdomain-redirect";
            return (Verdict::Hijacked, Reason::NxdomainRewrite, check);
        }
        Kind::SpecialUse(_) => {
            check.kind = "special-use";
            // When the trusted answers are special-use too, the name is private by design
            // (split horizon); a different private address is odd but not proof.
            let verdict = if trusted.iter().any(|&t| ctx.book.is_special(t)) {
                Verdict::Suspicious
            } else {
                Verdict::Hijacked
            };
            return (verdict, Reason::BogonAnswer, check);
        }
        Kind::Public => {}
    }
    if let Some(asn) = ctx.asn {
        check.asn = asn.asn(addr);
        if let Some(plain_asn) = check.asn
            && trusted.iter().any(|&t| asn.asn(t) == Some(plain_asn))
        {
            return (Verdict::BenignVariation, Reason::SameAsn, check);
        }
    }
    let Some(verifier) = ctx.verifier.filter(|_| may_verify) else {
        return (Verdict::Suspicious, Reason::UnverifiedIp, check);
    };
    let tls = verifier.check(addr, name).await;
    check.tls = Some(tls.as_str());
    match tls {
        TlsCheck::Valid => (Verdict::BenignVariation, Reason::CertificateValid, check),
        TlsCheck::NoHandshake => (Verdict::Suspicious, Reason::UnverifiedIp, check),
        _ => {
            // Wrong certificate: proof only if the name's real servers do validate.
            let mut real_validates = false;
            for &t in trusted.iter().filter(|&&t| !ctx.book.is_special(t)).take(2) {
                if verifier.check(t, name).await == TlsCheck::Valid {
                    real_validates = true;
                    break;
                }
            }
            if real_validates {
                (Verdict::Hijacked, Reason::TlsMismatch, check)
            } else {
                (Verdict::Suspicious, Reason::TlsMismatch, check)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(rcode: u8, addrs: &[&str]) -> Reply {
        Reply {
            rcode,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    async fn judge(plain: Plain, trusted: &[Reply], rewriting: bool) -> Finding {
        let book = AddressBook::new(&["93.184.9.9".parse().unwrap()], &[]);
        let allow = Allowlist::new(&["plex.direct".into()]);
        let ctx = Context {
            book: &book,
            allow: &allow,
            verifier: None,
            asn: None,
            nxdomain_rewriting: rewriting,
        };
        classify("www.example.com", &plain, trusted, &ctx).await.0
    }

    fn replies(r: &[Reply]) -> Plain {
        Plain::Replies(r.to_vec())
    }

    #[tokio::test]
    async fn same_and_subset_and_superset_of_trusted_sets() {
        let t = [reply(0, &["1.1.1.1", "1.1.1.2"]), reply(0, &["1.1.1.3"])];
        let f = judge(replies(&[reply(0, &["1.1.1.2", "1.1.1.1"])]), &t, false).await;
        assert_eq!(
            (f.verdict, f.reasons),
            (Verdict::Consistent, vec![Reason::SameAddresses])
        );
        let f = judge(replies(&[reply(0, &["1.1.1.3", "1.1.1.1"])]), &t, false).await;
        assert_eq!(
            (f.verdict, f.reasons),
            (Verdict::BenignVariation, vec![Reason::RoundRobinSubset])
        );
        // Unverifiable extra address: suspicious, never hijacked on its own.
        let f = judge(replies(&[reply(0, &["1.1.1.1", "5.5.5.5"])]), &t, false).await;
        assert_eq!(
            (f.verdict, f.reasons),
            (Verdict::Suspicious, vec![Reason::UnverifiedIp])
        );
    }

    #[tokio::test]
    async fn bogons_and_sinkholes_are_hijacking_unless_allowlisted() {
        let t = [reply(0, &["1.1.1.1"])];
        for (addr, reason) in [
            ("127.0.0.1", Reason::BogonAnswer),
            ("0.0.0.0", Reason::BogonAnswer),
            ("192.168.1.20", Reason::BogonAnswer),
            ("146.112.61.104", Reason::SinkholeIp),
            ("93.184.9.9", Reason::SinkholeIp),
        ] {
            let f = judge(replies(&[reply(0, &[addr])]), &t, false).await;
            assert_eq!(
                (f.verdict, f.reasons),
                (Verdict::Hijacked, vec![reason]),
                "{addr}"
            );
        }
    }

    #[tokio::test]
    async fn rcode_disagreements() {
        let t = [reply(0, &["1.1.1.1"])];
        let nx = [reply(3, &[])];
        let f = judge(replies(&[reply(3, &[])]), &t, false).await;
        assert_eq!(f.reasons, [Reason::UnexpectedNxdomain]);
        assert_eq!(f.verdict, Verdict::Suspicious);
        let f = judge(replies(&[reply(2, &[])]), &t, false).await;
        assert_eq!(
            (f.verdict, f.reasons),
            (Verdict::Suspicious, vec![Reason::PlainServfail])
        );
        let f = judge(replies(&[reply(0, &["5.5.5.5"])]), &nx, false).await;
        assert_eq!(f.verdict, Verdict::Suspicious);
        assert!(f.reasons.contains(&Reason::UnexpectedAnswer));
        let f = judge(replies(&[reply(0, &["5.5.5.5"])]), &nx, true).await;
        assert_eq!(f.verdict, Verdict::Hijacked);
        assert!(f.reasons.contains(&Reason::NxdomainRewrite));
        let f = judge(replies(&[reply(3, &[])]), &nx, false).await;
        assert_eq!(f.verdict, Verdict::Consistent);
        let f = judge(Plain::Timeout, &t, false).await;
        assert_eq!(f.reasons, [Reason::PlainTimeout]);
        let f = judge(replies(&[reply(0, &["1.1.1.1"])]), &[], false).await;
        assert_eq!(
            (f.verdict, f.reasons),
            (Verdict::Inconclusive, vec![Reason::NoTrustedAnswer])
        );
    }

    #[tokio::test]
    async fn allowlisted_names_may_have_private_answers_even_where_public_dns_has_none() {
        let nx = [reply(3, &[])];
        let t = [reply(0, &["1.1.1.1"])];
        let book = AddressBook::new(&[], &[]);
        let allow = Allowlist::new(&["corp.example".into()]);
        let ctx = Context {
            book: &book,
            allow: &allow,
            verifier: None,
            asn: None,
            nxdomain_rewriting: true,
        };
        for trusted in [&nx[..], &t[..]] {
            let (f, _) = classify(
                "git.corp.example",
                &replies(&[reply(0, &["10.1.2.3"])]),
                trusted,
                &ctx,
            )
            .await;
            assert_eq!(
                (f.verdict, f.reasons),
                (Verdict::BenignVariation, vec![Reason::Allowlisted])
            );
        }
    }

    #[tokio::test]
    async fn a_second_different_reply_is_injection() {
        let t = [reply(0, &["1.1.1.1"])];
        let forged_first = replies(&[reply(0, &["5.5.5.5"]), reply(0, &["1.1.1.1"])]);
        let f = judge(forged_first, &t, false).await;
        assert_eq!(f.verdict, Verdict::Hijacked);
        assert_eq!(f.reasons[0], Reason::InjectedReply);
        // The same reply twice (a retransmission) is not injection.
        let dup = replies(&[reply(0, &["1.1.1.1"]), reply(0, &["1.1.1.1"])]);
        assert_eq!(judge(dup, &t, false).await.verdict, Verdict::Consistent);
    }
}
