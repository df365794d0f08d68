//! Responses dnsward writes itself for names it answers locally: a header, the client's
//! question exactly as sent, resource records, and an OPT record when the client sent one.

use crate::dns::query::{ClientQuery, Rcode, push_opt};
use crate::dns::wire::HEADER_LEN;

/// Largest DNS message: the TCP length prefix is 16 bits (RFC 1035 §4.2.2).
const MAX_MESSAGE: usize = 65535;
/// Length of the OPT record [`push_opt`] writes (root owner, 10 fixed octets, no options).
const OPT_LEN: usize = 11;
/// Compression pointers carry 14-bit offsets (RFC 1035 §4.1.4).
const MAX_POINTER: usize = 0x3fff;
/// CLASS IN (RFC 1035 §3.2.4): the only class local data exists in.
pub(crate) const CLASS_IN: u16 = 1;

/// How a record's owner name is written.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Owner<'a> {
    /// A compression pointer to a name already in the message (RFC 1035 §4.1.4).
    Pointer(u16),
    /// The name itself, uncompressed wire format.
    Name(&'a [u8]),
}

impl<'a> Owner<'a> {
    /// The question name, which always starts right after the header.
    pub(crate) const QUESTION: Owner<'static> = Owner::Pointer(HEADER_LEN as u16);

    /// `name`, already written uncompressed at `offset`: a pointer there when a pointer can
    /// reach it, else the name itself.
    pub(crate) fn at(offset: usize, name: &'a [u8]) -> Owner<'a> {
        match u16::try_from(offset) {
            Ok(pointer) if offset <= MAX_POINTER => Owner::Pointer(pointer),
            _ => Owner::Name(name),
        }
    }

    /// Appends the owner to `out`.
    pub(crate) fn write(self, out: &mut Vec<u8>) {
        match self {
            Owner::Pointer(offset) => out.extend((0xc000 | offset).to_be_bytes()),
            Owner::Name(name) => out.extend_from_slice(name),
        }
    }

    /// Octets the owner takes in the message.
    fn len(self) -> usize {
        match self {
            Owner::Pointer(_) => 2,
            Owner::Name(name) => name.len(),
        }
    }
}

/// A response being built: records are added answers first, then authority records.
#[derive(Debug)]
pub(crate) struct Response {
    /// The message so far (counts are filled in by [`Response::finish`]).
    out: Vec<u8>,
    /// ANCOUNT so far.
    answers: u16,
    /// NSCOUNT so far.
    authorities: u16,
}

impl Response {
    /// Header and question of the response to `query` with `rcode`.
    ///
    /// QR and AA are set (the data is ours, RFC 1035 §4.1.1), opcode is QUERY, RD and CD are
    /// copied from the query (RFC 6895 §2), RA is set because dnsward recurses for everything
    /// else, and AD is never set: local data is not DNSSEC-validated (RFC 4035 §3.2.3).
    pub(crate) fn new(query: &ClientQuery<'_>, rcode: Rcode) -> Response {
        let header = query.header();
        let mut out = Vec::with_capacity(128);
        out.extend(query.id.to_be_bytes());
        out.push(0x80 | 0x04 | u8::from(header.recursion_desired()));
        let cd = if header.checking_disabled() { 0x10 } else { 0 };
        out.push(0x80 | cd | (rcode as u16 & 0x0f) as u8);
        out.extend([0, 1, 0, 0, 0, 0, 0, 0]);
        // The question exactly as the client sent it, case included (RFC 1035 §7.3 matching).
        out.extend_from_slice(&query.wire[HEADER_LEN..query.question.end]);
        Response {
            out,
            answers: 0,
            authorities: 0,
        }
    }

    /// Adds a record to the answer section; returns where its RDATA starts, or `None` if the
    /// message is full (TC is then set, RFC 2181 §9).
    pub(crate) fn answer(
        &mut self,
        owner: Owner<'_>,
        rtype: u16,
        ttl: u32,
        rdata: &[u8],
    ) -> Option<usize> {
        debug_assert_eq!(self.authorities, 0, "answers come before authority records");
        let at = self.push(owner, rtype, ttl, rdata)?;
        self.answers += 1;
        Some(at)
    }

    /// Adds a record to the authority section (after all answers), like [`Response::answer`].
    pub(crate) fn authority(
        &mut self,
        owner: Owner<'_>,
        rtype: u16,
        ttl: u32,
        rdata: &[u8],
    ) -> Option<usize> {
        let at = self.push(owner, rtype, ttl, rdata)?;
        self.authorities += 1;
        Some(at)
    }

