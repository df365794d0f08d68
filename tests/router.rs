//! The router build: `scripts/build-router aarch64` makes a static aarch64 binary, which runs
//! under qemu-user and resolves names through a real unbound (DoT) on loopback.
//!
//! Skipped, saying so, when Rust's standard library for aarch64-unknown-linux-musl is not
//! installed (rustup must download it, and not every machine can). With the target present,
//! missing qemu-user, cross compiler, unbound or kdig fail under scripts/test like any tool.

mod util;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use util::*;

const TARGET: &str = "aarch64-unknown-linux-musl";

/// Is the standard library for `target` installed?
fn target_installed(target: &str) -> bool {
    let Ok(out) = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", target])
        .output()
    else {
        return false;
    };
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    out.status.success()
        && std::fs::read_dir(&dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
}

/// ELF e_machine and whether the file has a PT_INTERP program header (dynamic linking).
fn elf_machine_and_interp(path: &Path) -> (u16, bool) {
    let elf = std::fs::read(path).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF", "not ELF");
    assert_eq!(elf[4], 2, "64-bit");
    assert_eq!(elf[5], 1, "little-endian");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]);
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    let machine = u16_at(18);
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
    let interp = (0..phnum as usize).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3 // PT_INTERP
    });
    (machine, interp)
}

#[test]
fn the_aarch64_build_resolves_through_unbound_under_qemu() {
    if !target_installed(TARGET) {
        eprintln!(
            "SKIPPED: Rust's standard library for {TARGET} is not installed \
             (rustup target add {TARGET}); the router build cannot be tested here"
        );
        return;
    }
    // scripts/build-router installs the cross compiler itself.
    if !require(&["qemu-aarch64", "unbound", "kdig"]) {
        return;
    }
    let mut build = Command::new(root().join("scripts/build-router"));
    build.arg("aarch64");
    // The variables cargo sets for test binaries would make the inner cargo rebuild dnsward
    // every time (they differ from a plain shell's).
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" {
            build.env_remove(&*key);
        }
    }
    let out = run_bounded(build, Duration::from_secs(3600));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build-router failed:\n{log}");
    let binary = root().join("target/router/dnsward-aarch64");
    let (machine, interp) = elf_machine_and_interp(&binary);
    assert_eq!(machine, 183, "EM_AARCH64");
    assert!(!interp, "statically linked");

    // unbound on loopback: plain, DoT and DoH ports.
    let dir = temp_dir("router");
    let (plain, tls, https) = (free_port(), free_port(), free_port());
    let mut cmd = Command::new(root().join("scripts/unbound-upstream"));
    cmd.arg(dir.join("unbound"))
        .args([plain, tls, https].map(|p| p.to_string()));
    let _unbound = Daemon::spawn(cmd, &dir.join("unbound.log"));
    wait_for_tcp(
        SocketAddr::from(([127, 0, 0, 1], tls)),
        Duration::from_secs(10),
    );

    let port = free_port();
    let mut cmd = Command::new("qemu-aarch64");
    cmd.arg(&binary)
        .args([
            "-v",
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            &format!("tls://localhost:{tls}#127.0.0.1"),
            "--ca-file",
        ])
        .arg(root().join("certs/ca.pem"));
    let proxy = Daemon::spawn(cmd, &dir.join("dnsward.log"));
    wait_for_tcp(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(30),
    );
    let mut kdig = Command::new("kdig");
    kdig.args([
        "@127.0.0.1",
        &format!("-p{port}"),
        "+time=10",
        "+retry=0",
        "a.test",
        "A",
    ]);
    let out = run_bounded(kdig, Duration::from_secs(30));
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.contains("status: NOERROR")
            && answer.contains("192.0.2.1")
            && answer.contains("192.0.2.2"),
        "{answer}\n{}",
        proxy.log()
    );
    assert!(
        proxy.log().contains("connection established"),
        "{}",
        proxy.log()
    );
    assert!(proxy.terminate(), "clean exit under qemu");
}
