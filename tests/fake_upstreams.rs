//! Self-test of the fake upstreams and helpers in tests/common, with real DoT / DoH clients.
//! Loopback only.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

const T: Duration = Duration::from_secs(5);

fn zone() -> Zone {
    Zone::new()
        .record("test. 3600 IN SOA ns.test. admin.test. 1 7200 900 86400 300")
        .record("test. 3600 IN NS ns.test.")
        .record("a.test. 300 IN A 192.0.2.1")
        .record("a.test. 300 IN AAAA 2001:db8::1")
        .record("www.test. 300 IN CNAME alias.test.")
        .record("alias.test. 300 IN CNAME a.test.")
        .record("out.test. 300 IN CNAME elsewhere.example.")
        .record("mx.test. 300 IN MX 10 mail.test.")
        .record("txt.test. 300 IN TXT \"hello world\"")
        .record("1.2.0.192.in-addr.arpa. 300 IN PTR a.test.")
        .record("deep.sub.test. 300 IN A 192.0.2.9")
        .rcode("fail.test.", ResponseCode::ServFail)
        .delay("slow.test.", Duration::from_millis(600))
        .record("slow.test. 300 IN A 192.0.2.2")
        .record("fast.test. 300 IN A 192.0.2.3")
        .big_txt("big.test.", 6)
}

fn a_addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    assert!(addr.ip().is_loopback());
    let tcp = timeout(T, TcpStream::connect(addr))
        .await
        .expect("connect timeout")?;
    let connector = TlsConnector::from(client_config(alpn));
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    timeout(T, connector.connect(name, tcp))
        .await
        .expect("TLS handshake timeout")
}

// ---------- Zone::answer ----------

#[test]
fn zone_answers_data_and_echoes_question_case() {
    let z = zone();
    let q = query("A.TeSt.", RecordType::A);
    let r = z.answer(&q);
    assert_eq!(r.metadata.id, q.metadata.id);
    assert_eq!(r.metadata.message_type, MessageType::Response);
    assert!(r.metadata.recursion_desired && r.metadata.recursion_available);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.queries.len(), 1);
    assert!(
        r.queries[0].name().eq_case(q.queries[0].name()),
        "question case preserved"
    );
    assert_eq!(r.queries[0].name().to_string(), "A.TeSt.");
    assert_eq!(a_addrs(&r), vec!["192.0.2.1"]);
    assert!(r.edns.is_none());
    // Round-trips on the wire.
    let back = Message::from_vec(&r.to_vec().unwrap()).unwrap();
    assert_eq!(back.queries[0].name().to_string(), "A.TeSt.");
}