    /// Appends one class-IN record unless it would overflow a DNS message.
    fn push(&mut self, owner: Owner<'_>, rtype: u16, ttl: u32, rdata: &[u8]) -> Option<usize> {
        let needed = owner.len() + 10 + rdata.len() + OPT_LEN;
        let Ok(rdlength) = u16::try_from(rdata.len()) else {
            self.out[2] |= 0x02;
            return None;
        };
        if self.out.len() + needed > MAX_MESSAGE {
            self.out[2] |= 0x02;
            return None;
        }
        owner.write(&mut self.out);
        self.out.extend(rtype.to_be_bytes());
        self.out.extend(CLASS_IN.to_be_bytes());
        self.out.extend(ttl.to_be_bytes());
        self.out.extend(rdlength.to_be_bytes());
        let at = self.out.len();
        self.out.extend_from_slice(rdata);
        Some(at)
    }

    /// The finished message: counts filled in, and an OPT record with the client's DO bit
    /// if and only if the query carried one (RFC 6891 §7, RFC 3225 §3).
    pub(crate) fn finish(mut self, query: &ClientQuery<'_>) -> Vec<u8> {
        self.out[6..8].copy_from_slice(&self.answers.to_be_bytes());
        self.out[8..10].copy_from_slice(&self.authorities.to_be_bytes());
        if let Some(edns) = query.edns {
            push_opt(&mut self.out, 0, edns.dnssec_ok);
            self.out[10..12].copy_from_slice(&1u16.to_be_bytes());
        }
        self.out
    }
}

/// `response` (a local answer to `query`) as it may be sent: unchanged over TCP
/// (`udp_limit` `None`) or when it fits; otherwise only header, question and OPT with TC set,
/// so the client retries over TCP (RFC 1035 §4.2.1, RFC 2181 §9, RFC 7766 §5).
pub fn fit_to_limit(
    query: &ClientQuery<'_>,
    response: Vec<u8>,
    udp_limit: Option<usize>,
) -> Vec<u8> {
    match udp_limit {
        Some(limit) if response.len() > limit => truncated(query, &response),
        _ => response,
    }
}

/// Header and question of `response` with TC set and no records but our OPT.
fn truncated(query: &ClientQuery<'_>, response: &[u8]) -> Vec<u8> {
    // The response copies the query's header and question, so the question ends where the
    // query's does.
    let mut out = response[..query.question.end].to_vec();
    out[2] |= 0x02;
    out[6..12].fill(0);
    if let Some(edns) = query.edns {
        push_opt(&mut out, 0, edns.dnssec_ok);
        out[10..12].copy_from_slice(&1u16.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::read_query;
    use crate::dns::wire::{self, Header};
    use crate::local::testing::query_bytes;

    #[test]
    fn header_flags_question_and_opt() {
        let mut bytes = query_bytes("Nas.Lan", wire::TYPE_A, true);
        bytes[3] |= 0x10; // CD
        let query = read_query(&bytes).unwrap();
        let mut response = Response::new(&query, Rcode::NoError);
        response.answer(Owner::QUESTION, wire::TYPE_A, 60, &[192, 0, 2, 1]);
        let out = response.finish(&query);
        let h = Header::of(&out).unwrap();
        assert_eq!(h.id(), query.id);
        assert!(h.is_response() && h.recursion_desired() && h.checking_disabled());
        assert_eq!(out[2] & 0x04, 0x04, "AA");
        assert_eq!(out[3] & 0x80, 0x80, "RA");
        assert!(!h.authentic_data());
        assert_eq!((h.ancount(), h.nscount(), h.arcount()), (1, 0, 1));
        let parsed = wire::parse(&out).unwrap();
        assert_eq!(&out[parsed.question.unwrap().name], query.name());
    }

    #[test]
    fn oversized_answers_are_truncated_for_udp_only() {
        let bytes = query_bytes("big.lan", 16, false);
        let query = read_query(&bytes).unwrap();
        let mut response = Response::new(&query, Rcode::NoError);
        for _ in 0..4 {
            response.answer(Owner::QUESTION, 16, 60, &[200; 201]);
        }
        let full = response.finish(&query);
        assert_eq!(fit_to_limit(&query, full.clone(), None), full);
        let cut = fit_to_limit(&query, full, Some(query.udp_limit()));
        let h = Header::of(&cut).unwrap();
        assert!(h.truncated());
        assert_eq!((h.qdcount(), h.ancount(), h.arcount()), (1, 0, 0));
        assert!(wire::parse(&cut).is_ok());
    }

    #[test]
    fn a_full_message_sets_tc_instead_of_overflowing() {
        let bytes = query_bytes("huge.lan", 16, true);
        let query = read_query(&bytes).unwrap();
        let mut response = Response::new(&query, Rcode::NoError);
        let rdata = [7u8; 10_000];
        let added = (0..10)
            .filter(|_| response.answer(Owner::QUESTION, 16, 60, &rdata).is_some())
            .count();
        assert_eq!(added, 6);
        let out = response.finish(&query);
        assert!(out.len() <= MAX_MESSAGE);
        assert!(Header::of(&out).unwrap().truncated());
        assert!(wire::parse(&out).is_ok());
    }
}
