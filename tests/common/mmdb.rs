//! A minimal MaxMind DB writer (IPv4 tree, 24-bit records), enough to give the audit an ASN
//! database in tests. Format: https://maxmind.github.io/MaxMind-DB/ (search tree, 16-byte
//! separator, data section, metadata marker and map).

use std::net::Ipv4Addr;

/// Writes an IPv4 ASN database mapping each `(network, prefix_len)` to an AS number.
pub fn asn_db(networks: &[(Ipv4Addr, u8, u32)]) -> Vec<u8> {
    // Data section: one map per network: {autonomous_system_number: u32}.
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for &(_, _, asn) in networks {
        offsets.push(data.len());
        data.push((7 << 5) | 1); // map, 1 entry
        string(&mut data, "autonomous_system_number");
        uint(&mut data, 6, u64::from(asn));
    }
    // Search tree: nodes of [left, right]; None = no data yet.
    enum Rec {
        Empty,
        Node(usize),
        Data(usize),
    }
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for (i, &(net, len, _)) in networks.iter().enumerate() {
        let bits = u32::from(net);
        let mut node = 0;
        for depth in 0..len {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth + 1 == len {
                nodes[node][bit] = Rec::Data(offsets[i]);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for node in &nodes {
        for rec in node {
            let value = match rec {
                Rec::Empty => count,
                Rec::Node(n) => *n,
                Rec::Data(off) => count + 16 + off,
            };
            out.extend_from_slice(&(value as u32).to_be_bytes()[1..]);
        }
    }
    out.extend([0u8; 16]);
    out.extend(data);
    out.extend(b"\xAB\xCD\xEFMaxMind.com");
    out.push((7 << 5) | 9); // map, 9 entries
    string(&mut out, "description");
    out.push((7 << 5) | 1);
    string(&mut out, "en");
    string(&mut out, "dnsward test ASN database");
    string(&mut out, "languages");
    out.extend([1, 11 - 7]); // extended type array, 1 element
    string(&mut out, "en");
    string(&mut out, "node_count");
    uint(&mut out, 6, count as u64);
    string(&mut out, "record_size");
    uint(&mut out, 5, 24);
    string(&mut out, "ip_version");
    uint(&mut out, 5, 4);
    string(&mut out, "database_type");
    string(&mut out, "Test-ASN");
    string(&mut out, "binary_format_major_version");
    uint(&mut out, 5, 2);
    string(&mut out, "binary_format_minor_version");
    uint(&mut out, 5, 0);
    string(&mut out, "build_epoch");
    out.extend([1, 9 - 7]); // extended type uint64, 1 byte
    out.push(1);
    out
}

fn string(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 29);
    out.push((2 << 5) | s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// An unsigned integer of MMDB type `kind` (5 = uint16, 6 = uint32) in minimal bytes.
fn uint(out: &mut Vec<u8>, kind: u8, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    let used = &bytes[skip..];
    out.push((kind << 5) | used.len() as u8);
    out.extend_from_slice(used);
}
