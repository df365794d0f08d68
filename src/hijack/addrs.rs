//! What an address is: special-use ("bogon"), a known sinkhole, or an ordinary public one.

use std::net::IpAddr;
use std::sync::RwLock;

use ipnet::IpNet;

use crate::nets::Ranges;

/// Special-use ranges that never carry a public name's address (IANA special-purpose
/// registries, RFC 6890 and successors). `(range, why)`.
const SPECIAL_USE: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network (RFC 791)"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (RFC 6598)"),
    (
        "127.0.0.0/8",
        "loopback (RFC 1122); 127.0.53.53 is ICANN's name-collision flag",
    ),
    ("169.254.0.0/16", "link-local (RFC 3927)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation (RFC 5737)"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast (RFC 7526)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation (RFC 5737)"),
    ("203.0.113.0/24", "documentation (RFC 5737)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("240.0.0.0/4", "reserved, and broadcast (RFC 1112, RFC 919)"),
    ("::/128", "unspecified (RFC 4291)"),
    ("::1/128", "loopback (RFC 4291)"),
    // Not 64:ff9b::/96 nor 64:ff9b:1::/48 (RFC 6052, RFC 8215): DNS64 synthesises those from
    // public IPv4 addresses.
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001:2::/48", "benchmarking (RFC 5180)"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("2001:10::/28", "deprecated ORCHID (RFC 4843)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("fc00::/7", "unique local (RFC 4193)"),
    ("fe80::/10", "link-local (RFC 4291)"),
    ("fec0::/10", "deprecated site-local (RFC 3879)"),
    ("ff00::/8", "multicast (RFC 4291)"),
];

/// The shipped list of known block-page and sinkhole addresses.
const SINKHOLES: &str = include_str!("../../data/sinkholes.txt");

/// What an address is, as far as hijack detection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An ordinary public address.
    Public,
    /// Special-use: private, loopback, documentation, ... (`why` names the range).
    SpecialUse(&'static str),
    /// A known sinkhole or block page.
    Sinkhole,
    /// An address the NXDOMAIN probes saw the resolver redirect non-existent names to.
    LearnedRedirect,
}

/// Classifies addresses. Shared by the proxy's checks and the audit; the redirect
/// addresses learned by the audit's probes are added at run time.
#[derive(Debug)]
pub struct AddressBook {
    /// Special-use ranges, with why each is special.
    special: Ranges<&'static str>,
    /// Ranges to treat as public even though they are special-use. Test setups only: it
    /// lets a loopback range stand for public servers.
    assume_public: Ranges<()>,
    /// Known block pages (shipped list plus the user's), sorted.
    sinkholes: Vec<IpAddr>,
    /// Redirect targets learned by NXDOMAIN probes, sorted.
    learned: RwLock<Vec<IpAddr>>,
}

impl AddressBook {
    /// The shipped lists plus the user's `sinkholes`; `assume_public` is for tests.
    pub fn new(extra_sinkholes: &[IpAddr], assume_public: &[IpNet]) -> AddressBook {
        let special = Ranges::new(
            SPECIAL_USE
                .iter()
                .map(|(net, why)| (net.parse().expect("built-in range parses"), *why)),
        );
        let mut sinkholes: Vec<IpAddr> = SINKHOLES
            .lines()
            .map(|line| line.split('#').next().unwrap_or("").trim())
            .filter(|line| !line.is_empty())
            .map(|line| line.parse().expect("built-in sinkhole list parses"))
            .chain(extra_sinkholes.iter().copied())
            .map(canonical)
            .collect();
        sinkholes.sort_unstable();
        sinkholes.dedup();
        AddressBook {
            special,
            assume_public: Ranges::set(assume_public),
            sinkholes,
            learned: RwLock::new(Vec::new()),
        }
    }

    /// What `addr` is. IPv4-mapped IPv6 addresses are judged as their IPv4 address. A known
    /// sinkhole is named as such first; a special-use address stays special-use even when the
    /// NXDOMAIN probes also saw it as a redirect target (the stronger, simpler evidence).
    pub fn kind(&self, addr: IpAddr) -> Kind {
        let addr = canonical(addr);
        if self.sinkholes.binary_search(&addr).is_ok() {
            return Kind::Sinkhole;
        }
        if let Some(why) = self.special.find(addr)
            && !self.assume_public.contains(addr)
        {
            return Kind::SpecialUse(why);
        }
        let learned = self.learned.read().expect("not poisoned");
        if learned.binary_search(&addr).is_ok() {
            return Kind::LearnedRedirect;
        }
        Kind::Public
    }

    /// Whether `addr` is special-use (a bogon for a public name).
    pub fn is_special(&self, addr: IpAddr) -> bool {
        matches!(self.kind(addr), Kind::SpecialUse(_))
    }

    /// Remembers `addrs` as NXDOMAIN-redirect targets.
    pub fn learn_redirects(&self, addrs: impl IntoIterator<Item = IpAddr>) {
        let mut learned = self.learned.write().expect("not poisoned");
        learned.extend(addrs.into_iter().map(canonical));
        learned.sort_unstable();
        learned.dedup();
    }

    /// The redirect targets learned so far.
    pub fn learned_redirects(&self) -> Vec<IpAddr> {
        self.learned.read().expect("not poisoned").clone()
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as plain IPv4; everything else unchanged.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Domain names whose special-use answers are expected (e.g. `plex.direct`, which encodes a
/// LAN address in the name). A name matches itself and everything below it.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    /// Lower-cased, without trailing dot.
    domains: Vec<String>,
}

impl Allowlist {
    /// An allowlist of `domains` (any case, trailing dot optional).
    pub fn new(domains: &[String]) -> Allowlist {
        Allowlist {
            domains: domains.iter().map(|d| normalise(d)).collect(),
        }
    }

    /// Whether `name` is one of the domains or below one.
    pub fn covers(&self, name: &str) -> bool {
        let name = normalise(name);
        self.domains.iter().any(|d| {
            d.is_empty()
                || name == *d
                || (name.len() > d.len()
                    && name.ends_with(d.as_str())
                    && name.as_bytes()[name.len() - d.len() - 1] == b'.')
        })
    }
}

/// Lower-cased, without the trailing dot.
pub fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_use_ranges_are_bogons_and_public_ones_are_not() {
        let book = AddressBook::new(&[], &[]);
        for bogon in [
            "0.0.0.0",
            "127.0.0.1",
            "127.0.53.53",
            "10.1.2.3",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.9.9",
            "100.64.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.200",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "ff02::1",
        ] {
            assert!(book.is_special(ip(bogon)), "{bogon} should be special-use");
        }
        for public in [
            "9.9.9.9",
            "1.1.1.1",
            "172.32.0.1",
            "2606:4700::1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(book.kind(ip(public)), Kind::Public, "{public}");
        }
    }

    #[test]
    fn sinkholes_shipped_user_and_learned() {
        let book = AddressBook::new(&[ip("203.0.113.9")], &[]);
        assert_eq!(book.kind(ip("146.112.61.104")), Kind::Sinkhole);
        assert_eq!(book.kind(ip("::ffff:146.112.61.106")), Kind::Sinkhole);
        // The user's entry wins over its special-use range.
        assert_eq!(book.kind(ip("203.0.113.9")), Kind::Sinkhole);
        assert_eq!(
            book.kind(ip("198.51.100.1")),
            Kind::SpecialUse("documentation (RFC 5737)")
        );
        book.learn_redirects([ip("93.184.1.1")]);
        assert_eq!(book.kind(ip("93.184.1.1")), Kind::LearnedRedirect);
        assert_eq!(book.learned_redirects(), [ip("93.184.1.1")]);
        // A private redirect target is still reported as special-use.
        book.learn_redirects([ip("192.168.200.1")]);
        assert!(book.is_special(ip("192.168.200.1")));
    }

    #[test]
    fn assume_public_overrides_special_use_for_tests() {
        let book = AddressBook::new(&[], &["127.100.0.0/16".parse().unwrap()]);
        assert_eq!(book.kind(ip("127.100.3.4")), Kind::Public);
        assert!(book.is_special(ip("127.0.0.1")));
    }

    #[test]
    fn allowlist_matches_the_domain_and_below_only() {
        let list = Allowlist::new(&["Plex.Direct.".into()]);
        assert!(list.covers("plex.direct"));
        assert!(list.covers("10-0-0-5.abc.plex.direct."));
        assert!(!list.covers("notplex.direct"));
        assert!(!list.covers("direct"));
    }
}
