//! Split DNS: which queries go somewhere other than the encrypted upstreams.
//!
//! Names under a configured domain (`lan`, `home.arpa`, a corporate zone, a private reverse
//! zone) are forwarded in plain DNS to the resolver that knows them, typically the router's
//! dnsmasq. Matching is by whole labels, case-insensitively, the longest domain winning.
//! The user asks for this per domain; nothing else ever leaves in plaintext.

use std::sync::Arc;

use crate::dns::wire;
use crate::upstream::plain::PlainClient;

/// A set of domains and the plain resolver that serves them.
#[derive(Clone)]
pub struct Rule {
    /// Domains in lower-cased wire format.
    domains: Vec<Vec<u8>>,
    /// Where their queries go.
    pub client: Arc<PlainClient>,
}

impl Rule {
    /// A rule sending `domains` (presentation form, e.g. "lan", "168.192.in-addr.arpa.") to
    /// `client`. `None` if a domain is not a valid name.
    pub fn new(domains: &[String], client: Arc<PlainClient>) -> Option<Rule> {
        let domains = domains
            .iter()
            .map(|d| wire::name_from_str(d).map(|n| n.to_ascii_lowercase()))
            .collect::<Option<Vec<_>>>()?;
        Some(Rule { domains, client })
    }
}

/// All forwarding rules.
#[derive(Clone, Default)]
pub struct SplitDns {
    /// (domain, rule index), longest domain first so the most specific rule wins.
    domains: Vec<(Vec<u8>, usize)>,
    /// The rules.
    rules: Vec<Rule>,
}

impl SplitDns {
    /// Routing over `rules`.
    pub fn new(rules: Vec<Rule>) -> SplitDns {
        let mut domains: Vec<(Vec<u8>, usize)> = rules
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.domains.iter().map(move |d| (d.clone(), i)))
            .collect();
        domains.sort_by_key(|(d, _)| std::cmp::Reverse(d.len()));
        SplitDns { domains, rules }
    }

    /// The rule for `name` (uncompressed wire format, any case), if one covers it.
    pub fn route(&self, name: &[u8]) -> Option<&Rule> {
        self.domains
            .iter()
            .find(|(domain, _)| is_within(name, domain))
            .map(|&(_, i)| &self.rules[i])
    }

    /// True if there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Whether `name` equals `domain` or lies below it, on label boundaries (both uncompressed
/// wire format; `domain` lower-cased).
pub fn is_within(name: &[u8], domain: &[u8]) -> bool {
    let mut pos = 0;
    while pos < name.len() {
        if name.len() - pos == domain.len() && name[pos..].eq_ignore_ascii_case(domain) {
            return true;
        }
        let len = name[pos] as usize;
        if len == 0 {
            break;
        }
        pos += 1 + len;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn n(s: &str) -> Vec<u8> {
        wire::name_from_str(s).unwrap()
    }

    #[test]
    fn matches_whole_labels_only() {
        assert!(is_within(&n("nas.LAN"), &n("lan")));
        assert!(is_within(&n("lan"), &n("lan")));
        assert!(!is_within(&n("nas.plan"), &n("lan")));
        assert!(!is_within(&n("lan.example"), &n("lan")));
        assert!(is_within(
            &n("1.1.168.192.in-addr.arpa"),
            &n("168.192.in-addr.arpa")
        ));
        assert!(
            is_within(&n("anything.example"), &n(".")),
            "the root covers everything"
        );
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let a = Arc::new(PlainClient::new(
            vec!["127.0.0.1:5301".parse().unwrap()],
            Duration::from_secs(1),
        ));
        let b = Arc::new(PlainClient::new(
            vec!["127.0.0.1:5302".parse().unwrap()],
            Duration::from_secs(1),
        ));
        let split = SplitDns::new(vec![
            Rule::new(&["corp.example".into()], a).unwrap(),
            Rule::new(&["lab.corp.example".into(), "lan".into()], b).unwrap(),
        ]);
        let port = |name: &str| split.route(&n(name)).map(|r| r.client.servers()[0].port());
        assert_eq!(port("x.lab.corp.example"), Some(5302));
        assert_eq!(port("x.corp.example"), Some(5301));
        assert_eq!(port("printer.lan"), Some(5302));
        assert_eq!(port("example.com"), None);
    }
}
