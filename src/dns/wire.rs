//! A small reader for DNS wire format (RFC 1035 §4.1) that records *where* things are.
//!
//! hickory-proto parses a message into owned records and re-encodes it with its own name
//! compression; that is the right tool for building and printing messages, but a forwarding
//! proxy wants to pass an upstream's answer through byte for byte and only patch a few fields
//! (ID, question case, TTLs). This module walks a message once, validates its framing
//! (every name and record inside the buffer, compression pointers pointing backwards, names at
//! most 255 octets) and returns the offsets needed for that patching. It never allocates more
//! than one `Vec` of record descriptors and never panics on any input.

use std::ops::Range;

use thiserror::Error;

/// Length of the fixed DNS header (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;

/// Record type of the EDNS(0) OPT pseudo-record (RFC 6891 §6.1.1).
pub const TYPE_OPT: u16 = 41;
/// Record type SOA, needed for negative-caching TTLs (RFC 2308 §5).
pub const TYPE_SOA: u16 = 6;
/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type AAAA.
pub const TYPE_AAAA: u16 = 28;
/// Record type CNAME.
pub const TYPE_CNAME: u16 = 5;
/// Zone-transfer types, which a stub proxy refuses.
pub const TYPE_IXFR: u16 = 251;
/// See [`TYPE_IXFR`].
pub const TYPE_AXFR: u16 = 252;
/// QTYPE ANY ("*", RFC 1035 §3.2.3), answered minimally (RFC 8482).
pub const TYPE_ANY: u16 = 255;

/// Why a buffer is not a well-formed DNS message.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Fewer than 12 bytes: not even a header.
    #[error("message shorter than a DNS header")]
    ShortHeader,
    /// The buffer ends inside a name, a question or a record.
    #[error("message ends inside {0}")]
    Truncated(&'static str),
    /// A label length byte uses the reserved 0b01/0b10 prefixes (RFC 6891 §5 retired them).
    #[error("unsupported label type {0:#04x}")]
    BadLabel(u8),
    /// A compression pointer that does not point strictly backwards, or one in a question.
    #[error("invalid compression pointer")]
    BadPointer,
    /// A name longer than 255 octets (RFC 1035 §2.3.4).
    #[error("name longer than 255 octets")]
    NameTooLong,
    /// Bytes left over after the last counted record.
    #[error("{0} trailing bytes after the last record")]
    TrailingBytes(usize),
    /// More than one OPT record (RFC 6891 §6.1.1 requires FORMERR).
    #[error("more than one OPT record")]
    DuplicateOpt,
    /// An OPT record outside the additional section, or with an owner other than the root
    /// (RFC 6891 §6.1.1, §6.1.2).
    #[error("misplaced OPT record")]
    MisplacedOpt,
}

/// The section a record was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Answer section.
    Answer,
    /// Authority section.
    Authority,
    /// Additional section.
    Additional,
}

/// The (single) question of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Where the uncompressed QNAME sits (always starts at [`HEADER_LEN`]).
    pub name: Range<usize>,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// Offset just past the question.
    pub end: usize,
}

/// Where one resource record sits, and the fields the proxy reads or patches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Which section holds it.
    pub section: Section,
    /// Offset of the owner name; the record spans `start..end`.
    pub start: usize,
    /// Offset just past the RDATA.
    pub end: usize,
    /// TYPE.
    pub rtype: u16,
    /// CLASS (for OPT: the requestor's UDP payload size).
    pub class: u16,
    /// Offset of the 32-bit TTL field (for OPT: extended RCODE, version and flags).
    pub ttl_offset: usize,
    /// TTL as received.
    pub ttl: u32,
    /// Where the RDATA sits.
    pub rdata: Range<usize>,
}

/// EDNS(0) information carried by an OPT record (RFC 6891 §6.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size.
    pub udp_payload: u16,
    /// Upper 8 bits of the extended RCODE.
    pub ext_rcode: u8,
    /// EDNS version.
    pub version: u8,
    /// DNSSEC OK bit (RFC 3225).
    pub dnssec_ok: bool,
}

