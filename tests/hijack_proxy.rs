//! The proxy's per-answer hijack checks, in-process against fake upstreams: bogon and
//! sinkhole answers, rebinding, the allowlist, the block policy (REFUSED with an Extended DNS
//! Error), the JSON-lines hijack log, and background cross-checks between upstreams.

mod common;
mod util;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use dnsward::hijack::config::Action;
use dnsward::router::Strategy;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::time::Instant;

fn zone() -> Zone {
    Zone::new()
        .record("test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60")
        .records(
            "public.test. 300 IN A 127.100.1.1
             lan.test. 300 IN A 192.168.1.20
             loop.test. 300 IN A 127.0.0.1
             sink.test. 300 IN A 146.112.61.104
             box.plex.direct. 300 IN A 10.0.0.5
             flip.test. 300 IN A 127.100.9.9
             cdn.test. 300 IN A 127.100.5.5",
        )
}

/// A directory of the test's own, and where the hijack log goes in it.
fn log_path(tag: &str) -> (util::TempDir, PathBuf) {
    let dir = util::temp_dir(&format!("hijack-{tag}"));
    let log = dir.join("hijack.jsonl");
    (dir, log)
}

fn read_log(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each log line is JSON"))
        .collect()
}

/// Waits (bounded) until the log has at least `n` lines.
async fn wait_for_log(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = read_log(path);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn reasons(entry: &serde_json::Value) -> Vec<String> {
    entry["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn bogon_and_sinkhole_answers_are_logged_with_the_upstream_identity() {
    let up = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let (_dir, log) = log_path("log");
    let proxy = start_proxy_with(&[up.url()], |s| {
        s.hijack.log_file = Some(log.clone());
        s.hijack.assume_public = vec!["127.100.0.0/16".parse().unwrap()];
    })
    .await;
    for name in [
        "public.test.",
        "lan.test.",
        "loop.test.",
        "sink.test.",
        "box.plex.direct.",
    ] {
        let answer = udp(proxy.addr, &query(name, RecordType::A)).await;
        // Policy "log": the data is served unchanged.
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert_eq!(answer.answers.len(), 1, "{name}");
    }
    let entries = wait_for_log(&log, 3).await;
    let by_name = |n: &str| {
        entries
            .iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("no log entry for {n}: {entries:#?}"))
    };
    assert_eq!(
        entries.len(),
        3,
        "public and allowlisted names are not findings: {entries:#?}"
    );
    let lan = by_name("lan.test");
    assert_eq!(reasons(lan), ["bogon-answer"]);
    assert_eq!(lan["verdict"], "suspicious");
    assert_eq!(lan["action"], "logged");
    assert_eq!(lan["type"], "A");
    assert_eq!(lan["transport"], "dot");
    assert_eq!(lan["upstream"], up.url());
    assert_eq!(lan["server"], up.addr().to_string());
    assert_eq!(lan["answer"], serde_json::json!(["192.168.1.20"]));
    // The SPKI hash of the test server certificate, as `pin-sha256` takes it.
    let spki = lan["tls_spki_sha256"].as_str().unwrap();
    assert_eq!(
        data_encoding::BASE64.decode(spki.as_bytes()).unwrap().len(),
        32
    );
    assert_eq!(reasons(by_name("loop.test")), ["bogon-answer"]);
    let sink = by_name("sink.test");
    assert_eq!(reasons(sink), ["sinkhole-ip"]);
    assert_eq!(sink["verdict"], "hijacked");
    assert!(
        entries
            .iter()
            .all(|e| e["time"].as_str().unwrap().ends_with('Z'))
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn block_policy_answers_refused_with_an_extended_dns_error_and_does_not_cache() {
    let up = FakeUpstream::doh(zone(), Behavior::Answer).await;
    let proxy = start_proxy_with(&[up.url()], |s| {
        s.hijack.actions.insert("sinkhole-ip".into(), Action::Block);
        s.hijack
            .actions
            .insert("bogon-answer".into(), Action::Block);
        s.hijack.assume_public = vec!["127.100.0.0/16".parse().unwrap()];
    })
    .await;
    let q = query_edns("sink.test.", RecordType::A, 1232, false);
    let raw = udp_exchange(proxy.addr, &wire(&q))
        .await
        .expect("an answer");
    let answer = parse(&raw);
    assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
    assert!(
        answer.answers.is_empty(),
        "the suspicious data is not served"
    );
    assert!(answer.edns.is_some(), "OPT kept for an EDNS client");
    // RFC 8914: option 15, length, info-code 15 (Blocked), then the text, ending the message.
    let text = b"dnsward hijack check: sinkhole-ip";
    let mut ede = vec![0, 15];
    ede.extend(((2 + text.len()) as u16).to_be_bytes());
    ede.extend([0, 15]);
    ede.extend_from_slice(text);
    assert!(raw.ends_with(&ede), "{raw:?}");
    // Blocked answers are not cached: asking again asks the upstream again.
    let before = up.query_count();
    let again = udp(proxy.addr, &query("sink.test.", RecordType::A)).await;
    assert_eq!(again.metadata.response_code, ResponseCode::Refused);
    assert_eq!(up.query_count(), before + 1);
    // Without EDNS: plain REFUSED.
    assert!(again.edns.is_none());
    // Names without findings are untouched by the policy.
    let fine = udp(proxy.addr, &query("flip.test.", RecordType::A)).await;
    assert_eq!(fine.metadata.response_code, ResponseCode::NoError);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_public_name_turning_private_is_rebinding() {
    // Two upstreams, tried strictly in order: the first says public, the second private.
    let first = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let second = FakeUpstream::dot(
        Zone::new()
            .record("test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60")
            .record("flip.test. 300 IN A 192.168.7.7"),
        Behavior::Answer,
    )
    .await;
    let (_dir, log) = log_path("rebind");
    let proxy = start_proxy_with(&[first.url(), second.url()], |s| {
        s.hijack.log_file = Some(log.clone());
        s.hijack.assume_public = vec!["127.100.0.0/16".parse().unwrap()];
        s.router.strategy = Strategy::Strict;
    })
    .await;
    let a = udp(proxy.addr, &query("flip.test.", RecordType::A)).await;
    assert_eq!(a.answers[0].data.to_string(), "127.100.9.9");
    // Expire the cached answer, then make the first upstream fail.
    proxy.clock.advance(Duration::from_secs(301));
    first.set_behavior(Behavior::CloseImmediately);
    let b = udp(proxy.addr, &query("flip.test.", RecordType::A)).await;
    assert_eq!(b.answers[0].data.to_string(), "192.168.7.7");
    let entries = wait_for_log(&log, 1).await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(reasons(&entries[0]), ["bogon-answer", "rebinding"]);
    assert_eq!(entries[0]["upstream"], second.url());
    proxy.shutdown().await;
}

#[tokio::test]
async fn cross_check_classifies_a_difference_between_upstreams() {
    let first = FakeUpstream::dot(zone(), Behavior::Answer).await;
    let second = FakeUpstream::doh(
        Zone::new()
            .record("test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60")
            .record("cdn.test. 300 IN A 127.100.6.6")
            .record("public.test. 300 IN A 127.100.1.1"),
        Behavior::Answer,
    )
    .await;
    let (_dir, log) = log_path("cross");
    // Nothing listens on the verification port: the other address cannot be verified.
    let closed = util_free_port();
    let proxy = start_proxy_with(&[first.url(), second.url()], |s| {
        s.hijack.log_file = Some(log.clone());
        s.hijack.assume_public = vec!["127.100.0.0/16".parse().unwrap()];
        s.hijack.cross_check = 1.0;
        s.hijack.verify_port = closed;
        s.router.strategy = Strategy::Strict;
    })
    .await;
    // Same answer on both: no finding.
    let same = udp(proxy.addr, &query("public.test.", RecordType::A)).await;
    assert_eq!(same.metadata.response_code, ResponseCode::NoError);
    let differs = udp(proxy.addr, &query("cdn.test.", RecordType::A)).await;
    assert_eq!(differs.answers[0].data.to_string(), "127.100.5.5");
    let entries = wait_for_log(&log, 1).await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let e = &entries[0];
    assert_eq!(e["check"], "cross-check");
    assert_eq!(e["name"], "cdn.test");
    assert_eq!(
        e["verdict"], "suspicious",
        "unverifiable, never hijacked on its own"
    );
    assert_eq!(reasons(e), ["unverified-ip", "cross-check-mismatch"]);
    assert_eq!(e["other_upstream"], second.url());
    assert_eq!(e["other_answer"], serde_json::json!(["127.100.6.6"]));
    // Give the first query's cross-check time to have logged if it (wrongly) were to.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_log(&log).len(), 1);
    proxy.shutdown().await;
}

fn util_free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn config_sections_are_validated_with_key_names() {
    use dnsward::config::{Overrides, RawConfig, Settings};
    let parse = |text: &str| {
        Settings::from_raw(
            RawConfig::parse(text, "t.toml").unwrap(),
            Overrides::default(),
        )
    };
    let ok = parse(
        "[hijack]\npolicy = { default = \"log\", bogon-answer = \"block\" }\nlog-file = \"/tmp/x\"\ncross-check = 0.1\nallow = [\"plex.direct\", \"nip.io\"]\nsinkhole-addresses = [\"203.0.113.9\"]\n[audit]\nplain = \"192.168.1.1\"\nverify-port = 8443\n[[audit.interception]]\nlabel = \"x\"\nserver = \"127.0.0.1:5300\"\nname = \"id.server\"\nexpect = \"*\"\n",
    )
    .unwrap();
    assert_eq!(ok.hijack.actions.get("bogon-answer"), Some(&Action::Block));
    assert_eq!(ok.audit.plain, Some("192.168.1.1:53".parse().unwrap()));
    assert_eq!(ok.audit.interception.len(), 1);
    for (text, key) in [
        (
            "[hijack]\npolicy = { bogus = \"block\" }\n",
            "hijack.policy.bogus",
        ),
        ("[hijack]\ncross-check = 2.0\n", "hijack.cross-check"),
        (
            "[hijack]\nsinkhole-addresses = [\"x\"]\n",
            "hijack.sinkhole-addresses[0]",
        ),
        ("[audit]\nplain = \"nope\"\n", "audit.plain"),
        (
            "[audit]\nassume-public = [\"1.2.3.0/99\"]\n",
            "audit.assume-public[0]",
        ),
        (
            "[[audit.interception]]\nlabel = \"x\"\nserver = \"1.1.1.1\"\nname = \"id.server\"\nclass = \"HS\"\nexpect = \"*\"\n",
            "audit.interception[0].class",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with(key), "{text:?}: {err}");
    }
    let err = RawConfig::parse("[hijack]\nnope = 1\n", "t.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}
