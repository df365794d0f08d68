//! `scripts/install` against a temporary root directory (`--destdir`): it installs the binary,
//! configuration and unit, switches resolv.conf / systemd-resolved / NetworkManager to
//! 127.0.0.1, and undoes all of it. This machine's own /etc is never touched.

mod util;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use util::*;

fn install(destdir: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(root().join("scripts/install"));
    cmd.arg("--destdir")
        .arg(destdir)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_dnsward"))
        .args(args);
    let out = run_bounded(cmd, Duration::from_secs(60));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install {args:?} failed:\n{text}");
    text
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A root that looks like a desktop: resolv.conf a symlink to systemd-resolved's stub file,
/// NetworkManager configured.
fn desktop_root() -> TempDir {
    let dest = temp_dir("install-desktop");
    std::fs::create_dir_all(dest.join("etc/systemd")).unwrap();
    std::fs::write(dest.join("etc/systemd/resolved.conf"), "[Resolve]\n").unwrap();
    std::fs::create_dir_all(dest.join("etc/NetworkManager/conf.d")).unwrap();
    std::fs::create_dir_all(dest.join("run/systemd/resolve")).unwrap();
    std::fs::write(
        dest.join("run/systemd/resolve/stub-resolv.conf"),
        "nameserver 127.0.0.53\n",
    )
    .unwrap();
    symlink(
        "../run/systemd/resolve/stub-resolv.conf",
        dest.join("etc/resolv.conf"),
    )
    .unwrap();
    dest
}

#[test]
fn installs_switches_and_uninstalls_on_a_systemd_resolved_desktop() {
    let dest = desktop_root();
    install(&dest, &["--switch-resolver"]);

    let bin = dest.join("usr/local/bin/dnsward");
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_dnsward")).unwrap()
    );
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        read(dest.join("etc/dnsward/dnsward.toml")),
        read(root().join("dnsward.example.toml"))
    );
    assert_eq!(
        read(dest.join("etc/systemd/system/dnsward.service")),
        read(root().join("dist/systemd/dnsward.service"))
    );

    let resolv = dest.join("etc/resolv.conf");
    assert!(!resolv.is_symlink(), "replaced by a file");
    let nameservers: Vec<String> = read(resolv.clone())
        .lines()
        .filter(|l| l.starts_with("nameserver"))
        .map(String::from)
        .collect();
    assert_eq!(nameservers, ["nameserver 127.0.0.1"]);
    let backup = dest.join("etc/dnsward/resolv.conf.orig");
    assert_eq!(
        std::fs::read_link(&backup).unwrap(),
        Path::new("../run/systemd/resolve/stub-resolv.conf")
    );
    let resolved = read(dest.join("etc/systemd/resolved.conf.d/dnsward.conf"));
    for line in ["DNS=127.0.0.1", "Domains=~.", "DNSStubListener=no"] {
        assert!(resolved.lines().any(|l| l == line), "{resolved}");
    }
    let nm = read(dest.join("etc/NetworkManager/conf.d/dnsward.conf"));
    assert!(nm.lines().any(|l| l == "dns=none"), "{nm}");

    // Again: idempotent, and the backup is still the original, not our own file.
    let out = install(&dest, &["--switch-resolver"]);
    assert!(out.contains("already switched"), "{out}");
    assert!(std::fs::read_link(&backup).is_ok());

    // An edited configuration survives a reinstall.
    let conf = dest.join("etc/dnsward/dnsward.toml");
    std::fs::write(&conf, "listen = [\"127.0.0.1:53\"]\n").unwrap();
    let out = install(&dest, &[]);
    assert!(out.contains("kept the existing"), "{out}");
    assert_eq!(read(conf.clone()), "listen = [\"127.0.0.1:53\"]\n");

    install(&dest, &["--uninstall"]);
    assert_eq!(
        std::fs::read_link(&resolv).unwrap(),
        Path::new("../run/systemd/resolve/stub-resolv.conf"),
        "the original symlink is back"
    );
    assert!(!backup.exists() && !backup.is_symlink());
    assert!(!dest.join("etc/systemd/resolved.conf.d").exists());
    assert!(!dest.join("etc/NetworkManager/conf.d/dnsward.conf").exists());
    assert!(
        dest.join("etc/NetworkManager/conf.d").exists(),
        "theirs stays"
    );
    assert!(!bin.exists());
    assert!(!dest.join("etc/systemd/system/dnsward.service").exists());
    assert!(conf.exists(), "configuration kept without --purge");
    install(&dest, &["--uninstall", "--purge"]);
    assert!(!dest.join("etc/dnsward").exists());
}

#[test]
fn a_plain_resolv_conf_is_restored_byte_for_byte() {
    let dest = temp_dir("install-plain");
    std::fs::create_dir_all(dest.join("etc")).unwrap();
    let original = "# from DHCP\nnameserver 192.0.2.53\nsearch example.net\n";
    std::fs::write(dest.join("etc/resolv.conf"), original).unwrap();
    install(&dest, &["--switch-resolver"]);
    assert!(read(dest.join("etc/resolv.conf")).contains("nameserver 127.0.0.1"));
    assert!(
        !dest.join("etc/systemd/resolved.conf.d").exists(),
        "no systemd-resolved here"
    );
    assert!(!dest.join("etc/NetworkManager").exists());
    install(&dest, &["--restore-resolver"]);
    assert_eq!(read(dest.join("etc/resolv.conf")), original);
    // The installation itself stays.
    assert!(dest.join("usr/local/bin/dnsward").exists());
}

#[test]
fn bad_usage_is_refused() {
    let dest = temp_dir("install-usage");
    for args in [
        &["--purge"][..],
        &["--switch-resolver", "--uninstall"],
        &["--frobnicate"],
    ] {
        let mut cmd = Command::new(root().join("scripts/install"));
        cmd.arg("--destdir").arg(&dest).args(args);
        let out = run_bounded(cmd, Duration::from_secs(10));
        assert!(!out.status.success(), "{args:?}");
    }
    assert!(
        std::fs::read_dir(&dest).unwrap().next().is_none(),
        "nothing installed"
    );
}
