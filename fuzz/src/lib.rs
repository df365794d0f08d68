//! Helpers shared by the fuzz targets: message builders for seeds and fixtures, and the
//! checks every answer dnsward renders for a client must pass whatever the input was.

use std::sync::Arc;

use dnsward::cache::{Cache, Key, StalePolicy, TtlPolicy};
use dnsward::clock::Clock;
use dnsward::dns::wire::{self, HEADER_LEN, Header};
use dnsward::dns::{Answer, check_answer, new_query, read_query, upstream_query};
use dnsward::local::{LocalAnswers, LocalConfig};
use dnsward::resolver::{LocalParts, Resolver, ResolverOptions};
use dnsward::router::{Router, RouterOptions};
use dnsward::split::SplitDns;

/// A client query for `name`/`qtype` with message ID `id`; with `edns` an OPT record (DO bit
/// `dnssec_ok`), without it a pre-EDNS query.
pub fn client_query(name: &str, qtype: u16, id: u16, edns: bool, dnssec_ok: bool) -> Vec<u8> {
    let mut query = new_query(name, qtype, dnssec_ok).expect("valid fixture name");
    query[..2].copy_from_slice(&id.to_be_bytes());
    if !edns {
        query.truncate(query.len() - 11);
        query[11] = 0;
    }
    query
}

/// A response to `query` (its header and question copied, QR and RA set) with `rcode`,
/// `answers` (type, TTL, RDATA; owner = pointer to the question name), an SOA in the
/// authority section if `soa` gives its (TTL, MINIMUM), and an OPT record if `edns`.
pub fn response(
    query: &[u8],
    rcode: u8,
    answers: &[(u16, u32, &[u8])],
    soa: Option<(u32, u32)>,
    edns: bool,
) -> Vec<u8> {
    let question_end = wire::parse(query)
        .expect("fixture query parses")
        .question
        .expect("fixture query has a question")
        .end;
    let mut out = query[..question_end].to_vec();
    out[2] |= 0x80;
    out[3] = 0x80 | rcode;
    out[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
    out[8..10].copy_from_slice(&u16::from(soa.is_some()).to_be_bytes());
    out[10..12].copy_from_slice(&u16::from(edns).to_be_bytes());
    for (rtype, ttl, rdata) in answers {
        out.extend([0xc0, HEADER_LEN as u8]);
        out.extend(rtype.to_be_bytes());
        out.extend(1u16.to_be_bytes());
        out.extend(ttl.to_be_bytes());
        out.extend((rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
    }
    if let Some((ttl, minimum)) = soa {
        out.extend([0xc0, HEADER_LEN as u8]);
        out.extend(wire::TYPE_SOA.to_be_bytes());
        out.extend(1u16.to_be_bytes());
        out.extend(ttl.to_be_bytes());
        out.extend(22u16.to_be_bytes());
        out.extend([0, 0]); // MNAME and RNAME: the root
        out.extend([0; 16]);
        out.extend(minimum.to_be_bytes());
    }
    if edns {
        dnsward::dns::query::push_opt(&mut out, 0, false);
    }
    out
}

/// Names the query fixture has cached answers for, with their type and upstream answer.
pub fn cached_answers() -> Vec<(&'static str, u16, Vec<u8>)> {
    let txt = [200u8; 201];
    let big: Vec<(u16, u32, &[u8])> = (0..6).map(|_| (16u16, 300u32, &txt[..])).collect();
    let mut fixtures = Vec::new();
    for (name, qtype) in [("cached.test", 1u16), ("big.test", 16), ("gone.test", 1)] {
        let upstream = new_query(name, qtype, false).expect("valid name");
        let answer = match name {
            "cached.test" => response(
                &upstream,
                0,
                &[(1, 300, &[192, 0, 2, 1]), (1, 60, &[192, 0, 2, 2])],
                None,
                true,
            ),
            "big.test" => response(&upstream, 0, &big, None, true),
            _ => response(&upstream, 3, &[], Some((3600, 60)), true),
        };
        fixtures.push((name, qtype, answer));
    }
    fixtures
}

/// A resolver with no encrypted upstream (every miss ends in SERVFAIL at once), a few static
/// records, and the [`cached_answers`] in its cache (for DO clear and set, CD clear).
pub fn offline_resolver() -> Arc<Resolver> {
    let answers = LocalAnswers::new(&LocalConfig {
        hosts_file: None,
        records: vec![
            "nas.lan. 300 IN A 192.168.1.10".into(),
            "nas.lan. 300 IN AAAA fd00::10".into(),
            "www.lan. CNAME nas.lan.".into(),
            "lan. MX 10 nas.lan.".into(),
            "big.lan. TXT \"".to_string() + &"x".repeat(250) + "\" \"" + &"y".repeat(250) + "\"",
        ],
        hosts_ttl: 60,
    })
    .expect("fixture records are valid");
    let local = LocalParts {
        answers: Arc::new(answers),
        split: SplitDns::new(Vec::new()),
        captive: None,
    };
    let clock = Clock::manual();
    let cache = Cache::with_stale(1000, TtlPolicy::default(), StalePolicy::default());
    for (name, qtype, wire) in cached_answers() {
        for dnssec_ok in [false, true] {
            let client = client_query(name, qtype, 1, true, dnssec_ok);
            let query = read_query(&client).expect("fixture query is valid");
            let sent = upstream_query(&query);
            let parsed = check_answer(&sent, &wire).expect("fixture answer matches");
            cache.insert(Key::of(&query), Answer::new(&wire, &parsed), clock.now());
        }
    }
    let router = Arc::new(Router::new(Vec::new(), RouterOptions::default()));
    Arc::new(Resolver::new(
        cache,
        router,
        local,
        clock,
        ResolverOptions::default(),
    ))
}

/// What must hold for any answer dnsward sends to a client, whatever it was asked: a
/// well-formed response with the client's ID; and for a valid query its question echoed
/// byte for byte (case included), an OPT record exactly when the query had one (RFC 6891
/// §7), and over UDP no more than the client's limit (RFC 1035 §4.2.1, RFC 6891 §6.2.3).
pub fn check_client_answer(client: &[u8], answer: &[u8], udp: bool) {
    let parsed = wire::parse(answer).unwrap_or_else(|e| {
        panic!("answer does not parse ({e}): client {client:02x?} answer {answer:02x?}")
    });
    let header = Header::of(answer).expect("parsed");
    assert!(header.is_response(), "answer without QR");
    assert_eq!(
        header.id(),
        Header::of(client).expect("answered").id(),
        "ID"
    );
    let Ok(query) = read_query(client) else {
        // A rejected message's answer (FORMERR, NOTIMP, ...) is small.
        assert!(!udp || answer.len() <= 512, "error answer over 512 bytes");
        return;
    };
    let question = parsed
        .question
        .expect("a valid query's answer has its question");
    assert_eq!(
        &answer[question.name.clone()],
        query.name(),
        "question name (and its case) echoed"
    );
    assert_eq!(
        (question.qtype, question.qclass),
        (query.question.qtype, query.question.qclass)
    );
    assert_eq!(
        parsed.opt.is_some(),
        query.edns.is_some(),
        "OPT in the answer exactly when the query had one"
    );
    if udp {
        assert!(
            answer.len() <= query.udp_limit(),
            "{} bytes over UDP with a limit of {}",
            answer.len(),
            query.udp_limit()
        );
    }
}
