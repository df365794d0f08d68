//! Who may query, and how fast: the access list and per-client rate limiting that make it
//! safe to serve a LAN.
//!
//! Every query passes [`ClientPolicy::admit_udp`] or [`ClientPolicy::admit_tcp`] in the
//! listener before the resolver sees it:
//!
//! - Sources outside the access list are refused. Over TCP they get REFUSED (the handshake
//!   proves the source address, and the answer is no bigger than the query). Over UDP they get
//!   nothing at all: a UDP source address may be forged, and answering forged sources, even
//!   with a small REFUSED, makes dnsward a reflector aimed at whoever owns that address. Silence
//!   also hides the server from scans of the networks it was not meant to serve.
//! - Allowed sources outside the exempt networks (loopback by default) draw from a token
//!   bucket per client network ([`rate`]). Over the limit, UDP queries are dropped, except
//!   that every `slip`-th one gets an empty truncated reply (TC=1) so a real client retries
//!   over TCP (the "slip" of response rate limiting in BIND and Knot). TCP is not limited
//!   here: its connections are already bounded and its sources cannot be forged.

pub mod rate;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::dns::{self, Rcode, Rejected};
use crate::nets::Ranges;
use rate::RateTable;

/// Validated client settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    /// Networks that may query. The configuration always puts loopback in.
    pub allow: Vec<IpNet>,
    /// Per-client rate limiting, when on.
    pub rate_limit: Option<RateLimit>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            allow: loopback_nets(),
            rate_limit: Some(RateLimit::default()),
        }
    }
}

/// Per-client rate limiting.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Sustained queries per second per client network.
    pub per_second: f64,
    /// Queries a quiet client may send at once (the bucket's size).
    pub burst: u32,
    /// Every `slip`-th query over the limit gets a truncated reply; 0 drops them all.
    pub slip: u32,
    /// IPv4 clients sharing this prefix share a bucket.
    pub ipv4_prefix: u8,
    /// IPv6 clients sharing this prefix share a bucket.
    pub ipv6_prefix: u8,
    /// Sources never limited (loopback by default: the machine's own programs and a local
    /// dnsmasq in front of dnsward).
    pub exempt: Vec<IpNet>,
    /// Most client networks tracked at once; the least recently seen are forgotten first.
    pub max_clients: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 100.0,
            burst: 400,
            slip: 2,
            // On a LAN each address is one device; a wider prefix would make the whole
            // household share one bucket.
            ipv4_prefix: 32,
            ipv6_prefix: 128,
            exempt: loopback_nets(),
            max_clients: 10_000,
        }
    }
}

/// 127.0.0.0/8 and ::1/128.
pub fn loopback_nets() -> Vec<IpNet> {
    vec![
        IpNet::V4(Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).expect("valid prefix")),
        IpNet::V6(Ipv6Net::new(Ipv6Addr::LOCALHOST, 128).expect("valid prefix")),
    ]
}

/// What a listener does with a query from some source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Resolve it.
    Serve,
    /// Not on the access list: REFUSED over TCP, silence over UDP.
    Refuse,
    /// Over the rate limit: send nothing.
    Drop,
    /// Over the rate limit, but this one gets an empty truncated reply (UDP).
    Slip,
}

/// The access list and rate limiter shared by all listeners.
pub struct ClientPolicy {
    /// Networks that may query.
    allow: Ranges<()>,
    /// Networks exempt from rate limiting.
    exempt: Ranges<()>,
    /// Buckets per client network, when rate limiting is on.
    rate: Option<RateTable>,
}

/// How long an idle client's bucket is kept (a full bucket is the same as none).
const BUCKET_IDLE: Duration = Duration::from_secs(60);

impl ClientPolicy {
    /// A policy for `settings`.
    pub fn new(settings: &ClientSettings) -> ClientPolicy {
        ClientPolicy {
            allow: Ranges::set(&settings.allow),
            exempt: Ranges::set(settings.rate_limit.iter().flat_map(|r| &r.exempt)),
            rate: settings
                .rate_limit
                .as_ref()
                .map(|r| RateTable::new(r, BUCKET_IDLE)),
        }
    }

    /// Is `source` on the access list?
    pub fn allows(&self, source: IpAddr) -> bool {
        self.allow.contains(source.to_canonical())
    }

    /// Decides about a TCP query (or connection) from `source`.
    pub fn admit_tcp(&self, source: IpAddr) -> Admission {
        if self.allows(source) {
            Admission::Serve
        } else {
            Admission::Refuse
        }
    }

