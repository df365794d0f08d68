//! A high-availability pair, for real: two routers in network namespaces on one bridge, each
//! with unbound (DoT on its loopback) as the upstream, dnsward listening on a shared virtual
//! IP, and keepalived running the shipped configuration (dist/keepalived/) whose
//! `vrrp_script` is `dnsward health`. A client in a third namespace queries the virtual IP
//! while the primary loses its upstream, gets it back, and loses dnsward itself.
//!
//! Needs root (namespaces), keepalived, unbound and kdig; every address used lives inside the
//! namespaces this test creates (198.18.0.0/24, the benchmarking range) or on their loopback.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use util::*;

/// The shared address.
const VIP: &str = "198.18.0.100";
/// Where unbound serves DoT inside each router namespace.
const DOT_PORT: u16 = 853;
/// The routers: (name, own address, keepalived file).
const ROUTERS: [(&str, &str, &str); 2] = [
    ("r1", "198.18.0.1", "keepalived-primary.conf"),
    ("r2", "198.18.0.2", "keepalived-backup.conf"),
];
/// How long a failover may take: the health evidence (5 s) + a probe + two failed checks.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

/// Runs `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let out = run_bounded(cmd, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces and what runs in them; dropping it stops every process in them (by pid)
/// and deletes them.
struct Lab {
    /// Namespace names start with this (unique per test process).
    prefix: String,
    /// Namespaces created so far.
    namespaces: Vec<String>,
    /// Files: configurations and logs.
    dir: TempDir,
    /// A root-owned directory holding the dnsward binary keepalived runs (its script security
    /// refuses a script in a directory others could write).
    bin_dir: PathBuf,
}

impl Lab {
    /// sw (a bridge), r1, r2 and cl, each with eth0 on the bridge.
    fn new() -> Lab {
        let prefix = format!("dwha{}", std::process::id());
        let bin_dir = PathBuf::from(format!("/run/{prefix}"));
        let mut lab = Lab {
            prefix,
            namespaces: Vec::new(),
            dir: temp_dir("ha"),
            bin_dir,
        };
        for name in ["sw", "r1", "r2", "cl"] {
            let ns = lab.ns(name);
            ip(&["netns", "add", &ns]);
            lab.namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        let sw = lab.ns("sw");
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for (name, addr) in [
            ("r1", "198.18.0.1"),
            ("r2", "198.18.0.2"),
            ("cl", "198.18.0.10"),
        ] {
            let ns = lab.ns(name);
            let port = format!("p-{name}");
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        for (name, _, _) in ROUTERS {
            // dnsward listens on the virtual IP before holding it (dist/keepalived/99-dnsward-ha.conf).
            let out = run_bounded(
                lab.exec(name, "sysctl", &["-qw", "net.ipv4.ip_nonlocal_bind=1"]),
                Duration::from_secs(10),
            );
            assert!(out.status.success(), "sysctl in {name}");
        }
        std::fs::create_dir_all(&lab.bin_dir).unwrap();
        let binary = lab.bin_dir.join("dnsward");
        std::fs::copy(env!("CARGO_BIN_EXE_dnsward"), &binary).unwrap();
        lab
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// `program args` inside namespace `name`.
    fn exec(&self, name: &str, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(name)])
            .arg(program)
            .args(args);
        cmd
    }

    /// Starts `cmd` with its output in `log` (under the lab's directory).
    fn spawn(&self, cmd: Command, log: &str) -> Daemon {
        Daemon::spawn(cmd, &self.dir.join(log))
    }

    /// Does router `name` hold the virtual IP?
    fn holds_vip(&self, name: &str) -> bool {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.ns(name),
                "-br",
                "-4",
                "addr",
                "show",
                "dev",
                "eth0",
            ])
            .output()
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/"))
    }

    /// Waits (bounded) until exactly router `name` holds the virtual IP.
    fn wait_for_vip(&self, name: &str, limit: Duration, logs: &dyn Fn() -> String) -> Duration {
        let started = Instant::now();
        let other = if name == "r1" { "r2" } else { "r1" };
        while !self.holds_vip(name) || self.holds_vip(other) {
            assert!(
                started.elapsed() < limit,
                "{VIP} not on {name} alone within {limit:?}\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed()
    }

    /// Asks the virtual IP from the client namespace; the answer lines (`+short`), or None.
    fn ask(&self, name: &str, rtype: &str) -> Option<String> {
        let cmd = self.exec(
            "cl",
            "kdig",
            &[
                &format!("@{VIP}"),
                name,
                rtype,
                "+short",
                "+time=2",
                "+retry=0",
            ],
        );
        let out = run_bounded(cmd, Duration::from_secs(10));
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !stdout.is_empty() && !stdout.contains(";;")).then_some(stdout)
    }

    /// Starts unbound (DoT on 127.0.0.1:853) in router `name`, waiting until it listens.
    fn start_unbound(&self, name: &str, round: u32) -> Daemon {
        let dir = self.dir.join(format!("unbound-{name}-{round}"));
        std::fs::create_dir_all(&dir).unwrap();
        // The health probe asks for the root NS set; these unbounds have no internet to ask.
        let extra = dir.join("root.conf");
        std::fs::write(&extra, "local-data: \". 86400 IN NS ns.test.\"\n").unwrap();
        let script = root().join("scripts/unbound-upstream");
        let dir_arg = dir.to_str().unwrap();
        let extra_arg = extra.to_str().unwrap();
        let daemon = self.spawn(
            self.exec(
                name,
                &script,
                &[dir_arg, "5300", &DOT_PORT.to_string(), "4430", extra_arg],
            ),
            &format!("unbound-{name}-{round}.log"),
        );
        self.wait_for_port(name, DOT_PORT);
        daemon
    }

    /// Starts dnsward in router `name` with `config`, waiting until its control endpoint listens.
    fn start_dnsward(&self, name: &str, config: &Path) -> Daemon {
        let daemon = self.spawn(
            self.exec(
                name,
                self.bin_dir.join("dnsward"),
                &["-c", config.to_str().unwrap(), "run"],
            ),
            &format!("dnsward-{name}.log"),
        );
        self.wait_for_port(name, 8053);
        daemon
    }

    /// Waits (bounded) until something accepts TCP on 127.0.0.1:`port` inside `name`.
    fn wait_for_port(&self, name: &str, port: u16) {
        let started = Instant::now();
        loop {
            let out = run_bounded(
                self.exec(name, "ss", &["-Htln", &format!("sport = :{port}")]),
                Duration::from_secs(10),
            );
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "nothing listens on port {port} in {name}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the lab's processes logged, for failure messages.
    fn logs(&self) -> String {
        let mut all = String::new();
        let mut files: Vec<_> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for path in files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
        {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            all += &format!("==== {}\n", path.display());
            for line in tail.iter().rev() {
                all += line;
                all.push('\n');
            }
        }
        all
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Stop what still runs in the namespaces (by pid), politely first, and wait until
        // those processes are gone (a process on its way out leaves the namespace's list
        // before it has finished).
        for signal in ["-TERM", "-KILL"] {
            let mut pids = Vec::new();
            for ns in &self.namespaces {
                if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                    pids.extend(
                        String::from_utf8_lossy(&out.stdout)
                            .split_whitespace()
                            .map(String::from),
                    );
                }
            }
            if pids.is_empty() {
                break;
            }
            for pid in &pids {
                let _ = Command::new("kill").args([signal, pid]).status();
            }
            let alive = |pid: &String| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    !stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
            };
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(5) && pids.iter().any(alive) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.bin_dir);
    }
}

