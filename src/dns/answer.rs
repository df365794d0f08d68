//! Upstream answers: checked against the query that was sent, kept as wire bytes with the
//! offsets to patch, and rendered for each client (its ID, its question case, decayed TTLs,
//! its EDNS status and its UDP size limit).

use std::ops::Range;

use thiserror::Error;

use super::query::{ClientQuery, EDNS_PAYLOAD, push_opt};
use super::wire::{self, Header, Parsed, Section, WireError};

/// Why an upstream's reply cannot be used as the answer to the query sent.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// Not a well-formed DNS message.
    #[error("malformed answer: {0}")]
    Malformed(#[from] WireError),
    /// The QR bit is clear or the opcode is not QUERY.
    #[error("reply is not a response to a QUERY")]
    NotAResponse,
    /// The question section does not echo the question asked (RFC 5452 §9.1 style check).
    #[error("reply is for another question")]
    QuestionMismatch,
}

/// Checks `answer` against the `query` that was sent upstream: a response, for QUERY, with
/// exactly the same question (name compared case-insensitively, type and class equal).
pub fn check_answer(query: &[u8], answer: &[u8]) -> Result<Parsed, AnswerError> {
    let parsed = wire::parse(answer)?;
    let header = Header::of(answer).ok_or(WireError::ShortHeader)?;
    if !header.is_response() || header.opcode() != 0 {
        return Err(AnswerError::NotAResponse);
    }
    let sent = wire::question(query)?.ok_or(AnswerError::QuestionMismatch)?;
    let got = parsed
        .question
        .as_ref()
        .ok_or(AnswerError::QuestionMismatch)?;
    if got.qtype != sent.qtype
        || got.qclass != sent.qclass
        || !wire::names_equal(&answer[got.name.clone()], &query[sent.name])
    {
        return Err(AnswerError::QuestionMismatch);
    }
    Ok(parsed)
}

/// An upstream answer ready to be served to any client asking the same question.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The answer as the upstream sent it (`len` bytes), then the offsets of the TTL fields of
    /// every record except OPT, as native-endian `u16`s; the original TTLs are read from the
    /// message. One allocation, of the exact size, per cached answer.
    data: Box<[u8]>,
    /// Length of the message at the front of `data`. Offsets fit in 16 bits: a DNS message is
    /// at most 65535 bytes (every transport checks), and the stored one is never longer than
    /// the upstream's.
    len: u16,
    /// Where the question name sits (to restore each client's case).
    name: (u16, u16),
    /// Offset just past the question (for truncated answers).
    question_end: u16,
    /// Where the OPT record starts. It is always the last record, 11 bytes, without options:
    /// [`Answer::new`] rebuilds it so, so it can be cut for clients without EDNS and the
    /// upstream's padding never reaches plaintext clients.
    opt_start: Option<u16>,
    /// RCODE from the header.
    rcode: u8,
    /// Cache lifetime derived from the records (RFC 2181 §5.2, RFC 2308 §5), before clamping.
    natural_ttl: Option<u32>,
}

impl Answer {
    /// Wraps a checked upstream answer.
    pub fn new(wire: &[u8], parsed: &Parsed) -> Answer {
        let question = parsed
            .question
            .as_ref()
            .expect("checked answers have a question");
        let rcode = Header::of(wire).expect("checked").rcode();
        let natural_ttl = natural_ttl(wire, parsed, rcode);
        // Records kept as they are: all of them, or those before the OPT record. Additional
        // records after an OPT (rare) are dropped rather than moved, since moving bytes would
        // break compression pointers into them; additional data is optional (RFC 2181 §9).
        let kept = parsed.opt.unwrap_or(parsed.records.len());
        // The message, then two bytes per TTL offset: allocated once, at its final size.
        let message_len = parsed
            .opt
            .map_or(wire.len(), |i| parsed.records[i].start + 11);
        let mut stored = Vec::with_capacity(message_len + 2 * kept);
        let opt_start = match parsed.opt {
            None => {
                stored.extend_from_slice(wire);
                None
            }
            Some(i) => {
                let opt = &parsed.records[i];
                stored.extend_from_slice(&wire[..opt.start]);
                let flags = &wire[opt.ttl_offset..opt.ttl_offset + 4];
                // A minimal OPT: root owner, our payload size, the upstream's extended RCODE,
                // version and flags, no options (padding, cookies, NSID stay upstream).
                stored.push(0);
                stored.extend(wire::TYPE_OPT.to_be_bytes());
                stored.extend(EDNS_PAYLOAD.to_be_bytes());
                stored.extend_from_slice(flags);
                stored.extend([0, 0]);
                let additional_before = parsed.records[..i]
                    .iter()
                    .filter(|r| r.section == Section::Additional)
                    .count() as u16;
                stored[10..12].copy_from_slice(&(additional_before + 1).to_be_bytes());
                Some(opt.start)
            }
        };
        // The original TTLs stay in the stored message (made sane), so only where they are
        // needs keeping: after the message, in the same allocation.
        let len = stored.len();
        debug_assert!(
            len <= usize::from(u16::MAX),
            "checked messages fit in 65535 bytes"
        );
        stored.reserve_exact(2 * kept);
        for r in &parsed.records[..kept] {
            stored[r.ttl_offset..r.ttl_offset + 4].copy_from_slice(&sane_ttl(r.ttl).to_be_bytes());
            stored.extend((r.ttl_offset as u16).to_ne_bytes());
        }
        Answer {
            data: stored.into_boxed_slice(),
            len: len as u16,
            name: (question.name.start as u16, question.name.end as u16),
            question_end: question.end as u16,
            opt_start: opt_start.map(|start| start as u16),
            rcode,
            natural_ttl,
        }
    }

