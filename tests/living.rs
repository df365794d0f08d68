//! What makes dnsward livable as a system resolver (issue: stale answers, prefetch, privacy on
//! the wire, DNSSEC passthrough, local names, split DNS, connection health), in-process
//! against fake upstreams on loopback.

mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use tokio::time::Instant;

fn zone() -> Zone {
    Zone::new().records(
        "test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60
         a.test. 300 IN A 192.0.2.1
         short.test. 60 IN A 192.0.2.60
         mx.test. 300 IN MX 10 mail.test.",
    )
}

/// Polls `cond` (bounded) while background work finishes.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn stale_answers_are_served_while_upstreams_fail_and_not_after_the_limit() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let proxy = start_proxy_with(&[upstream.url()], |s| {
        s.stale.max_stale = 100;
        s.router.query_timeout = Duration::from_millis(500);
        s.router.attempt_timeout = Duration::from_millis(500);
    })
    .await;
    let q = query("short.test", RecordType::A);
    assert_eq!(udp(proxy.addr, &q).await.answers[0].ttl, 60);
    upstream.set_behavior(Behavior::CloseImmediately);
    proxy.clock.advance(Duration::from_secs(61));
    let stale = udp(proxy.addr, &q).await;
    assert_eq!(stale.metadata.response_code, ResponseCode::NoError);
    assert_eq!(stale.answers.len(), 1);
    assert_eq!(stale.answers[0].ttl, 30, "RFC 8767 stale TTL");
    assert_eq!(stale.metadata.id, q.metadata.id);
    // Past expiry + max staleness: SERVFAIL.
    proxy.clock.advance(Duration::from_secs(100));
    let gone = udp(proxy.addr, &q).await;
    assert_eq!(gone.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn a_slow_upstream_gets_the_client_a_stale_answer_and_refreshes_the_cache_later() {
    let z = zone().delay("short.test", Duration::from_millis(600));
    let upstream = FakeUpstream::doh(z, Behavior::Answer).await;
    let proxy = start_proxy_with(&[upstream.url()], |s| {
        s.resolver.stale_answer_timeout = Duration::from_millis(200);
    })
    .await;
    let q = query("short.test", RecordType::A);
    udp(proxy.addr, &q).await;
    proxy.clock.advance(Duration::from_secs(70));
    let started = Instant::now();
    let stale = udp(proxy.addr, &q).await;
    assert!(
        started.elapsed() < Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stale.answers[0].ttl, 30);
    // The slow fetch still completes and refreshes the cache.
    eventually("the late answer to be cached", || {
        upstream.query_count() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let fresh = udp(proxy.addr, &q).await;
    assert_eq!(fresh.answers[0].ttl, 60, "refreshed entry");
    assert_eq!(upstream.query_count(), 2);
}

#[tokio::test]
async fn serve_stale_can_be_turned_off() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let proxy = start_proxy_with(&[upstream.url()], |s| {
        s.stale.enabled = false;
        s.router.query_timeout = Duration::from_millis(500);
    })
    .await;
    let q = query("short.test", RecordType::A);
    udp(proxy.addr, &q).await;
    upstream.set_behavior(Behavior::CloseImmediately);
    proxy.clock.advance(Duration::from_secs(61));
    assert_eq!(
        udp(proxy.addr, &q).await.metadata.response_code,
        ResponseCode::ServFail
    );
}

#[tokio::test]
async fn popular_answers_are_refreshed_before_they_expire() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    let q = query("a.test", RecordType::A);
    udp(proxy.addr, &q).await; // fetched at t=0, TTL 300
    proxy.clock.advance(Duration::from_secs(10));
    udp(proxy.addr, &q).await; // a hit: now popular
    assert_eq!(upstream.query_count(), 1);
    proxy.clock.advance(Duration::from_secs(265)); // t=275: 25 s of 300 left
    let hit = udp(proxy.addr, &q).await;
    assert_eq!(
        hit.answers[0].ttl, 25,
        "the client is answered from the cache at once"
    );
    eventually("the prefetch", || upstream.query_count() == 2).await;
    proxy.clock.advance(Duration::from_secs(35)); // t=310: the original entry would be expired
    let after = udp(proxy.addr, &q).await;
    assert_eq!(
        after.answers[0].ttl, 265,
        "served from the prefetched entry (stored at t=275)"
    );
    assert_eq!(upstream.query_count(), 2, "no miss at expiry");
}

#[tokio::test]
async fn queries_are_padded_to_128_byte_blocks_on_both_transports() {
    let dot = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let doh = FakeUpstream::doh(zone(), Behavior::Answer).await;
    for upstream in [&dot, &doh] {
        let proxy = start_proxy(&[upstream.url()]).await;
        for name in ["a.test", "mx.test", "a-rather-long-label-for-padding.test"] {
            udp(proxy.addr, &query(name, RecordType::A)).await;
        }
        let received = upstream.received();
        assert_eq!(received.len(), 3);
        for q in &received {
            assert_eq!(
                q.len() % 128,
                0,
                "RFC 8467 block padding: {} bytes",
                q.len()
            );
        }
        for m in upstream.received_messages() {
            let edns = m.edns.expect("OPT present");
            assert!(
                edns.option(hickory_proto::rr::rdata::opt::EdnsCode::Padding)
                    .is_some()
            );
            assert!(
                edns.option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)
                    .is_none(),
                "no client subnet"
            );
        }
    }
}

