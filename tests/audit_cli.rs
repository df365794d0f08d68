//! `dnsward audit` as a user runs it: the table on the terminal, `--json` to a file,
//! `--html` as one self-contained page, the exit statuses, and clear errors.

mod common;
mod util;

use std::time::Duration;

use common::*;
use util::{dnsward, run_bounded, temp_dir};

const SOA: &str = "test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60";

#[tokio::test(flavor = "multi_thread")]
async fn reports_as_table_json_and_html_with_exit_status_3_on_hijacking() {
    let trusted = FakeUpstream::dot(
        Zone::new()
            .record(SOA)
            .record("ok.test. 300 IN A 127.100.1.1")
            .record("bad.test. 300 IN A 127.100.1.2"),
        Behavior::Answer,
    )
    .await;
    let plain = PlainDns::start(
        Zone::new()
            .record(SOA)
            .record("ok.test. 300 IN A 127.100.1.1")
            .record("bad.test. 300 IN A 10.9.9.9"),
    )
    .await;
    let dir = temp_dir("audit-cli");
    let config = dir.join("audit.toml");
    std::fs::write(
        &config,
        format!(
            "upstreams = [\"{}\"]\nca-files = [\"{}\"]\n[audit]\nassume-public = [\"127.100.0.0/16\"]\nnxdomain-tlds = [\"test\"]\ninterception = []\n",
            trusted.url(),
            cert_path("ca.pem").display()
        ),
    )
    .unwrap();
    let names = dir.join("names.txt");
    std::fs::write(&names, "# two names\nok.test A\nbad.test A\n").unwrap();
    let (json, html) = (dir.join("r.json"), dir.join("r.html"));
    let mut cmd = dnsward();
    cmd.arg("-c").arg(&config).arg("audit");
    cmd.args(["--plain", &plain.addr.to_string(), "--no-progress"]);
    cmd.arg("--names").arg(&names);
    cmd.arg("--json").arg(&json).arg("--html").arg(&html);
    let out = tokio::task::spawn_blocking(move || run_bounded(cmd, Duration::from_secs(60)))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad_line = stdout
        .lines()
        .find(|l| l.starts_with("bad.test"))
        .expect("a row per name");
    assert!(
        bad_line.contains("hijacked") && bad_line.contains("bogon-answer"),
        "{bad_line}"
    );
    assert!(
        stdout.contains("1 consistent") && stdout.contains("1 hijacked"),
        "{stdout}"
    );

    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[1]["name"], "bad.test");
    assert_eq!(
        results[1]["plain"]["addresses"],
        serde_json::json!(["10.9.9.9"])
    );
    assert_eq!(
        results[1]["trusted"][0]["addresses"],
        serde_json::json!(["127.100.1.2"])
    );
    assert!(doc["probes"]["nxdomain"]["rewriting"] == false);

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(
        page.contains("<tr class=\"hijacked\"><td>bad.test</td>"),
        "{page}"
    );
    assert!(page.contains("tampers with DNS answers"));
    // Self-contained: no scripts, stylesheets or images fetched from anywhere.
    for external in ["src=", "href=", "<script", "@import", "url("] {
        assert!(!page.contains(external), "{external} in the page");
    }
}

#[test]
fn bad_arguments_are_clear_errors_with_status_2() {
    let dir = temp_dir("audit-args");
    let names = dir.join("names.txt");
    std::fs::write(&names, "ok.test MX\n").unwrap();
    // Loopback only, even if an argument were (wrongly) accepted and the audit ran.
    let config = dir.join("safe.toml");
    std::fs::write(
        &config,
        "upstreams = [\"tls://localhost:1#127.0.0.1\"]\n[audit]\ninterception = []\nnxdomain-tlds = [\"test\"]\n",
    )
    .unwrap();
    for (args, message) in [
        (vec!["audit", "--plain", "nope"], "--plain"),
        (
            vec!["audit", "--plain", "127.0.0.1", "--types", "MX"],
            "--types",
        ),
        (
            vec![
                "audit",
                "--plain",
                "127.0.0.1",
                "--names",
                names.to_str().unwrap(),
            ],
            "line 1",
        ),
        (
            vec![
                "audit",
                "--plain",
                "127.0.0.1",
                "--asn-db",
                "/nonexistent.mmdb",
            ],
            "ASN database",
        ),
    ] {
        let mut cmd = dnsward();
        cmd.arg("-c").arg(&config).args(&args);
        let out = run_bounded(cmd, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
