//! Static records in presentation form (RFC 1035 §5.1), one per string:
//! `owner [TTL] [IN] TYPE RDATA...`, TTL and class in either order. Names are absolute with
//! or without a trailing dot (there is no `$ORIGIN`). Supported types: A, AAAA, NS, CNAME,
//! PTR, MX, TXT, SRV, and any type in the RFC 3597 §5 generic form (`TYPE65 \# 3 0a0b0c`).

use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use super::table::{Rr, TYPE_PTR, Table, key};
use crate::dns::wire;

/// Largest TTL: RFC 2181 §8 limits TTLs to 31 bits.
const MAX_TTL: u32 = i32::MAX as u32;

/// What is wrong with a static record.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecordProblem {
    /// Nothing but whitespace.
    #[error("empty record")]
    Empty,
    /// A `"` without its closing `"`.
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    /// A `\DDD` escape that is not three digits up to 255 (RFC 1035 §5.1).
    #[error("bad \\DDD escape")]
    BadEscape,
    /// A field that should be a domain name is not one (empty label, label over 63 octets,
    /// name over 255 octets: RFC 1035 §2.3.4).
    #[error("{0:?} is not a valid domain name")]
    BadName(String),
    /// A TTL above 2147483647 (RFC 2181 §8).
    #[error("TTL {0} is larger than 2147483647")]
    BadTtl(String),
    /// A class other than IN: local data lives in the Internet class only.
    #[error("class {0} is not supported (only IN)")]
    UnsupportedClass(String),
    /// No type after the owner, TTL and class.
    #[error("missing record type")]
    MissingType,
    /// A type name dnsward does not know, or a meta type that cannot be stored (OPT, ANY,
    /// AXFR, ...: RFC 6895 §3.1).
    #[error("unknown or unsupported record type {0:?}")]
    UnknownType(String),
    /// RDATA that does not fit its type.
    #[error("{rtype} needs {expected}, found {found:?}")]
    BadRdata {
        /// The type as written.
        rtype: String,
        /// What the type's RDATA must look like.
        expected: &'static str,
        /// The RDATA as written.
        found: String,
    },
    /// A CNAME at a name that has other records, or records at a name that has a CNAME.
    #[error("a CNAME cannot share its name with other records (RFC 2181 §10.1)")]
    CnameAndOtherData,
}

/// One whitespace-separated field of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    /// Written without quotes.
    Plain(String),
    /// Written as a `"quoted string"`, escapes resolved (only meaningful in TXT).
    Quoted(Vec<u8>),
}

impl Field {
    /// The text of a field written without quotes.
    fn plain(&self) -> Option<&str> {
        match self {
            Field::Plain(text) => Some(text),
            Field::Quoted(_) => None,
        }
    }

    /// The octets of the field, whichever way it was written.
    fn octets(&self) -> &[u8] {
        match self {
            Field::Plain(text) => text.as_bytes(),
            Field::Quoted(bytes) => bytes,
        }
    }
}

/// Parses one static record; the TTL defaults to `default_ttl`. Returns the owner
/// (uncompressed wire format, case as written) and the record.
pub(crate) fn parse_record(text: &str, default_ttl: u32) -> Result<(Vec<u8>, Rr), RecordProblem> {
    let fields = fields(text)?;
    let (owner, rest) = fields.split_first().ok_or(RecordProblem::Empty)?;
    let owner = name(owner.plain().unwrap_or("\""))?;
    let (ttl, type_at) = ttl_and_class(rest, default_ttl)?;
    let type_name = rest[type_at].plain().unwrap_or("\"");
    let rtype = record_type(type_name)?;
    let rdata = rdata(rtype, &rest[type_at + 1..])
        .map_err(|expected| bad_rdata(type_name, expected, &rest[type_at + 1..]))?;
    let rdata = rdata.into_boxed_slice();
    Ok((owner, Rr { rtype, ttl, rdata }))
}

