//! Operations with the real binary: configuration reload on SIGHUP, `dnsward health` exit
//! statuses against a running instance, and JSON logs. Upstreams are fakes on loopback.

mod common;
mod util;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};
use util::*;

/// Waits (bounded) until `check` holds, polling every 50 ms.
async fn eventually(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn txt(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}

/// A configuration: these listen addresses and upstream, no hosts file, `who.test` TXT `who`,
/// the control endpoint on `control`.
fn config(listen: SocketAddr, upstream: &str, who: &str, control: SocketAddr) -> String {
    format!(
        "listen = [\"{listen}\"]\n\
         upstreams = [\"{upstream}\"]\n\
         ca-files = [\"{ca}\"]\n\
         hosts-file = \"\"\n\
         records = ['who.test. 60 IN TXT \"{who}\"']\n\
         [control]\n\
         listen = \"{control}\"\n",
        ca = root().join("certs/ca.pem").display(),
    )
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts `dnsward -c path run` and waits until it listens on `addr`.
fn start(path: &Path, addr: SocketAddr, extra: &[&str]) -> Daemon {
    let mut cmd = dnsward();
    cmd.args(extra).arg("-c").arg(path).arg("run");
    let daemon = Daemon::spawn(cmd, &path.with_extension("log"));
    wait_for_tcp(addr, Duration::from_secs(10));
    daemon
}

fn signal(daemon: &Daemon, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &daemon.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

async fn who(addr: SocketAddr) -> Vec<String> {
    txt(&udp(addr, &query("who.test", RecordType::TXT)).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_configuration_and_a_broken_file_keeps_the_old_one() {
    let upstream = FakeUpstream::dot(Zone::new(), Behavior::Answer).await;
    let dir = temp_dir("sighup");
    let path = dir.join("dnsward.toml");
    let (addr, control) = (loopback(free_port()), loopback(free_port()));
    std::fs::write(&path, config(addr, &upstream.url(), "one", control)).unwrap();
    let mut daemon = start(&path, addr, &[]);
    assert_eq!(who(addr).await, ["one"]);

    // Queries keep flowing while the configuration is reloaded several times.
    let load = tokio::spawn(async move {
        let mut answered = 0;
        for _ in 0..300 {
            let wire = wire(&query("who.test", RecordType::TXT));
            if udp_exchange_timeout(addr, &wire, Duration::from_secs(2))
                .await
                .is_some()
            {
                answered += 1;
            }
        }
        answered
    });
    let other_port = free_port();
    for round in 0..5 {
        let who = if round % 2 == 0 { "two" } else { "three" };
        // A listen change is reported as needing a restart; the rest applies.
        std::fs::write(
            &path,
            config(loopback(other_port), &upstream.url(), who, control),
        )
        .unwrap();
        signal(&daemon, "HUP");
        eventually(
            Duration::from_secs(10),
            "the new record is served",
            async || self::who(addr).await == [who],
        )
        .await;
    }
    assert_eq!(
        load.await.unwrap(),
        300,
        "every query answered during reloads"
    );
    // The new resolver is in place a moment before the reload is logged.
    eventually(Duration::from_secs(10), "five reloads logged", async || {
        daemon.log().matches("configuration reloaded").count() == 5
    })
    .await;
    let log = daemon.log();
    assert!(
        log.contains("configuration change takes effect only after a restart")
            && log.contains("key=\"listen\""),
        "{log}"
    );

    // A file that does not parse: logged with the reason, the old configuration serves on.
    std::fs::write(&path, "records = [\n").unwrap();
    signal(&daemon, "HUP");
    eventually(
        Duration::from_secs(10),
        "the failure is logged",
        async || daemon.log().contains("configuration reload failed"),
    )
    .await;
    assert_eq!(who(addr).await, ["two"], "the last good configuration");
    // A file that parses but is invalid: the key is named.
    std::fs::write(
        &path,
        "udp-max-in-flight = 0\n".to_string() + &config(addr, &upstream.url(), "four", control),
    )
    .unwrap();
    signal(&daemon, "HUP");
    eventually(Duration::from_secs(10), "the key is named", async || {
        daemon
            .log()
            .contains("udp-max-in-flight: must be greater than 0")
    })
    .await;
    assert_eq!(who(addr).await, ["two"]);
    let stats: serde_json::Value =
        serde_json::from_str(&get(control, "/stats").await.body).unwrap();
    assert!(
        stats["last_reload"]
            .as_str()
            .unwrap()
            .starts_with("error: udp-max-in-flight"),
        "{stats}"
    );
    assert_eq!(stats["totals"]["reloads_failed"], 2);
    assert!(daemon.child.try_wait().unwrap().is_none(), "still running");
    assert!(daemon.terminate(), "exits 0 on SIGTERM");
}

fn health(args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = dnsward();
    cmd.args(args);
    let out = run_bounded(cmd, Duration::from_secs(15));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_command_exit_statuses_follow_the_running_instance() {
    let upstream = FakeUpstream::doh(Zone::new(), Behavior::Answer).await;
    let dir = temp_dir("health");
    let path = dir.join("dnsward.toml");
    let (addr, control) = (loopback(free_port()), loopback(free_port()));
    std::fs::write(&path, config(addr, &upstream.url(), "x", control)).unwrap();
    let daemon = start(&path, addr, &[]);
    wait_for_tcp(control, Duration::from_secs(10));

    let control_arg = control.to_string();
    let (code, stdout, _) = health(&["health", "--control", &control_arg]);
    assert_eq!((code, stdout.as_str()), (Some(0), "healthy\n"));
    // The address can come from the configuration file.
    let path_arg = path.to_str().unwrap();
    let (code, stdout, _) = health(&["-c", path_arg, "health"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "healthy\n"));

    // The only upstream stops answering: unhealthy (within the 5 s freshness of the last
    // answer plus a probe).
    upstream.set_behavior(Behavior::CloseImmediately);
    let started = Instant::now();
    let (code, stdout) = loop {
        let (code, stdout, stderr) = health(&["health", "--control", &control_arg]);
        if code != Some(0) {
            break (code, stdout);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still healthy: {stdout} {stderr}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.starts_with("unhealthy: no encrypted upstream answered")
            && stdout.lines().count() == 1,
        "{stdout}"
    );

    upstream.set_behavior(Behavior::Answer);
    let (code, stdout, _) = health(&["health", "--control", &control_arg]);
    assert_eq!((code, stdout.as_str()), (Some(0), "healthy\n"));

    // Nobody there: exit 2, one line on stderr.
    drop(daemon);
    let (code, stdout, stderr) = health(&["health", "--control", &control_arg]);
    assert_eq!(code, Some(2));
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("cannot reach the control endpoint") && stderr.lines().count() == 1,
        "{stderr}"
    );
    // No endpoint configured or given.
    let bare = dir.join("bare.toml");
    std::fs::write(&bare, "hosts-file = \"\"\n").unwrap();
    let (code, _, stderr) = health(&["-c", bare.to_str().unwrap(), "health"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no control endpoint"), "{stderr}");
}

/// Runs the proxy briefly with `extra` flags/env and returns its log lines.
fn log_lines(file_extra: &str, args: &[&str], env: Option<(&str, &str)>) -> Vec<String> {
    let dir = temp_dir("logs");
    let path = dir.join("dnsward.toml");
    let addr = loopback(free_port());
    std::fs::write(
        &path,
        format!(
            "listen = [\"{addr}\"]\nupstreams = [\"tls://localhost:1#127.0.0.1\"]\nhosts-file = \"\"\n{file_extra}"
        ),
    )
    .unwrap();
    let mut cmd = dnsward();
    cmd.args(args).arg("-c").arg(&path).arg("run");
    cmd.env_remove("DNSWARD_LOG_FORMAT");
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let daemon = Daemon::spawn(cmd, &dir.join("out.log"));
    wait_for_tcp(addr, Duration::from_secs(10));
    // The socket accepts before the "listening" line is written: wait (bounded) for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("listening (UDP and TCP)") && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = daemon.log();
    assert!(daemon.terminate());
    log.lines().map(String::from).collect()
}

fn assert_json(lines: &[String]) {
    assert!(!lines.is_empty());
    let mut saw_listening = false;
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        if v["message"] == "listening (UDP and TCP)" {
            assert_eq!(v["level"], "INFO");
            assert!(
                v["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{line}"
            );
            saw_listening = true;
        }
    }
    assert!(saw_listening, "{lines:?}");
}

#[test]
fn logs_are_text_by_default_and_json_when_asked() {
    let text = log_lines("", &[], None);
    assert!(text.iter().any(|l| l.contains("listening (UDP and TCP)")));
    assert!(
        text.iter()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
    );

    assert_json(&log_lines("", &["--log-format", "json"], None));
    assert_json(&log_lines("", &[], Some(("DNSWARD_LOG_FORMAT", "json"))));
    assert_json(&log_lines("log-format = \"json\"\n", &[], None));
    // The command line wins over the file.
    let flag_wins = log_lines("log-format = \"json\"\n", &["--log-format", "text"], None);
    assert!(
        flag_wins
            .iter()
            .any(|l| l.contains("listening (UDP and TCP)") && !l.starts_with('{'))
    );

    let dir = temp_dir("log-format");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "log-format = \"xml\"\n").unwrap();
    let mut cmd = dnsward();
    cmd.arg("check-config").arg(&bad);
    let out = run_bounded(cmd, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("log-format"));
}

#[test]
fn a_control_endpoint_beyond_loopback_needs_the_opt_in() {
    let dir = temp_dir("control-remote");
    let path = dir.join("dnsward.toml");
    std::fs::write(&path, "[control]\nlisten = \"0.0.0.0:8053\"\n").unwrap();
    let mut cmd = dnsward();
    cmd.arg("check-config").arg(&path);
    let out = run_bounded(cmd, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("control.listen") && stderr.contains("allow-remote"),
        "{stderr}"
    );
    std::fs::write(
        &path,
        "[control]\nlisten = \"0.0.0.0:8053\"\nallow-remote = true\n",
    )
    .unwrap();
    let mut cmd = dnsward();
    cmd.arg("check-config").arg(&path);
    assert_eq!(
        run_bounded(cmd, Duration::from_secs(10)).status.code(),
        Some(0)
    );
}