    /// Decides about a UDP query from `source`; the clock (`now`) is read only if the
    /// source's rate is limited.
    pub fn admit_udp(&self, source: IpAddr, now: impl FnOnce() -> Instant) -> Admission {
        let source = source.to_canonical();
        if !self.allow.contains(source) {
            return Admission::Refuse;
        }
        match &self.rate {
            Some(table) if !self.exempt.contains(source) => table.admit(source, now()),
            _ => Admission::Serve,
        }
    }
}

/// REFUSED for `message` (to a source not on the access list, over TCP); `None` if it is not
/// worth an answer at all.
pub fn refused(message: &[u8]) -> Option<Vec<u8>> {
    match dns::read_query(message) {
        Ok(q) => Some(dns::error_response(
            q.wire,
            Some(&q.question),
            q.edns,
            Rcode::Refused,
        )),
        Err(Rejected::Drop) => None,
        Err(Rejected::Answer(answer)) => Some(answer),
    }
}

/// An empty reply to `message` with TC set, so the client retries over TCP (the "slip" of
/// response rate limiting); no larger than the query. `None` for messages not worth one.
pub fn slip(message: &[u8]) -> Option<Vec<u8>> {
    let q = dns::read_query(message).ok()?;
    let mut out = dns::error_response(q.wire, Some(&q.question), q.edns, Rcode::NoError);
    out[2] |= 0x02;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::Header;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_access_list_admits_its_networks_only() {
        let mut settings = ClientSettings::default();
        settings.allow.push(net("192.168.1.0/24"));
        settings.allow.push(net("fd00::/8"));
        settings.rate_limit = None;
        let policy = ClientPolicy::new(&settings);
        let now = Instant::now();
        for allowed in ["127.0.0.1", "127.9.9.9", "::1", "192.168.1.77", "fd12::1"] {
            assert_eq!(
                policy.admit_udp(ip(allowed), || now),
                Admission::Serve,
                "{allowed}"
            );
            assert_eq!(policy.admit_tcp(ip(allowed)), Admission::Serve, "{allowed}");
        }
        for refused in ["192.168.2.1", "10.0.0.1", "2001:db8::1", "fe80::1"] {
            assert_eq!(
                policy.admit_udp(ip(refused), || now),
                Admission::Refuse,
                "{refused}"
            );
            assert_eq!(
                policy.admit_tcp(ip(refused)),
                Admission::Refuse,
                "{refused}"
            );
        }
    }

    #[test]
    fn ipv4_mapped_sources_are_matched_as_ipv4() {
        let settings = ClientSettings {
            allow: vec![net("192.168.1.0/24")],
            rate_limit: None,
        };
        let policy = ClientPolicy::new(&settings);
        assert!(policy.allows(ip("::ffff:192.168.1.9")));
        assert!(!policy.allows(ip("::ffff:192.168.2.9")));
    }

    #[test]
    fn exempt_sources_are_never_limited() {
        let settings = ClientSettings {
            allow: vec![net("0.0.0.0/0")],
            rate_limit: Some(RateLimit {
                per_second: 1.0,
                burst: 1,
                slip: 0,
                ..RateLimit::default()
            }),
        };
        let policy = ClientPolicy::new(&settings);
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(policy.admit_udp(ip("127.0.0.1"), || now), Admission::Serve);
        }
        assert_eq!(policy.admit_udp(ip("10.0.0.1"), || now), Admission::Serve);
        assert_eq!(policy.admit_udp(ip("10.0.0.1"), || now), Admission::Drop);
    }

    #[test]
    fn refused_and_slip_replies_are_no_bigger_than_the_query() {
        let query = dns::new_query("www.example.com", 1, true).unwrap();
        let r = refused(&query).unwrap();
        let h = Header::of(&r).unwrap();
        assert_eq!(h.rcode(), Rcode::Refused as u8);
        assert!(h.is_response() && r.len() <= query.len());
        let s = slip(&query).unwrap();
        let h = Header::of(&s).unwrap();
        assert!(h.truncated() && h.rcode() == 0 && h.ancount() == 0);
        assert!(s.len() <= query.len());
        // Responses are never answered (no loops between two servers).
        let mut response = query.clone();
        response[2] |= 0x80;
        assert_eq!(refused(&response), None);
        assert_eq!(slip(&response), None);
    }
}