#[test]
fn zone_nxdomain_and_nodata_carry_soa() {
    let z = zone();
    let r = z.answer(&query("nope.test.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities.len(), 1);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(r.authorities[0].name.to_string(), "test.");

    let r = z.answer(&query("mx.test.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);

    // Empty non-terminal: NODATA, not NXDOMAIN.
    let r = z.answer(&query("sub.test.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());

    // No SOA covering the name: just the rcode.
    let r = z.answer(&query("nothing.example.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(r.authorities.is_empty());

    let r = z.answer(&query("fail.test.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(r.answers.is_empty());
}

#[test]
fn zone_follows_cname_chain() {
    let z = zone();
    let r = z.answer(&query("www.test.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let types: Vec<_> = r.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(
        types,
        vec![RecordType::CNAME, RecordType::CNAME, RecordType::A]
    );
    assert_eq!(r.answers[0].name.to_string(), "www.test.");
    assert_eq!(r.answers[1].name.to_string(), "alias.test.");
    assert_eq!(a_addrs(&r), vec!["192.0.2.1"]);

    // Asking for the CNAME itself does not follow it.
    let r = z.answer(&query("www.test.", RecordType::CNAME));
    assert_eq!(r.answers.len(), 1);

    // Out-of-zone target: just the CNAME, NOERROR.
    let r = z.answer(&query("out.test.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 1);
    assert!(r.authorities.is_empty());
}

#[test]
fn zone_record_types_edns_and_big_txt() {
    let z = zone();
    for (n, t) in [
        ("a.test.", RecordType::AAAA),
        ("mx.test.", RecordType::MX),
        ("txt.test.", RecordType::TXT),
        ("test.", RecordType::NS),
        ("test.", RecordType::SOA),
        ("1.2.0.192.in-addr.arpa.", RecordType::PTR),
    ] {
        let r = z.answer(&query(n, t));
        assert_eq!(r.answers.len(), 1, "{n} {t}");
        assert_eq!(r.answers[0].record_type(), t);
    }
    let r = z.answer(&query("txt.test.", RecordType::TXT));
    let RData::TXT(txt) = &r.answers[0].data else {
        panic!()
    };
    assert_eq!(
        &txt.txt_data[..],
        &[b"hello world".to_vec().into_boxed_slice()][..]
    );

    let q = query_edns("a.test.", RecordType::A, 4096, true);
    let r = Message::from_vec(&z.answer(&q).to_vec().unwrap()).unwrap();
    let edns = r.edns.as_ref().expect("OPT echoed");
    assert_eq!(edns.max_payload(), 1232);
    assert!(edns.flags().dnssec_ok);
    let r = z.answer(&query_edns("a.test.", RecordType::A, 1232, false));
    assert!(!r.edns.as_ref().unwrap().flags().dnssec_ok);

    let r = z.answer(&query("big.test.", RecordType::TXT));
    assert_eq!(r.answers.len(), 6);
    assert!(r.to_vec().unwrap().len() > 1232);
    let r3 = Zone::new()
        .big_txt("big.test.", 3)
        .answer(&query("big.test.", RecordType::A));
    assert!(r3.to_vec().unwrap().len() > 512);
}

// ---------- DoT ----------

#[tokio::test]
async fn dot_pipelined_answers_arrive_out_of_order() {
    let up = FakeUpstream::dot(zone(), Behavior::Answer).await;
    assert!(up.url().starts_with("tls://localhost:") && up.url().ends_with("#127.0.0.1"));
    let mut tls = tls_connect(up.addr(), "localhost", &[b"dot"])
        .await
        .expect("TLS to fake DoT");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"dot"[..]));

    let slow = query("slow.test.", RecordType::A);
    let fast = query("fast.test.", RecordType::A);
    let mut both = Vec::new();
    for m in [&slow, &fast] {
        both.extend_from_slice(&(wire(m).len() as u16).to_be_bytes());
        both.extend_from_slice(&wire(m));
    }
    tls.write_all(&both).await.unwrap();
    tls.flush().await.unwrap();

    let first = parse(&timeout(T, read_framed(&mut tls)).await.unwrap().unwrap());
    let second = parse(&timeout(T, read_framed(&mut tls)).await.unwrap().unwrap());
    assert_eq!(first.metadata.id, fast.metadata.id, "fast answer first");
    assert_eq!(a_addrs(&first), vec!["192.0.2.3"]);
    assert_eq!(second.metadata.id, slow.metadata.id);
    assert_eq!(a_addrs(&second), vec!["192.0.2.2"]);

    assert_eq!(up.query_count(), 2);
    assert_eq!(up.connection_count(), 1);
    let rec = up.received();
    assert_eq!(rec, vec![wire(&slow), wire(&fast)]);
}

#[tokio::test]
async fn dot_garbage_wrong_question_and_hang() {
    let up = FakeUpstream::dot(zone(), Behavior::Garbage).await;
    let mut tls = tls_connect(up.addr(), "localhost", &[]).await.unwrap();
    let q = query("a.test.", RecordType::A);
    write_framed(&mut tls, &wire(&q)).await.unwrap();
    let r = parse(&timeout(T, read_framed(&mut tls)).await.unwrap().unwrap());
    assert_ne!(r.metadata.id, q.metadata.id);

    up.set_behavior(Behavior::WrongQuestion);
    write_framed(&mut tls, &wire(&q)).await.unwrap();
    let r = parse(&timeout(T, read_framed(&mut tls)).await.unwrap().unwrap());
    assert_eq!(r.metadata.id, q.metadata.id);
    assert_eq!(r.queries[0].name().to_string(), WRONG_QUESTION_NAME);

    up.set_behavior(Behavior::Hang);
    write_framed(&mut tls, &wire(&q)).await.unwrap();
    assert!(
        timeout(Duration::from_millis(300), read_framed(&mut tls))
            .await
            .is_err()
    );
    assert_eq!(up.query_count(), 3);
}

#[tokio::test]
async fn dot_close_immediately_and_stop() {
    let up = FakeUpstream::dot(zone(), Behavior::CloseImmediately).await;
    assert!(tls_connect(up.addr(), "localhost", &[]).await.is_err());
    assert_eq!(up.connection_count(), 1);

    up.set_behavior(Behavior::Answer);
    let mut tls = tls_connect(up.addr(), "localhost", &[]).await.unwrap();
    let addr = up.addr();
    up.stop();
    // The live connection is dropped: reading yields EOF/error, not a hang.
    let r = timeout(T, read_framed(&mut tls))
        .await
        .expect("connection dropped on stop");
    assert!(r.is_err());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener closed after stop"
    );
}

#[tokio::test]
async fn wrong_and_untrusted_certs_are_refused() {
    for b in [Behavior::WrongCert, Behavior::UntrustedCert] {
        let up = FakeUpstream::dot(zone(), b).await;
        let err = tls_connect(up.addr(), "localhost", &[])
            .await
            .expect_err("cert must be refused");
        let msg = err.to_string();
        assert!(msg.contains("certificate"), "{b:?}: {msg}");
        let up = FakeUpstream::doh(zone(), b).await;
        assert!(
            tls_connect(up.addr(), "localhost", &[b"h2"]).await.is_err(),
            "{b:?} DoH"
        );
    }
    // The good cert is valid for every advertised name.
    let up = FakeUpstream::dot(zone(), Behavior::Answer).await;
    for n in ["localhost", "dns.test", "127.0.0.1"] {
        tls_connect(up.addr(), n, &[])
            .await
            .unwrap_or_else(|e| panic!("{n}: {e}"));
    }
}

#[tokio::test]
async fn refused_url_refuses() {
    for scheme in ["https", "tls"] {
        let url = refused_url(scheme).await;
        let port: u16 = url
            .split("localhost:")
            .nth(1)
            .unwrap()
            .split(['/', '#'])
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "{url}"
        );
    }
    assert!(refused_url("https").await.ends_with("/dns-query#127.0.0.1"));
}

// ---------- DoH ----------

type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h2_connect(up: &FakeUpstream) -> H2 {
    let tls = tls_connect(up.addr(), "localhost", &[b"h2"])
        .await
        .expect("TLS to fake DoH");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = timeout(
        T,
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)),
    )
    .await
    .unwrap()
    .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

async fn h2_send(
    h2: &mut H2,
    req: hyper::Request<Full<Bytes>>,
) -> (hyper::StatusCode, hyper::HeaderMap, Bytes) {
    let resp = timeout(T, h2.send_request(req))
        .await
        .expect("DoH response timeout")
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = timeout(T, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    (status, headers, body)
}

fn post(url_path: &str, content_type: &str, body: Vec<u8>) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post(format!("https://localhost{url_path}"))
        .header("content-type", content_type)
        .header("accept", "application/dns-message")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[tokio::test]
async fn doh_post_get_and_errors() {
    let up = FakeUpstream::doh(zone(), Behavior::Answer).await;
    assert!(
        up.url().starts_with("https://localhost:") && up.url().ends_with("/dns-query#127.0.0.1")
    );
    let mut h2 = h2_connect(&up).await;

    let mut q = query("www.test.", RecordType::A);
    q.metadata.id = 0; // RFC 8484 recommends ID 0
    let (status, headers, body) = h2_send(
        &mut h2,
        post("/dns-query", "application/dns-message", wire(&q)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/dns-message");
    assert_eq!(headers["cache-control"], "max-age=300");
    let r = parse(&body);
    assert_eq!(r.metadata.id, 0);
    assert_eq!(a_addrs(&r), vec!["192.0.2.1"]);
    assert_eq!(r.answers.len(), 3);

    // GET with base64url (no padding).
    let q = query("a.test.", RecordType::AAAA);
    let b64 = data_encoding::BASE64URL_NOPAD.encode(&wire(&q));
    let req = hyper::Request::get(format!("https://localhost/dns-query?dns={b64}"))
        .header("accept", "application/dns-message")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = h2_send(&mut h2, req).await;
    assert_eq!(status, 200);
    assert_eq!(parse(&body).answers[0].record_type(), RecordType::AAAA);

    let (status, _, _) = h2_send(&mut h2, post("/dns-query", "application/json", wire(&q))).await;
    assert_eq!(status, 415);
    let (status, _, _) =
        h2_send(&mut h2, post("/other", "application/dns-message", wire(&q))).await;
    assert_eq!(status, 404);

    assert_eq!(up.query_count(), 2);
    assert_eq!(up.connection_count(), 1);

    up.set_behavior(Behavior::Garbage);
    let (status, _, _) = h2_send(
        &mut h2,
        post("/dns-query", "application/dns-message", wire(&q)),
    )
    .await;
    assert_eq!(status, 500);

    up.set_behavior(Behavior::WrongQuestion);
    let (status, _, body) = h2_send(
        &mut h2,
        post("/dns-query", "application/dns-message", wire(&q)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        parse(&body).queries[0].name().to_string(),
        WRONG_QUESTION_NAME
    );

    up.set_behavior(Behavior::Hang);
    let pending = h2.send_request(post("/dns-query", "application/dns-message", wire(&q)));
    assert!(
        timeout(Duration::from_millis(300), pending).await.is_err(),
        "Hang never answers"
    );
    assert_eq!(up.query_count(), 5);
}

// ---------- plain DNS clients (against a tiny loopback echo of the zone) ----------

#[tokio::test]
async fn plain_clients_against_loopback_zone_server() {
    use tokio::io::AsyncReadExt;
    let z = zone();
    let usock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_addr = usock.local_addr().unwrap();
    let zu = z.clone();
    let udp_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let (n, from) = usock.recv_from(&mut buf).await.unwrap();
            let _ = usock.send_to(&zu.answer_wire(&buf[..n]), from).await;
        }
    });
    let lst = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = lst.local_addr().unwrap();
    let zt = z.clone();
    let tcp_task = tokio::spawn(async move {
        loop {
            let (s, _) = lst.accept().await.unwrap();
            let (mut rd, wr) = tokio::io::split(s);
            let wr = std::sync::Arc::new(tokio::sync::Mutex::new(wr));
            let zt = zt.clone();
            tokio::spawn(async move {
                while let Ok(len) = rd.read_u16().await {
                    let mut m = vec![0u8; len as usize];
                    rd.read_exact(&mut m).await.unwrap();
                    let (zt, wr) = (zt.clone(), wr.clone());
                    tokio::spawn(async move {
                        let q = Message::from_vec(&m).unwrap();
                        if let Some(d) = zt.delay_for_query(&q) {
                            tokio::time::sleep(d).await;
                        }
                        write_framed(&mut *wr.lock().await, &zt.answer_wire(&m))
                            .await
                            .unwrap();
                    });
                }
            });
        }
    });

    let r = udp(udp_addr, &query("a.test.", RecordType::A)).await;
    assert_eq!(a_addrs(&r), vec!["192.0.2.1"]);
    let r = tcp(
        tcp_addr,
        &query_edns("mx.test.", RecordType::MX, 1232, true),
    )
    .await;
    assert_eq!(r.answers[0].record_type(), RecordType::MX);
    assert!(r.edns.unwrap().flags().dnssec_ok);
    let qs = [
        query("slow.test.", RecordType::A),
        query("fast.test.", RecordType::A),
    ];
    let rs = tcp_pipelined(tcp_addr, &qs).await;
    assert_eq!(rs[0].metadata.id, qs[1].metadata.id);
    assert_eq!(rs[1].metadata.id, qs[0].metadata.id);

    udp_task.abort();
    tcp_task.abort();
    let _ = udp_task.await;
    // Nothing listens now: udp_exchange gives None (refused or timeout) instead of hanging.
    let t0 = std::time::Instant::now();
    assert!(
        udp_exchange(udp_addr, &wire(&query("a.test.", RecordType::A)))
            .await
            .is_none()
    );
    assert!(t0.elapsed() < Duration::from_secs(4));
}
