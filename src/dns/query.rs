//! Client queries: validation, the responses dnsward builds itself (FORMERR, NOTIMP,
//! SERVFAIL, REFUSED, BADVERS), and the normalised query sent upstream.

use super::wire::{self, Edns, HEADER_LEN, Header, Parsed, Question};

/// DNS response codes dnsward produces itself (RFC 1035 §4.1.1, RFC 6891 §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Rcode {
    /// NOERROR.
    NoError = 0,
    /// FORMERR: the query could not be interpreted.
    FormErr = 1,
    /// SERVFAIL: no upstream could answer.
    ServFail = 2,
    /// NXDOMAIN.
    NxDomain = 3,
    /// NOTIMP: an opcode dnsward does not forward.
    NotImp = 4,
    /// REFUSED: a query dnsward will not answer (zone transfers).
    Refused = 5,
    /// BADVERS: an EDNS version other than 0 (an extended RCODE).
    BadVers = 16,
}

/// UDP payload size dnsward advertises and asks for (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// A query that passed validation, with what the proxy needs from it.
#[derive(Debug, Clone)]
pub struct ClientQuery<'a> {
    /// The query as received.
    pub wire: &'a [u8],
    /// Its message ID, restored in the answer.
    pub id: u16,
    /// Its single question.
    pub question: Question,
    /// Its EDNS(0) fields, if it had an OPT record.
    pub edns: Option<Edns>,
}

impl ClientQuery<'_> {
    /// The question name exactly as the client wrote it (case included).
    pub fn name(&self) -> &[u8] {
        &self.wire[self.question.name.clone()]
    }
    /// The question in presentation form, for logs.
    pub fn name_string(&self) -> String {
        wire::name_to_string(self.name())
    }
    /// The header of the query.
    pub fn header(&self) -> Header<'_> {
        Header::of(self.wire).expect("validated query has a header")
    }
    /// DNSSEC OK bit.
    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }
    /// Largest UDP answer the client accepts: 512 without EDNS (RFC 1035 §4.2.1), else its
    /// advertised payload size, never below 512 (RFC 6891 §6.2.3).
    pub fn udp_limit(&self) -> usize {
        self.edns.map_or(512, |e| e.udp_payload.max(512) as usize)
    }
}

/// What to do with a message that is not a forwardable query.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Say nothing: no readable header, or it is a response (answering responses invites loops).
    Drop,
    /// Send this answer (FORMERR, NOTIMP, REFUSED or BADVERS).
    Answer(Vec<u8>),
}

/// Validates a client message and describes it, or says how to reject it.
pub fn read_query(wire: &[u8]) -> Result<ClientQuery<'_>, Rejected> {
    let Some(header) = Header::of(wire) else {
        return Err(Rejected::Drop);
    };
    if header.is_response() {
        return Err(Rejected::Drop);
    }
    let parsed: Parsed = match wire::parse(wire) {
        Ok(parsed) => parsed,
        // RFC 6891 §6.1.1: more than one OPT is FORMERR; any other framing error too.
        Err(_) => {
            return Err(Rejected::Answer(error_response(
                wire,
                None,
                None,
                Rcode::FormErr,
            )));
        }
    };
    let edns = parsed.edns();
    if header.opcode() != 0 {
        let answer = error_response(wire, parsed.question.as_ref(), edns, Rcode::NotImp);
        return Err(Rejected::Answer(answer));
    }
    let Some(question) = parsed.question else {
        // RFC 9619: a QUERY must carry exactly one question.
        return Err(Rejected::Answer(error_response(
            wire,
            None,
            edns,
            Rcode::FormErr,
        )));
    };
    if let Some(e) = edns
        && e.version != 0
    {
        // RFC 6891 §6.1.3: answer an unknown EDNS version with BADVERS and version 0.
        let answer = error_response(wire, Some(&question), edns, Rcode::BadVers);
        return Err(Rejected::Answer(answer));
    }
    if matches!(question.qtype, wire::TYPE_AXFR | wire::TYPE_IXFR) {
        // Zone transfers are not something a stub forwards.
        let answer = error_response(wire, Some(&question), edns, Rcode::Refused);
        return Err(Rejected::Answer(answer));
    }
    Ok(ClientQuery {
        wire,
        id: header.id(),
        question,
        edns,
    })
}

