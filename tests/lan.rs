//! Serving a LAN safely, in-process against the real listeners: the access list (REFUSED over
//! TCP, silence over UDP), per-client rate limiting with slip, and minimal ANY answers; the
//! first two are counted in the metrics.
//!
//! Every address in 127.0.0.0/8 is this machine, so clients bound to 127.0.0.2 and 127.0.0.3
//! are distinct sources without any network set-up. The configuration always allows loopback;
//! these tests set the validated settings directly to an access list that does not, so that a
//! "not allowed" source exists on loopback.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use dnsward::clients::{ClientSettings, RateLimit};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, UdpSocket};
use tokio::time::timeout;

/// An upstream that is never reached: every query here is answered from static records.
const UNUSED_UPSTREAM: &str = "tls://localhost:1#127.0.0.1";

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

fn source(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A proxy answering `nas.lan` locally, with `clients` as its policy.
async fn lan_proxy(clients: ClientSettings) -> Proxy {
    start_proxy_with(&[UNUSED_UPSTREAM.to_string()], |s| {
        s.records = vec!["nas.lan. 300 IN A 192.168.1.10".into()];
        s.clients = clients;
    })
    .await
}

/// A UDP client bound to `from`, talking to `server`.
async fn udp_client(from: IpAddr, server: SocketAddr) -> UdpSocket {
    let sock = UdpSocket::bind(SocketAddr::new(from, 0)).await.unwrap();
    sock.connect(server).await.unwrap();
    sock
}

/// Sends `msg` and waits up to `limit` for a reply.
async fn ask_udp(sock: &UdpSocket, msg: &Message, limit: Duration) -> Option<Message> {
    sock.send(&wire(msg)).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match timeout(limit, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(parse(&buf[..n])),
        _ => None,
    }
}

/// One query over TCP from `from`.
async fn ask_tcp(from: IpAddr, server: SocketAddr, msg: &Message) -> Message {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = timeout(Duration::from_secs(5), socket.connect(server))
        .await
        .expect("connect in time")
        .expect("connect");
    write_framed(&mut stream, &wire(msg)).await.unwrap();
    let bytes = timeout(Duration::from_secs(5), read_framed(&mut stream))
        .await
        .expect("TCP answer in time")
        .expect("TCP answer");
    let _ = stream.shutdown().await;
    parse(&bytes)
}

/// The proxy's metrics, as `/metrics` renders them.
fn metrics(proxy: &Proxy) -> String {
    proxy.service.metrics().render(&proxy.service.snapshot())
}

/// The value of `sample` (a counter's name and labels, as rendered) in the proxy's metrics; 0
/// before it is first counted.
fn counter(proxy: &Proxy, sample: &str) -> f64 {
    metrics(proxy)
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().expect("a number"))
}

const DENIED_UDP: &str = r#"dnsward_queries_denied_total{transport="udp"}"#;
const DENIED_TCP: &str = r#"dnsward_queries_denied_total{transport="tcp"}"#;
const RATE_DROPPED: &str = r#"dnsward_queries_rate_limited_total{action="dropped"}"#;
const RATE_SLIPPED: &str = r#"dnsward_queries_rate_limited_total{action="slipped"}"#;

fn answered_nas(m: &Message) -> bool {
    m.metadata.response_code == ResponseCode::NoError
        && m.answers
            .iter()
            .any(|r| r.data == RData::A("192.168.1.10".parse().unwrap()))
}

#[tokio::test]
async fn a_source_off_the_access_list_gets_refused_over_tcp_and_nothing_over_udp() {
    let proxy = lan_proxy(ClientSettings {
        allow: vec![net("127.0.0.2/32")],
        rate_limit: None,
    })
    .await;
    let q = query("nas.lan", RecordType::A);

    let allowed = udp_client(source(2), proxy.addr).await;
    let got = ask_udp(&allowed, &q, Duration::from_secs(3))
        .await
        .expect("an allowed source is answered over UDP");
    assert!(answered_nas(&got), "{got:?}");
    let got = ask_tcp(source(2), proxy.addr, &q).await;
    assert!(answered_nas(&got), "{got:?}");
    assert_eq!(counter(&proxy, DENIED_UDP), 0.0);
    assert_eq!(counter(&proxy, DENIED_TCP), 0.0);

    let other = udp_client(source(3), proxy.addr).await;
    assert!(
        ask_udp(&other, &q, Duration::from_millis(700))
            .await
            .is_none(),
        "a source off the list gets no UDP reply"
    );
    let got = ask_tcp(source(3), proxy.addr, &q).await;
    assert_eq!(got.metadata.response_code, ResponseCode::Refused);
    assert_eq!(got.metadata.id, q.metadata.id);
    assert!(got.answers.is_empty());
    // 127.0.0.1 is loopback, but this policy does not list it: nothing is implicit here.
    let got = ask_tcp(source(1), proxy.addr, &q).await;
    assert_eq!(got.metadata.response_code, ResponseCode::Refused);

    // Each message from a source off the list is counted once, by transport, and apart from
    // the queries answered (the two from 127.0.0.2).
    assert_eq!(counter(&proxy, DENIED_UDP), 1.0);
    assert_eq!(counter(&proxy, DENIED_TCP), 2.0);
    assert_eq!(proxy.service.metrics().totals().queries, 2);
    assert_eq!(counter(&proxy, RATE_DROPPED), 0.0);
    // The reference parsers read the family as a counter.
    if parser_available() {
        let m = parse_metrics(&metrics(&proxy));
        assert_eq!(m.kind("dnsward_queries_denied"), Some("counter"));
        assert_eq!(
            m.count("dnsward_queries_denied_total", &[("transport", "tcp")]),
            2.0
        );
    }
    proxy.shutdown().await;
}