    /// The stored message.
    fn wire(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }

    /// Offsets of the TTL fields to patch.
    fn ttl_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        self.data[usize::from(self.len)..]
            .chunks_exact(2)
            .map(|pair| usize::from(u16::from_ne_bytes([pair[0], pair[1]])))
    }

    /// Where the question name sits.
    fn name_range(&self) -> Range<usize> {
        usize::from(self.name.0)..usize::from(self.name.1)
    }

    /// The header RCODE.
    pub fn rcode(&self) -> u8 {
        self.rcode
    }

    /// How long this answer may be cached, per its records, before any clamping: the
    /// smallest answer/authority TTL for a positive answer; for NXDOMAIN and NODATA the SOA's
    /// min(TTL, MINIMUM) (RFC 2308 §5). `None` when it must not be cached: SERVFAIL and other
    /// errors, truncated answers, and negative answers without an SOA (RFC 2308 §5).
    pub fn natural_ttl(&self) -> Option<u32> {
        self.natural_ttl
    }

    /// True for NXDOMAIN or NOERROR without answer records (NODATA).
    pub fn is_negative(&self) -> bool {
        let header = Header::of(self.wire()).expect("checked");
        self.rcode == 3 || (self.rcode == 0 && header.ancount() == 0)
    }

    /// Size of the stored answer in bytes (for cache weighing).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True if the stored answer is empty (never, for a checked answer).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The answer as the upstream sent it.
    pub fn as_bytes(&self) -> &[u8] {
        self.wire()
    }

    /// Renders the answer for one client.
    ///
    /// `ttl` maps each record's original TTL to the TTL to serve (clamping and ageing are the
    /// cache's policy). `udp_limit` is the client's limit for UDP, `None` over TCP; an answer
    /// over it is replaced by a truncated one with TC set (RFC 1035 §4.2.1, RFC 7766 §5).
    pub fn render(
        &self,
        client: &ClientQuery<'_>,
        ttl: impl Fn(u32) -> u32,
        udp_limit: Option<usize>,
    ) -> Vec<u8> {
        // RFC 6891 §7: no OPT in the answer to a query without one.
        let cut = self
            .opt_start
            .map(usize::from)
            .filter(|_| client.edns.is_none());
        let keep = cut.unwrap_or(self.len());
        let mut out = Vec::with_capacity(keep + 11);
        out.extend_from_slice(&self.wire()[..keep]);
        out[..2].copy_from_slice(&client.id.to_be_bytes());
        // Mirror the client's RD bit.
        out[2] = (out[2] & !0x01) | client.header().recursion_desired() as u8;
        // RFC 6840 §5.8: AD only for clients that asked for it with AD or DO.
        if !client.header().authentic_data() && !client.dnssec_ok() {
            out[3] &= !0x20;
        }
        // Restore the client's spelling of the name (same length: names matched ignoring case).
        out[self.name_range()].copy_from_slice(client.name());
        for offset in self.ttl_offsets() {
            let field = &mut out[offset..offset + 4];
            let original = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
            field.copy_from_slice(&ttl(original).to_be_bytes());
        }
        let mut arcount = Header::of(&out).expect("header").arcount();
        if cut.is_some() {
            arcount = arcount.saturating_sub(1);
        } else if self.opt_start.is_none() && client.edns.is_some() {
            // RFC 6891 §7: a query with OPT gets an answer with OPT.
            push_opt(&mut out, 0, client.dnssec_ok());
            arcount = arcount.saturating_add(1);
        }
        out[10..12].copy_from_slice(&arcount.to_be_bytes());
        match udp_limit {
            Some(limit) if out.len() > limit => self.truncated(&out, client),
            _ => out,
        }
    }

    /// Header (TC set, no records) + question + our OPT if the client sent one.
    fn truncated(&self, full: &[u8], client: &ClientQuery<'_>) -> Vec<u8> {
        let mut out = full[..usize::from(self.question_end)].to_vec();
        out[2] |= 0x02;
        out[6..10].fill(0);
        out[10..12].copy_from_slice(&u16::from(client.edns.is_some()).to_be_bytes());
        if client.edns.is_some() {
            let parsed = self.opt_start.and_then(|start| {
                let ttl_at = usize::from(start) + 5;
                self.wire()
                    .get(ttl_at..ttl_at + 3)
                    .map(|t| (t[0], t[2] & 0x80 != 0))
            });
            let (ext_rcode, dnssec_ok) = parsed.unwrap_or((0, client.dnssec_ok()));
            push_opt(&mut out, ext_rcode, dnssec_ok);
        }
        out
    }
}

