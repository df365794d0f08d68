//! End to end against a real resolver: Debian's unbound serving DoT and DoH on loopback
//! (scripts/unbound-upstream), the real `dnsward` binary in front of it, and kdig as the client.

mod util;

use std::net::SocketAddr;
use std::time::Duration;

use util::*;

/// unbound on free loopback ports: (daemon, plain, tls, https).
fn start_unbound(tag: &str) -> (Daemon, u16, u16, u16) {
    start_unbound_with(tag, "")
}

/// As [`start_unbound`], with extra `server:` options.
fn start_unbound_with(tag: &str, extra: &str) -> (Daemon, u16, u16, u16) {
    let dir = temp_dir(tag);
    let (plain, tls, https) = (free_port(), free_port(), free_port());
    let mut cmd = std::process::Command::new(root().join("scripts/unbound-upstream"));
    cmd.arg(&dir)
        .args([plain, tls, https].map(|p| p.to_string()));
    if !extra.is_empty() {
        let extra_file = dir.join("extra.conf");
        std::fs::write(&extra_file, extra).unwrap();
        cmd.arg(extra_file);
    }
    let daemon = Daemon::spawn(cmd, &dir.join("unbound.log")).owning(dir);
    for port in [tls, https] {
        wait_for_tcp(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        );
    }
    (daemon, plain, tls, https)
}

/// dnsward listening on a free port with one upstream; waits until it answers.
fn start_dnsward(upstream: &str, tag: &str) -> (Daemon, u16) {
    let port = free_port();
    let mut cmd = dnsward();
    cmd.args([
        "-v",
        "run",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--upstream",
        upstream,
    ])
    .arg("--ca-file")
    .arg(root().join("certs/ca.pem"));
    let dir = temp_dir(tag);
    let daemon = Daemon::spawn(cmd, &dir.join("dnsward.log")).owning(dir);
    wait_for_tcp(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    );
    (daemon, port)
}

fn kdig(port: u16, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new("kdig");
    cmd.args([
        "@127.0.0.1".to_string(),
        format!("-p{port}"),
        "+time=5".into(),
        "+retry=0".into(),
    ])
    .args(args);
    let out = run_bounded(cmd, Duration::from_secs(20));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check_records(port: u16, transport: &str) {
    let tcp: &[&str] = if transport == "tcp" { &["+tcp"] } else { &[] };
    let ask = |extra: &[&str]| {
        let mut args: Vec<&str> = tcp.to_vec();
        args.extend_from_slice(extra);
        kdig(port, &args)
    };
    let a = ask(&["a.test", "A", "+short"]);
    assert!(
        a.contains("192.0.2.1") && a.contains("192.0.2.2"),
        "{transport} A: {a}"
    );
    assert!(ask(&["a.test", "AAAA", "+short"]).contains("2001:db8::1"));
    // unbound answers a local-data CNAME without chasing it inside a static zone.
    let cname = ask(&["www.test", "A"]);
    assert!(
        cname.contains("CNAME") && cname.contains("a.test."),
        "{cname}"
    );
    assert!(ask(&["mx.test", "MX", "+short"]).contains("10 mail.test."));
    assert!(ask(&["txt.test", "TXT", "+short"]).contains("hello dnsward"));
    let nx = ask(&["nope.test", "A"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("SOA"),
        "{nx}"
    );
    let nodata = ask(&["txt.test", "AAAA"]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
}

fn end_to_end(scheme: &str) {
    if !require(&["unbound", "kdig"]) {
        return;
    }
    let (unbound, _plain, tls, https) = start_unbound(&format!("unbound-{scheme}"));
    let upstream = match scheme {
        "tls" => format!("tls://localhost:{tls}#127.0.0.1"),
        _ => format!("https://localhost:{https}/dns-query#127.0.0.1"),
    };
    let (proxy, port) = start_dnsward(&upstream, &format!("dnsward-{scheme}"));
    check_records(port, "udp");
    check_records(port, "tcp");
    let log = proxy.log();
    assert!(proxy.terminate(), "dnsward exits 0 on SIGTERM; log:\n{log}");
    drop(unbound);
}

#[test]
fn real_unbound_over_dot() {
    end_to_end("tls");
}

#[test]
fn real_unbound_over_doh() {
    end_to_end("https");
}

#[test]
fn query_command_prints_the_answer_dig_style() {
    if !require(&["unbound"]) {
        return;
    }
    let (_unbound, _plain, tls, https) = start_unbound("unbound-query");
    for upstream in [
        format!("tls://localhost:{tls}#127.0.0.1"),
        format!("https://localhost:{https}/dns-query#127.0.0.1"),
    ] {
        let mut cmd = dnsward();
        cmd.args([
            "query",
            "www.test",
            "A",
            "--upstream",
            &upstream,
            "--ca-file",
        ])
        .arg(root().join("certs/ca.pem"));
        let out = run_bounded(cmd, Duration::from_secs(20));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("status: NOERROR"), "{stdout}");
        assert!(stdout.contains(";; ANSWER SECTION:"), "{stdout}");
        assert!(
            stdout.contains("www.test.\t300\tIN\tCNAME\ta.test."),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!(";; SERVER: {upstream}")),
            "{stdout}"
        );
    }
}

#[test]
fn wrong_certificate_name_is_refused_by_the_query_command() {
    if !require(&["unbound"]) {
        return;
    }
    let (_unbound, _plain, tls, _https) = start_unbound("unbound-wrongname");
    // unbound's certificate is for localhost; ask for another name at the same address.
    let mut cmd = dnsward();
    cmd.args([
        "query",
        "a.test",
        "--upstream",
        &format!("tls://wrong.invalid:{tls}#127.0.0.1"),
        "--ca-file",
    ])
    .arg(root().join("certs/ca.pem"));
    let out = run_bounded(cmd, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("TLS handshake") && stderr.contains("certificate"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no answer printed");
}

/// unbound closes idle client connections after 300 ms here; dnsward must notice and reconnect
/// instead of failing the next query or marking the upstream dead.
fn survives_server_idle_close(scheme: &str) {
    if !require(&["unbound", "kdig"]) {
        return;
    }
    let (_unbound, _plain, tls, https) =
        start_unbound_with(&format!("idle-{scheme}"), "    tcp-idle-timeout: 300\n");
    let upstream = match scheme {
        "tls" => format!("tls://localhost:{tls}#127.0.0.1"),
        _ => format!("https://localhost:{https}/dns-query#127.0.0.1"),
    };
    let (proxy, port) = start_dnsward(&upstream, &format!("dnsward-idle-{scheme}"));
    // Three different questions, so each goes upstream (ANY would not: RFC 8482).
    let questions = [("a.test", "A"), ("mx.test", "MX"), ("txt.test", "TXT")];
    for (round, (name, qtype)) in questions.iter().enumerate() {
        let out = kdig(port, &[name, qtype]);
        assert!(
            out.contains("status: NOERROR"),
            "round {round}: {out}\n{}",
            proxy.log()
        );
        // Longer than unbound's idle timeout: the connection is gone before the next query.
        std::thread::sleep(Duration::from_millis(700));
    }
    let log = proxy.log();
    assert!(!log.contains("marking unhealthy"), "{log}");
    let connections = log.matches("connection established").count();
    assert!(
        connections >= 2,
        "the server's idle close forced reconnects: {log}"
    );
}

#[test]
fn dot_reconnects_after_server_idle_close() {
    survives_server_idle_close("tls");
}

#[test]
fn doh_reconnects_after_server_idle_close() {
    survives_server_idle_close("https");
}
