//! dnsward as the system's resolver, with the real binary: readiness over the sd_notify
//! protocol, dropping root after binding a privileged port, and the access list in a network
//! namespace where non-loopback sources exist.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use util::*;

/// An upstream that is never reached: the queries here are answered from static records.
const UNUSED_UPSTREAM: &str = "tls://localhost:1#127.0.0.1";

/// A configuration answering `nas.lan` locally, with `extra` appended.
fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("dnsward.toml");
    std::fs::write(
        &path,
        format!(
            "upstreams = [\"{UNUSED_UPSTREAM}\"]\nhosts-file = \"\"\nrecords = [\"nas.lan. 300 IN A 192.168.1.10\"]\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// A notify socket anyone (including `nobody`) may send to.
fn notify_socket(dir: &Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    (socket, path)
}

fn receive(socket: &UnixDatagram, daemon: &Daemon) -> String {
    let mut buf = [0u8; 1024];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification ({e}); log:\n{}", daemon.log()));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// One A query for nas.lan over UDP; true if answered with its address.
fn nas_answered(addr: SocketAddr) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let query = dnsward::dns::new_query("nas.lan", 1, false).unwrap();
    socket.send_to(&query, addr).unwrap();
    let mut buf = [0u8; 512];
    match socket.recv(&mut buf) {
        Ok(n) => buf[..n].windows(4).any(|w| w == [192, 168, 1, 10]),
        Err(_) => false,
    }
}

/// `Type=notify`: READY=1 comes once the sockets are bound (a query sent right after it is
/// answered, with no waiting), STOPPING=1 on SIGTERM.
#[test]
fn readiness_and_stopping_are_notified() {
    let dir = temp_dir("notify");
    let (socket, socket_path) = notify_socket(&dir);
    let port = free_port();
    let mut cmd = dnsward();
    cmd.arg("--config")
        .arg(write_config(&dir, ""))
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .env("NOTIFY_SOCKET", &socket_path);
    let daemon = Daemon::spawn(cmd, &dir.join("dnsward.log"));
    let ready = receive(&socket, &daemon);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        nas_answered(SocketAddr::from(([127, 0, 0, 1], port))),
        "{}",
        daemon.log()
    );
    let log_before = daemon.log();
    let pid = daemon.child.id();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let stopping = receive(&socket, &daemon);
    assert_eq!(stopping, "STOPPING=1", "{log_before}");
    assert!(daemon.terminate(), "clean exit");
}

/// A free port below 1024, so that only a process with privilege can bind it.
fn free_privileged_port() -> Option<u16> {
    (700..1000).find(|&port| {
        UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    })
}

/// (uid line, gid line, CapEff) of every thread of `pid`.
fn thread_credentials(pid: u32) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        out.push((field("Uid:"), field("Gid:"), field("CapEff:")));
    }
    out
}

