//! A tiny in-memory authoritative zone: what the fake upstreams answer.

use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// Payload size advertised in the OPT of every EDNS response.
pub const RESPONSE_EDNS_PAYLOAD: u16 = 1232;

/// Length of each string in a `big_txt` record (one character-string, < 256).
pub const BIG_TXT_LEN: usize = 200;

/// Maximum CNAME hops followed inside the zone.
const MAX_CNAME_HOPS: usize = 8;

#[derive(Clone, Default, Debug)]
pub struct Zone {
    records: Vec<Record>,
    rcodes: Vec<(Name, ResponseCode)>,
    delays: Vec<(Name, Duration)>,
    big_txt: Vec<(Name, usize)>,
}

/// Parses a domain name for test code; panics on bad input. Always fully qualified.
pub fn name(s: &str) -> Name {
    let mut n = Name::from_ascii(s).unwrap_or_else(|e| panic!("bad name {s:?}: {e}"));
    n.set_fqdn(true);
    n
}

/// Parses one record in presentation form: `OWNER TTL [CLASS] TYPE RDATA...`.
/// Panics on bad input (test code).
pub fn parse_record(rr: &str) -> Record {
    let mut rest = rr.trim();
    let mut next = || -> &str {
        let s = rest.trim_start();
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        let (tok, tail) = s.split_at(end);
        rest = tail;
        tok
    };
    let owner = next();
    let ttl = next();
    let mut ty = next();
    if DNSClass::from_str(ty).is_ok() && RecordType::from_str(ty).is_err() {
        assert!(
            ty.eq_ignore_ascii_case("IN"),
            "only class IN is supported: {rr:?}"
        );
        ty = next();
    }
    let rdata_str = rest.trim().to_string();
    let owner = name(owner);
    let ttl: u32 = ttl
        .parse()
        .unwrap_or_else(|e| panic!("bad TTL in {rr:?}: {e}"));
    let rtype = RecordType::from_str(ty).unwrap_or_else(|e| panic!("bad type in {rr:?}: {e}"));
    let rdata = RData::try_from_str(rtype, &rdata_str)
        .unwrap_or_else(|e| panic!("bad rdata in {rr:?}: {e}"));
    Record::from_rdata(owner, ttl, rdata)
}

impl Zone {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a record, parsed from presentation form, e.g. "a.test. 300 IN A 192.0.2.1".
    /// Any type hickory can parse from text works (A, AAAA, CNAME, MX, TXT, NS, SOA, PTR, SRV, CAA, ...).
    /// Panics on bad input (test code).
    pub fn record(mut self, rr: &str) -> Self {
        self.records.push(parse_record(rr));
        self
    }

    /// Adds a record of a type hickory cannot parse from text (e.g. RRSIG without its dnssec
    /// feature): `rdata` is sent as is, as RFC 3597 unknown-type data.
    pub fn opaque(mut self, owner: &str, ttl: u32, rtype: RecordType, rdata: &[u8]) -> Self {
        let data = RData::Unknown {
            code: rtype,
            rdata: hickory_proto::rr::rdata::NULL::with(rdata.to_vec()),
        };
        self.records
            .push(Record::from_rdata(name(owner), ttl, data));
        self
    }

    /// Adds several records, one per non-empty line (lines starting with ';' are comments).
    pub fn records(mut self, text: &str) -> Self {
        for line in text.lines() {
            let line = line.trim();
            if !line.is_empty() && !line.starts_with(';') {
                self = self.record(line);
            }
        }
        self
    }

    /// Makes `name` answer with this rcode (e.g. ResponseCode::ServFail, Refused) instead of data.
    pub fn rcode(mut self, n: &str, rcode: ResponseCode) -> Self {
        self.rcodes.push((name(n), rcode));
        self
    }

    /// Delays answers for `name` (used to force out-of-order answers on one DoT connection).
    pub fn delay(mut self, n: &str, d: Duration) -> Self {
        self.delays.push((name(n), d));
        self
    }

    /// Answers every query for `name` (whatever its type) with `n` TXT records, each one
    /// distinct character-string of BIG_TXT_LEN (200) bytes, TTL 300: about 213 bytes per record
    /// on the wire, so n = 3 exceeds 512 bytes and n = 6 exceeds 1232.
    pub fn big_txt(mut self, n: &str, count: usize) -> Self {
        self.big_txt.push((name(n), count));
        self
    }

    /// The delay configured for this name (case-insensitive), if any.
    pub fn delay_for(&self, n: &Name) -> Option<Duration> {
        self.delays.iter().find(|(k, _)| k == n).map(|(_, d)| *d)
    }

    /// The delay for a query message's first question, if any.
    pub fn delay_for_query(&self, query: &Message) -> Option<Duration> {
        query.queries.first().and_then(|q| self.delay_for(q.name()))
    }

    /// All records in the zone, in the order they were added.
    pub fn all_records(&self) -> &[Record] {
        &self.records
    }