/// Checks that adding `rr` at `owner` keeps a CNAME alone at its name (RFC 1034 §3.6.2,
/// RFC 2181 §10.1): no CNAME next to other data, and at most one CNAME.
pub(crate) fn check_cname_rule(table: &Table, owner: &[u8], rr: &Rr) -> Result<(), RecordProblem> {
    let Some(existing) = table.get(&key(owner)) else {
        return Ok(());
    };
    let clash = if rr.is_cname() {
        existing.iter().any(|r| r != rr)
    } else {
        existing.iter().any(Rr::is_cname)
    };
    if clash {
        return Err(RecordProblem::CnameAndOtherData);
    }
    Ok(())
}

/// Splits a record into fields at whitespace, keeping `"quoted strings"` whole.
fn fields(text: &str) -> Result<Vec<Field>, RecordProblem> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (field, after) = match rest.strip_prefix('"') {
            Some(quoted) => quoted_field(quoted)?,
            None => plain_field(rest),
        };
        out.push(field);
        rest = after.trim_start();
    }
    Ok(out)
}

/// A field running to the next whitespace or quote.
fn plain_field(text: &str) -> (Field, &str) {
    let end = text
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(text.len());
    (Field::Plain(text[..end].to_string()), &text[end..])
}

/// A quoted string (the opening quote already consumed) with `\X` and `\DDD` escapes
/// resolved (RFC 1035 §5.1); returns it and the text after the closing quote.
fn quoted_field(text: &str) -> Result<(Field, &str), RecordProblem> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => return Ok((Field::Quoted(out), &text[i + 1..])),
            b'\\' => {
                let (octet, used) = escape(&bytes[i + 1..])?;
                out.push(octet);
                i += 1 + used;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Err(RecordProblem::UnterminatedQuote)
}

/// The octet an escape stands for (`after` follows the backslash) and how many bytes of
/// `after` it used.
fn escape(after: &[u8]) -> Result<(u8, usize), RecordProblem> {
    match after {
        [d1, d2, d3, ..] if d1.is_ascii_digit() => {
            if !(d2.is_ascii_digit() && d3.is_ascii_digit()) {
                return Err(RecordProblem::BadEscape);
            }
            let value = [d1, d2, d3]
                .iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(**d - b'0'));
            let octet = u8::try_from(value).map_err(|_| RecordProblem::BadEscape)?;
            Ok((octet, 3))
        }
        [d, ..] if d.is_ascii_digit() => Err(RecordProblem::BadEscape),
        // `\X` stands for X (the first byte of a multi-byte character; the rest follow as is).
        [b, ..] => Ok((*b, 1)),
        [] => Err(RecordProblem::UnterminatedQuote),
    }
}

/// Reads the optional TTL and class before the type; returns the TTL and the index of the
/// type field in `fields`.
fn ttl_and_class(fields: &[Field], default_ttl: u32) -> Result<(u32, usize), RecordProblem> {
    let mut ttl = None;
    let mut class = false;
    for (i, field) in fields.iter().enumerate().take(3) {
        let text = field.plain().unwrap_or("\"");
        if ttl.is_none() && !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            ttl = Some(parse_ttl(text)?);
        } else if !class && is_class(text) {
            if !text.eq_ignore_ascii_case("IN") {
                return Err(RecordProblem::UnsupportedClass(text.to_string()));
            }
            class = true;
        } else {
            return Ok((ttl.unwrap_or(default_ttl), i));
        }
    }
    Err(RecordProblem::MissingType)
}

/// A TTL in seconds, at most 2^31 - 1 (RFC 2181 §8).
fn parse_ttl(text: &str) -> Result<u32, RecordProblem> {
    text.parse::<u32>()
        .ok()
        .filter(|&ttl| ttl <= MAX_TTL)
        .ok_or_else(|| RecordProblem::BadTtl(text.to_string()))
}

/// True for a class mnemonic (RFC 1035 §3.2.4, RFC 3597 §5 `CLASSnn`).
fn is_class(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    matches!(upper.as_str(), "IN" | "CH" | "CS" | "HS" | "NONE" | "ANY")
        || upper
            .strip_prefix("CLASS")
            .is_some_and(|n| n.parse::<u16>().is_ok())
}

