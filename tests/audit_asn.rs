//! `dnsward audit` with an ASN database: an address only the plaintext resolver gave, in the
//! same autonomous system as the trusted answers, is a benign variation even when it cannot
//! be verified by TLS; in another network it stays suspicious.

mod common;

use std::net::Ipv4Addr;

use common::mmdb::asn_db;
use common::*;
use dnsward::hijack::audit::{AsnDb, Audit, AuditError, NameSpec};
use dnsward::hijack::{Reason, Verdict};

const SOA: &str = "test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60";

#[tokio::test]
async fn same_asn_is_benign_and_other_networks_stay_suspicious() {
    let trusted = FakeUpstream::dot(
        Zone::new()
            .record(SOA)
            .record("cdn.test. 300 IN A 127.100.6.6")
            .record("far.test. 300 IN A 127.100.6.7"),
        Behavior::Answer,
    )
    .await;
    let plain = PlainDns::start(
        Zone::new()
            .record(SOA)
            .record("cdn.test. 300 IN A 127.100.5.5")
            .record("far.test. 300 IN A 127.100.9.9"),
    )
    .await;
    let dir = std::env::temp_dir().join(format!("dnsward-asn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("asn.mmdb");
    std::fs::write(
        &db,
        asn_db(&[
            (Ipv4Addr::new(127, 100, 5, 0), 24, 64500),
            (Ipv4Addr::new(127, 100, 6, 0), 24, 64500),
            (Ipv4Addr::new(127, 100, 9, 0), 24, 64511),
        ]),
    )
    .unwrap();
    let mut settings = test_settings(&[trusted.url()]);
    settings.audit.assume_public = vec!["127.100.0.0/16".parse().unwrap()];
    settings.audit.interception.clear();
    settings.audit.nxdomain_tlds = vec!["test".into()];
    // Nothing listens here: verification by TLS fails, so only the ASN can explain.
    settings.audit.verify_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let names = vec![
        NameSpec {
            name: "cdn.test".into(),
            types: vec![1],
        },
        NameSpec {
            name: "far.test".into(),
            types: vec![1],
        },
    ];
    let asn = AsnDb::open(&db).expect("the test database opens");
    let audit = Audit::new(&settings, plain.addr, names.clone(), Some(asn)).unwrap();
    let report = audit.run(&|_, _| {}).await.unwrap();
    let cdn = &report.results[0];
    assert_eq!(
        (cdn.verdict, cdn.reasons.as_slice()),
        (Verdict::BenignVariation, &[Reason::SameAsn][..])
    );
    assert_eq!(cdn.checks[0].asn, Some(64500));
    let far = &report.results[1];
    assert_eq!(
        (far.verdict, far.reasons.as_slice()),
        (Verdict::Suspicious, &[Reason::UnverifiedIp][..])
    );
    assert_eq!(far.checks[0].asn, Some(64511));
    assert!(!report.found_hijacking());

    // Without the database the same difference cannot be explained.
    let audit = Audit::new(&settings, plain.addr, names, None).unwrap();
    let report = audit.run(&|_, _| {}).await.unwrap();
    assert_eq!(report.results[0].verdict, Verdict::Suspicious);

    // A file that is not a database is a clear error.
    let junk = dir.join("junk.mmdb");
    std::fs::write(&junk, b"not a database").unwrap();
    assert!(matches!(AsnDb::open(&junk), Err(AuditError::AsnDb { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}