    fn soa_for(&self, n: &Name) -> Option<&Record> {
        self.records
            .iter()
            .find(|r| r.record_type() == RecordType::SOA && r.name.zone_of(n))
    }

    /// A name "exists" if it owns a record or is an empty non-terminal above one.
    fn name_exists(&self, n: &Name) -> bool {
        self.records.iter().any(|r| n.zone_of(&r.name))
            || self.big_txt.iter().any(|(k, _)| n.zone_of(k))
    }

    fn records_at<'a>(&'a self, n: &'a Name) -> impl Iterator<Item = &'a Record> + 'a {
        self.records.iter().filter(move |r| &r.name == n)
    }

    /// Builds the response to a query message, as an authoritative server would (see module docs
    /// of the brief): question echoed as asked, same ID, RD/CD copied, RA/AA/QR set; CNAMEs followed
    /// inside the zone; NODATA / NXDOMAIN carry the zone's SOA in authority; EDNS echoed with
    /// payload 1232 and the DO bit.
    pub fn answer(&self, query: &Message) -> Message {
        let mut resp = Message::new(
            query.metadata.id,
            MessageType::Response,
            query.metadata.op_code,
        );
        resp.metadata.recursion_desired = query.metadata.recursion_desired;
        resp.metadata.checking_disabled = query.metadata.checking_disabled;
        resp.metadata.recursion_available = true;
        resp.queries = query.queries.clone();
        if let Some(q_edns) = &query.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(RESPONSE_EDNS_PAYLOAD);
            edns.set_dnssec_ok(q_edns.flags().dnssec_ok);
            resp.edns = Some(edns);
        }

        let Some(q) = query.queries.first() else {
            resp.metadata.response_code = ResponseCode::FormErr;
            return resp;
        };
        let qname = q.name().clone();
        let qtype = q.query_type();

        if let Some((_, rc)) = self.rcodes.iter().find(|(k, _)| k == &qname) {
            resp.metadata.response_code = *rc;
            return resp;
        }
        resp.metadata.authoritative = true;

        if let Some((owner, count)) = self.big_txt.iter().find(|(k, _)| k == &qname) {
            for i in 0..*count {
                let prefix = format!("big-{i:04}-");
                let mut s = prefix.clone();
                s.extend(std::iter::repeat_n('x', BIG_TXT_LEN - prefix.len()));
                let mut owner = owner.clone();
                owner.set_fqdn(true);
                resp.answers.push(Record::from_rdata(
                    owner,
                    300,
                    RData::TXT(TXT::new(vec![s])),
                ));
            }
            return resp;
        }

        let mut current = qname.clone();
        for _hop in 0..=MAX_CNAME_HOPS {
            let matching: Vec<Record> = self
                .records_at(&current)
                .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
                .cloned()
                .collect();
            if !matching.is_empty() {
                resp.answers.extend(matching);
                // With DO set, the signatures at the name come along (RFC 4035 §3.1.1).
                let dnssec_ok = query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
                if dnssec_ok && qtype != RecordType::RRSIG {
                    resp.answers.extend(
                        self.records_at(&current)
                            .filter(|r| r.record_type() == RecordType::RRSIG)
                            .cloned(),
                    );
                }
                return resp;
            }
            let cname = self
                .records_at(&current)
                .find(|r| r.record_type() == RecordType::CNAME)
                .cloned();
            if let Some(cname) = cname {
                let RData::CNAME(target) = &cname.data else {
                    unreachable!()
                };
                let target = target.0.clone();
                resp.answers.push(cname);
                // Target outside every zone we are authoritative for: stop, NOERROR.
                if self.soa_for(&target).is_none() && !self.name_exists(&target) {
                    return resp;
                }
                current = target;
                continue;
            }
            break;
        }

        if !self.name_exists(&current) {
            resp.metadata.response_code = ResponseCode::NXDomain;
        }
        if let Some(soa) = self.soa_for(&current) {
            resp.authorities.push(soa.clone());
        }
        resp
    }

    /// Like `answer` but on wire bytes. Unparseable input yields FORMERR with the input's ID.
    pub fn answer_wire(&self, query: &[u8]) -> Vec<u8> {
        match Message::from_vec(query) {
            Ok(q) => self.answer(&q).to_vec().expect("encode response"),
            Err(_) => formerr_wire(query),
        }
    }
}

/// A FORMERR response header (no sections) carrying the ID of `query` (0 if too short).
pub fn formerr_wire(query: &[u8]) -> Vec<u8> {
    let id = if query.len() >= 2 {
        u16::from_be_bytes([query[0], query[1]])
    } else {
        0
    };
    let mut m = Message::new(id, MessageType::Response, hickory_proto::op::OpCode::Query);
    m.metadata.response_code = ResponseCode::FormErr;
    m.to_vec().expect("encode formerr")
}
