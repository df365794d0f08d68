//! The hijack-audit corpus' own fixtures, checked directly: the scripted plain resolver does
//! what its script says, the TLS sites present what they should, and every scenario file is
//! well-formed. (tests/audit_scenarios.rs runs the corpus against the real `dnsward audit`.)

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::scenario::{self, Scenario};
use common::*;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn script() -> Script {
    let zone = Zone::new().records(
        "a.corpus.test. 300 A 127.100.1.1
         b.corpus.test. 300 A 127.100.1.2
         c.corpus.test. 300 A 127.100.1.3
         inj.corpus.test. 300 A 127.100.1.4
         once.corpus.test. 300 A 127.100.1.5",
    );
    Script::mirror(zone)
        .identity("resolver1.isp.test")
        .rule(
            "b.corpus.test",
            Some(RecordType::A),
            Action::Answer {
                addresses: vec![ip("127.100.2.2"), ip("2001:db8::2")],
                cname: Some(name("edge.cdn.test")),
            },
        )
        .rule("c.corpus.test", None, Action::Rcode(ResponseCode::ServFail))
        .rule(
            "refused.corpus.test",
            None,
            Action::Rcode(ResponseCode::Refused),
        )
        .rule(
            "gone.corpus.test",
            None,
            Action::Rcode(ResponseCode::NXDomain),
        )
        .rule("drop.corpus.test", None, Action::Drop)
        .rule(
            "once.corpus.test",
            None,
            Action::FailFirst(ResponseCode::ServFail),
        )
        .rule(
            "inj.corpus.test",
            None,
            Action::Inject {
                forged: vec![ip("127.100.4.4")],
                after: Duration::from_millis(50),
            },
        )
        .rule("*", None, Action::RewriteNxdomain(vec![ip("127.100.66.6")]))
}

/// The addresses in a reply's answer section, as text.
fn addresses(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// Sends one UDP query and collects every reply arriving within `window`.
async fn udp_replies(server: SocketAddr, q: &Message, window: Duration) -> Vec<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&wire(q), server).await.unwrap();
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
        replies.push(parse(&buf[..n]));
        if replies.len() > 4 {
            break;
        }
    }
    replies
}

#[tokio::test]
async fn the_scripted_resolver_follows_its_script_over_udp() {
    let r = ScriptedResolver::start(script()).await;
    let a = udp(r.addr, &query("a.corpus.test", RecordType::A)).await;
    assert_eq!(addresses(&a), ["127.100.1.1"], "mirrored");

    let b = udp(r.addr, &query("b.corpus.test", RecordType::A)).await;
    assert_eq!(addresses(&b), ["127.100.2.2"], "scripted, IPv4 only for A");
    assert_eq!(b.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(b.answers[1].name, name("edge.cdn.test"));
    let b6 = udp(r.addr, &query("b.corpus.test", RecordType::AAAA)).await;
    assert!(
        addresses(&b6).is_empty(),
        "the rule is for A only: AAAA mirrored (NODATA)"
    );
    assert_eq!(b6.metadata.response_code, ResponseCode::NoError);

    for (n, rcode) in [
        ("c.corpus.test", ResponseCode::ServFail),
        ("refused.corpus.test", ResponseCode::Refused),
        ("gone.corpus.test", ResponseCode::NXDomain),
    ] {
        let m = udp(r.addr, &query(n, RecordType::A)).await;
        assert_eq!(m.metadata.response_code, rcode, "{n}");
        assert!(m.answers.is_empty(), "{n}");
    }
    let dropped = udp_replies(
        r.addr,
        &query("drop.corpus.test", RecordType::A),
        Duration::from_millis(300),
    )
    .await;
    assert!(dropped.is_empty(), "no reply: {dropped:?}");

    // SERVFAIL to the first query only, then the zone's answer.
    let once = query("once.corpus.test", RecordType::A);
    assert_eq!(
        udp(r.addr, &once).await.metadata.response_code,
        ResponseCode::ServFail
    );
    assert_eq!(addresses(&udp(r.addr, &once).await), ["127.100.1.5"]);

    // Names the zone does not know: NXDOMAIN rewritten to the ad server; NODATA left alone.
    let typo = udp(r.addr, &query("typo.corpus.test", RecordType::A)).await;
    assert_eq!(typo.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&typo), ["127.100.66.6"]);
    let nodata = udp(r.addr, &query("a.corpus.test", RecordType::AAAA)).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());

    assert_eq!(r.seen().len(), 11);
}