/// The numeric type of a type mnemonic or an RFC 3597 §5 `TYPEnn` name. Meta and query
/// types (0, OPT, 128-255: RFC 6895 §3.1) are refused: they cannot be data.
fn record_type(text: &str) -> Result<u16, RecordProblem> {
    let upper = text.to_ascii_uppercase();
    let code = match upper.as_str() {
        "A" => wire::TYPE_A,
        "NS" => 2,
        "CNAME" => wire::TYPE_CNAME,
        "PTR" => TYPE_PTR,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => wire::TYPE_AAAA,
        "SRV" => 33,
        other => other
            .strip_prefix("TYPE")
            .and_then(|n| n.parse::<u16>().ok())
            .unwrap_or(0),
    };
    if code == 0 || code == wire::TYPE_OPT || (128..=255).contains(&code) {
        return Err(RecordProblem::UnknownType(text.to_string()));
    }
    Ok(code)
}

/// A domain name in presentation form (no escapes; trailing dot optional, always absolute).
fn name(text: &str) -> Result<Vec<u8>, RecordProblem> {
    if text.is_empty() || text.contains('\\') {
        return Err(RecordProblem::BadName(text.to_string()));
    }
    wire::name_from_str(text).ok_or_else(|| RecordProblem::BadName(text.to_string()))
}

/// The RDATA of a record of type `rtype`, or what the RDATA should have looked like.
fn rdata(rtype: u16, fields: &[Field]) -> Result<Vec<u8>, &'static str> {
    let generic = fields.first().and_then(Field::plain) == Some("\\#");
    let rdata = if generic {
        generic_rdata(&fields[1..])?
    } else {
        typed_rdata(rtype, fields)?
    };
    if rdata.len() > usize::from(u16::MAX) {
        return Err("RDATA of at most 65535 octets");
    }
    Ok(rdata)
}

/// RDATA of the types dnsward reads in their own presentation format.
fn typed_rdata(rtype: u16, fields: &[Field]) -> Result<Vec<u8>, &'static str> {
    match rtype {
        wire::TYPE_A => ipv4(fields),
        wire::TYPE_AAAA => ipv6(fields),
        2 | wire::TYPE_CNAME | TYPE_PTR => one_name(fields),
        15 => mx(fields),
        16 => txt(fields),
        33 => srv(fields),
        _ => Err("generic RDATA `\\# length hex` (RFC 3597 §5)"),
    }
}

/// Exactly `N` unquoted fields.
fn plain<const N: usize>(fields: &[Field]) -> Option<[&str; N]> {
    let texts: Option<Vec<&str>> = fields.iter().map(Field::plain).collect();
    texts?.try_into().ok()
}

/// A: one IPv4 address (RFC 1035 §3.4.1).
fn ipv4(fields: &[Field]) -> Result<Vec<u8>, &'static str> {
    const EXPECTED: &str = "one IPv4 address";
    let [text] = plain(fields).ok_or(EXPECTED)?;
    let address: Ipv4Addr = text.parse().map_err(|_| EXPECTED)?;
    Ok(address.octets().to_vec())
}

/// AAAA: one IPv6 address (RFC 3596 §2.2).
fn ipv6(fields: &[Field]) -> Result<Vec<u8>, &'static str> {
    const EXPECTED: &str = "one IPv6 address";
    let [text] = plain(fields).ok_or(EXPECTED)?;
    let address: Ipv6Addr = text.parse().map_err(|_| EXPECTED)?;
    Ok(address.octets().to_vec())
}

/// NS, CNAME, PTR: one domain name (RFC 1035 §3.3), written uncompressed.
fn one_name(fields: &[Field]) -> Result<Vec<u8>, &'static str> {
    const EXPECTED: &str = "one domain name";
    let [text] = plain(fields).ok_or(EXPECTED)?;
    name(text).map_err(|_| EXPECTED)
}

/// MX: preference and exchange (RFC 1035 §3.3.9).
fn mx(fields: &[Field]) -> Result<Vec<u8>, &'static str> {
    const EXPECTED: &str = "a preference (0-65535) and a domain name";
    let [preference, exchange] = plain(fields).ok_or(EXPECTED)?;
    let mut out = preference
        .parse::<u16>()
        .map_err(|_| EXPECTED)?
        .to_be_bytes()
        .to_vec();
    out.extend(name(exchange).map_err(|_| EXPECTED)?);
    Ok(out)
}