/// Started as root with --user nobody on a privileged port: the port is bound first, then
/// every thread runs as nobody with no capabilities, and queries are still answered.
#[test]
fn root_binds_then_drops_to_the_named_user() {
    let unprivileged_start: u32 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody exists");
    let port = free_privileged_port().expect("a free port below 1024");
    assert!(u32::from(port) < unprivileged_start || unprivileged_start <= 700);
    let dir = temp_dir("privdrop");
    let (socket, socket_path) = notify_socket(&dir);
    let mut cmd = dnsward();
    cmd.arg("--config")
        .arg(write_config(&dir, ""))
        .args([
            "run",
            "--user",
            "nobody",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("NOTIFY_SOCKET", &socket_path);
    let daemon = Daemon::spawn(cmd, &dir.join("dnsward.log"));
    let ready = receive(&socket, &daemon);
    assert!(ready.contains("READY=1"), "{ready:?}");
    let ids = |id: u32| [id; 4].map(|i| i.to_string()).join(" ");
    let credentials = thread_credentials(daemon.child.id());
    assert!(credentials.len() > 1, "a multi-threaded runtime");
    for (uid, gid, cap_eff) in &credentials {
        assert_eq!(uid, &ids(nobody.uid.as_raw()), "{credentials:?}");
        assert_eq!(gid, &ids(nobody.gid.as_raw()), "{credentials:?}");
        assert_eq!(cap_eff, "0000000000000000", "{credentials:?}");
    }
    assert!(
        nas_answered(SocketAddr::from(([127, 0, 0, 1], port))),
        "{}",
        daemon.log()
    );
    assert!(daemon.log().contains("dropped root privileges"));
    assert!(daemon.terminate(), "clean exit as nobody");
}

#[test]
fn an_unknown_user_is_an_error_and_root_without_one_a_warning() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let dir = temp_dir("privdrop-bad");
    let config = write_config(&dir, "");
    let port = free_port();
    let mut cmd = dnsward();
    cmd.arg("--config").arg(&config).args([
        "run",
        "--user",
        "no-such-user-dnsward",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    let out = run_bounded(cmd, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("\"no-such-user-dnsward\" does not exist"),
        "{stderr}"
    );

    let (socket, socket_path) = notify_socket(&dir);
    let mut cmd = dnsward();
    cmd.arg("--config")
        .arg(&config)
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .env("NOTIFY_SOCKET", &socket_path);
    let daemon = Daemon::spawn(cmd, &dir.join("dnsward.log"));
    receive(&socket, &daemon);
    assert!(daemon.log().contains("running as root"), "{}", daemon.log());
    assert!(daemon.terminate());
}

/// The access list with the real binary and real non-loopback sources: a network namespace
/// whose loopback interface also holds 10.53.0.1-3. dnsward listens on 10.53.0.1 and allows
/// 10.53.0.2 only. kdig from 10.53.0.2 is answered; from 10.53.0.3 it gets nothing over UDP
/// and REFUSED over TCP.
#[test]
fn the_access_list_refuses_a_source_not_on_it() {
    if !is_root() || !have("unshare") || !have("ip") || !require(&["kdig"]) {
        eprintln!("SKIPPED: needs root, unshare, ip and kdig");
        return;
    }
    let dir = temp_dir("acl");
    let config = write_config(
        &dir,
        "listen = [\"10.53.0.1:53\"]\n[clients]\nallow = [\"10.53.0.2/32\"]\n",
    );
    let script = r#"
        set -u
        ip link set lo up
        for a in 10.53.0.1 10.53.0.2 10.53.0.3; do ip addr add $a/32 dev lo; done
        "$DNSWARD" --config "$CONFIG" run 2>"$LOG" & pid=$!
        for i in $(seq 50); do kdig @10.53.0.1 -b 10.53.0.2 +time=1 +retry=0 +tcp nas.lan >/dev/null 2>&1 && break; sleep 0.1; done
        q() { kdig @10.53.0.1 +retry=0 +noall +header +answer "$@" nas.lan A; echo "exit=$?"; }
        echo "== allowed udp"; q -b 10.53.0.2 +time=3
        echo "== allowed tcp"; q -b 10.53.0.2 +time=3 +tcp
        echo "== other udp"; q -b 10.53.0.3 +time=1
        echo "== other tcp"; q -b 10.53.0.3 +time=3 +tcp
        kill -TERM $pid; wait $pid; echo "run-exit=$?"
    "#;
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "bash", "-c", script])
        .env("DNSWARD", env!("CARGO_BIN_EXE_dnsward"))
        .env("CONFIG", &config)
        .env("LOG", dir.join("dnsward.log"));
    let out = run_bounded(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(dir.join("dnsward.log")).unwrap_or_default();
    let section = |name: &str| {
        stdout
            .split(&format!("== {name}\n"))
            .nth(1)
            .and_then(|s| s.split("== ").next())
            .unwrap_or_default()
            .to_string()
    };
    for allowed in ["allowed udp", "allowed tcp"] {
        let s = section(allowed);
        assert!(
            s.contains("NOERROR") && s.contains("192.168.1.10"),
            "{allowed}: {stdout}\n{log}"
        );
    }
    let udp = section("other udp");
    assert!(
        !udp.contains("status:") && !udp.contains("exit=0"),
        "no UDP reply to a source off the list: {stdout}\n{log}"
    );
    let tcp = section("other tcp");
    assert!(
        tcp.contains("REFUSED") && !tcp.contains("192.168.1.10"),
        "{stdout}\n{log}"
    );
    assert!(stdout.contains("run-exit=0"), "{stdout}\n{log}");
}

/// The unit waits for the READY=1 dnsward sends (tests above), and accepts it from dnsward only.
#[test]
fn the_systemd_unit_waits_for_readiness() {
    let unit = std::fs::read_to_string(root().join("dist/systemd/dnsward.service")).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    assert!(lines.contains(&"Type=notify"), "{unit}");
    assert!(lines.contains(&"NotifyAccess=main"), "{unit}");
    assert!(lines.contains(&"DynamicUser=yes"), "{unit}");
    assert!(
        lines.contains(&"CapabilityBoundingSet=CAP_NET_BIND_SERVICE"),
        "{unit}"
    );
}