/// dnsward's configuration on router `name`: the virtual IP and loopback, the local unbound
/// over DoT, a record naming the router, the control endpoint keepalived's check asks.
fn dnsward_config(name: &str) -> String {
    format!(
        "listen = [\"{VIP}:53\", \"127.0.0.1:53\"]\n\
         upstreams = [\"tls://localhost:{DOT_PORT}#127.0.0.1\"]\n\
         bootstrap = []\n\
         ca-files = [\"{ca}\"]\n\
         hosts-file = \"\"\n\
         records = ['whoami.test. 1 IN TXT \"{name}\"']\n\
         [clients]\n\
         allow = [\"198.18.0.0/24\"]\n\
         [control]\n\
         listen = \"127.0.0.1:8053\"\n",
        ca = root().join("certs/ca.pem").display()
    )
}

/// The shipped keepalived file with this lab's virtual IP and binary.
fn keepalived_config(file: &str, binary: &Path) -> String {
    let text = std::fs::read_to_string(root().join("dist/keepalived").join(file)).unwrap();
    assert!(text.contains("192.0.2.53/24") && text.contains("/usr/local/bin/dnsward"));
    text.replace("192.0.2.53/24", &format!("{VIP}/24"))
        .replace("/usr/local/bin/dnsward", binary.to_str().unwrap())
}

#[test]
fn the_shipped_keepalived_files_parse() {
    if !require(&["keepalived"]) {
        return;
    }
    for file in ["keepalived-primary.conf", "keepalived-backup.conf"] {
        // keepalived 2.2's --config-test reports problems on stderr (its exit status does not).
        let mut cmd = Command::new("keepalived");
        cmd.arg("--config-test")
            .arg("-f")
            .arg(root().join("dist/keepalived").join(file));
        let out = run_bounded(cmd, Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.trim().is_empty(), "{file}: {stderr}");
    }
}

