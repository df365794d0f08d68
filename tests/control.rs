//! The control endpoint in-process: `/metrics` read by the reference Prometheus parsers,
//! `/healthz` following the encrypted upstreams, `/stats`, cache flushes, request bounds,
//! and reloads that swap the resolver under queries in flight.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use dnsward::config::Settings;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use hyper::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn zone() -> Zone {
    Zone::new()
        .record("test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60")
        .records(
            "a.test. 300 IN A 192.0.2.1
             a.test. 300 IN AAAA 2001:db8::1
             b.test. 300 IN A 192.0.2.2
             c.test. 300 IN A 192.0.2.3",
        )
        .delay("slow.test", Duration::from_millis(600))
        .record("slow.test. 300 IN A 192.0.2.9")
}

async fn start(upstream: &FakeUpstream) -> (Proxy, SocketAddr) {
    start_with(&[upstream.url()], |_| {}).await
}

async fn start_with(
    upstreams: &[String],
    tweak: impl FnOnce(&mut Settings),
) -> (Proxy, SocketAddr) {
    let proxy = start_proxy_with(upstreams, |s| {
        with_control(s);
        tweak(s);
    })
    .await;
    let control = proxy.control.expect("control endpoint on");
    (proxy, control)
}

async fn scrape(control: SocketAddr) -> Scrape {
    let answer = get(control, "/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    let content_type = answer.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    parse_metrics(&answer.body)
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

fn txt(m: &hickory_proto::op::Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_queries_cache_and_upstreams() {
    if !parser_available() {
        return;
    }
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let (proxy, control) = start(&upstream).await;
    let url = upstream.url();
    let before = scrape(control).await;
    assert_eq!(before.kind("dnsward_queries"), None, "nothing counted yet");
    assert_eq!(before.kind("dnsward_upstream_healthy"), Some("gauge"));
    assert_eq!(
        before.value("dnsward_upstream_healthy", &[("upstream", &url)]),
        Some(1.0)
    );
    assert_eq!(
        before.value(
            "dnsward_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );

    // Two misses (one UDP, one TCP), then a hit, then an NXDOMAIN miss.
    assert_eq!(
        a_records(&udp(proxy.addr, &query("a.test", RecordType::A)).await),
        ["192.0.2.1"]
    );
    tcp(proxy.addr, &query("b.test", RecordType::A)).await;
    udp(proxy.addr, &query("a.test", RecordType::A)).await;
    let nx = udp(proxy.addr, &query("nope.test", RecordType::A)).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    // Not a query at all: dropped without an answer.
    assert!(
        udp_exchange_timeout(proxy.addr, &[1, 2, 3], Duration::from_millis(300))
            .await
            .is_none()
    );

    let after = scrape(control).await;
    assert_eq!(after.kind("dnsward_queries"), Some("counter"));
    let queries = |transport: &str, rcode: &str| {
        after.count(
            "dnsward_queries_total",
            &[("transport", transport), ("rcode", rcode)],
        )
    };
    assert_eq!(queries("udp", "NOERROR"), 2.0);
    assert_eq!(queries("tcp", "NOERROR"), 1.0);
    assert_eq!(queries("udp", "NXDOMAIN"), 1.0);
    assert_eq!(
        after.count("dnsward_queries_dropped_total", &[("transport", "udp")]),
        1.0
    );
    let lookups = |result: &str| after.count("dnsward_cache_lookups_total", &[("result", result)]);
    assert_eq!(
        (lookups("hit"), lookups("miss"), lookups("stale")),
        (1.0, 3.0, 0.0)
    );
    assert_eq!(after.value("dnsward_cache_entries", &[]), Some(3.0));
    // Three upstream exchanges, each observed once in the latency histogram.
    assert_eq!(
        after.kind("dnsward_upstream_latency_seconds"),
        Some("histogram")
    );
    assert_eq!(
        after.value(
            "dnsward_upstream_latency_seconds_count",
            &[("upstream", &url)]
        ),
        Some(3.0)
    );
    assert_eq!(
        after.value(
            "dnsward_upstream_latency_seconds_bucket",
            &[("upstream", &url), ("le", "+Inf")]
        ),
        Some(3.0)
    );
    assert!(
        after.count(
            "dnsward_upstream_latency_seconds_sum",
            &[("upstream", &url)]
        ) > 0.0
    );
    assert_eq!(after.count("dnsward_failovers_total", &[]), 0.0);

    // The hijack classifier's counter is there for it to call.
    proxy.service.metrics().hijack_finding("bogus-nxdomain");
    let hijack = scrape(control).await;
    assert_eq!(
        hijack.count(
            "dnsward_hijack_findings_total",
            &[("verdict", "bogus-nxdomain")]
        ),
        1.0
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn metrics_count_failovers_failures_and_stale_answers() {
    if !parser_available() {
        return;
    }
    let good = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let dead = refused_url("tls").await;
    let (proxy, control) = start_with(&[dead.clone(), good.url()], |s| {
        s.router.strategy = dnsward::router::Strategy::Strict;
    })
    .await;
    udp(proxy.addr, &query("a.test", RecordType::A)).await;
    let m = scrape(control).await;
    assert_eq!(m.count("dnsward_failovers_total", &[]), 1.0);
    assert_eq!(
        m.count(
            "dnsward_upstream_failures_total",
            &[("upstream", &dead), ("reason", "connect")]
        ),
        1.0
    );
    assert_eq!(
        m.value("dnsward_upstream_healthy", &[("upstream", &dead)]),
        Some(0.0)
    );
    assert_eq!(
        m.value("dnsward_upstream_healthy", &[("upstream", &good.url())]),
        Some(1.0)
    );

    // Past its TTL with every upstream gone: served stale (RFC 8767), and counted.
    proxy.clock.advance(Duration::from_secs(301));
    good.set_behavior(Behavior::CloseImmediately);
    let stale = udp(proxy.addr, &query("a.test", RecordType::A)).await;
    assert_eq!(a_records(&stale), ["192.0.2.1"]);
    let m = scrape(control).await;
    assert_eq!(
        m.count("dnsward_cache_lookups_total", &[("result", "stale")]),
        1.0
    );
    assert_eq!(m.count("dnsward_cache_stale_answers_total", &[]), 1.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn healthz_follows_the_encrypted_upstreams() {
    let upstream = FakeUpstream::doh(zone(), Behavior::Answer).await;
    let (proxy, control) = start(&upstream).await;
    // Idle: nothing has answered yet, so the check probes through the router.
    let ok = get(control, "/healthz").await;
    assert_eq!((ok.status, ok.body.as_str()), (StatusCode::OK, "ok\n"));
    assert_eq!(upstream.query_count(), 1, "one probe");
    // Fresh evidence: no second probe.
    assert_eq!(get(control, "/healthz").await.status, StatusCode::OK);
    assert_eq!(
        upstream.query_count(),
        1,
        "no probe while an answer is fresh"
    );

    upstream.set_behavior(Behavior::CloseImmediately);
    // The next query fails and marks the only upstream unhealthy: the check probes again,
    // the probe fails too, and the endpoint says why.
    udp(proxy.addr, &query("a.test", RecordType::A)).await;
    let bad = get(control, "/healthz").await;
    assert_eq!(bad.status, StatusCode::SERVICE_UNAVAILABLE, "{}", bad.body);
    assert!(
        bad.body
            .starts_with("unhealthy: no encrypted upstream answered"),
        "{}",
        bad.body
    );
    let head = http(control, Method::HEAD, "/healthz").await;
    assert_eq!(head.status, StatusCode::SERVICE_UNAVAILABLE);

    upstream.set_behavior(Behavior::Answer);
    assert_eq!(get(control, "/healthz").await.status, StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test]
async fn healthz_is_unhealthy_when_upstreams_hang() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Hang).await;
    let (proxy, control) = start(&upstream).await;
    let started = std::time::Instant::now();
    let bad = get(control, "/healthz").await;
    assert_eq!(bad.status, StatusCode::SERVICE_UNAVAILABLE, "{}", bad.body);
    assert!(bad.body.contains("within"), "{}", bad.body);
    // Bounded by the probe timeout (2.5 s), well inside keepalived's script timeout.
    assert!(started.elapsed() < Duration::from_secs(8));
    proxy.shutdown().await;
}

#[tokio::test]
async fn stats_are_json() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let (proxy, control) = start(&upstream).await;
    udp(proxy.addr, &query("a.test", RecordType::A)).await;
    udp(proxy.addr, &query("a.test", RecordType::A)).await;
    let answer = get(control, "/stats").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "application/json");
    let stats: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(stats["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(stats["totals"]["queries"], 2);
    assert_eq!(stats["totals"]["cache_hits"], 1);
    assert_eq!(stats["totals"]["cache_misses"], 1);
    assert_eq!(stats["cache"]["entries"], 1);
    assert_eq!(stats["upstreams"][0]["url"], upstream.url());
    assert_eq!(stats["upstreams"][0]["healthy"], true);
    assert!(stats["upstreams"][0]["srtt_ms"].as_f64().unwrap() > 0.0);
    assert!(stats["last_reload"].is_null());
    proxy.shutdown().await;
}

#[tokio::test]
async fn cache_flush_whole_or_one_name() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let (proxy, control) = start(&upstream).await;
    let ask_all = || async {
        udp(proxy.addr, &query("a.test", RecordType::A)).await;
        udp(proxy.addr, &query("A.Test", RecordType::AAAA)).await;
        udp(proxy.addr, &query("b.test", RecordType::A)).await;
    };
    ask_all().await;
    assert_eq!(upstream.query_count(), 3);
    ask_all().await;
    assert_eq!(upstream.query_count(), 3, "all cached");

    // One name, any case, all its types; other names stay.
    let flushed = http(control, Method::POST, "/cache/flush?name=A.TEST.").await;
    assert_eq!(flushed.status, StatusCode::OK, "{}", flushed.body);
    let body: serde_json::Value = serde_json::from_str(&flushed.body).unwrap();
    assert_eq!(body["entries"], 2, "{body}");
    ask_all().await;
    assert_eq!(upstream.query_count(), 5, "a.test A and AAAA fetched again");

    // The whole cache.
    let all = http(control, Method::POST, "/cache/flush").await;
    assert_eq!(all.status, StatusCode::OK);
    ask_all().await;
    assert_eq!(upstream.query_count(), 8);

    let bad = http(control, Method::POST, "/cache/flush?name=a..test").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let wrong_method = get(control, "/cache/flush").await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.headers["allow"], "POST");
    proxy.shutdown().await;
}

/// Writes raw bytes and reads until the server closes (bounded); returns what came back.
async fn raw_exchange(control: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(control).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(HTTP_TIMEOUT, stream.read_to_end(&mut out))
        .await
        .expect("server closes the connection");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn control_requests_are_bounded() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let (proxy, control) = start(&upstream).await;
    assert_eq!(get(control, "/nope").await.status, StatusCode::NOT_FOUND);

    // A body is refused and the connection closed.
    let with_body = raw_exchange(
        control,
        b"POST /cache/flush HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert!(with_body.starts_with("HTTP/1.1 413"), "{with_body}");

    // An oversized request head is refused.
    let mut huge = b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 20_000));
    huge.extend(b"\r\n\r\n");
    let answer = raw_exchange(control, &huge).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );

    // Beyond 16 connections at once, new ones are closed on accept.
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(TcpStream::connect(control).await.unwrap());
    }
    // Accepting is asynchronous: once the 16 are served, the next connection gets closed.
    let mut closed = false;
    for _ in 0..50 {
        let mut extra = TcpStream::connect(control).await.unwrap();
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(200), extra.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => continue,
        }
    }
    assert!(closed, "a 17th connection is closed at once");
    drop(idle);
    // Served again once they are gone.
    let mut ok = false;
    for _ in 0..50 {
        if tokio::time::timeout(Duration::from_secs(1), get(control, "/stats"))
            .await
            .is_ok_and(|a| a.status == StatusCode::OK)
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "served again after the idle connections closed");
    proxy.shutdown().await;
}

#[tokio::test]
async fn reload_swaps_the_resolver_without_dropping_queries_in_flight() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let (proxy, control) = start_with(&[upstream.url()], |s| {
        s.records = vec!["who.test. 60 IN TXT \"one\"".into()];
    })
    .await;
    assert_eq!(
        txt(&udp(proxy.addr, &query("who.test", RecordType::TXT)).await),
        ["one"]
    );
    udp(proxy.addr, &query("b.test", RecordType::A)).await;

    // Queries waiting on a slow upstream answer while the resolver is replaced under them.
    let in_flight: Vec<_> = (0..20)
        .map(|_| {
            let addr = proxy.addr;
            tokio::spawn(async move { udp(addr, &query("slow.test", RecordType::A)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut new = proxy.service.settings();
    new.records = vec!["who.test. 60 IN TXT \"two\"".into()];
    new.listen = vec!["127.0.0.1:1".parse().unwrap()];
    let report = proxy.service.reload(new).expect("reload");
    assert!(report.kept_cache, "cache settings did not change");
    assert_eq!(report.needs_restart, ["listen"]);
    for query in in_flight {
        let answer = query.await.expect("query task");
        assert_eq!(a_records(&answer), ["192.0.2.9"]);
    }

    assert_eq!(
        txt(&udp(proxy.addr, &query("who.test", RecordType::TXT)).await),
        ["two"]
    );
    // The kept cache still answers b.test without asking upstream.
    let asked = upstream.query_count();
    udp(proxy.addr, &query("b.test", RecordType::A)).await;
    assert_eq!(upstream.query_count(), asked);
    // Listening addresses are not reloadable: still the same socket, and still remembered.
    assert_eq!(proxy.service.settings().listen, proxy.settings.listen);

    let stats: serde_json::Value =
        serde_json::from_str(&get(control, "/stats").await.body).unwrap();
    assert_eq!(stats["last_reload"], "ok");
    assert_eq!(stats["totals"]["reloads_ok"], 1);

    // A change of cache settings starts an empty cache.
    let mut resized = proxy.service.settings();
    resized.cache_size = 500;
    assert!(!proxy.service.reload(resized).unwrap().kept_cache);
    udp(proxy.addr, &query("b.test", RecordType::A)).await;
    assert_eq!(upstream.query_count(), asked + 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_reload_that_cannot_be_set_up_keeps_the_old_configuration() {
    let upstream = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let (proxy, control) = start_with(&[upstream.url()], |s| {
        s.records = vec!["who.test. 60 IN TXT \"one\"".into()];
    })
    .await;
    let mut broken = proxy.service.settings();
    broken.records = vec!["who.test. 60 IN TXT \"two\"".into()];
    broken.ca_files.push("/nonexistent/ca.pem".into());
    let err = proxy.service.reload(broken).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    assert_eq!(
        txt(&udp(proxy.addr, &query("who.test", RecordType::TXT)).await),
        ["one"]
    );
    assert_eq!(
        a_records(&udp(proxy.addr, &query("a.test", RecordType::A)).await),
        ["192.0.2.1"]
    );
    if parser_available() {
        let m = scrape(control).await;
        assert_eq!(
            m.value("dnsward_config_last_reload_successful", &[]),
            Some(0.0)
        );
        assert_eq!(
            m.count("dnsward_config_reloads_total", &[("result", "error")]),
            1.0
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn hijack_findings_reach_the_metrics() {
    if !parser_available() {
        return;
    }
    let zone = Zone::new()
        .record("test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60")
        .records(
            "lan.test. 300 IN A 192.168.1.20
             sink.test. 300 IN A 146.112.61.104",
        );
    let upstream = FakeUpstream::dot(zone, Behavior::Answer).await;
    let (proxy, control) = start_with(&[upstream.url()], |s| {
        assert!(s.hijack.enabled, "hijack checks are on by default");
    })
    .await;
    udp(proxy.addr, &query("lan.test", RecordType::A)).await;
    udp(proxy.addr, &query("sink.test", RecordType::A)).await;
    let m = scrape(control).await;
    let findings =
        |verdict: &str| m.count("dnsward_hijack_findings_total", &[("verdict", verdict)]);
    assert_eq!(
        findings("suspicious"),
        1.0,
        "a private address from a public upstream"
    );
    assert_eq!(findings("hijacked"), 1.0, "a known sinkhole address");
    proxy.shutdown().await;
}