#[tokio::test]
async fn client_subnet_from_the_client_is_not_forwarded() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    // An EDNS query carrying ECS option 8 for 198.51.100.0/24.
    let mut q = query_edns("a.test", RecordType::A, 1232, false);
    let mut raw = wire(&q);
    let n = raw.len();
    raw[n - 2..].copy_from_slice(&11u16.to_be_bytes());
    raw.extend([0, 8, 0, 7, 0, 1, 24, 0, 198, 51, 100]);
    q = parse(&raw);
    let answer = udp(proxy.addr, &q).await;
    assert_eq!(answer.answers.len(), 1);
    let sent = &upstream.received_messages()[0];
    let edns = sent.edns.as_ref().unwrap();
    assert!(
        edns.option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)
            .is_none()
    );
}

#[tokio::test]
async fn dnssec_do_and_cd_pass_through_with_rrsigs_intact() {
    let rrsig: Vec<u8> = (0u8..=99).collect();
    let z = zone().opaque("a.test", 300, RecordType::RRSIG, &rrsig);
    let upstream = FakeUpstream::dot(z, Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    let mut q = query_edns("a.test", RecordType::A, 1232, true);
    q.metadata.checking_disabled = true;
    let got = udp(proxy.addr, &q).await;
    assert!(got.metadata.checking_disabled, "CD echoed");
    assert!(got.edns.as_ref().unwrap().flags().dnssec_ok, "DO echoed");
    let sig = got
        .answers
        .iter()
        .find(|r| r.record_type() == RecordType::RRSIG)
        .expect("RRSIG passed through");
    let RData::Unknown { rdata, .. } = &sig.data else {
        panic!("RRSIG decoded unexpectedly: {:?}", sig.data)
    };
    assert_eq!(rdata.anything, rrsig, "signature bytes untouched");
    let sent = &upstream.received_messages()[0];
    assert!(sent.metadata.checking_disabled);
    assert!(sent.edns.as_ref().unwrap().flags().dnssec_ok);
    // Without CD it is a different cache entry: the upstream is asked again.
    let mut q2 = query_edns("a.test", RecordType::A, 1232, true);
    q2.metadata.checking_disabled = false;
    udp(proxy.addr, &q2).await;
    assert_eq!(upstream.query_count(), 2);
}

/// A DoT connection that goes silent (frozen relay) is replaced: the query caught on it
/// fails over within its deadline, and the next one uses a fresh connection.
#[tokio::test]
async fn a_frozen_dot_connection_is_replaced() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let relay = Relay::start(upstream.addr()).await;
    let url = relay.url_for(&upstream.url());
    let proxy = start_proxy_with(&[url], |s| {
        s.router.query_timeout = Duration::from_millis(2500);
        s.router.attempt_timeout = Duration::from_millis(2500);
    })
    .await;
    assert_eq!(
        udp(proxy.addr, &query("a.test", RecordType::A))
            .await
            .answers
            .len(),
        1
    );
    relay.freeze();
    let caught = udp(proxy.addr, &query("mx.test", RecordType::MX)).await;
    assert_eq!(
        caught.metadata.response_code,
        ResponseCode::ServFail,
        "caught on the dead connection"
    );
    let started = Instant::now();
    let next = udp(proxy.addr, &query("mx.test", RecordType::MX)).await;
    assert_eq!(next.metadata.response_code, ResponseCode::NoError);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        relay.connection_count(),
        2,
        "a fresh connection replaced the frozen one"
    );
}

