//! The proxy end to end, in-process: plain DNS clients on one side, fake DoH/DoT upstreams
//! (loopback, test CA) on the other.

mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::time::Instant;

/// The test zone. Its SOA TTL (3600) is above its MINIMUM (60), so negative answers show
/// the RFC 2308 §5 cap.
fn zone() -> Zone {
    zone_with_soa_ttl(3600)
}

fn zone_with_soa_ttl(soa_ttl: u32) -> Zone {
    Zone::new()
        .record(&format!(
            "test. {soa_ttl} IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60"
        ))
        .records(
            "a.test. 300 IN A 192.0.2.1
         a.test. 300 IN A 192.0.2.2
         a.test. 300 IN AAAA 2001:db8::1
         www.test. 300 IN CNAME a.test.
         mx.test. 300 IN MX 10 mail.test.
         txt.test. 300 IN TXT \"hello dnsward\"",
        )
}

/// Record sets compared without TTL ordering noise.
fn records(m: &[hickory_proto::rr::Record]) -> Vec<String> {
    let mut v: Vec<String> = m.iter().map(|r| r.to_string()).collect();
    v.sort();
    v
}

async fn assert_passes_through(proxy: &Proxy, zone: &Zone, name: &str, rtype: RecordType) {
    let q = query_edns(name, rtype, 1232, false);
    let got = udp(proxy.addr, &q).await;
    let want = zone.answer(&q);
    assert_eq!(got.metadata.id, q.metadata.id, "{name} {rtype}: id");
    assert_eq!(
        got.metadata.response_code, want.metadata.response_code,
        "{name} {rtype}: rcode"
    );
    assert_eq!(
        records(&got.answers),
        records(&want.answers),
        "{name} {rtype}: answers"
    );
    assert_eq!(
        records(&got.authorities),
        records(&want.authorities),
        "{name} {rtype}: authority"
    );
    assert_eq!(got.queries, q.queries, "{name} {rtype}: question");
}

/// With SOA TTL = MINIMUM, nothing in these answers is rewritten but ID and TTL decay (none here).
async fn passes_records_through(upstream: FakeUpstream) {
    let proxy = start_proxy(&[upstream.url()]).await;
    let z = zone_with_soa_ttl(60);
    for (name, rtype) in [
        ("a.test", RecordType::A),
        ("a.test", RecordType::AAAA),
        ("www.test", RecordType::A),
        ("mx.test", RecordType::MX),
        ("txt.test", RecordType::TXT),
        ("nope.test", RecordType::A),   // NXDOMAIN + SOA
        ("txt.test", RecordType::AAAA), // NODATA + SOA
    ] {
        assert_passes_through(&proxy, &z, name, rtype).await;
    }
}

#[tokio::test]
async fn records_pass_through_unchanged_over_doh() {
    passes_records_through(FakeUpstream::doh(zone_with_soa_ttl(60), Behavior::Answer).await).await;
}

#[tokio::test]
async fn records_pass_through_unchanged_over_dot() {
    passes_records_through(FakeUpstream::dot(zone_with_soa_ttl(60), Behavior::Answer).await).await;
}