#[tokio::test]
async fn the_injector_sends_the_forged_reply_first_then_the_genuine_one_over_udp_only() {
    let r = ScriptedResolver::start(script()).await;
    let q = query("inj.corpus.test", RecordType::A);
    let replies = udp_replies(r.addr, &q, Duration::from_millis(600)).await;
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(addresses(&replies[0]), ["127.100.4.4"], "forged first");
    assert_eq!(addresses(&replies[1]), ["127.100.1.4"], "genuine second");
    for m in &replies {
        assert_eq!(m.metadata.id, q.metadata.id);
    }
    // Over TCP only the genuine reply comes.
    let m = tcp(r.addr, &q).await;
    assert_eq!(addresses(&m), ["127.100.1.4"]);
}

#[tokio::test]
async fn the_scripted_resolver_answers_its_identity_and_binds_a_public_stand_in_address() {
    let r = ScriptedResolver::start_on(ip("127.100.53.53"), script()).await;
    assert_eq!(r.addr.ip(), ip("127.100.53.53"));
    for n in ["id.server", "hostname.bind"] {
        let mut q = Message::query();
        let mut question = Query::query(name(n), RecordType::TXT);
        question.set_query_class(DNSClass::CH);
        q.add_query(question);
        let m = udp(r.addr, &q).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let RData::TXT(txt) = &m.answers[0].data else {
            panic!("{m:?}")
        };
        assert_eq!(txt.to_string(), "resolver1.isp.test");
    }
    // Without an identity: REFUSED.
    let silent = ScriptedResolver::start(Script::mirror(Zone::new())).await;
    let mut q = Message::query();
    let mut question = Query::query(name("id.server"), RecordType::TXT);
    question.set_query_class(DNSClass::CH);
    q.add_query(question);
    assert_eq!(
        udp(silent.addr, &q).await.metadata.response_code,
        ResponseCode::Refused
    );
}