#[test]
fn the_shipped_dnsward_ha_file_is_valid() {
    let mut cmd = dnsward();
    cmd.arg("check-config")
        .arg(root().join("dist/keepalived/dnsward.toml"));
    let out = run_bounded(cmd, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_virtual_ip_moves_to_the_backup_when_the_primary_cannot_answer() {
    if !is_root() || !have("ip") || !have("ss") {
        eprintln!("SKIPPED: needs root, ip and ss");
        return;
    }
    if !require(&["keepalived", "unbound", "kdig"]) {
        return;
    }
    let lab = Lab::new();
    let binary = lab.bin_dir.join("dnsward");
    let mut unbound = Vec::new();
    let mut dnswards = Vec::new();
    let mut keepaliveds = Vec::new();
    for (name, _, keepalived_file) in ROUTERS {
        unbound.push(lab.start_unbound(name, 0));
        let config = lab.dir.join(format!("dnsward-{name}.toml"));
        std::fs::write(&config, dnsward_config(name)).unwrap();
        dnswards.push(lab.start_dnsward(name, &config));
        let kconf = lab.dir.join(format!("keepalived-{name}.conf"));
        std::fs::write(&kconf, keepalived_config(keepalived_file, &binary)).unwrap();
        let pid = |what: &str| lab.dir.join(format!("keepalived-{name}{what}.pid"));
        let (main_pid, vrrp_pid) = (pid(""), pid("-vrrp"));
        keepaliveds.push(lab.spawn(
            lab.exec(
                name,
                "keepalived",
                &[
                    "--dont-fork",
                    "--log-console",
                    "--log-detail",
                    "--vrrp",
                    "-f",
                    kconf.to_str().unwrap(),
                    "-p",
                    main_pid.to_str().unwrap(),
                    "-r",
                    vrrp_pid.to_str().unwrap(),
                ],
            ),
            &format!("keepalived-{name}.log"),
        ));
    }
    let logs = || lab.logs();

    // Both healthy: the primary holds the address and answers.
    lab.wait_for_vip("r1", FAILOVER_LIMIT, &logs);
    assert_eq!(
        lab.ask("whoami.test", "TXT").as_deref(),
        Some("\"r1\""),
        "{}",
        logs()
    );
    let a = lab
        .ask("a.test", "A")
        .unwrap_or_else(|| panic!("a.test via r1\n{}", logs()));
    assert!(a.contains("192.0.2.1"), "{a}");

    // The primary's upstream dies: its dnsward can no longer answer encrypted, `dnsward
    // health` fails, keepalived gives the address to the backup, and queries to the same
    // address are answered there (uncached names too: through the backup's upstream).
    drop(unbound.remove(0));
    let took = lab.wait_for_vip("r2", FAILOVER_LIMIT, &logs);
    eprintln!("failover after losing the primary's upstream: {took:?}");
    for round in 0..10 {
        assert_eq!(
            lab.ask("whoami.test", "TXT").as_deref(),
            Some("\"r2\""),
            "round {round}\n{}",
            logs()
        );
        let mx = lab.ask("mx.test", "MX");
        assert_eq!(
            mx.as_deref(),
            Some("10 mail.test."),
            "round {round}\n{}",
            logs()
        );
    }
    let primary_keepalived = std::fs::read_to_string(lab.dir.join("keepalived-r1.log")).unwrap();
    assert!(
        primary_keepalived.contains("chk_dnsward) failed (exited with status 1)"),
        "the primary's check failed as unhealthy: {primary_keepalived}"
    );

    // Its upstream comes back: the primary is healthy again and takes the address back.
    unbound.insert(0, lab.start_unbound("r1", 1));
    let took = lab.wait_for_vip("r1", FAILOVER_LIMIT, &logs);
    eprintln!("back to the primary after its upstream returned: {took:?}");
    assert_eq!(
        lab.ask("whoami.test", "TXT").as_deref(),
        Some("\"r1\""),
        "{}",
        logs()
    );

    // dnsward itself dies on the primary: the check cannot reach it (exit 2), same failover.
    drop(dnswards.remove(0));
    let took = lab.wait_for_vip("r2", FAILOVER_LIMIT, &logs);
    eprintln!("failover after the primary's dnsward died: {took:?}");
    assert_eq!(
        lab.ask("whoami.test", "TXT").as_deref(),
        Some("\"r2\""),
        "{}",
        logs()
    );
    assert_eq!(
        lab.ask("a.test", "AAAA").as_deref(),
        Some("2001:db8::1"),
        "{}",
        logs()
    );
    let primary_keepalived = std::fs::read_to_string(lab.dir.join("keepalived-r1.log")).unwrap();
    assert!(
        primary_keepalived.contains("chk_dnsward) failed (exited with status 2)"),
        "{primary_keepalived}"
    );
    // keepalived stops its VRRP child and drops the address on SIGTERM.
    for keepalived in keepaliveds {
        assert!(keepalived.terminate(), "keepalived exits cleanly");
    }
    assert!(!lab.holds_vip("r1") && !lab.holds_vip("r2"));
}