/// A message walked once: its header fields, question and record positions.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The question, if QDCOUNT is 1. (QDCOUNT 0 or >1 is reported via `qdcount`.)
    pub question: Option<Question>,
    /// QDCOUNT as found in the header.
    pub qdcount: u16,
    /// Every record of the answer, authority and additional sections, in order.
    pub records: Vec<Record>,
    /// Index into `records` of the OPT record, if any.
    pub opt: Option<usize>,
}

impl Parsed {
    /// EDNS fields of the OPT record, if the message has one.
    pub fn edns(&self) -> Option<Edns> {
        let opt = &self.records[self.opt?];
        Some(Edns {
            udp_payload: opt.class,
            ext_rcode: (opt.ttl >> 24) as u8,
            version: (opt.ttl >> 16) as u8,
            dnssec_ok: opt.ttl & 0x8000 != 0,
        })
    }

    /// Records of one section.
    pub fn section(&self, section: Section) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(move |r| r.section == section)
    }
}

/// Header accessors on a raw buffer that is at least [`HEADER_LEN`] long.
#[derive(Clone, Copy)]
pub struct Header<'a>(&'a [u8; HEADER_LEN]);

impl<'a> Header<'a> {
    /// The header of `wire`, or `None` if it is shorter than a header.
    pub fn of(wire: &'a [u8]) -> Option<Self> {
        wire.get(..HEADER_LEN)?.try_into().ok().map(Header)
    }
    /// Message ID.
    pub fn id(self) -> u16 {
        u16::from_be_bytes([self.0[0], self.0[1]])
    }
    /// QR: this is a response.
    pub fn is_response(self) -> bool {
        self.0[2] & 0x80 != 0
    }
    /// OPCODE.
    pub fn opcode(self) -> u8 {
        (self.0[2] >> 3) & 0x0f
    }
    /// TC: truncated.
    pub fn truncated(self) -> bool {
        self.0[2] & 0x02 != 0
    }
    /// RD: recursion desired.
    pub fn recursion_desired(self) -> bool {
        self.0[2] & 0x01 != 0
    }
    /// AD: authentic data (RFC 4035 §3.2.3; RFC 6840 §5.7 lets a query set it).
    pub fn authentic_data(self) -> bool {
        self.0[3] & 0x20 != 0
    }
    /// CD: checking disabled.
    pub fn checking_disabled(self) -> bool {
        self.0[3] & 0x10 != 0
    }
    /// The 4-bit RCODE of the header.
    pub fn rcode(self) -> u8 {
        self.0[3] & 0x0f
    }
    fn count(self, at: usize) -> u16 {
        u16::from_be_bytes([self.0[at], self.0[at + 1]])
    }
    /// QDCOUNT.
    pub fn qdcount(self) -> u16 {
        self.count(4)
    }
    /// ANCOUNT.
    pub fn ancount(self) -> u16 {
        self.count(6)
    }
    /// NSCOUNT.
    pub fn nscount(self) -> u16 {
        self.count(8)
    }
    /// ARCOUNT.
    pub fn arcount(self) -> u16 {
        self.count(10)
    }
}

/// The question of a message holding exactly one, `None` for any other count, read without
/// walking the records: for a message this program built itself, such as the query it sent
/// upstream, whose records need no checking.
pub fn question(wire: &[u8]) -> Result<Option<Question>, WireError> {
    let header = Header::of(wire).ok_or(WireError::ShortHeader)?;
    if header.qdcount() != 1 {
        return Ok(None);
    }
    let fields = Fields {
        question: None,
        records: &[],
    };
    read_question(wire, HEADER_LEN, &fields).map(Some)
}

