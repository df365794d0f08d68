//! Minimal answers to ANY queries (RFC 8482).
//!
//! An ANY query asks for every record at a name; answering it fully is expensive and makes
//! the answer far bigger than the query, the classic amplification. RFC 8482 lets a server
//! answer with one small RRset instead; dnsward synthesises the HINFO record of §4.2 and never
//! sends ANY upstream.

use crate::dns::query::{ClientQuery, Rcode};

use super::response::{CLASS_IN, Owner, Response};
#[cfg(test)]
use crate::dns::wire::TYPE_ANY;
/// HINFO (RFC 1035 §3.3.2).
const TYPE_HINFO: u16 = 13;
/// TTL of the synthesised HINFO. RFC 8482 §4.2 leaves it to the operator and notes that a
/// long TTL keeps repeated ANY queries from reaching the server; an hour is what others use.
const HINFO_TTL: u32 = 3600;

/// The answer to an ANY query: one HINFO record with CPU "RFC8482" and an empty OS
/// (RFC 8482 §4.2) for class IN; for other classes an empty NOERROR, since dnsward holds no
/// data in them. AA is clear: dnsward is not the name's authority.
pub fn any_answer(query: &ClientQuery<'_>) -> Vec<u8> {
    let mut response = Response::new(query, Rcode::NoError);
    if query.question.qclass == CLASS_IN {
        const RDATA: &[u8] = b"\x07RFC8482\x00";
        response.answer(Owner::QUESTION, TYPE_HINFO, HINFO_TTL, RDATA);
    }
    let mut out = response.finish(query);
    out[2] &= !0x04;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::read_query;
    use crate::local::testing::{TEST_ID, decode, query_bytes};
    use hickory_proto::rr::RData;

    #[test]
    fn any_gets_one_synthesised_hinfo() {
        let bytes = query_bytes("Example.COM", TYPE_ANY, true);
        let query = read_query(&bytes).unwrap();
        let out = any_answer(&query);
        let msg = decode(&out);
        assert_eq!(msg.id, TEST_ID);
        assert!(!msg.authoritative);
        assert_eq!(msg.answers.len(), 1);
        let record = &msg.answers[0];
        assert_eq!(record.name.to_string(), "Example.COM.");
        assert_eq!(record.ttl, HINFO_TTL);
        let RData::HINFO(hinfo) = &record.data else {
            panic!("not HINFO: {record:?}");
        };
        assert_eq!(&*hinfo.cpu, b"RFC8482");
        assert!(hinfo.os.is_empty());
        assert!(msg.edns.is_some());
        // Small: about the size of the query plus one short record.
        assert!(out.len() < bytes.len() + 30, "{} bytes", out.len());
    }

    #[test]
    fn other_classes_get_an_empty_answer() {
        let mut bytes = query_bytes("version.bind", TYPE_ANY, false);
        let class_at = bytes.len() - 2;
        bytes[class_at..].copy_from_slice(&3u16.to_be_bytes()); // CHAOS
        let query = read_query(&bytes).unwrap();
        let msg = decode(&any_answer(&query));
        assert!(msg.answers.is_empty());
        assert_eq!(u16::from(msg.response_code), 0);
    }
}