/// Every upstream failing at once looks like our own network changing (WAN reconnect, laptop
/// resume): the router starts over with fresh connections and fresh address lookups instead
/// of backing off from every upstream.
#[tokio::test]
async fn when_every_upstream_fails_at_once_the_router_starts_over() {
    let dot = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let doh = FakeUpstream::doh(zone(), Behavior::Answer).await;
    let bootstrap = PlainDns::start(Zone::new().record("dns.test. 300 IN A 127.0.0.1")).await;
    let urls = [
        format!("tls://dns.test:{}", dot.addr().port()),
        format!("https://dns.test:{}/dns-query", doh.addr().port()),
    ];
    let proxy = start_proxy_with(&urls, |s| {
        s.bootstrap = vec![bootstrap.addr];
        s.router.query_timeout = Duration::from_secs(1);
    })
    .await;
    assert_eq!(
        udp(proxy.addr, &query("a.test", RecordType::A))
            .await
            .answers
            .len(),
        1
    );
    let lookups = bootstrap.query_count();
    let connections = dot.connection_count() + doh.connection_count();
    dot.set_behavior(Behavior::CloseImmediately);
    doh.set_behavior(Behavior::CloseImmediately);
    let failed = udp(proxy.addr, &query("mx.test", RecordType::MX)).await;
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
    let router = proxy.resolver.router();
    assert!(
        router.last_network_change().is_some(),
        "treated as a network change"
    );
    assert!(
        router.status().iter().all(|u| u.healthy),
        "a clean slate, not backed off"
    );
    dot.set_behavior(Behavior::Answer);
    doh.set_behavior(Behavior::Answer);
    let started = Instant::now();
    let ok = udp(proxy.addr, &query("mx.test", RecordType::MX)).await;
    assert_eq!(ok.metadata.response_code, ResponseCode::NoError);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        bootstrap.query_count() > lookups,
        "upstream addresses looked up again"
    );
    assert!(
        dot.connection_count() + doh.connection_count() > connections,
        "new connections"
    );
}

/// One upstream failing is not a network change.
#[tokio::test]
async fn one_failing_upstream_is_not_a_network_change() {
    let good = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let bad = FakeUpstream::dot(zone(), Behavior::CloseImmediately).await;
    let proxy = start_proxy_with(&[bad.url(), good.url()], |s| {
        s.router.strategy = dnsward::router::Strategy::Strict;
    })
    .await;
    udp(proxy.addr, &query("a.test", RecordType::A)).await;
    let router = proxy.resolver.router();
    assert!(router.last_network_change().is_none());
    assert!(!router.status()[0].healthy);
}

