//! The router builds: `scripts/build-router aarch64|armv7` make static binaries, which run
//! under qemu-user and resolve names through a real unbound (DoT) on loopback.
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

/// What one router architecture needs: its Rust targets (any one installed will do, in the
/// order scripts/build-router prefers them), qemu-user emulator and ELF machine number.
struct Arch {
    name: &'static str,
    targets: &'static [&'static str],
    qemu: &'static str,
    machine: u16,
}

const AARCH64: Arch = Arch {
    name: "aarch64",
    targets: &["aarch64-unknown-linux-musl"],
    qemu: "qemu-aarch64",
    machine: 183, // EM_AARCH64
};

const ARMV7: Arch = Arch {
    name: "armv7",
    targets: &[
        "armv7-unknown-linux-musleabihf",
        "armv7-unknown-linux-gnueabihf",
    ],
    qemu: "qemu-arm",
    machine: 40, // EM_ARM
};

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

/// ELF e_machine and whether the file has a PT_INTERP program header (dynamic linking);
/// 32- and 64-bit little-endian files.
fn elf_machine_and_interp(path: &Path) -> (u16, bool) {
    let elf = std::fs::read(path).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF", "not ELF");
    assert_eq!(elf[5], 1, "little-endian");
    let is64 = elf[4] == 2;
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    let machine = u16_at(18);
    let (phoff, phentsize, phnum) = if is64 {
        (u64_at(32) as usize, u16_at(54) as usize, u16_at(56))
    } else {
        (u32_at(28) as usize, u16_at(42) as usize, u16_at(44))
    };
    let interp = (0..phnum as usize).any(|i| u32_at(phoff + i * phentsize) == 3); // PT_INTERP
    (machine, interp)
}

#[test]
fn the_aarch64_build_resolves_through_unbound_under_qemu() {
    build_and_resolve(&AARCH64);
}

#[test]
fn the_armv7_build_resolves_through_unbound_under_qemu() {
    build_and_resolve(&ARMV7);
}

fn build_and_resolve(arch: &Arch) {
    if !arch.targets.iter().any(|t| target_installed(t)) {
        eprintln!(
            "SKIPPED: Rust's standard library for {:?} is not installed \
             (rustup target add {}); the {} router build cannot be tested here",
            arch.targets, arch.targets[0], arch.name
        );
        return;
    }
    // scripts/build-router installs the cross compiler itself.
    if !require(&[arch.qemu, "unbound", "kdig"]) {
        return;
    }
    let mut build = Command::new(root().join("scripts/build-router"));
    build.arg(arch.name);
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
    let binary = root().join(format!("target/router/dnsward-{}", arch.name));
    let (machine, interp) = elf_machine_and_interp(&binary);
    assert_eq!(machine, arch.machine, "ELF machine of {}", arch.name);
    assert!(!interp, "statically linked");

    // unbound on loopback: plain, DoT and DoH ports.
    let dir = temp_dir(&format!("router-{}", arch.name));
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
    let mut cmd = Command::new(arch.qemu);
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