fn client(roots: RootCertStore) -> TlsConnector {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

/// A TLS handshake with SNI `sni`: Ok, or the error.
async fn handshake(tls: &TlsConnector, addr: SocketAddr, sni: &str) -> std::io::Result<()> {
    let tcp = timeout(Duration::from_secs(5), TcpStream::connect(addr)).await??;
    let sni = ServerName::try_from(sni.to_string()).unwrap();
    timeout(Duration::from_secs(5), tls.connect(sni, tcp)).await??;
    Ok(())
}

fn cert_error(e: &std::io::Error) -> Option<CertificateError> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(c) => Some(c.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn sites_present_valid_wrong_name_and_untrusted_certificates_or_nothing() {
    let names = |n: &str| vec![n.to_string()];
    let sites = Sites::start(&[
        SiteSpec {
            ip: ip("127.100.1.1"),
            cert: CertKind::Valid,
            names: names("www.shop.test"),
        },
        SiteSpec {
            ip: ip("127.100.8.8"),
            cert: CertKind::WrongName,
            names: names("sinkhole.isp.test"),
        },
        SiteSpec {
            ip: ip("127.100.13.13"),
            cert: CertKind::Untrusted,
            names: names("www.shop.test"),
        },
        SiteSpec {
            ip: ip("127.100.9.9"),
            cert: CertKind::Closed,
            names: vec![],
        },
    ])
    .await;
    let at = |s: &str| SocketAddr::new(ip(s), sites.port);
    let tls = client(test_roots());

    handshake(&tls, at("127.100.1.1"), "www.shop.test")
        .await
        .expect("valid");
    let e = handshake(&tls, at("127.100.8.8"), "www.shop.test")
        .await
        .unwrap_err();
    assert!(
        matches!(
            cert_error(&e),
            Some(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{e}"
    );
    handshake(&tls, at("127.100.8.8"), "sinkhole.isp.test")
        .await
        .expect("valid for its own name");
    let e = handshake(&tls, at("127.100.13.13"), "www.shop.test")
        .await
        .unwrap_err();
    assert_eq!(cert_error(&e), Some(CertificateError::UnknownIssuer), "{e}");
    let e = handshake(&tls, at("127.100.9.9"), "www.shop.test")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");

    // The untrusted leaf is well-formed: it validates for a client trusting its own CA.
    let mut untrusted_roots = RootCertStore::empty();
    for c in load_certs("untrusted-ca.pem") {
        untrusted_roots.add(c).unwrap();
    }
    handshake(
        &client(untrusted_roots),
        at("127.100.13.13"),
        "www.shop.test",
    )
    .await
    .expect("chains to the untrusted CA");

    let hellos = sites.hellos();
    assert!(
        hellos.contains(&(ip("127.100.1.1"), Some("www.shop.test".into()))),
        "{hellos:?}"
    );
    assert_eq!(hellos.len(), 5, "{hellos:?}");
}

#[test]
fn every_scenario_file_is_well_formed_and_the_corpus_covers_the_issue() {
    let all: Vec<Scenario> = scenario::load_all();
    assert!(all.len() >= 15, "{} scenarios", all.len());
    assert!(all.iter().any(|s| s.benign) && all.iter().any(|s| !s.benign));
    for s in &all {
        // Every address standing for a public server is in the assume-public test range.
        for site in &s.sites {
            assert!(
                site.address.to_string().starts_with("127.100."),
                "{}: site {}",
                s.id,
                site.address
            );
        }
        let mut addrs: Vec<IpAddr> = s.sites.iter().map(|x| x.address).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), s.sites.len(), "{}: one site per address", s.id);
        assert!(!s.names_file().is_empty(), "{}", s.id);
    }
    // Every verdict and every reason is expected somewhere.
    let expected = |r: &str| {
        all.iter()
            .flat_map(|s| &s.expect)
            .any(|e| e.reasons.iter().any(|x| x == r))
    };
    for r in scenario::REASONS
        .iter()
        .filter(|r| **r != "no-trusted-answer")
    {
        assert!(expected(r), "no scenario expects reason {r}");
    }
    for v in scenario::VERDICTS {
        assert!(
            all.iter().flat_map(|s| &s.expect).any(|e| e.verdict == v),
            "no scenario expects verdict {v}"
        );
    }
    for v in scenario::INTERCEPTION_VERDICTS {
        assert!(
            all.iter()
                .flat_map(|s| &s.interception)
                .any(|i| i.verdict == v),
            "no scenario expects interception verdict {v}"
        );
    }
}

#[test]
fn scenario_checks_reject_real_addresses_typos_and_a_wrong_benign_flag() {
    let base = |trusted: &str, expect_name: &str, verdict: &str, benign: bool| {
        format!(
            "description = \"x\"\nbenign = {benign}\ntrusted = \"{trusted}\"\n\
             [[expect]]\nname = \"{expect_name}\"\nverdict = \"{verdict}\"\n"
        )
    };
    let ok = base(
        "a.x.test. 300 A 127.100.1.1",
        "a.x.test",
        "consistent",
        true,
    );
    scenario::parse("ok", &ok).expect("a good scenario");
    let real = base("a.x.test. 300 A 8.8.8.8", "a.x.test", "consistent", true);
    let e = scenario::parse("real", &real).unwrap_err();
    assert!(e.contains("8.8.8.8"), "{e}");
    let typo = base(
        "a.x.test. 300 A 127.100.1.1",
        "b.x.test",
        "consistent",
        true,
    );
    let e = scenario::parse("typo", &typo).unwrap_err();
    assert!(e.contains("b.x.test") && e.contains("NXDOMAIN"), "{e}");
    let flag = base("a.x.test. 300 A 127.100.1.1", "a.x.test", "hijacked", true);
    let e = scenario::parse("flag", &flag).unwrap_err();
    assert!(e.contains("benign"), "{e}");
    let unknown = ok.replace("verdict", "verdikt");
    assert!(scenario::parse("unknown", &unknown).is_err());
}
