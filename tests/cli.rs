//! The `dnsward` binary's command-line behaviour: config checking, errors and exit codes.

mod util;

use std::time::Duration;

use util::*;

fn check_config(text: &str) -> (Option<i32>, String, String) {
    let dir = temp_dir("check-config");
    let path = dir.join("dnsward.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = dnsward();
    cmd.arg("check-config").arg(&path);
    let out = run_bounded(cmd, Duration::from_secs(10));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_a_good_file() {
    let (code, stdout, _) = check_config(
        "listen = [\"127.0.0.1:5353\"]\nupstreams = [\"tls://localhost:853#127.0.0.1\"]\n[cache]\nsize = 100\n",
    );
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("OK (1 upstreams, listening on 127.0.0.1:5353)"),
        "{stdout}"
    );
}

#[test]
fn check_config_names_unknown_keys() {
    let (code, _, stderr) = check_config("[cache]\nsize = 10\nmax-tll = 5\n");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("max-tll"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
}

#[test]
fn check_config_names_bad_values() {
    let (code, _, stderr) = check_config("upstreams = [\"tls://ok#127.0.0.1\", \"ftp://nope\"]\n");
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("upstreams[1]") && stderr.contains("ftp"),
        "{stderr}"
    );
    let (code, _, stderr) = check_config("listen = [\"localhost\"]\n");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("listen[0]"), "{stderr}");
    let (code, _, stderr) = check_config("ca-files = [\"/nonexistent/ca.pem\"]\n");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
}

#[test]
fn check_config_reports_a_missing_file() {
    let mut cmd = dnsward();
    cmd.args(["check-config", "/nonexistent/dnsward.toml"]);
    let out = run_bounded(cmd, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/dnsward.toml"));
}

#[test]
fn bad_flags_fail_with_usage() {
    let mut cmd = dnsward();
    cmd.args([
        "run",
        "--upstream",
        "udp://1.2.3.4",
        "--listen",
        "127.0.0.1:0",
    ]);
    let out = run_bounded(cmd, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream[0]"));
    let mut cmd = dnsward();
    cmd.args([
        "query",
        "a.test",
        "NOTATYPE",
        "--upstream",
        "tls://x#127.0.0.1",
    ]);
    let out = run_bounded(cmd, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown record type"));
}

/// Port 53 without privilege must say how to fix it. Needs root to drop to `nobody`.
#[test]
fn binding_port_53_without_privilege_explains_the_fix() {
    let unprivileged_start: u32 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
    if !is_root() || unprivileged_start <= 53 || !have("setpriv") {
        eprintln!("SKIPPED: needs root, setpriv and a kernel that protects port 53");
        return;
    }
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(env!("CARGO_BIN_EXE_dnsward"))
    .args([
        "run",
        "--listen",
        "127.0.0.1:53",
        "--upstream",
        "tls://localhost:853#127.0.0.1",
    ]);
    let out = run_bounded(cmd, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(
        stderr.contains("CAP_NET_BIND_SERVICE") || stderr.contains("cap_net_bind_service"),
        "{stderr}"
    );
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let mut cmd = dnsward();
    cmd.arg("check-config")
        .arg(root().join("dnsward.example.toml"));
    let out = run_bounded(cmd, Duration::from_secs(10));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 upstreams"));
}

/// The built-in public upstreams, exercised where they cannot be reached: inside a network
/// namespace that holds only loopback. Nothing can leave the machine; every upstream fails at
/// once, and the client must get SERVFAIL promptly on the default listeners.
#[test]
fn defaults_in_an_offline_namespace_give_prompt_servfail() {
    if !is_root() || !have("unshare") || !have("ip") || !require(&["kdig"]) {
        eprintln!("SKIPPED: needs root, unshare, ip and kdig");
        return;
    }
    let script = r#"
        set -u
        ip link set lo up
        "$DNSWARD" query example.com A; echo "query-exit=$?"
        "$DNSWARD" run & pid=$!
        for i in $(seq 50); do kdig @127.0.0.1 +time=1 +retry=0 +tcp . SOA >/dev/null 2>&1 && break; sleep 0.1; done
        start=$(date +%s%N)
        kdig @127.0.0.1 +time=8 +retry=0 example.com A
        kdig @::1 +time=8 +retry=0 example.com AAAA
        echo "elapsed-ms=$(( ($(date +%s%N) - start) / 1000000 ))"
        kill -TERM $pid; wait $pid; echo "run-exit=$?"
    "#;
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-n", "bash", "-c", script])
        .env("DNSWARD", env!("CARGO_BIN_EXE_dnsward"));
    let out = run_bounded(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("query-exit=1"), "{stdout}\n{stderr}");
    for url in dnsward::config::DEFAULT_UPSTREAMS {
        assert!(stderr.contains(url), "{url} was tried: {stderr}");
    }
    assert_eq!(
        stdout.matches("status: SERVFAIL").count(),
        2,
        "{stdout}\n{stderr}"
    );
    let elapsed: u64 = stdout
        .split("elapsed-ms=")
        .nth(1)
        .and_then(|s| s.lines().next())
        .and_then(|s| s.trim().parse().ok())
        .expect("elapsed printed");
    assert!(elapsed < 4000, "two SERVFAILs took {elapsed} ms");
    assert!(stdout.contains("run-exit=0"), "{stdout}\n{stderr}");
}

/// The shipped systemd unit passes `systemd-analyze verify` (with the paths pointed at this
/// build and the example configuration).
#[test]
fn the_systemd_unit_verifies() {
    if !have("systemd-analyze") {
        eprintln!("SKIPPED: systemd-analyze not installed");
        return;
    }
    let unit = std::fs::read_to_string(root().join("dist/systemd/dnsward.service")).unwrap();
    let config = root().join("dnsward.example.toml");
    let unit = unit
        .replace("/usr/local/bin/dnsward", env!("CARGO_BIN_EXE_dnsward"))
        .replace("/etc/dnsward/dnsward.toml", config.to_str().unwrap());
    let dir = temp_dir("systemd");
    let path = dir.join("dnsward.service");
    std::fs::write(&path, unit).unwrap();
    let mut cmd = std::process::Command::new("systemd-analyze");
    cmd.args(["verify", "--man=no"]).arg(&path);
    let out = run_bounded(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("dnsward.service"))
        .collect();
    assert!(out.status.success() && problems.is_empty(), "{stderr}");
}