/// Walks a whole message. Trailing bytes are an error, as is a second OPT record.
pub fn parse(wire: &[u8]) -> Result<Parsed, WireError> {
    let header = Header::of(wire).ok_or(WireError::ShortHeader)?;
    let qdcount = header.qdcount();
    let mut pos = HEADER_LEN;
    let mut question = None;
    for _ in 0..qdcount {
        let fields = Fields {
            question: question.as_ref(),
            records: &[],
        };
        let q = read_question(wire, pos, &fields)?;
        pos = q.end;
        if question.is_none() {
            question = Some(q);
        }
    }
    if qdcount != 1 {
        question = None;
    }
    let counts = [
        (Section::Answer, header.ancount()),
        (Section::Authority, header.nscount()),
        (Section::Additional, header.arcount()),
    ];
    // Each record needs at least 11 bytes; cap the allocation by what the buffer can hold.
    let claimed: usize = counts.iter().map(|&(_, n)| n as usize).sum();
    let mut records = Vec::with_capacity(claimed.min(wire.len() / 11));
    let mut opt = None;
    for (section, count) in counts {
        for _ in 0..count {
            let fields = Fields {
                question: question.as_ref(),
                records: &records,
            };
            let record = read_record(wire, pos, section, &fields)?;
            pos = record.end;
            if record.rtype == TYPE_OPT {
                if opt.is_some() {
                    return Err(WireError::DuplicateOpt);
                }
                if section != Section::Additional || wire[record.start] != 0 {
                    return Err(WireError::MisplacedOpt);
                }
                opt = Some(records.len());
            }
            records.push(record);
        }
    }
    if pos != wire.len() {
        return Err(WireError::TrailingBytes(wire.len() - pos));
    }
    Ok(Parsed {
        question,
        qdcount,
        records,
        opt,
    })
}

fn read_question(wire: &[u8], start: usize, fields: &Fields) -> Result<Question, WireError> {
    let name_end = read_name(wire, start, start == HEADER_LEN, fields)?;
    let fixed = wire
        .get(name_end..name_end + 4)
        .ok_or(WireError::Truncated("a question"))?;
    Ok(Question {
        name: start..name_end,
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        end: name_end + 4,
    })
}

fn read_record(
    wire: &[u8],
    start: usize,
    section: Section,
    fields: &Fields,
) -> Result<Record, WireError> {
    let name_end = read_name(wire, start, false, fields)?;
    let fixed = wire
        .get(name_end..name_end + 10)
        .ok_or(WireError::Truncated("a record header"))?;
    let rdlength = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
    let rdata = name_end + 10..name_end + 10 + rdlength;
    if rdata.end > wire.len() {
        return Err(WireError::Truncated("record data"));
    }
    Ok(Record {
        section,
        start,
        end: rdata.end,
        rtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        class: u16::from_be_bytes([fixed[2], fixed[3]]),
        ttl_offset: name_end + 4,
        ttl: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        rdata,
    })
}

/// Most compression pointers followed in one name. A legitimate name has at most one pointer
/// per label (127); the cap keeps a crafted chain of pointers from costing unbounded work.
const MAX_POINTER_HOPS: usize = 128;

/// The fixed-size fields read so far: the header, the question's type and class, and each
/// record's type, class, TTL and length. No real name lies in them, and a proxy rewrites some
/// of them (the ID and flags, every TTL) when it passes a message on, so a compression
/// pointer leading into one is refused: the name it spells would change under the rewrite
/// and the message sent on would no longer parse (found by fuzzing, `fuzz/`).
struct Fields<'a> {
    /// The first question, whose last four bytes are its type and class.
    question: Option<&'a Question>,
    /// Records read so far, in message order.
    records: &'a [Record],
}

impl Fields<'_> {
    /// True if the bytes `at` overlap one of the fixed fields.
    fn overlap(&self, at: Range<usize>) -> bool {
        let overlaps = |field: Range<usize>| field.start < at.end && at.start < field.end;
        if at.start < HEADER_LEN || self.question.is_some_and(|q| overlaps(q.end - 4..q.end)) {
            return true;
        }
        // A record's fixed part is the 10 bytes from its TYPE, 4 before its TTL.
        let fixed = |r: &Record| r.ttl_offset - 4..r.ttl_offset + 6;
        let next = self.records.partition_point(|r| fixed(r).end <= at.start);
        self.records.get(next).is_some_and(|r| overlaps(fixed(r)))
    }
}