/// A DoH connection that goes silent is found dead by HTTP/2 PING and replaced; the query
/// caught on it is retried on a fresh connection within its deadline.
#[tokio::test]
async fn a_frozen_doh_connection_is_detected_by_ping_and_replaced() {
    let upstream = FakeUpstream::doh(zone(), Behavior::Answer).await;
    let relay = Relay::start(upstream.addr()).await;
    let url = relay.url_for(&upstream.url());
    let proxy = start_proxy_with(&[url], |s| {
        s.connect.keepalive_interval = Duration::from_millis(300);
    })
    .await;
    assert_eq!(
        udp(proxy.addr, &query("a.test", RecordType::A))
            .await
            .answers
            .len(),
        1
    );
    relay.freeze();
    let started = Instant::now();
    let answer = udp(proxy.addr, &query("mx.test", RecordType::MX)).await;
    assert_eq!(
        answer.metadata.response_code,
        ResponseCode::NoError,
        "answered on a new connection"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(relay.connection_count(), 2);
}

fn a_records(m: &hickory_proto::op::Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn hosts_file_and_static_records_answer_locally_and_reload() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let dir = std::env::temp_dir().join(format!("dnsward-living-hosts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n192.168.1.10 nas.lan nas\n").unwrap();
    let hosts_path = hosts.clone();
    let proxy = start_proxy_with(&[upstream.url()], move |s| {
        s.hosts_file = Some(hosts_path);
        s.records = vec!["printer.home.arpa. 300 IN A 192.168.1.20".into()];
    })
    .await;
    let nas = udp(proxy.addr, &query("NAS.lan", RecordType::A)).await;
    assert_eq!(a_records(&nas), ["192.168.1.10"]);
    assert!(nas.metadata.authoritative);
    assert_eq!(
        nas.queries[0].name().to_string(),
        "NAS.lan.",
        "client's case kept"
    );
    let ptr = udp(
        proxy.addr,
        &query("10.1.168.192.in-addr.arpa", RecordType::PTR),
    )
    .await;
    assert!(matches!(&ptr.answers[0].data, RData::PTR(p) if p.0.to_string() == "nas.lan."));
    let printer = udp(proxy.addr, &query("printer.home.arpa", RecordType::A)).await;
    assert_eq!(a_records(&printer), ["192.168.1.20"]);
    let nodata = udp(proxy.addr, &query("nas.lan", RecordType::MX)).await;
    assert_eq!(
        (nodata.metadata.response_code, nodata.answers.len()),
        (ResponseCode::NoError, 0)
    );
    assert_eq!(upstream.query_count(), 0, "nothing local went upstream");
    // Edit the file: the new address is served once the reload task notices.
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n192.168.1.99 nas.lan nas # moved\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = udp(proxy.addr, &query("nas.lan", RecordType::A)).await;
        if a_records(&got) == ["192.168.1.99"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hosts file not reloaded: {:?}",
            a_records(&got)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn split_dns_sends_lan_names_to_the_local_resolver_and_the_rest_encrypted() {
    let upstream = FakeUpstream::doh(zone(), Behavior::Answer).await;
    let router = PlainDns::start(Zone::new().records(
        "lan. 3600 IN SOA router.lan. admin.lan. 1 3600 600 86400 60
         nas.lan. 120 IN A 192.168.1.10
         10.1.168.192.in-addr.arpa. 120 IN PTR nas.lan.",
    ))
    .await;
    let router_addr = router.addr;
    let proxy = start_proxy_with(&[upstream.url()], move |s| {
        s.forward = vec![dnsward::config::ForwardRule {
            domains: vec!["lan".into(), "1.168.192.in-addr.arpa".into()],
            servers: vec![router_addr],
        }];
    })
    .await;
    let q = query("nas.lan", RecordType::A);
    let nas = udp(proxy.addr, &q).await;
    assert_eq!(a_records(&nas), ["192.168.1.10"]);
    assert_eq!(nas.metadata.id, q.metadata.id, "client ID restored");
    let ptr = udp(
        proxy.addr,
        &query("10.1.168.192.in-addr.arpa", RecordType::PTR),
    )
    .await;
    assert_eq!(ptr.answers.len(), 1);
    assert_eq!(router.query_count(), 2);
    // Cached like any answer.
    udp(proxy.addr, &q).await;
    assert_eq!(router.query_count(), 2);
    // Everything else still goes encrypted.
    assert_eq!(
        a_records(&udp(proxy.addr, &query("a.test", RecordType::A)).await),
        ["192.0.2.1"]
    );
    assert_eq!(upstream.query_count(), 1);
    assert!(
        upstream
            .received_messages()
            .iter()
            .all(|m| !m.queries[0].name().to_string().contains("lan"))
    );
}

#[tokio::test]
async fn private_reverse_zones_are_never_sent_to_public_upstreams() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    for name in [
        "1.1.168.192.in-addr.arpa",
        "5.0.0.10.in-addr.arpa",
        "1.0.16.172.in-addr.arpa",
        "printer.home.arpa",
        "macbook.local",
    ] {
        let got = udp(proxy.addr, &query(name, RecordType::PTR)).await;
        assert_eq!(got.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert_eq!(got.authorities[0].record_type(), RecordType::SOA, "{name}");
    }
    assert_eq!(upstream.query_count(), 0);
}

#[tokio::test]
async fn captive_portal_names_go_plaintext_only_while_upstreams_are_unreachable() {
    let portal = PlainDns::start(Zone::new().record("captive.apple.com. 60 IN A 10.9.9.9")).await;
    let upstream = FakeUpstream::dot(
        Zone::new().record("captive.apple.com. 60 IN A 17.253.1.1"),
        Behavior::CloseImmediately,
    )
    .await;
    let portal_addr = portal.addr;
    let proxy = start_proxy_with(&[upstream.url()], move |s| {
        s.captive = Some(dnsward::config::CaptiveSettings {
            names: vec!["captive.apple.com".into()],
            resolvers: vec![portal_addr],
        });
        s.stale.enabled = false;
    })
    .await;
    let got = udp(proxy.addr, &query("captive.apple.com", RecordType::A)).await;
    assert_eq!(
        a_records(&got),
        ["10.9.9.9"],
        "through the network's resolver"
    );
    let other = udp(proxy.addr, &query("example.com", RecordType::A)).await;
    assert_eq!(
        other.metadata.response_code,
        ResponseCode::ServFail,
        "nothing else in plaintext"
    );
    assert_eq!(portal.query_count(), 1);
    // Logged in: the upstream answers again, and the name is resolved encrypted.
    upstream.set_behavior(Behavior::Answer);
    eventually("the upstream to be healthy", || {
        proxy.resolver.router().status().iter().all(|u| u.healthy)
    })
    .await;
    let got = udp(proxy.addr, &query("captive.apple.com", RecordType::A)).await;
    assert_eq!(a_records(&got), ["17.253.1.1"]);
    assert_eq!(
        portal.query_count(),
        1,
        "not cached from plaintext, not asked again"
    );
}
