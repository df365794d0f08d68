//! Locally served zones: names a stub resolver must answer itself instead of leaking them to
//! a public resolver, where they can only produce NXDOMAIN at the cost of privacy (the query
//! tells the upstream about the local network) and load on the AS112 servers (RFC 6303 §1).
//!
//! Each zone is served empty, as RFC 6303 §3 describes: NXDOMAIN below the apex, NODATA at
//! it, both with the zone's SOA for negative caching (RFC 2308 §3). `localhost` is the
//! exception: every name in it resolves to the loopback addresses (RFC 6761 §6.3).
//! Callers answer from local data (hosts file, static records) first, so `nas.home.arpa`
//! configured there still resolves.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use super::response::{Owner, Response};
use super::table::{TYPE_ANY, key};
use crate::dns::query::{ClientQuery, Rcode};
use crate::dns::wire::{self, HEADER_LEN, TYPE_SOA};

/// All built-in locally served zones, in presentation form without the trailing dot.
pub const ZONES: &[&str] = &[
    // RFC 6303 §4.1: RFC 1918 private address space.
    "10.in-addr.arpa",
    "16.172.in-addr.arpa",
    "17.172.in-addr.arpa",
    "18.172.in-addr.arpa",
    "19.172.in-addr.arpa",
    "20.172.in-addr.arpa",
    "21.172.in-addr.arpa",
    "22.172.in-addr.arpa",
    "23.172.in-addr.arpa",
    "24.172.in-addr.arpa",
    "25.172.in-addr.arpa",
    "26.172.in-addr.arpa",
    "27.172.in-addr.arpa",
    "28.172.in-addr.arpa",
    "29.172.in-addr.arpa",
    "30.172.in-addr.arpa",
    "31.172.in-addr.arpa",
    "168.192.in-addr.arpa",
    // RFC 6303 §4.2: RFC 5735 special-use IPv4 addresses (this network, loopback, link local,
    // the three documentation networks, limited broadcast).
    "0.in-addr.arpa",
    "127.in-addr.arpa",
    "254.169.in-addr.arpa",
    "2.0.192.in-addr.arpa",
    "100.51.198.in-addr.arpa",
    "113.0.203.in-addr.arpa",
    "255.255.255.255.in-addr.arpa",
    // RFC 7793: RFC 6598 shared address space 100.64.0.0/10.
    "64.100.in-addr.arpa",
    "65.100.in-addr.arpa",
    "66.100.in-addr.arpa",
    "67.100.in-addr.arpa",
    "68.100.in-addr.arpa",
    "69.100.in-addr.arpa",
    "70.100.in-addr.arpa",
    "71.100.in-addr.arpa",
    "72.100.in-addr.arpa",
    "73.100.in-addr.arpa",
    "74.100.in-addr.arpa",
    "75.100.in-addr.arpa",
    "76.100.in-addr.arpa",
    "77.100.in-addr.arpa",
    "78.100.in-addr.arpa",
    "79.100.in-addr.arpa",
    "80.100.in-addr.arpa",
    "81.100.in-addr.arpa",
    "82.100.in-addr.arpa",
    "83.100.in-addr.arpa",
    "84.100.in-addr.arpa",
    "85.100.in-addr.arpa",
    "86.100.in-addr.arpa",
    "87.100.in-addr.arpa",
    "88.100.in-addr.arpa",
    "89.100.in-addr.arpa",
    "90.100.in-addr.arpa",
    "91.100.in-addr.arpa",
    "92.100.in-addr.arpa",
    "93.100.in-addr.arpa",
    "94.100.in-addr.arpa",
    "95.100.in-addr.arpa",
    "96.100.in-addr.arpa",
    "97.100.in-addr.arpa",
    "98.100.in-addr.arpa",
    "99.100.in-addr.arpa",
    "100.100.in-addr.arpa",
    "101.100.in-addr.arpa",
    "102.100.in-addr.arpa",
    "103.100.in-addr.arpa",
    "104.100.in-addr.arpa",
    "105.100.in-addr.arpa",
    "106.100.in-addr.arpa",
    "107.100.in-addr.arpa",
    "108.100.in-addr.arpa",
    "109.100.in-addr.arpa",
    "110.100.in-addr.arpa",
    "111.100.in-addr.arpa",
    "112.100.in-addr.arpa",
    "113.100.in-addr.arpa",
    "114.100.in-addr.arpa",
    "115.100.in-addr.arpa",
    "116.100.in-addr.arpa",
    "117.100.in-addr.arpa",
    "118.100.in-addr.arpa",
    "119.100.in-addr.arpa",
    "120.100.in-addr.arpa",
    "121.100.in-addr.arpa",
    "122.100.in-addr.arpa",
    "123.100.in-addr.arpa",
    "124.100.in-addr.arpa",
    "125.100.in-addr.arpa",
    "126.100.in-addr.arpa",
    "127.100.in-addr.arpa",
    // RFC 6303 §4.3: the IPv6 unspecified (::) and loopback (::1) addresses.
    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
    // RFC 6303 §4.4: IPv6 locally assigned unique local addresses, fd00::/8 (RFC 4193).
    "d.f.ip6.arpa",
    // RFC 6303 §4.5: IPv6 link-local addresses, fe80::/10.
    "8.e.f.ip6.arpa",
    "9.e.f.ip6.arpa",
    "a.e.f.ip6.arpa",
    "b.e.f.ip6.arpa",
    // RFC 6303 §4.6: the IPv6 documentation prefix 2001:db8::/32 (RFC 3849).
    "8.b.d.0.1.0.0.2.ip6.arpa",
    // RFC 8375 §4: the residential home network domain.
    "home.arpa",
    // RFC 6762 §3, §22.1: multicast DNS names, never sent to unicast DNS servers.
    "local",
    // RFC 6761 §6.4: names that must never resolve.
    "invalid",
    // RFC 6761 §6.3: the loopback names (answered with loopback addresses, not NXDOMAIN).
    "localhost",
    // ICANN Board resolution of 29 July 2024 (SAC113): reserved for private use, never delegated.
    "internal",
];

