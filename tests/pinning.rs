//! SPKI pinning (`pin-sha256`) end to end: the real proxy in-process against fake DoH/DoT
//! upstreams on loopback that present certs/server-chain.pem (leaf + test CA).

mod common;

use std::time::Duration;

use common::*;
use dnsward::upstream::pin::{format_pin, parse_pin, spki_sha256};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

fn zone() -> Zone {
    Zone::new().record("a.test. 300 IN A 192.0.2.1")
}

/// The pin of the first certificate in a PEM file under certs/, round-tripped through the
/// textual form a configuration file holds.
fn pin_of(file: &str) -> [u8; 32] {
    let pin = spki_sha256(&load_certs(file)[0]).expect("certificate parses");
    parse_pin(&format!("sha256/{}", format_pin(&pin))).expect("pin round-trips")
}

async fn fake(proto: Proto) -> FakeUpstream {
    match proto {
        Proto::Doh => FakeUpstream::doh(zone(), Behavior::Answer).await,
        Proto::Dot => FakeUpstream::dot(zone(), Behavior::Answer).await,
    }
}

/// Asks a proxy whose only upstream is `upstream`, pinned to `pins`, for a.test A.
async fn ask_pinned(upstream: &FakeUpstream, pins: Vec<[u8; 32]>) -> hickory_proto::op::Message {
    let proxy = start_proxy_with(&[upstream.url()], |settings| {
        settings.upstreams[0].pin_sha256 = pins;
        settings.router.attempt_timeout = Duration::from_millis(500);
        settings.router.query_timeout = Duration::from_millis(1500);
    })
    .await;
    let answer = udp(proxy.addr, &query("a.test", RecordType::A)).await;
    proxy.shutdown().await;
    answer
}

fn assert_answered(answer: &hickory_proto::op::Message, proto: Proto) {
    assert_eq!(
        answer.metadata.response_code,
        ResponseCode::NoError,
        "{proto:?}"
    );
    let ips: Vec<_> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    assert_eq!(
        ips,
        ["192.0.2.1".parse::<std::net::Ipv4Addr>().unwrap()],
        "{proto:?}"
    );
}

#[tokio::test]
async fn the_right_leaf_pin_is_answered() {
    for proto in [Proto::Doh, Proto::Dot] {
        let upstream = fake(proto).await;
        let answer = ask_pinned(&upstream, vec![pin_of("server.pem")]).await;
        assert_answered(&answer, proto);
        assert!(upstream.query_count() >= 1, "{proto:?}");
    }
}

#[tokio::test]
async fn a_wrong_pin_gives_servfail_and_sends_nothing() {
    for proto in [Proto::Doh, Proto::Dot] {
        let upstream = fake(proto).await;
        // The untrusted CA's key and an arbitrary digest: neither is in the served chain.
        let pins = vec![pin_of("untrusted-ca.pem"), [0x5a; 32]];
        let answer = ask_pinned(&upstream, pins).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::ServFail,
            "{proto:?}"
        );
        assert!(answer.answers.is_empty(), "{proto:?}");
        assert!(
            upstream.connection_count() >= 1,
            "{proto:?}: the upstream was never even tried"
        );
        assert_eq!(
            upstream.query_count(),
            0,
            "{proto:?}: nothing may be sent over an unpinned connection"
        );
    }
}

#[tokio::test]
async fn a_pin_on_the_ca_key_is_enough() {
    for proto in [Proto::Doh, Proto::Dot] {
        let upstream = fake(proto).await;
        let pins = vec![pin_of("untrusted-ca.pem"), pin_of("ca.pem")];
        let answer = ask_pinned(&upstream, pins).await;
        assert_answered(&answer, proto);
    }
}

#[tokio::test]
async fn a_pinned_upstream_that_fails_the_pin_fails_over_to_the_next() {
    let impostor = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let genuine = FakeUpstream::doh(zone(), Behavior::Answer).await;
    let proxy = start_proxy_with(&[impostor.url(), genuine.url()], |settings| {
        settings.upstreams[0].pin_sha256 = vec![pin_of("untrusted.pem")];
        settings.upstreams[1].pin_sha256 = vec![pin_of("server.pem")];
        settings.router.attempt_timeout = Duration::from_millis(500);
    })
    .await;
    let answer = udp(proxy.addr, &query("a.test", RecordType::A)).await;
    assert_answered(&answer, Proto::Doh);
    assert_eq!(impostor.query_count(), 0);
    assert!(genuine.query_count() >= 1);
    proxy.shutdown().await;
}