/// A bounded burst from one client: exactly `burst` answered, then every second query over
/// the limit gets an empty truncated reply and the others nothing.
#[tokio::test]
async fn a_client_over_its_rate_limit_is_dropped_with_every_second_reply_truncated() {
    let proxy = lan_proxy(ClientSettings {
        allow: vec![net("127.0.0.0/8")],
        rate_limit: Some(RateLimit {
            // One token a quarter of an hour: nothing refills during the test.
            per_second: 1.0 / 900.0,
            burst: 5,
            slip: 2,
            exempt: Vec::new(),
            ..RateLimit::default()
        }),
    })
    .await;
    let client = udp_client(source(2), proxy.addr).await;
    let (mut answered, mut truncated, mut silent) = (0, 0, 0);
    for i in 0..20 {
        let mut q = query("nas.lan", RecordType::A);
        q.metadata.id = 1000 + i;
        match ask_udp(&client, &q, Duration::from_millis(400)).await {
            Some(m) if m.metadata.truncation => {
                assert!(m.answers.is_empty(), "{m:?}");
                assert_eq!(m.metadata.id, q.metadata.id);
                truncated += 1;
            }
            Some(m) => {
                assert!(answered_nas(&m), "{m:?}");
                answered += 1;
            }
            None => silent += 1,
        }
    }
    assert_eq!((answered, truncated, silent), (5, 7, 8));
    assert_eq!(counter(&proxy, RATE_DROPPED), 8.0);
    assert_eq!(counter(&proxy, RATE_SLIPPED), 7.0);
    assert_eq!(counter(&proxy, DENIED_UDP), 0.0);
    if parser_available() {
        let m = parse_metrics(&metrics(&proxy));
        assert_eq!(m.kind("dnsward_queries_rate_limited"), Some("counter"));
        assert_eq!(
            m.count(
                "dnsward_queries_rate_limited_total",
                &[("action", "slipped")]
            ),
            7.0
        );
    }
    // Another client has a bucket of its own, and TCP (where the slip sends clients) is not
    // limited.
    let other = udp_client(source(3), proxy.addr).await;
    let got = ask_udp(
        &other,
        &query("nas.lan", RecordType::A),
        Duration::from_secs(3),
    )
    .await
    .expect("another client is answered");
    assert!(answered_nas(&got));
    let got = ask_tcp(source(2), proxy.addr, &query("nas.lan", RecordType::A)).await;
    assert!(answered_nas(&got));
    assert_eq!(counter(&proxy, RATE_DROPPED), 8.0);
    assert_eq!(counter(&proxy, RATE_SLIPPED), 7.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn exempt_sources_are_not_rate_limited() {
    let proxy = lan_proxy(ClientSettings {
        rate_limit: Some(RateLimit {
            per_second: 1.0 / 900.0,
            burst: 2,
            slip: 0,
            ..RateLimit::default()
        }),
        ..ClientSettings::default()
    })
    .await;
    // The default exemption is loopback.
    let client = udp_client(source(1), proxy.addr).await;
    for _ in 0..30 {
        let got = ask_udp(
            &client,
            &query("nas.lan", RecordType::A),
            Duration::from_secs(3),
        )
        .await
        .expect("loopback is never limited");
        assert!(answered_nas(&got));
    }
    assert_eq!(counter(&proxy, RATE_DROPPED), 0.0);
    assert_eq!(counter(&proxy, RATE_SLIPPED), 0.0);
    proxy.shutdown().await;
}

/// RFC 8482: ANY gets one synthesised HINFO, and no ANY query reaches the upstream.
#[tokio::test]
async fn any_is_answered_minimally_without_asking_upstream() {
    let zone = Zone::new().records(
        "a.test. 300 IN A 192.0.2.1
         a.test. 300 IN AAAA 2001:db8::1
         a.test. 300 IN TXT \"one\"
         a.test. 300 IN MX 10 mail.test.",
    );
    let upstream = FakeUpstream::dot(zone, Behavior::Answer).await;
    let proxy = start_proxy(&[upstream.url()]).await;
    for transport in ["udp", "tcp"] {
        let q = query_edns("a.test", RecordType::ANY, 1232, false);
        let got = match transport {
            "udp" => udp(proxy.addr, &q).await,
            _ => tcp(proxy.addr, &q).await,
        };
        assert_eq!(got.metadata.response_code, ResponseCode::NoError);
        assert_eq!(got.answers.len(), 1, "{transport}: {got:?}");
        let RData::HINFO(hinfo) = &got.answers[0].data else {
            panic!("{transport}: not HINFO: {got:?}");
        };
        assert_eq!(&*hinfo.cpu, b"RFC8482");
    }
    assert_eq!(upstream.query_count(), 0, "ANY never goes upstream");
    // Other types still do.
    let got = udp(proxy.addr, &query("a.test", RecordType::TXT)).await;
    assert_eq!(got.answers.len(), 1);
    assert_eq!(upstream.query_count(), 1);
    proxy.shutdown().await;
}