/// Answers a query that arrived cut short because it was larger than dnsward reads (see
/// [`crate::listener::batch::SLOT`]): FORMERR with the header alone, since what follows it
/// cannot be trusted. Nothing for a response or a message without a header, as for any other.
pub fn too_large(prefix: &[u8]) -> Option<Vec<u8>> {
    let header = Header::of(prefix)?;
    if header.is_response() {
        return None;
    }
    Some(error_response(prefix, None, None, Rcode::FormErr))
}

/// Builds a response carrying only a header, the question (when known) and an OPT record
/// (when the query had one), with `rcode` set. `query` must hold at least a header.
pub fn error_response(
    query: &[u8],
    question: Option<&Question>,
    edns: Option<Edns>,
    rcode: Rcode,
) -> Vec<u8> {
    let header = Header::of(query).expect("caller checked the header");
    let rcode = rcode as u16;
    let mut out = Vec::with_capacity(64);
    out.extend(header.id().to_be_bytes());
    // QR, the query's opcode and RD; RA because we offer recursion.
    out.push(0x80 | (header.opcode() << 3) | header.recursion_desired() as u8);
    out.push(0x80 | if header.checking_disabled() { 0x10 } else { 0 } | (rcode & 0x0f) as u8);
    out.extend(u16::from(question.is_some()).to_be_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend(u16::from(edns.is_some()).to_be_bytes());
    if let Some(q) = question {
        out.extend_from_slice(&query[HEADER_LEN..q.end]);
    }
    if let Some(e) = edns {
        push_opt(&mut out, (rcode >> 4) as u8, e.dnssec_ok);
    }
    out
}

/// Extended DNS Error (RFC 8914) info-code 15, "Blocked": the resolver's operator blocks it.
pub const EDE_BLOCKED: u16 = 15;
/// EDNS option code of an Extended DNS Error (RFC 8914 §2).
const OPTION_EDE: u16 = 15;

/// Adds an Extended DNS Error option (RFC 8914) to a response written by [`error_response`].
/// Only when the client used EDNS: the OPT record is then the last thing in the message,
/// with an empty RDATA whose length field are the last two bytes.
pub fn with_extended_error(mut response: Vec<u8>, info_code: u16, text: &str) -> Vec<u8> {
    let has_opt = response.len() >= HEADER_LEN + 11 && response[10..12] == [0, 1];
    if !has_opt {
        return response;
    }
    let text = &text.as_bytes()[..text.len().min(400)];
    let option_len = 2 + text.len();
    let rdlen = 4 + option_len;
    let at = response.len() - 2;
    response[at..].copy_from_slice(&(rdlen as u16).to_be_bytes());
    response.extend(OPTION_EDE.to_be_bytes());
    response.extend((option_len as u16).to_be_bytes());
    response.extend(info_code.to_be_bytes());
    response.extend_from_slice(text);
    response
}

/// The query sent upstream: the client's question (its case kept), RD set, the client's CD
/// and AD bits, and a fresh OPT record carrying only the client's DO bit. The client's own
/// EDNS options (cookies, client subnet, ...) are deliberately not forwarded. ID is 0, as
/// RFC 8484 §4.1 asks for DoH; the DoT transport rewrites it per connection.
pub fn upstream_query(query: &ClientQuery<'_>) -> Vec<u8> {
    let header = query.header();
    let question = &query.wire[HEADER_LEN..query.question.end];
    build_query(
        question,
        header.checking_disabled(),
        header.authentic_data(),
        query.dnssec_ok(),
    )
}

/// A standalone query for `name`/`qtype` in class IN (used by `dnsward query`, health probes
/// and bootstrap resolution). `None` if the name is not a valid DNS name.
pub fn new_query(name: &str, qtype: u16, dnssec_ok: bool) -> Option<Vec<u8>> {
    let mut question = wire::name_from_str(name)?;
    question.extend(qtype.to_be_bytes());
    question.extend(1u16.to_be_bytes());
    Some(build_query(&question, false, false, dnssec_ok))
}

fn build_query(question: &[u8], cd: bool, ad: bool, dnssec_ok: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + question.len() + 11);
    out.extend([0, 0, 0x01]); // ID 0; QUERY with RD
    out.push(if ad { 0x20 } else { 0 } | if cd { 0x10 } else { 0 });
    out.extend([0, 1, 0, 0, 0, 0, 0, 1]);
    out.extend_from_slice(question);
    push_opt(&mut out, 0, dnssec_ok);
    out
}