/// TTL of the SOA record (RFC 6303 §3).
const SOA_TTL: u32 = 10800;
/// SOA SERIAL, REFRESH, RETRY, EXPIRE and MINIMUM (RFC 6303 §3).
const SOA_TIMERS: [u32; 5] = [1, 3600, 1200, 604800, 10800];
/// SOA RNAME `nobody.invalid.` (RFC 6303 §3): a mailbox that cannot exist.
const SOA_RNAME: &[u8] = b"\x06nobody\x07invalid\x00";
/// TTL of the loopback answers for `localhost`: they never change, like the zone's data.
const LOOPBACK_TTL: u32 = SOA_TTL;

/// The zones by lower-cased wire-format name, and the top-level labels they end in, built on
/// first use.
struct Index {
    zones: HashMap<Box<[u8]>, &'static str>,
    /// `arpa.`, `local.` and the like, lower-cased, in wire format: a name ending in none of
    /// them (nearly every name asked) is in no zone, which a few byte comparisons tell.
    tops: Vec<Box<[u8]>>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let zones: HashMap<Box<[u8]>, &'static str> = ZONES
            .iter()
            .filter_map(|&zone| Some((key(&wire::name_from_str(zone)?).into(), zone)))
            .collect();
        let mut tops: Vec<Box<[u8]>> = zones
            .keys()
            .filter_map(|name| Some(name[label_starts(name).last()?..].into()))
            .collect();
        tops.sort();
        tops.dedup();
        Index { zones, tops }
    })
}

/// The locally served zone containing `name` (uncompressed wire-format name, any case), if
/// any. Names match on whole labels: `evil-local.` is not in `local.`.
pub fn locally_served(name: &[u8]) -> Option<&'static str> {
    let index = index();
    let top = &name[label_starts(name).last()?..];
    if !index.tops.iter().any(|t| wire::names_equal(top, t)) {
        return None;
    }
    let lower = key(name);
    label_starts(&lower).find_map(|at| index.zones.get(&lower[at..]).copied())
}