/// Skips a (possibly compressed) name starting at `start`; returns the offset after it.
///
/// Pointers must point strictly before the pointer itself, which rules out loops, and never
/// into the header; the expanded name must fit in 255 octets and follow at most
/// [`MAX_POINTER_HOPS`] pointers. With `uncompressed`, any pointer is an error (the first
/// question name has nothing before it to point to).
pub fn skip_name(wire: &[u8], start: usize, uncompressed: bool) -> Result<usize, WireError> {
    let fields = Fields {
        question: None,
        records: &[],
    };
    read_name(wire, start, uncompressed, &fields)
}

/// [`skip_name`], also refusing pointers that lead into the `fields` read so far.
fn read_name(
    wire: &[u8],
    start: usize,
    uncompressed: bool,
    fields: &Fields,
) -> Result<usize, WireError> {
    let mut hops = 0;
    let mut pos = start;
    let mut end = None; // offset after the name at its original position
    let mut length = 1usize; // the root label
    loop {
        let len = *wire.get(pos).ok_or(WireError::Truncated("a name"))?;
        if end.is_some() {
            // Reached through a pointer: the label (or pointer) must not sit in a fixed field.
            let size = if len & 0xc0 == 0xc0 {
                2
            } else {
                1 + usize::from(len & 0x3f)
            };
            if fields.overlap(pos..pos + size) {
                return Err(WireError::BadPointer);
            }
        }
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    return Ok(end.unwrap_or(pos + 1));
                }
                length += 1 + len as usize;
                if length > 255 {
                    return Err(WireError::NameTooLong);
                }
                pos += 1 + len as usize;
            }
            0xc0 => {
                if uncompressed {
                    return Err(WireError::BadPointer);
                }
                let low = *wire.get(pos + 1).ok_or(WireError::Truncated("a name"))?;
                let target = (((len & 0x3f) as usize) << 8) | low as usize;
                hops += 1;
                if target >= pos || hops > MAX_POINTER_HOPS {
                    return Err(WireError::BadPointer);
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            other => return Err(WireError::BadLabel(other)),
        }
    }
}