/// Appends a minimal OPT record (RFC 6891 §6.1.2): root owner, our payload size, no options.
pub fn push_opt(out: &mut Vec<u8>, ext_rcode: u8, dnssec_ok: bool) {
    out.push(0);
    out.extend(wire::TYPE_OPT.to_be_bytes());
    out.extend(EDNS_PAYLOAD.to_be_bytes());
    out.extend([ext_rcode, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
    out.extend([0, 0]);
}

/// Queries sent over encrypted transports are padded to a multiple of this (RFC 8467 §4.1).
pub const PADDING_BLOCK: usize = 128;
/// EDNS option code of Padding (RFC 7830 §3).
const OPTION_PADDING: u16 = 12;

/// `query` with an EDNS(0) Padding option (RFC 7830) bringing its length to a multiple of
/// [`PADDING_BLOCK`] (RFC 8467 block-length padding), so an observer of the encrypted stream
/// learns little from its size. Only for encrypted transports (RFC 7830 §6). A query whose
/// OPT record is not its last record is returned unpadded rather than rewritten.
pub fn padded(query: &[u8]) -> Vec<u8> {
    let Ok(parsed) = wire::parse(query) else {
        return query.to_vec();
    };
    let mut out = Vec::with_capacity(query.len() + PADDING_BLOCK);
    out.extend_from_slice(query);
    let rdlength_at = match parsed.opt.map(|i| &parsed.records[i]) {
        Some(opt) if opt.end == query.len() => opt.rdata.start - 2,
        Some(_) => return out,
        None => {
            let arcount = Header::of(query).expect("parsed").arcount();
            out[10..12].copy_from_slice(&arcount.saturating_add(1).to_be_bytes());
            push_opt(&mut out, 0, false);
            out.len() - 2
        }
    };
    let unpadded = out.len() + 4;
    let pad = (PADDING_BLOCK - unpadded % PADDING_BLOCK) % PADDING_BLOCK;
    let rdlength = u16::from_be_bytes([out[rdlength_at], out[rdlength_at + 1]]) as usize + 4 + pad;
    out[rdlength_at..rdlength_at + 2].copy_from_slice(&(rdlength as u16).to_be_bytes());
    out.extend(OPTION_PADDING.to_be_bytes());
    out.extend((pad as u16).to_be_bytes());
    out.resize(out.len() + pad, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = new_query(name, qtype, false).unwrap();
        q[0] = 0xab;
        q[1] = 0xcd;
        q
    }

    #[test]
    fn accepts_a_normal_query() {
        let wire = raw_query("Example.test", 1);
        let q = read_query(&wire).unwrap();
        assert_eq!(q.id, 0xabcd);
        assert_eq!(q.name_string(), "Example.test.");
        assert_eq!(q.udp_limit(), 1232);
    }

    #[test]
    fn short_or_response_messages_are_dropped() {
        assert_eq!(read_query(&[0; 11]).unwrap_err(), Rejected::Drop);
        let mut wire = raw_query("a.test", 1);
        wire[2] |= 0x80;
        assert_eq!(read_query(&wire).unwrap_err(), Rejected::Drop);
    }

    #[test]
    fn garbage_after_a_header_is_formerr_with_the_id() {
        let mut wire = vec![0x11, 0x22, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        wire.extend([0x3f, b'a']);
        let Err(Rejected::Answer(answer)) = read_query(&wire) else {
            panic!("expected an answer")
        };
        let h = Header::of(&answer).unwrap();
        assert_eq!((h.id(), h.rcode(), h.is_response()), (0x1122, 1, true));
        assert_eq!(h.qdcount(), 0);
    }

    #[test]
    fn other_opcodes_are_notimp_and_keep_the_question() {
        let mut wire = raw_query("a.test", 1);
        wire[2] = (2 << 3) | 1; // STATUS
        let Err(Rejected::Answer(answer)) = read_query(&wire) else {
            panic!("expected an answer")
        };
        let h = Header::of(&answer).unwrap();
        assert_eq!((h.opcode(), h.rcode(), h.qdcount()), (2, 4, 1));
        assert!(wire::parse(&answer).is_ok());
    }

    #[test]
    fn edns_version_1_gets_badvers() {
        let mut wire = raw_query("a.test", 1);
        let n = wire.len();
        wire[n - 5] = 1; // OPT version byte
        let Err(Rejected::Answer(answer)) = read_query(&wire) else {
            panic!("expected an answer")
        };
        let parsed = wire::parse(&answer).unwrap();
        let edns = parsed.edns().unwrap();
        let rcode =
            (u16::from(edns.ext_rcode) << 4) | u16::from(Header::of(&answer).unwrap().rcode());
        assert_eq!((rcode, edns.version), (16, 0));
    }

    #[test]
    fn zero_or_two_questions_are_formerr() {
        let none = vec![0x11, 0x22, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
        let Err(Rejected::Answer(a)) = read_query(&none) else {
            panic!("no answer")
        };
        assert_eq!(Header::of(&a).unwrap().rcode(), 1);
        let one = new_query("a.test", 1, false).unwrap();
        let question = &one[HEADER_LEN..one.len() - 11];
        let mut two = vec![0x11, 0x22, 0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0];
        two.extend_from_slice(question);
        two.extend_from_slice(question);
        let Err(Rejected::Answer(a)) = read_query(&two) else {
            panic!("no answer")
        };
        assert_eq!(Header::of(&a).unwrap().rcode(), 1);
    }

    #[test]
    fn padding_fills_to_the_block_length() {
        for name in [
            "a.test",
            "a-much-longer-name.with.several.labels.example",
            &"x".repeat(60),
        ] {
            let query = new_query(name, 1, true).unwrap();
            let out = padded(&query);
            assert_eq!(out.len() % PADDING_BLOCK, 0, "{name}");
            let parsed = wire::parse(&out).unwrap();
            let opt = &parsed.records[parsed.opt.unwrap()];
            assert_eq!(&out[opt.rdata.start..opt.rdata.start + 2], &[0, 12]);
            assert!(parsed.edns().unwrap().dnssec_ok, "flags kept");
            assert_eq!(
                &out[..query.len() - 2],
                &query[..query.len() - 2],
                "only rdlength and the option change"
            );
        }
        // Without an OPT, one is added.
        let mut plain = new_query("a.test", 1, false).unwrap();
        plain.truncate(plain.len() - 11);
        plain[11] = 0;
        let out = padded(&plain);
        assert_eq!(out.len() % PADDING_BLOCK, 0);
        assert_eq!(Header::of(&out).unwrap().arcount(), 1);
    }

    #[test]
    fn upstream_query_keeps_question_and_do_bit_but_not_client_options() {
        let mut wire = raw_query("A.test", 1);
        // Give the client's OPT an option (a cookie) and set DO.
        let n = wire.len();
        wire[n - 4] = 0x80;
        wire[n - 1] = 12;
        wire[n - 2] = 0;
        wire.extend([0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        let q = read_query(&wire).unwrap();
        let up = upstream_query(&q);
        let parsed = wire::parse(&up).unwrap();
        assert_eq!(Header::of(&up).unwrap().id(), 0);
        assert!(parsed.edns().unwrap().dnssec_ok);
        assert!(parsed.records[parsed.opt.unwrap()].rdata.is_empty());
        assert_eq!(&up[parsed.question.unwrap().name], q.name());
    }
}