/// SRV: priority, weight, port and target (RFC 2782).
fn srv(fields: &[Field]) -> Result<Vec<u8>, &'static str> {
    const EXPECTED: &str = "priority, weight and port (0-65535) and a target name";
    let [priority, weight, port, target] = plain(fields).ok_or(EXPECTED)?;
    let mut out = Vec::with_capacity(6 + target.len() + 2);
    for number in [priority, weight, port] {
        out.extend(number.parse::<u16>().map_err(|_| EXPECTED)?.to_be_bytes());
    }
    out.extend(name(target).map_err(|_| EXPECTED)?);
    Ok(out)
}

/// TXT: one or more character-strings of at most 255 octets each (RFC 1035 §3.3.14).
fn txt(fields: &[Field]) -> Result<Vec<u8>, &'static str> {
    const EXPECTED: &str = "one or more strings of at most 255 octets";
    if fields.is_empty() {
        return Err(EXPECTED);
    }
    let mut out = Vec::new();
    for field in fields {
        let octets = field.octets();
        out.push(u8::try_from(octets.len()).map_err(|_| EXPECTED)?);
        out.extend_from_slice(octets);
    }
    Ok(out)
}

/// RFC 3597 §5 generic RDATA after the `\#`: its length, then hexadecimal in any number of
/// fields.
fn generic_rdata(fields: &[Field]) -> Result<Vec<u8>, &'static str> {
    const EXPECTED: &str = "`\\# length hex` with as many octets as the length says";
    let (length, hex) = fields.split_first().ok_or(EXPECTED)?;
    let length: usize = length
        .plain()
        .ok_or(EXPECTED)?
        .parse()
        .map_err(|_| EXPECTED)?;
    let mut digits = Vec::new();
    for field in hex {
        digits.extend_from_slice(field.plain().ok_or(EXPECTED)?.as_bytes());
    }
    let octets = hex_decode(&digits).ok_or(EXPECTED)?;
    if octets.len() != length {
        return Err(EXPECTED);
    }
    Ok(octets)
}

