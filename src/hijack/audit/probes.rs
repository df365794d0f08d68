//! Resolver-wide probes: NXDOMAIN rewriting and transparent interception.

use std::collections::BTreeSet;
use std::net::IpAddr;

use rand::Rng;
use serde::Serialize;

use super::observe::{observe, plain_query, txt_of};
use super::{Audit, rcode_name};
use crate::dns::wire::TYPE_A;
use crate::hijack::classify::{NOERROR, NXDOMAIN, Plain};

/// Probes that must agree before NXDOMAIN rewriting counts.
const NXDOMAIN_AGREEMENT: usize = 2;

/// Tries per interception probe, and how many must agree.
const INTERCEPTION_TRIES: usize = 3;
const INTERCEPTION_AGREEMENT: usize = 2;

/// What the NXDOMAIN probes found.
#[derive(Debug, Clone, Serialize)]
pub struct NxdomainResult {
    /// At least [`NXDOMAIN_AGREEMENT`] probes were answered with addresses while the trusted
    /// upstreams said the name does not exist.
    pub rewriting: bool,
    /// How many probes showed rewriting.
    pub agree: usize,
    /// How many probes were sent.
    pub of: usize,
    /// The addresses non-existent names were redirected to.
    pub redirect_addresses: Vec<IpAddr>,
    /// Each probe.
    pub probes: Vec<NxdomainProbe>,
}

/// One invented name.
#[derive(Debug, Clone, Serialize)]
pub struct NxdomainProbe {
    /// The name.
    pub name: String,
    /// What the plaintext resolver said.
    pub plain_rcode: Option<String>,
    /// Its addresses.
    pub plain_addresses: Vec<IpAddr>,
    /// What the trusted upstreams said (the first that answered).
    pub trusted_rcode: Option<String>,
}

fn random_label(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

/// Invents names that cannot exist (random labels under the configured real TLDs, and under
/// an invented TLD) and sees what the plaintext resolver makes of them.
pub async fn nxdomain(audit: &Audit) -> NxdomainResult {
    let mut names: Vec<String> = audit
        .settings
        .nxdomain_tlds
        .iter()
        .map(|tld| format!("dnsward-{}.{tld}", random_label(16)))
        .collect();
    names.push(format!("dnsward-{}.{}", random_label(16), random_label(12)));
    let probes = futures_util::future::join_all(names.iter().map(|name| async move {
        let (plain, trusted) = tokio::join!(
            audit.ask_plain(name, TYPE_A),
            audit.ask_trusted(name, TYPE_A)
        );
        let trusted_rcode = trusted
            .iter()
            .find_map(|t| t.reply.as_ref())
            .map(|r| r.rcode);
        let first = match &plain {
            Plain::Replies(r) => r.first().cloned(),
            Plain::Timeout => None,
        };
        NxdomainProbe {
            name: name.clone(),
            plain_rcode: first.as_ref().map(|r| rcode_name(r.rcode)),
            plain_addresses: first
                .map(|r| r.addrs.into_iter().collect())
                .unwrap_or_default(),
            trusted_rcode: trusted_rcode.map(rcode_name),
        }
    }))
    .await;
    let rewritten: Vec<&NxdomainProbe> = probes
        .iter()
        .filter(|p| {
            p.plain_rcode.as_deref() == Some(&rcode_name(NOERROR))
                && !p.plain_addresses.is_empty()
                && p.trusted_rcode.as_deref() == Some(&rcode_name(NXDOMAIN))
        })
        .collect();
    let rewriting = rewritten.len() >= NXDOMAIN_AGREEMENT;
    let redirect_addresses: BTreeSet<IpAddr> = if rewriting {
        rewritten
            .iter()
            .flat_map(|p| p.plain_addresses.iter().copied())
            .collect()
    } else {
        BTreeSet::new()
    };
    NxdomainResult {
        rewriting,
        agree: rewritten.len(),
        of: probes.len(),
        redirect_addresses: redirect_addresses.into_iter().collect(),
        probes,
    }
}

/// An interception probe's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interception {
    /// The public resolver's own answer came back.
    NotIntercepted,
    /// Someone else answered in its name.
    Intercepted,
    /// Too few replies to tell (plaintext DNS to it may simply be blocked).
    Unreachable,
}

/// One interception probe's result.
#[derive(Debug, Clone, Serialize)]
pub struct InterceptionResult {
    /// Operator.
    pub label: String,
    /// Address queried.
    pub server: String,
    /// The query.
    pub query: String,
    /// Outcome.
    pub verdict: Interception,
    /// What the genuine answer looks like.
    pub expected: String,
    /// What came back, per try (`RCODE: text`), or `no reply`.
    pub answers: Vec<String>,
}

/// Sends identity queries in plaintext to public resolvers' addresses.
pub async fn interception(audit: &Audit) -> Vec<InterceptionResult> {
    let mut out = Vec::new();
    for probe in &audit.settings.interception {
        let mut matching = 0;
        let mut other = 0;
        let mut answers = Vec::new();
        for _ in 0..INTERCEPTION_TRIES {
            let Some(query) = plain_query(&probe.name, probe.rtype, probe.class) else {
                break;
            };
            let (_, raw) = observe(
                probe.server,
                &query,
                audit.settings.timeout,
                Default::default(),
            )
            .await;
            match raw.first().and_then(|r| txt_of(r)) {
                None => answers.push("no reply".into()),
                Some((rcode, texts)) => {
                    // Network data: no control characters reach the terminal.
                    let text: String = texts
                        .join(" ")
                        .chars()
                        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
                        .collect();
                    if rcode == NOERROR && !texts.is_empty() && glob(&probe.expect, &text) {
                        matching += 1;
                    } else {
                        other += 1;
                    }
                    answers.push(format!("{}: {text}", rcode_name(rcode)));
                }
            }
            if matching >= INTERCEPTION_AGREEMENT || other >= INTERCEPTION_AGREEMENT {
                break;
            }
        }
        let verdict = if other >= INTERCEPTION_AGREEMENT {
            Interception::Intercepted
        } else if matching >= INTERCEPTION_AGREEMENT {
            Interception::NotIntercepted
        } else {
            Interception::Unreachable
        };
        let class = if probe.class == 3 { "CH" } else { "IN" };
        out.push(InterceptionResult {
            label: probe.label.clone(),
            server: probe.server.to_string(),
            query: format!("{} {class} TXT", probe.name),
            verdict,
            expected: probe.expect.clone(),
            answers,
        });
    }
    out
}

/// Case-insensitive glob: `*` any run of characters, `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative matcher with backtracking to the last star.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("*.pch.net", "res100.ams.rrdns.pch.net"));
        assert!(!glob("*.pch.net", "unbound 1.17"));
        assert!(glob("???", "AMS"));
        assert!(!glob("???", "AMSX"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
    }
}