/// The answer to `query`, whose name is in the locally served `zone` (see
/// [`locally_served`]): NXDOMAIN with the zone's SOA in the authority section; at the apex
/// NODATA with that SOA, or the SOA as the answer to an SOA query (RFC 6303 §3); in
/// `localhost`, A 127.0.0.1 and AAAA ::1 for every name (RFC 6761 §6.3) and NODATA for
/// other types. Records are class IN: callers only use this for class-IN queries.
pub fn local_zone_answer(query: &ClientQuery<'_>, zone: &str) -> Vec<u8> {
    let localhost = zone.eq_ignore_ascii_case("localhost");
    if localhost && let Some(answer) = loopback_answer(query) {
        return answer;
    }
    let zone_name = wire::name_from_str(zone).unwrap_or_else(|| vec![0]);
    let name = query.name();
    let apex_at = label_starts(name).find(|&at| wire::names_equal(&name[at..], &zone_name));
    let soa_owner = match apex_at {
        Some(at) => Owner::at(HEADER_LEN + at, &zone_name),
        None => Owner::Name(&zone_name),
    };
    let soa = soa_rdata(soa_owner);
    let at_apex = apex_at == Some(0);
    let rcode = if at_apex || localhost {
        Rcode::NoError
    } else {
        Rcode::NxDomain
    };
    let mut response = Response::new(query, rcode);
    if at_apex && matches!(query.question.qtype, TYPE_SOA | TYPE_ANY) {
        response.answer(soa_owner, TYPE_SOA, SOA_TTL, &soa);
    } else {
        response.authority(soa_owner, TYPE_SOA, SOA_TTL, &soa);
    }
    response.finish(query)
}

/// A and/or AAAA loopback records for a name in `localhost` (RFC 6761 §6.3), or `None`
/// when the query asks for neither.
fn loopback_answer(query: &ClientQuery<'_>) -> Option<Vec<u8>> {
    let qtype = query.question.qtype;
    let want_a = matches!(qtype, wire::TYPE_A | TYPE_ANY);
    let want_aaaa = matches!(qtype, wire::TYPE_AAAA | TYPE_ANY);
    if !want_a && !want_aaaa {
        return None;
    }
    let mut response = Response::new(query, Rcode::NoError);
    if want_a {
        let rdata = Ipv4Addr::LOCALHOST.octets();
        response.answer(Owner::QUESTION, wire::TYPE_A, LOOPBACK_TTL, &rdata);
    }
    if want_aaaa {
        let rdata = Ipv6Addr::LOCALHOST.octets();
        response.answer(Owner::QUESTION, wire::TYPE_AAAA, LOOPBACK_TTL, &rdata);
    }
    Some(response.finish(query))
}

/// The RDATA of a zone's SOA (RFC 1035 §3.3.13) with the RFC 6303 §3 values; MNAME is the
/// zone itself, written as `apex` (a pointer to the apex name when it is in the message).
fn soa_rdata(apex: Owner<'_>) -> Vec<u8> {
    let mut rdata = Vec::with_capacity(64);
    apex.write(&mut rdata);
    rdata.extend_from_slice(SOA_RNAME);
    for value in SOA_TIMERS {
        rdata.extend(value.to_be_bytes());
    }
    rdata
}