fn natural_ttl(wire: &[u8], parsed: &Parsed, rcode: u8) -> Option<u32> {
    let header = Header::of(wire)?;
    if header.truncated() || !matches!(rcode, 0 | 3) {
        return None;
    }
    let negative = rcode == 3 || header.ancount() == 0;
    if negative {
        // RFC 2308 §5: the negative TTL is min(SOA TTL, SOA MINIMUM); no SOA, no caching.
        return parsed
            .section(Section::Authority)
            .filter(|r| r.rtype == wire::TYPE_SOA && r.rdata.len() >= 20)
            .map(|r| {
                let m = &wire[r.rdata.end - 4..r.rdata.end];
                sane_ttl(r.ttl).min(sane_ttl(u32::from_be_bytes([m[0], m[1], m[2], m[3]])))
            })
            .min();
    }
    parsed
        .records
        .iter()
        .filter(|r| r.section != Section::Additional)
        .map(|r| sane_ttl(r.ttl))
        .min()
}

/// RFC 2181 §8: a TTL with the most significant bit set is treated as zero.
fn sane_ttl(ttl: u32) -> u32 {
    if ttl > i32::MAX as u32 { 0 } else { ttl }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::query::{new_query, read_query};

    /// A response to `query` with the given records appended (owner = pointer to the question).
    fn response(
        query: &[u8],
        rcode: u8,
        answers: &[(u16, u32, &[u8])],
        soa: Option<(u32, u32)>,
    ) -> Vec<u8> {
        let parsed = wire::parse(query).unwrap();
        let q = parsed.question.unwrap();
        let mut out = query[..q.end].to_vec();
        out[2] |= 0x80;
        out[3] = 0x80 | rcode;
        out[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        out[8..10].copy_from_slice(&u16::from(soa.is_some()).to_be_bytes());
        out[10..12].copy_from_slice(&1u16.to_be_bytes());
        for (rtype, ttl, rdata) in answers {
            out.extend([0xc0, 12]);
            out.extend(rtype.to_be_bytes());
            out.extend(1u16.to_be_bytes());
            out.extend(ttl.to_be_bytes());
            out.extend((rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(rdata);
        }
        if let Some((ttl, minimum)) = soa {
            out.extend([0xc0, 12]);
            out.extend(wire::TYPE_SOA.to_be_bytes());
            out.extend(1u16.to_be_bytes());
            out.extend(ttl.to_be_bytes());
            out.extend(22u16.to_be_bytes());
            out.extend([0, 0]); // MNAME, RNAME = root
            out.extend([0; 16]);
            out.extend(minimum.to_be_bytes());
        }
        push_opt(&mut out, 0, false);
        out
    }

    fn client(name: &str, id: u16, edns: bool) -> Vec<u8> {
        let mut q = new_query(name, 1, false).unwrap();
        q[..2].copy_from_slice(&id.to_be_bytes());
        if !edns {
            q.truncate(q.len() - 11);
            q[11] = 0;
        }
        q
    }

    #[test]
    fn rejects_answers_for_other_questions() {
        let sent = new_query("a.test", 1, false).unwrap();
        let other = new_query("b.test", 1, false).unwrap();
        let reply = response(&other, 0, &[], None);
        assert_eq!(
            check_answer(&sent, &reply).unwrap_err(),
            AnswerError::QuestionMismatch
        );
        let aaaa = new_query("a.test", 28, false).unwrap();
        let reply = response(&aaaa, 0, &[], None);
        assert_eq!(
            check_answer(&sent, &reply).unwrap_err(),
            AnswerError::QuestionMismatch
        );
        assert_eq!(
            check_answer(&sent, &sent).unwrap_err(),
            AnswerError::NotAResponse
        );
        let upper = new_query("A.TEST", 1, false).unwrap();
        assert!(check_answer(&sent, &response(&upper, 0, &[], None)).is_ok());
    }

    #[test]
    fn renders_with_client_id_case_and_decayed_ttls() {
        let sent = new_query("a.test", 1, false).unwrap();
        let reply = response(
            &sent,
            0,
            &[(1, 300, &[192, 0, 2, 1]), (1, 60, &[192, 0, 2, 2])],
            None,
        );
        let parsed = check_answer(&sent, &reply).unwrap();
        let answer = Answer::new(&reply, &parsed);
        assert_eq!(answer.natural_ttl(), Some(60));
        let wire = client("A.Test", 0x4242, true);
        let q = read_query(&wire).unwrap();
        let out = answer.render(&q, |t| t - 10, None);
        let p = wire::parse(&out).unwrap();
        assert_eq!(Header::of(&out).unwrap().id(), 0x4242);
        assert_eq!(&out[p.question.unwrap().name], q.name());
        let ttls: Vec<u32> = p
            .records
            .iter()
            .filter(|r| r.rtype == 1)
            .map(|r| r.ttl)
            .collect();
        assert_eq!(ttls, [290, 50]);
        assert!(p.opt.is_some());
    }

    #[test]
    fn every_records_ttl_is_patched_however_many_there_are() {
        let sent = new_query("many.test", 1, false).unwrap();
        let addrs: Vec<[u8; 4]> = (1..=12).map(|i| [192, 0, 2, i]).collect();
        let records: Vec<(u16, u32, &[u8])> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (1, 100 + i as u32, &a[..]))
            .collect();
        let reply = response(&sent, 0, &records, Some((900, 300)));
        let answer = Answer::new(&reply, &check_answer(&sent, &reply).unwrap());
        let wire = client("many.test", 7, false);
        let out = answer.render(&read_query(&wire).unwrap(), |t| t / 2, None);
        let p = wire::parse(&out).unwrap();
        let ttls: Vec<u32> = p.records.iter().map(|r| r.ttl).collect();
        let mut expected: Vec<u32> = (0..12).map(|i| (100 + i) / 2).collect();
        expected.push(450);
        assert_eq!(
            ttls, expected,
            "12 answers and the SOA, no OPT for this client"
        );
        assert_eq!(answer.as_bytes(), &answer.data[..answer.len()]);
    }

    #[test]
    fn strips_opt_for_clients_without_edns() {
        let sent = new_query("a.test", 1, false).unwrap();
        let reply = response(&sent, 0, &[(1, 300, &[192, 0, 2, 1])], None);
        let answer = Answer::new(&reply, &check_answer(&sent, &reply).unwrap());
        let wire = client("a.test", 1, false);
        let out = answer.render(&read_query(&wire).unwrap(), |t| t, None);
        let p = wire::parse(&out).unwrap();
        assert!(p.opt.is_none());
        assert_eq!(Header::of(&out).unwrap().arcount(), 0);
    }

    #[test]
    fn truncates_over_the_udp_limit() {
        let sent = new_query("a.test", 16, false).unwrap();
        let txt = [200u8; 201];
        let records: Vec<(u16, u32, &[u8])> = (0..4).map(|_| (16u16, 60u32, &txt[..])).collect();
        let reply = response(&sent, 0, &records, None);
        let answer = Answer::new(&reply, &check_answer(&sent, &reply).unwrap());
        let wire = client("a.test", 9, false);
        let q = read_query(&wire).unwrap();
        let out = answer.render(&q, |t| t, Some(q.udp_limit()));
        let h = Header::of(&out).unwrap();
        assert!(h.truncated());
        assert_eq!((h.qdcount(), h.ancount(), h.arcount()), (1, 0, 0));
        assert!(wire::parse(&out).is_ok());
        let full = answer.render(&q, |t| t, None);
        assert!(full.len() > 512 && !Header::of(&full).unwrap().truncated());
    }

    #[test]
    fn negative_ttl_is_soa_min_of_ttl_and_minimum() {
        let sent = new_query("nx.test", 1, false).unwrap();
        let reply = response(&sent, 3, &[], Some((3600, 60)));
        let answer = Answer::new(&reply, &check_answer(&sent, &reply).unwrap());
        assert!(answer.is_negative());
        assert_eq!(answer.natural_ttl(), Some(60));
        let no_soa = response(&sent, 3, &[], None);
        let answer = Answer::new(&no_soa, &check_answer(&sent, &no_soa).unwrap());
        assert_eq!(answer.natural_ttl(), None);
        let servfail = response(&sent, 2, &[], Some((3600, 60)));
        let answer = Answer::new(&servfail, &check_answer(&sent, &servfail).unwrap());
        assert_eq!(answer.natural_ttl(), None);
    }

    #[test]
    fn opt_followed_by_records_is_cut_with_them_for_non_edns_clients() {
        // Regression (review #8): OPT first in the additional section, then a glue record.
        let sent = new_query("a.test", 1, false).unwrap();
        let mut reply = response(&sent, 0, &[(1, 300, &[192, 0, 2, 1])], None);
        reply[11] = 2;
        reply.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 9]);
        let answer = Answer::new(&reply, &check_answer(&sent, &reply).unwrap());
        let plain = client("a.test", 1, false);
        let out = answer.render(&read_query(&plain).unwrap(), |t| t, None);
        let p = wire::parse(&out).unwrap();
        assert!(p.opt.is_none());
        assert_eq!(Header::of(&out).unwrap().arcount(), 0);
        assert_eq!(p.records.len(), 1);
        // Additional records after an OPT are dropped when the answer is stored.
        let edns = client("a.test", 1, true);
        let out = answer.render(&read_query(&edns).unwrap(), |t| t, None);
        let p = wire::parse(&out).unwrap();
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.opt, Some(1));
    }

    #[test]
    fn the_upstreams_edns_options_are_not_passed_on() {
        // An upstream pads its answer (RFC 8467): 400 bytes of padding option 12.
        let sent = new_query("a.test", 1, true).unwrap();
        let mut reply = response(&sent, 0, &[(1, 300, &[192, 0, 2, 1])], None);
        let n = reply.len();
        reply[n - 4] = 0x80; // DO
        reply[n - 2..].copy_from_slice(&404u16.to_be_bytes());
        reply.extend([0, 12, 1, 144]);
        reply.extend([0u8; 400]);
        let answer = Answer::new(&reply, &check_answer(&sent, &reply).unwrap());
        let q = client("a.test", 7, true);
        let out = answer.render(&read_query(&q).unwrap(), |t| t, None);
        let p = wire::parse(&out).unwrap();
        let opt = &p.records[p.opt.unwrap()];
        assert!(opt.rdata.is_empty(), "padding stripped");
        assert!(p.edns().unwrap().dnssec_ok, "flags kept");
        assert!(out.len() < 100);
    }

    #[test]
    fn edns_clients_get_an_opt_even_if_the_upstream_sent_none() {
        let sent = new_query("a.test", 1, false).unwrap();
        let mut reply = response(&sent, 0, &[(1, 300, &[192, 0, 2, 1])], None);
        reply.truncate(reply.len() - 11);
        reply[11] = 0;
        let answer = Answer::new(&reply, &check_answer(&sent, &reply).unwrap());
        let edns = client("a.test", 1, true);
        let out = answer.render(&read_query(&edns).unwrap(), |t| t, None);
        let p = wire::parse(&out).unwrap();
        assert_eq!(p.edns().unwrap().udp_payload, EDNS_PAYLOAD);
        assert_eq!(Header::of(&out).unwrap().arcount(), 1);
    }

    #[test]
    fn ad_bit_only_for_clients_that_ask() {
        let sent = new_query("a.test", 1, true).unwrap();
        let mut reply = response(&sent, 0, &[(1, 300, &[192, 0, 2, 1])], None);
        reply[3] |= 0x20;
        let answer = Answer::new(&reply, &check_answer(&sent, &reply).unwrap());
        let plain = client("a.test", 1, true);
        let out = answer.render(&read_query(&plain).unwrap(), |t| t, None);
        assert!(!Header::of(&out).unwrap().authentic_data());
        let mut with_ad = client("a.test", 1, true);
        with_ad[3] |= 0x20;
        let out = answer.render(&read_query(&with_ad).unwrap(), |t| t, None);
        assert!(Header::of(&out).unwrap().authentic_data());
    }

    #[test]
    fn ttls_with_the_top_bit_set_count_as_zero() {
        let sent = new_query("a.test", 1, false).unwrap();
        let reply = response(&sent, 0, &[(1, 0x8000_0000, &[192, 0, 2, 1])], None);
        let answer = Answer::new(&reply, &check_answer(&sent, &reply).unwrap());
        assert_eq!(answer.natural_ttl(), Some(0));
        let q = client("a.test", 1, false);
        let out = answer.render(&read_query(&q).unwrap(), |t| t, None);
        assert_eq!(wire::parse(&out).unwrap().records[0].ttl, 0);
    }
}
