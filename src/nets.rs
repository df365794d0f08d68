//! Sets of address ranges held as network and mask integers, by family: finding the range
//! that holds an address is a few integer comparisons, with nothing to parse or allocate.
//! Used where it runs for every query or every answer (the client access list, the hijack
//! checks' special-use ranges).

use std::net::IpAddr;
use std::ops::BitAnd;

use ipnet::IpNet;

/// Address ranges, each with a value, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranges<T> {
    v4: Vec<(u32, u32, T)>,
    v6: Vec<(u128, u128, T)>,
}

impl<T: Copy> Ranges<T> {
    /// The ranges `nets`, each with its value.
    pub fn new(nets: impl IntoIterator<Item = (IpNet, T)>) -> Ranges<T> {
        let mut ranges = Ranges {
            v4: Vec::new(),
            v6: Vec::new(),
        };
        for (net, value) in nets {
            match net {
                IpNet::V4(net) => {
                    ranges
                        .v4
                        .push((u32::from(net.network()), u32::from(net.netmask()), value))
                }
                IpNet::V6(net) => {
                    ranges
                        .v6
                        .push((u128::from(net.network()), u128::from(net.netmask()), value))
                }
            }
        }
        ranges
    }

    /// The value of the first range holding `addr`. An IPv4-mapped IPv6 address is held only
    /// by IPv6 ranges: callers that mean its IPv4 address pass `addr.to_canonical()`.
    pub fn find(&self, addr: IpAddr) -> Option<T> {
        match addr {
            IpAddr::V4(v4) => first_holding(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => first_holding(&self.v6, u128::from(v6)),
        }
    }
}

impl Ranges<()> {
    /// The networks `nets`, as a set.
    pub fn set<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Ranges<()> {
        Ranges::new(nets.into_iter().map(|&net| (net, ())))
    }

    /// Whether a network of the set holds `addr`.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.find(addr).is_some()
    }
}

/// The value of the first `(network, mask, value)` whose network holds `addr`.
fn first_holding<A, T>(ranges: &[(A, A, T)], addr: A) -> Option<T>
where
    A: Copy + BitAnd<Output = A> + PartialEq,
    T: Copy,
{
    ranges
        .iter()
        .find(|&&(net, mask, _)| addr & mask == net)
        .map(|&(_, _, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> Ranges<()> {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        Ranges::set(&nets)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_range_holds_exactly_its_addresses() {
        let s = set(&["192.168.1.0/24", "10.0.0.7/32", "fd00::/8", "::1/128"]);
        for inside in ["192.168.1.0", "192.168.1.255", "10.0.0.7", "fd12::1", "::1"] {
            assert!(s.contains(ip(inside)), "{inside}");
        }
        for outside in [
            "192.168.0.255",
            "192.168.2.0",
            "10.0.0.6",
            "10.0.0.8",
            "fe00::1",
            "::2",
        ] {
            assert!(!s.contains(ip(outside)), "{outside}");
        }
    }

    #[test]
    fn prefixes_zero_and_full_length_work_in_both_families() {
        let everything = set(&["0.0.0.0/0", "::/0"]);
        assert!(everything.contains(ip("203.0.113.9")));
        assert!(everything.contains(ip("2001:db8::9")));
        assert!(!set(&[]).contains(ip("127.0.0.1")));
        // A network written with host bits set holds its whole network.
        assert!(set(&["192.168.1.5/24"]).contains(ip("192.168.1.200")));
        let hosts = set(&["198.51.100.77/32", "2001:db8::77/128"]);
        assert!(hosts.contains(ip("198.51.100.77")));
        assert!(hosts.contains(ip("2001:db8::77")));
        assert!(!hosts.contains(ip("198.51.100.78")));
    }

    #[test]
    fn families_do_not_mix() {
        let v4 = set(&["127.0.0.0/8"]);
        assert!(!v4.contains(ip("::ffff:127.0.0.1")));
        assert!(v4.contains(ip("::ffff:127.0.0.1").to_canonical()));
    }

    #[test]
    fn the_first_range_holding_an_address_gives_its_value() {
        let r = Ranges::new([
            ("10.1.0.0/16".parse().unwrap(), "inner"),
            ("10.0.0.0/8".parse().unwrap(), "outer"),
        ]);
        assert_eq!(r.find(ip("10.1.2.3")), Some("inner"));
        assert_eq!(r.find(ip("10.2.2.3")), Some("outer"));
        assert_eq!(r.find(ip("11.0.0.0")), None);
    }
}