/// Offsets at which the labels of an uncompressed wire-format name start, the first label
/// first; the root itself is not included. Stops early at anything malformed.
fn label_starts(name: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut next = Some(0usize);
    std::iter::from_fn(move || {
        let at = next.take()?;
        let len = usize::from(*name.get(at)?);
        if len == 0 || len > 63 || at + 1 + len >= name.len() {
            return None;
        }
        next = Some(at + 1 + len);
        Some(at)
    })
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::RData;

    use super::*;
    use crate::dns::read_query;
    use crate::local::testing::{TEST_ID, decode, query_bytes, show};

    fn zone_of(name: &str) -> Option<&'static str> {
        locally_served(&wire::name_from_str(name).unwrap())
    }

    /// The zone of `name` (which must be locally served) and the decoded answer.
    fn ask(name: &str, qtype: u16, edns: bool) -> Message {
        let bytes = query_bytes(name, qtype, edns);
        let query = read_query(&bytes).unwrap();
        let zone = locally_served(query.name()).expect("locally served");
        let message = decode(&local_zone_answer(&query, zone));
        assert_eq!(message.metadata.id, TEST_ID);
        assert!(message.metadata.authoritative);
        assert_eq!(message.edns.is_some(), edns);
        message
    }

    #[test]
    fn every_zone_is_a_valid_name_and_listed_once() {
        assert_eq!(index().zones.len(), ZONES.len());
        assert_eq!(ZONES.len(), 102);
        let mut tops: Vec<String> = index()
            .tops
            .iter()
            .map(|t| wire::name_to_string(t))
            .collect();
        tops.sort();
        assert_eq!(
            tops,
            ["arpa.", "internal.", "invalid.", "local.", "localhost."]
        );
        for zone in ZONES {
            assert_eq!(zone_of(zone), Some(*zone));
        }
    }

    #[test]
    fn matching_is_on_label_boundaries_ignoring_case() {
        assert_eq!(
            zone_of("1.1.168.192.in-addr.arpa"),
            Some("168.192.in-addr.arpa")
        );
        assert_eq!(
            zone_of("4.3.20.172.IN-ADDR.ARPA."),
            Some("20.172.in-addr.arpa")
        );
        assert_eq!(zone_of("1.32.172.in-addr.arpa"), None);
        assert_eq!(
            zone_of("5.4.100.100.in-addr.arpa"),
            Some("100.100.in-addr.arpa")
        );
        assert_eq!(zone_of("Printer.Local"), Some("local"));
        assert_eq!(zone_of("nas.home.arpa"), Some("home.arpa"));
        assert_eq!(zone_of("a.b.internal"), Some("internal"));
        assert_eq!(zone_of("WWW.LOCALHOST"), Some("localhost"));
        assert_eq!(zone_of("x.InValid."), Some("invalid"));
        assert_eq!(zone_of("evil-local"), None);
        assert_eq!(zone_of("local.example.com"), None);
        assert_eq!(zone_of("example.com"), None);
        assert_eq!(zone_of("arpa"), None);
        assert_eq!(zone_of("in-addr.arpa"), None);
        let link_local = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa";
        assert_eq!(zone_of(link_local), Some("8.e.f.ip6.arpa"));
        assert_eq!(locally_served(&[0]), None, "the root");
        assert_eq!(locally_served(&[5, b'l', b'o']), None, "truncated name");
    }

    #[test]
    fn names_below_the_apex_get_nxdomain_with_the_rfc_6303_soa() {
        let message = ask("1.1.168.192.in-addr.arpa", 12, true);
        assert_eq!(message.metadata.response_code, ResponseCode::NXDomain);
        assert!(message.answers.is_empty());
        let [soa] = &message.authorities[..] else {
            panic!("one SOA: {:?}", message.authorities)
        };
        assert_eq!(soa.name.to_string(), "168.192.in-addr.arpa.");
        assert_eq!(soa.ttl, 10800);
        let RData::SOA(soa) = &soa.data else {
            panic!("not an SOA")
        };
        assert_eq!(soa.mname.to_string(), "168.192.in-addr.arpa.");
        assert_eq!(soa.rname.to_string(), "nobody.invalid.");
        let timers = [soa.serial, soa.refresh as u32, soa.retry as u32];
        assert_eq!(timers, [1, 3600, 1200]);
        assert_eq!((soa.expire, soa.minimum), (604800, 10800));
    }

    #[test]
    fn the_apex_gets_nodata_or_its_soa() {
        let message = ask("168.192.IN-ADDR.arpa", 12, false);
        assert_eq!(message.metadata.response_code, ResponseCode::NoError);
        assert!(message.answers.is_empty());
        assert_eq!(message.authorities.len(), 1);
        let message = ask("home.arpa", TYPE_SOA, true);
        assert_eq!(message.metadata.response_code, ResponseCode::NoError);
        assert_eq!(show(&message.answers).len(), 1);
        assert!(
            show(&message.answers)[0].starts_with("home.arpa. SOA home.arpa. nobody.invalid. 1 ")
        );
        assert!(message.authorities.is_empty());
    }

    #[test]
    fn localhost_is_loopback() {
        let a = ask("localhost", wire::TYPE_A, true);
        assert_eq!(show(&a.answers), ["localhost. A 127.0.0.1"]);
        let aaaa = ask("Foo.LocalHost.", wire::TYPE_AAAA, false);
        assert_eq!(show(&aaaa.answers), ["Foo.LocalHost. AAAA ::1"]);
        let mx = ask("foo.localhost", 15, true);
        assert_eq!(mx.metadata.response_code, ResponseCode::NoError);
        assert!(mx.answers.is_empty());
        assert_eq!(mx.authorities.len(), 1);
        let any = ask("localhost", TYPE_ANY, true);
        assert_eq!(any.answers.len(), 2);
    }

    #[test]
    fn invalid_and_local_get_nxdomain() {
        for name in ["x.invalid", "printer.local", "a.b.internal"] {
            let message = ask(name, wire::TYPE_A, true);
            assert_eq!(
                message.metadata.response_code,
                ResponseCode::NXDomain,
                "{name}"
            );
        }
    }
}