/// Decodes hexadecimal digits (either case); `None` for an odd count or a non-digit.
fn hex_decode(digits: &[u8]) -> Option<Vec<u8>> {
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

/// The error for RDATA that does not fit its type.
fn bad_rdata(type_name: &str, expected: &'static str, fields: &[Field]) -> RecordProblem {
    let found = fields
        .iter()
        .map(|f| String::from_utf8_lossy(f.octets()).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    RecordProblem::BadRdata {
        rtype: type_name.to_string(),
        expected,
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(String, Rr), RecordProblem> {
        parse_record(text, 77).map(|(owner, rr)| (wire::name_to_string(&owner), rr))
    }

    #[test]
    fn ttl_and_class_are_optional_and_in_either_order() {
        for text in [
            "nas.lan. 300 IN A 192.168.1.10",
            "nas.lan IN 300 A 192.168.1.10",
            "nas.lan 300 a 192.168.1.10",
        ] {
            let (owner, rr) = parse(text).unwrap();
            assert_eq!(owner, "nas.lan.");
            assert_eq!((rr.rtype, rr.ttl), (1, 300), "{text}");
            assert_eq!(&rr.rdata[..], &[192, 168, 1, 10]);
        }
        let (_, rr) = parse("printer.home.arpa A 192.168.1.20").unwrap();
        assert_eq!(rr.ttl, 77);
        let (_, rr) = parse("printer.home.arpa IN A 192.168.1.20").unwrap();
        assert_eq!(rr.ttl, 77);
    }

    #[test]
    fn every_supported_type() {
        let rdata = |text| parse(text).unwrap().1.rdata.to_vec();
        assert_eq!(rdata("h AAAA ::1")[15], 1);
        let cname = wire::name_from_str("Target.lan").unwrap();
        assert_eq!(rdata("h CNAME Target.lan."), cname);
        assert_eq!(rdata("h PTR Target.lan"), cname);
        assert_eq!(rdata("h NS Target.lan"), cname);
        let mut mx = vec![0, 10];
        mx.extend(&cname);
        assert_eq!(rdata("h MX 10 Target.lan"), mx);
        let mut srv = vec![0, 1, 0, 2, 0x01, 0xbb];
        srv.extend(&cname);
        assert_eq!(rdata("_https._tcp.h SRV 1 2 443 Target.lan"), srv);
        assert_eq!(
            rdata(r#"h TXT "v=spf1 -all" plain "a\"b\\c\065""#),
            b"\x0bv=spf1 -all\x05plain\x06a\"b\\cA".to_vec()
        );
        assert_eq!(rdata(r#"h TXT """#), vec![0]);
        assert_eq!(rdata(r"h TYPE65 \# 3 0a0B 0c"), vec![10, 11, 12]);
        assert_eq!(rdata(r"h A \# 4 c0000201"), vec![192, 0, 2, 1]);
    }

    #[test]
    fn problems_are_named() {
        let problem = |text| parse(text).unwrap_err();
        assert_eq!(problem("   "), RecordProblem::Empty);
        assert_eq!(problem("a.lan"), RecordProblem::MissingType);
        assert_eq!(problem("a.lan 300 IN"), RecordProblem::MissingType);
        assert!(matches!(
            problem("a..lan A 1.2.3.4"),
            RecordProblem::BadName(_)
        ));
        assert!(matches!(
            problem("a.lan 4294967295 A 1.2.3.4"),
            RecordProblem::BadTtl(_)
        ));
        assert!(matches!(
            problem("a.lan CH A 1.2.3.4"),
            RecordProblem::UnsupportedClass(_)
        ));
        assert!(matches!(
            problem("a.lan FOO 1.2.3.4"),
            RecordProblem::UnknownType(_)
        ));
        assert!(matches!(
            problem("a.lan OPT x"),
            RecordProblem::UnknownType(_)
        ));
        assert!(matches!(
            problem("a.lan TYPE255 x"),
            RecordProblem::UnknownType(_)
        ));
        assert!(matches!(
            problem("a.lan A 1.2.3"),
            RecordProblem::BadRdata { .. }
        ));
        assert!(matches!(
            problem("a.lan A 1.2.3.4 5"),
            RecordProblem::BadRdata { .. }
        ));
        assert!(matches!(
            problem("a.lan AAAA 1.2.3.4"),
            RecordProblem::BadRdata { .. }
        ));
        assert!(matches!(
            problem("a.lan MX x.lan"),
            RecordProblem::BadRdata { .. }
        ));
        assert!(matches!(
            problem("a.lan TXT"),
            RecordProblem::BadRdata { .. }
        ));
        assert!(matches!(
            problem("a.lan TYPE65 00"),
            RecordProblem::BadRdata { .. }
        ));
        assert!(matches!(
            problem(r"a.lan TYPE65 \# 2 00"),
            RecordProblem::BadRdata { .. }
        ));
        assert_eq!(
            problem(r#"a.lan TXT "open"#),
            RecordProblem::UnterminatedQuote
        );
        assert_eq!(problem(r#"a.lan TXT "\256""#), RecordProblem::BadEscape);
        let long = format!("a.lan TXT {}", "x".repeat(256));
        assert!(matches!(problem(&long), RecordProblem::BadRdata { .. }));
    }

    #[test]
    fn cname_stands_alone() {
        let mut table = Table::default();
        let (owner, cname) = parse_record("w.lan CNAME nas.lan", 60).unwrap();
        assert_eq!(check_cname_rule(&table, &owner, &cname), Ok(()));
        table.insert(&owner, cname.clone());
        assert_eq!(
            check_cname_rule(&table, &owner, &cname),
            Ok(()),
            "same record"
        );
        let (_, a) = parse_record("W.lan A 192.0.2.1", 60).unwrap();
        assert_eq!(
            check_cname_rule(&table, &owner, &a),
            Err(RecordProblem::CnameAndOtherData)
        );
        let (_, other) = parse_record("w.lan CNAME other.lan", 60).unwrap();
        assert_eq!(
            check_cname_rule(&table, &owner, &other),
            Err(RecordProblem::CnameAndOtherData)
        );
    }
}