#[tokio::test]
async fn doh_queries_use_message_id_zero_and_one_connection() {
    let upstream = FakeUpstream::doh(zone(), Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    let names = ["a.test", "www.test", "mx.test", "txt.test", "nope.test"];
    let queries: Vec<Message> = names.iter().map(|n| query(n, RecordType::A)).collect();
    let answers = futures_util::future::join_all(queries.iter().map(|q| udp(proxy.addr, q))).await;
    assert!(
        answers
            .iter()
            .all(|a| a.metadata.message_type == hickory_proto::op::MessageType::Response)
    );
    let received = upstream.received_messages();
    assert_eq!(received.len(), names.len());
    assert!(
        received.iter().all(|m| m.metadata.id == 0),
        "RFC 8484 §4.1: ID 0"
    );
    assert_eq!(
        upstream.connection_count(),
        1,
        "one multiplexed HTTP/2 connection"
    );
}

#[tokio::test]
async fn dot_answers_out_of_order_reach_the_right_clients() {
    let z = zone().delay("a.test", Duration::from_millis(300));
    let upstream = FakeUpstream::dot(z, Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    let slow = query("a.test", RecordType::A);
    let fast = query("mx.test", RecordType::MX);
    let (slow_answer, fast_answer) = tokio::join!(udp(proxy.addr, &slow), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let a = udp(proxy.addr, &fast).await;
        (a, started.elapsed())
    });
    let (fast_answer, fast_took) = fast_answer;
    assert_eq!(slow_answer.answers.len(), 2);
    assert!(matches!(fast_answer.answers[0].data, RData::MX(_)));
    assert!(
        fast_took < Duration::from_millis(250),
        "fast answer was not held behind the slow one: {fast_took:?}"
    );
    assert_eq!(
        upstream.connection_count(),
        1,
        "both queries pipelined on one connection"
    );
    let ids: Vec<u16> = upstream
        .received_messages()
        .iter()
        .map(|m| m.metadata.id)
        .collect();
    assert_ne!(ids[0], ids[1], "distinct IDs on one connection");
}

#[tokio::test]
async fn answers_made_ready_together_each_reach_their_own_client() {
    // Every answer is held back the same time, so they come back from the upstream in a
    // burst and leave the proxy together (gathered into as few sends as it can).
    const CLIENTS: u8 = 48;
    let mut z = zone();
    for i in 0..CLIENTS {
        let name = format!("n{i}.test");
        z = z
            .record(&format!("{name}. 300 IN A 192.0.2.{i}"))
            .delay(&name, Duration::from_millis(200));
    }
    let upstream = FakeUpstream::dot(z, Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    let asked: Vec<Message> = (0..CLIENTS)
        .map(|i| query(&format!("n{i}.test"), RecordType::A))
        .collect();
    let answers = futures_util::future::join_all(asked.iter().map(|q| udp(proxy.addr, q))).await;
    for (i, (q, a)) in asked.iter().zip(&answers).enumerate() {
        assert_eq!(
            a.metadata.id, q.metadata.id,
            "client {i}: its own message ID"
        );
        assert_eq!(a.queries, q.queries, "client {i}: its own question");
        let addresses: Vec<String> = a.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(
            addresses,
            [format!("192.0.2.{i}")],
            "client {i}: its own answer"
        );
    }
    assert_eq!(upstream.connection_count(), 1);
}

#[tokio::test]
async fn client_id_and_name_case_are_restored_even_from_cache() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    for spelling in ["a.test", "A.TeSt", "a.TEST"] {
        let q = query(spelling, RecordType::A);
        let got = udp(proxy.addr, &q).await;
        assert_eq!(got.metadata.id, q.metadata.id);
        assert_eq!(
            got.queries[0].name().to_string(),
            q.queries[0].name().to_string(),
            "0x20 case kept"
        );
        assert_eq!(got.answers.len(), 2);
    }
    assert_eq!(
        upstream.query_count(),
        1,
        "later spellings came from the cache"
    );
}

#[tokio::test]
async fn cache_hits_decay_ttls_and_expire() {
    let upstream = FakeUpstream::doh(zone(), Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    let q = query("a.test", RecordType::A);
    let first = udp(proxy.addr, &q).await;
    assert!(first.answers.iter().all(|r| r.ttl == 300));
    proxy.clock.advance(Duration::from_secs(100));
    let second = udp(proxy.addr, &q).await;
    assert!(
        second.answers.iter().all(|r| r.ttl == 200),
        "{:?}",
        second.answers
    );
    assert_eq!(upstream.query_count(), 1);
    proxy.clock.advance(Duration::from_secs(200));
    let third = udp(proxy.addr, &q).await;
    assert!(
        third.answers.iter().all(|r| r.ttl == 300),
        "refetched after expiry"
    );
    assert_eq!(upstream.query_count(), 2);
}

#[tokio::test]
async fn negative_answers_are_cached_for_the_soa_minimum() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    let nx = query("nope.test", RecordType::A);
    let nodata = query("txt.test", RecordType::AAAA);
    for q in [&nx, &nodata] {
        udp(proxy.addr, q).await;
    }
    proxy.clock.advance(Duration::from_secs(59));
    let cached = udp(proxy.addr, &nx).await;
    assert_eq!(cached.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        cached.authorities[0].ttl, 1,
        "SOA TTL capped at MINIMUM 60 and decayed"
    );
    assert_eq!(udp(proxy.addr, &nodata).await.answers.len(), 0);
    assert_eq!(upstream.query_count(), 2);
    proxy.clock.advance(Duration::from_secs(1));
    udp(proxy.addr, &nx).await;
    assert_eq!(
        upstream.query_count(),
        3,
        "negative entry expired after 60 s"
    );
}

#[tokio::test]
async fn servfail_from_upstream_is_passed_on_but_not_cached() {
    let z = zone().rcode("broken.test", ResponseCode::ServFail);
    let upstream = FakeUpstream::doh(z, Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    let q = query("broken.test", RecordType::A);
    for _ in 0..2 {
        assert_eq!(
            udp(proxy.addr, &q).await.metadata.response_code,
            ResponseCode::ServFail
        );
    }
    assert_eq!(upstream.query_count(), 2);
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_complete_over_tcp() {
    let z = zone().big_txt("big.test", 6);
    let upstream = FakeUpstream::dot(z, Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    let plain = query("big.test", RecordType::TXT);
    let truncated = udp(proxy.addr, &plain).await;
    assert!(
        truncated.metadata.truncation,
        "over 512 without EDNS sets TC"
    );
    assert!(truncated.answers.is_empty());
    assert_eq!(truncated.queries, plain.queries);
    let small_edns = query_edns("big.test", RecordType::TXT, 1232, false);
    let raw = udp_exchange(proxy.addr, &wire(&small_edns))
        .await
        .expect("answer");
    assert!(raw.len() <= 1232);
    assert!(parse(&raw).metadata.truncation);
    let big_edns = query_edns("big.test", RecordType::TXT, 4096, false);
    let full = udp(proxy.addr, &big_edns).await;
    assert!(!full.metadata.truncation);
    assert_eq!(full.answers.len(), 6);
    let over_tcp = tcp(proxy.addr, &plain).await;
    assert!(
        !over_tcp.metadata.truncation,
        "the TCP retry gets everything"
    );
    assert_eq!(over_tcp.answers.len(), 6);
    assert!(
        over_tcp.edns.is_none(),
        "no OPT for a client that sent none (RFC 6891 §7)"
    );
}

#[tokio::test]
async fn pipelined_tcp_queries_are_all_answered() {
    let z = zone().delay("a.test", Duration::from_millis(200));
    let upstream = FakeUpstream::doh(z, Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    let queries: Vec<Message> = ["a.test", "www.test", "mx.test", "txt.test", "nope.test"]
        .iter()
        .flat_map(|n| [query(n, RecordType::A), query(n, RecordType::TXT)])
        .collect();
    let answers = tcp_pipelined(proxy.addr, &queries).await;
    assert_eq!(answers.len(), queries.len());
    for q in &queries {
        let a = answers
            .iter()
            .find(|a| a.metadata.id == q.metadata.id)
            .expect("every query answered");
        assert_eq!(a.queries, q.queries);
    }
}

/// A bad upstream listed first (strict order) must not cost the client its answer.
async fn fails_over_from(bad_url: String) {
    let good = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let proxy = start_proxy_with(&[bad_url, good.url()], |s| {
        s.router.strategy = dnsward::router::Strategy::Strict;
        s.router.attempt_timeout = Duration::from_millis(300);
        s.router.query_timeout = Duration::from_secs(2);
    })
    .await;
    let started = Instant::now();
    let got = udp(proxy.addr, &query("a.test", RecordType::A)).await;
    assert_eq!(got.metadata.response_code, ResponseCode::NoError);
    assert_eq!(got.answers.len(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "within the deadline"
    );
    assert!(
        !proxy.resolver.router().status()[0].healthy,
        "bad upstream marked unhealthy"
    );
    // Once marked, the bad upstream is skipped: the next query is fast.
    let started = Instant::now();
    udp(proxy.addr, &query("mx.test", RecordType::MX)).await;
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn fails_over_from_a_refusing_upstream() {
    fails_over_from(refused_url("tls").await).await;
}

#[tokio::test]
async fn fails_over_from_a_hanging_upstream() {
    let hanging = FakeUpstream::doh(zone(), Behavior::Hang).await;
    fails_over_from(hanging.url()).await;
}

#[tokio::test]
async fn fails_over_from_an_upstream_with_a_wrong_certificate() {
    let wrong = FakeUpstream::doh(zone(), Behavior::WrongCert).await;
    fails_over_from(wrong.url()).await;
    assert_eq!(
        wrong.query_count(),
        0,
        "nothing sent over a connection that failed validation"
    );
}

#[tokio::test]
async fn fails_over_from_an_untrusted_certificate() {
    let untrusted = FakeUpstream::dot(zone(), Behavior::UntrustedCert).await;
    fails_over_from(untrusted.url()).await;
    assert_eq!(untrusted.query_count(), 0);
}

#[tokio::test]
async fn fails_over_from_mismatched_answers() {
    let liar = FakeUpstream::dot(zone(), Behavior::WrongQuestion).await;
    fails_over_from(liar.url()).await;
    let garbage = FakeUpstream::doh(zone(), Behavior::Garbage).await;
    fails_over_from(garbage.url()).await;
}

#[tokio::test]
async fn all_upstreams_down_gives_prompt_servfail() {
    let hanging = FakeUpstream::dot(zone(), Behavior::Hang).await;
    let proxy = start_proxy_with(&[refused_url("https").await, hanging.url()], |s| {
        s.router.attempt_timeout = Duration::from_millis(200);
        s.router.query_timeout = Duration::from_millis(800);
    })
    .await;
    let q = query_edns("a.test", RecordType::A, 1232, false);
    let started = Instant::now();
    let got = udp(proxy.addr, &q).await;
    assert_eq!(got.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(got.metadata.id, q.metadata.id);
    assert_eq!(got.queries, q.queries);
    assert!(got.edns.is_some());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unhealthy_upstream_comes_back_after_backoff() {
    let flaky = FakeUpstream::dot(zone(), Behavior::CloseImmediately).await;
    let good = FakeUpstream::doh(zone(), Behavior::Answer).await;
    let proxy = start_proxy_with(&[flaky.url(), good.url()], |s| {
        s.router.strategy = dnsward::router::Strategy::Strict;
        s.router.min_backoff = Duration::from_millis(100);
    })
    .await;
    udp(proxy.addr, &query("a.test", RecordType::A)).await;
    assert!(!proxy.resolver.router().status()[0].healthy);
    flaky.set_behavior(Behavior::Answer);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.resolver.router().status()[0].healthy {
        assert!(
            Instant::now() < deadline,
            "prober did not restore the upstream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = flaky.query_count();
    udp(proxy.addr, &query("mx.test", RecordType::MX)).await;
    assert_eq!(
        flaky.query_count(),
        before + 1,
        "strict order prefers it again"
    );
}

#[tokio::test]
async fn malformed_input_gets_formerr_or_is_dropped_and_service_continues() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    let short = Duration::from_millis(300);
    // Not even a header: dropped.
    assert!(
        udp_exchange_timeout(proxy.addr, &[1, 2, 3], short)
            .await
            .is_none()
    );
    // A header and garbage: FORMERR with the same ID.
    let garbage = [
        0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x3f, 0x41,
    ];
    let a = parse(&udp_exchange(proxy.addr, &garbage).await.expect("FORMERR"));
    assert_eq!(
        (a.metadata.id, a.metadata.response_code),
        (0xbeef, ResponseCode::FormErr)
    );
    // A response sent to the listener: ignored.
    let mut response = query("a.test", RecordType::A);
    response.metadata.message_type = hickory_proto::op::MessageType::Response;
    assert!(
        udp_exchange_timeout(proxy.addr, &wire(&response), short)
            .await
            .is_none()
    );
    // An unsupported opcode: NOTIMP.
    let mut status = query("a.test", RecordType::A);
    status.metadata.op_code = OpCode::Status;
    let a = udp(proxy.addr, &status).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NotImp);
    // A zone transfer: REFUSED.
    let a = tcp(proxy.addr, &query("test", RecordType::AXFR)).await;
    assert_eq!(a.metadata.response_code, ResponseCode::Refused);
    // A well-formed query longer than the 4,096 bytes read per UDP datagram (an OPT record
    // with 5,000 bytes of padding): FORMERR with its ID over UDP, answered over TCP.
    let mut big = wire(&query("a.test", RecordType::A));
    big[10..12].copy_from_slice(&1u16.to_be_bytes());
    let padding = 5_000u16;
    big.extend([0, 0, 41, 0x10, 0x00, 0, 0, 0, 0]);
    big.extend((padding + 4).to_be_bytes());
    big.extend(12u16.to_be_bytes());
    big.extend(padding.to_be_bytes());
    big.extend(std::iter::repeat_n(0u8, usize::from(padding)));
    let a = parse(&udp_exchange(proxy.addr, &big).await.expect("FORMERR"));
    assert_eq!(
        (a.metadata.id, a.metadata.response_code),
        (u16::from_be_bytes([big[0], big[1]]), ResponseCode::FormErr)
    );
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    write_framed(&mut stream, &big).await.unwrap();
    let a = parse(&read_framed(&mut stream).await.unwrap());
    assert_eq!(
        (a.metadata.response_code, a.answers.len()),
        (ResponseCode::NoError, 2)
    );
    // Random bytes of every length up to 100, over UDP and TCP: never a crash.
    let mut seed = 0x2545f491u32;
    for len in 0..100usize {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        if let Some(answer) =
            udp_exchange_timeout(proxy.addr, &bytes, Duration::from_millis(100)).await
        {
            let a = parse(&answer);
            assert!(matches!(
                a.metadata.response_code,
                ResponseCode::FormErr
                    | ResponseCode::NotImp
                    | ResponseCode::Refused
                    | ResponseCode::BADVERS
                    | ResponseCode::ServFail
                    | ResponseCode::NoError
                    | ResponseCode::NXDomain
            ));
        }
    }
    // Still serving well-formed queries, over both transports.
    assert_eq!(
        udp(proxy.addr, &query("a.test", RecordType::A))
            .await
            .answers
            .len(),
        2
    );
    assert_eq!(
        tcp(proxy.addr, &query("a.test", RecordType::A))
            .await
            .answers
            .len(),
        2
    );
}

#[tokio::test]
async fn tcp_connection_survives_a_malformed_message_between_good_ones() {
    use tokio::io::AsyncWriteExt;
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let good = query("a.test", RecordType::A);
    write_framed(&mut stream, &wire(&good)).await.unwrap();
    write_framed(
        &mut stream,
        &[0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff],
    )
    .await
    .unwrap();
    write_framed(&mut stream, &wire(&good)).await.unwrap();
    stream.flush().await.unwrap();
    let mut rcodes = Vec::new();
    for _ in 0..3 {
        let frame = tokio::time::timeout(Duration::from_secs(5), read_framed(&mut stream))
            .await
            .expect("answer in time")
            .unwrap();
        rcodes.push(parse(&frame).metadata.response_code);
    }
    rcodes.sort_by_key(|r| u16::from(*r));
    assert_eq!(
        rcodes,
        [
            ResponseCode::NoError,
            ResponseCode::NoError,
            ResponseCode::FormErr
        ]
    );
}

#[tokio::test]
async fn dnssec_ok_is_forwarded_and_keyed_separately() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    let with_do = query_edns("a.test", RecordType::A, 1232, true);
    let without = query_edns("a.test", RecordType::A, 1232, false);
    let a = udp(proxy.addr, &with_do).await;
    assert!(a.edns.as_ref().unwrap().flags().dnssec_ok);
    udp(proxy.addr, &without).await;
    let sent = upstream.received_messages();
    assert_eq!(sent.len(), 2, "DO and non-DO answers are cached apart");
    assert!(sent[0].edns.as_ref().unwrap().flags().dnssec_ok);
    assert!(!sent[1].edns.as_ref().unwrap().flags().dnssec_ok);
}

#[tokio::test]
async fn shuts_down_cleanly() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    let addr = proxy.addr;
    udp(addr, &query("a.test", RecordType::A)).await;
    proxy.shutdown().await;
    assert!(
        udp_exchange_timeout(
            addr,
            &wire(&query("a.test", RecordType::A)),
            Duration::from_millis(200)
        )
        .await
        .is_none()
    );
}

#[tokio::test]
async fn fastest_strategy_prefers_the_quicker_upstream() {
    let slow_zone = zone().delay("a.test", Duration::from_millis(120));
    let slow = FakeUpstream::dot(slow_zone, Behavior::Answer).await;
    let fast = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let proxy = start_proxy(&[slow.url(), fast.url()]).await;
    // Distinct types so every query misses the cache.
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::MX,
        RecordType::TXT,
        RecordType::NS,
        RecordType::SOA,
        RecordType::PTR,
        RecordType::SRV,
        RecordType::CAA,
        RecordType::HINFO,
    ];
    for t in types {
        udp(proxy.addr, &query("a.test", t)).await;
    }
    // The first two queries measure both; after that the fast one takes (nearly) everything.
    assert!(
        slow.query_count() <= 2,
        "slow upstream got {} queries",
        slow.query_count()
    );
    assert!(
        fast.query_count() >= 8,
        "fast upstream got {} queries",
        fast.query_count()
    );
    let status = proxy.resolver.router().status();
    assert!(status[0].srtt.unwrap() > status[1].srtt.unwrap());
}

#[tokio::test]
async fn upstream_names_without_addresses_are_resolved_through_bootstrap() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    // The certificate is for dns.test; the bootstrap server says where dns.test is.
    let bootstrap = PlainDns::start(Zone::new().record("dns.test. 120 IN A 127.0.0.1")).await;
    let url = format!("tls://dns.test:{}", upstream.addr().port());
    let proxy = start_proxy_with(&[url], |s| s.bootstrap = vec![bootstrap.addr]).await;
    let got = udp(proxy.addr, &query("a.test", RecordType::A)).await;
    assert_eq!(got.answers.len(), 2);
    assert_eq!(bootstrap.query_count(), 2, "one A and one AAAA lookup");
    udp(proxy.addr, &query("mx.test", RecordType::MX)).await;
    assert_eq!(
        bootstrap.query_count(),
        2,
        "the lookup is reused while its TTL lasts"
    );
}

#[tokio::test]
async fn no_bootstrap_and_no_addresses_is_servfail_not_a_plaintext_lookup() {
    let proxy = start_proxy_with(&["tls://dns.test:853".to_string()], |s| {
        s.bootstrap.clear();
    })
    .await;
    let got = udp(proxy.addr, &query("a.test", RecordType::A)).await;
    assert_eq!(got.metadata.response_code, ResponseCode::ServFail);
}

/// Regression (review #2): a client that pipelines queries and never reads its answers used
/// to pin its connection slot forever, so with the slot limit reached nobody else got in.
#[tokio::test]
async fn a_client_that_never_reads_does_not_lock_out_others() {
    use tokio::io::AsyncWriteExt;
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let proxy = start_proxy_with(&[upstream.url()], |s| {
        s.tcp.max_connections = 1;
        s.tcp.idle_timeout = Duration::from_millis(300);
    })
    .await;
    // Small socket buffers, so the hog's unread answers fill them quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    let mut hog = socket.connect(proxy.addr).await.unwrap();
    // Header-only queries: each gets a FORMERR answer, which the hog never reads.
    let mut burst = Vec::new();
    for _ in 0..2_000 {
        burst.extend([0, 12, 0xab, 0xcd, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
    // Write until the proxy stops reading (the writes block) or drops the hog (they fail).
    // Which comes first depends on the kernel: the proxy's receive buffer can grow to
    // tcp_rmem's maximum (6 MB by default, 32 MB on some kernels) and hold the hog's bursts
    // after the proxy has stopped reading. The bound is twice what the proxy's buffers can
    // hold, in bursts.
    let room = kernel_max("tcp_rmem") + kernel_max("tcp_wmem");
    let bursts = (2 * room / burst.len()).max(200);
    let mut stopped = false;
    for _ in 0..bursts {
        match tokio::time::timeout(Duration::from_millis(300), hog.write_all(&burst)).await {
            Ok(Ok(())) => {}
            // Blocked: the proxy no longer reads. Failed: the proxy ended the connection.
            Err(_) | Ok(Err(_)) => {
                stopped = true;
                break;
            }
        }
    }
    assert!(
        stopped,
        "the proxy kept reading without its answers being read"
    );
    // The hog stays connected and silent; its slot must come free (a few idle timeouts once
    // the proxy has worked through what it already read; generous for a loaded debug build).
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let q = query("a.test", RecordType::A);
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(proxy.addr).await.ok()?;
            write_framed(&mut s, &wire(&q)).await.ok()?;
            tokio::time::timeout(Duration::from_secs(2), read_framed(&mut s))
                .await
                .ok()?
                .ok()
        };
        if let Some(frame) = attempt.await {
            break parse(&frame);
        }
        assert!(
            Instant::now() < deadline,
            "the hog still holds the only connection slot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer.answers.len(), 2);
    drop(hog);
}

/// The largest buffer the kernel lets a TCP socket grow to, from `/proc/sys/net/ipv4/NAME`
/// (its third field), or 6 MB where that cannot be read.
fn kernel_max(name: &str) -> usize {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(6 << 20)
}

/// Regression (review #11): an upstream answering SERVFAIL is asked no more for that query,
/// but it is not marked dead (DNSSEC failures are SERVFAIL everywhere).
#[tokio::test]
async fn servfail_from_one_upstream_tries_the_next_without_marking_it_dead() {
    let failing = FakeUpstream::dot(
        zone()
            .rcode("a.test", ResponseCode::ServFail)
            .rcode("bogus.test", ResponseCode::ServFail),
        Behavior::Answer,
    )
    .await;
    let good = FakeUpstream::doh(
        zone().rcode("bogus.test", ResponseCode::ServFail),
        Behavior::Answer,
    )
    .await;
    let proxy = start_proxy_with(&[failing.url(), good.url()], |s| {
        s.router.strategy = dnsward::router::Strategy::Strict;
    })
    .await;
    let got = udp(proxy.addr, &query("a.test", RecordType::A)).await;
    assert_eq!(got.metadata.response_code, ResponseCode::NoError);
    assert_eq!(got.answers.len(), 2);
    assert!(proxy.resolver.router().status()[0].healthy);
    let bogus = udp(proxy.addr, &query("bogus.test", RecordType::A)).await;
    assert_eq!(bogus.metadata.response_code, ResponseCode::ServFail);
    assert_eq!((failing.query_count(), good.query_count()), (2, 2));
}

/// Regression (review #4): a DoT connection whose peer stops answering (but never closes)
/// is abandoned after a stalled query, so the next query does not wait on it too.
#[tokio::test]
async fn a_dot_connection_that_stops_answering_is_replaced() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Hang).await;
    let proxy = start_proxy_with(&[upstream.url()], |s| {
        s.router.query_timeout = Duration::from_millis(2500);
        s.router.attempt_timeout = Duration::from_millis(2500);
    })
    .await;
    let stalled = udp(proxy.addr, &query("a.test", RecordType::A)).await;
    assert_eq!(stalled.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(upstream.connection_count(), 1);
    // From now on the server would answer on any connection, even the stalled one.
    upstream.set_behavior(Behavior::Answer);
    let got = udp(proxy.addr, &query("mx.test", RecordType::MX)).await;
    assert_eq!(got.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        upstream.connection_count(),
        2,
        "the stalled connection was replaced"
    );
}