/// Compares two uncompressed wire-format names ASCII-case-insensitively.
///
/// Label length octets are below 64, so lower-casing the whole slice never changes them.
pub fn names_equal(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Renders an uncompressed wire-format name in presentation form ("a.example."), for logs.
pub fn name_to_string(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pos = 0;
    while let Some(&len) = name.get(pos) {
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        let label = name.get(pos + 1..pos + 1 + len as usize).unwrap_or(&[]);
        for &b in label {
            match b {
                b'.' | b'\\' => {
                    out.push('\\');
                    out.push(b as char);
                }
                0x21..=0x7e => out.push(b as char),
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out.push('.');
        pos += 1 + len as usize;
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// Encodes a presentation-form name ("example.com", trailing dot optional) as uncompressed wire format.
/// Returns `None` for an empty label or a label/name over the RFC 1035 limits. Escapes are not supported.
pub fn name_from_str(name: &str) -> Option<Vec<u8>> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(trimmed.len() + 2);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    (out.len() <= 255).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut wire = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        wire.extend(name_from_str(name).unwrap());
        wire.extend(qtype.to_be_bytes());
        wire.extend(1u16.to_be_bytes());
        wire
    }

    #[test]
    fn parses_a_simple_query() {
        let wire = query("Example.COM", TYPE_A);
        let parsed = parse(&wire).unwrap();
        let q = parsed.question.unwrap();
        assert_eq!(q.name, 12..25);
        assert_eq!((q.qtype, q.qclass), (TYPE_A, 1));
        assert!(parsed.records.is_empty());
        assert_eq!(name_to_string(&wire[q.name]), "Example.COM.");
    }

    #[test]
    fn reads_the_question_alone_as_parse_does() {
        let wire = query("Example.COM", TYPE_A);
        assert_eq!(question(&wire).unwrap(), parse(&wire).unwrap().question);
        let mut none = wire.clone();
        none[5] = 0;
        assert_eq!(question(&none[..12]).unwrap(), None, "QDCOUNT 0");
        none[5] = 2;
        assert_eq!(question(&none).unwrap(), None, "QDCOUNT 2");
        assert!(question(&wire[..wire.len() - 1]).is_err(), "cut short");
        assert_eq!(question(&wire[..5]), Err(WireError::ShortHeader));
    }

    #[test]
    fn follows_backward_pointers_and_records_ttl_offsets() {
        let mut wire = query("a.test", TYPE_A);
        wire[7] = 1; // ANCOUNT = 1
        wire.extend([0xc0, 12]); // pointer to the question name
        wire.extend(TYPE_A.to_be_bytes());
        wire.extend(1u16.to_be_bytes());
        wire.extend(300u32.to_be_bytes());
        wire.extend(4u16.to_be_bytes());
        wire.extend([192, 0, 2, 1]);
        let parsed = parse(&wire).unwrap();
        let r = &parsed.records[0];
        assert_eq!(r.ttl, 300);
        assert_eq!(&wire[r.ttl_offset..r.ttl_offset + 4], &300u32.to_be_bytes());
        assert_eq!(&wire[r.rdata.clone()], &[192, 0, 2, 1]);
    }

    #[test]
    fn rejects_forward_and_self_pointers() {
        let mut wire = query("a.test", TYPE_A);
        wire[7] = 1;
        let at = wire.len();
        wire.extend([0xc0, at as u8]); // points at itself
        wire.extend([0; 10]);
        assert_eq!(parse(&wire).unwrap_err(), WireError::BadPointer);
    }

    /// Found by fuzzing (`fuzz/`, target `answer`): a record owner pointing into the header
    /// spelled a name out of the ID and flags, so the answer stopped parsing once dnsward
    /// wrote the client's ID into it.
    #[test]
    fn pointers_into_the_header_are_refused() {
        let mut wire = query("a.test", TYPE_A);
        wire[2] = 0x81;
        wire[3] = 0x00;
        wire[0] = 0x00;
        wire[1] = 0x01; // at offset 1: a one-octet label 0x81, then 0x00 ends the name
        wire[7] = 1;
        wire.extend([0xc0, 1]);
        wire.extend([0, 1, 0, 1, 0, 0, 0, 60, 0, 0]);
        assert_eq!(parse(&wire).unwrap_err(), WireError::BadPointer);
        assert_eq!(
            skip_name(&wire, wire.len() - 12, false),
            Err(WireError::BadPointer)
        );
    }

    /// As above, for the TTL field of an earlier record, which dnsward rewrites too.
    #[test]
    fn pointers_into_fixed_record_fields_are_refused() {
        let mut wire = query("a.test", TYPE_A);
        wire[7] = 2;
        let first = wire.len();
        // A record with TTL 256: from the TTL's third byte, 01 00 is a one-octet label and
        // the RDLENGTH's first byte (00) ends the name, so a pointer there spells a name.
        wire.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0]);
        let ttl_third_byte = first + 2 + 4 + 2;
        assert_eq!(wire[ttl_third_byte], 1);
        let mut ok = wire.clone();
        ok[7] = 1;
        assert!(parse(&ok).is_ok());
        wire.extend([0xc0, ttl_third_byte as u8]);
        wire.extend([0, 1, 0, 1, 0, 0, 0, 60, 0, 0]);
        assert_eq!(parse(&wire).unwrap_err(), WireError::BadPointer);
        // The same name written out in full is fine.
        let at = wire.len() - 12;
        wire.truncate(at);
        wire.extend([1, 0, 0]);
        wire.extend([0, 1, 0, 1, 0, 0, 0, 60, 0, 0]);
        assert!(parse(&wire).is_ok());
    }

    #[test]
    fn rejects_pointer_in_first_question() {
        let mut wire = vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        wire.extend([0xc0, 0, 0, 1, 0, 1]);
        assert_eq!(parse(&wire).unwrap_err(), WireError::BadPointer);
    }

    #[test]
    fn rejects_truncation_trailing_bytes_and_long_names() {
        let wire = query("a.test", TYPE_A);
        for cut in 0..wire.len() {
            assert!(parse(&wire[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = wire.clone();
        long.push(0);
        assert_eq!(parse(&long).unwrap_err(), WireError::TrailingBytes(1));
        let label = "a".repeat(63);
        let name = [label.as_str(); 4].join(".");
        assert!(name_from_str(&name).is_none());
    }

    #[test]
    fn duplicate_opt_is_an_error() {
        let mut wire = query("a.test", TYPE_A);
        wire[11] = 2;
        for _ in 0..2 {
            wire.extend([0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        }
        assert_eq!(parse(&wire).unwrap_err(), WireError::DuplicateOpt);
    }

    #[test]
    fn opt_outside_additional_or_with_a_name_is_an_error() {
        // Regression (review #1): an OPT in the answer section with ARCOUNT 0 made rendering
        // for a non-EDNS client compute ARCOUNT - 1 from 0.
        let mut wire = query("a.test", TYPE_A);
        wire[2] |= 0x80;
        wire[7] = 1;
        wire.extend([0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse(&wire).unwrap_err(), WireError::MisplacedOpt);
        // Regression (review #7): an OPT whose owner is a pointer, not the root.
        let mut wire = query("a.test", TYPE_A);
        wire[11] = 1;
        wire.extend([0xc0, 12, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse(&wire).unwrap_err(), WireError::MisplacedOpt);
    }

    #[test]
    fn long_pointer_chains_are_refused() {
        // Regression (review #3): each hop is cheap but a chain of thousands is not.
        let mut wire = query("a.test", TYPE_A);
        let first = wire.len();
        wire[7] = 1; // one answer whose RDATA is a chain of pointers, each to the one before
        wire.extend([0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 0]);
        let hops = 300usize;
        wire.extend(((hops * 2) as u16).to_be_bytes());
        let chain_start = wire.len();
        wire.extend([0xc0, 12]);
        for i in 1..hops {
            let target = chain_start + (i - 1) * 2;
            wire.extend([0xc0 | (target >> 8) as u8, target as u8]);
        }
        assert!(parse(&wire).is_ok(), "RDATA is not interpreted");
        let last = chain_start + (hops - 1) * 2;
        assert_eq!(skip_name(&wire, last, false), Err(WireError::BadPointer));
        assert!(skip_name(&wire, chain_start + 100, false).is_ok());
        assert!(first < chain_start);
    }

    #[test]
    fn reads_edns_fields() {
        let mut wire = query("a.test", TYPE_A);
        wire[11] = 1;
        wire.extend([0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
        let edns = parse(&wire).unwrap().edns().unwrap();
        assert_eq!(
            edns,
            Edns {
                udp_payload: 1232,
                ext_rcode: 0,
                version: 0,
                dnssec_ok: true
            }
        );
    }

    #[test]
    fn agrees_with_hickory_on_a_real_response() {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        use hickory_proto::rr::{Name, RData, Record, RecordType, rdata};
        let name = Name::from_ascii("www.Example.test.").unwrap();
        let mut msg = Message::new(7, MessageType::Response, OpCode::Query);
        msg.add_query(Query::query(name.clone(), RecordType::A));
        let target = Name::from_ascii("a.example.test.").unwrap();
        msg.add_answer(Record::from_rdata(
            name.clone(),
            60,
            RData::CNAME(rdata::CNAME(target.clone())),
        ));
        msg.add_answer(Record::from_rdata(
            target,
            30,
            RData::A(rdata::A::new(192, 0, 2, 7)),
        ));
        let wire = msg.to_vec().unwrap();
        let parsed = parse(&wire).unwrap();
        assert_eq!(parsed.records.len(), 2);
        let ttls: Vec<u32> = parsed.records.iter().map(|r| r.ttl).collect();
        assert_eq!(ttls, [60, 30]);
        assert_eq!(
            name_to_string(&wire[parsed.question.unwrap().name]),
            "www.Example.test."
        );
    }
}
