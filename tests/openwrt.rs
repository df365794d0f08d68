//! The OpenWrt files: the procd init script is valid shell, and run against the shipped UCI
//! example (with OpenWrt's config_* and procd_* functions stubbed), it writes a configuration
//! the real binary accepts and starts dnsward with it as `nobody`.

mod util;

use std::process::Command;
use std::time::Duration;

use util::*;

#[test]
fn the_init_script_is_valid_shell() {
    let mut cmd = Command::new("sh");
    cmd.arg("-n").arg(root().join("dist/openwrt/dnsward.init"));
    let out = run_bounded(cmd, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (kind, option, value) of the uncommented `option`/`list` lines of a UCI file, plus the
/// lines of `extra`.
fn uci_options(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.trim().splitn(3, char::is_whitespace);
            let kind = words.next()?;
            if kind != "option" && kind != "list" {
                return None;
            }
            let name = words.next()?.to_string();
            let value = words.next()?.trim().trim_matches('\'').to_string();
            Some((kind.to_string(), name, value))
        })
        .collect()
}

/// Shell that stands in for OpenWrt's /lib/functions.sh and procd.sh: options live in
/// variables UCI_<option> (lists newline-separated), procd parameters are printed.
const STUBS: &str = r#"
config_load() { :; }
config_get() {
    eval "_v=\${UCI_$3-}"
    [ -n "$_v" ] || _v="${4-}"
    eval "$1=\$_v"
}
config_get_bool() {
    config_get "$@"
    eval "case \"\$$1\" in 1|on|true|yes|enabled) $1=1;; *) $1=0;; esac"
}
config_list_foreach() {
    eval "_items=\${UCI_$2-}"
    _old_ifs=$IFS
    IFS='
'
    for _item in $_items; do IFS=$_old_ifs; "$3" "$_item"; done
    IFS=$_old_ifs
}
procd_open_instance() { echo "OPEN"; }
procd_set_param() { echo "PARAM $*"; }
procd_close_instance() { echo "CLOSE"; }
"#;

/// What start_service did.
struct Started {
    /// It returned 0.
    ok: bool,
    /// What it printed (procd calls included).
    out: String,
    /// The configuration it generated ("" if none).
    config: String,
    /// Where that configuration was to go.
    generated: std::path::PathBuf,
}

/// Runs start_service with `options` (the UCI example's, changed by `edit`).
fn start_service(edit: impl FnOnce(&mut Vec<(String, String, String)>)) -> Started {
    let mut options =
        uci_options(&std::fs::read_to_string(root().join("dist/openwrt/dnsward.config")).unwrap());
    edit(&mut options);
    let dir = temp_dir("openwrt");
    let generated = dir.join("dnsward.toml");
    let mut script = String::from(STUBS);
    let mut lists: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (kind, name, value) in &options {
        match kind.as_str() {
            "list" => lists.entry(name.clone()).or_default().push(value.clone()),
            _ => script.push_str(&format!("UCI_{name}='{value}'\n")),
        }
    }
    for (name, values) in lists {
        script.push_str(&format!("UCI_{name}='{}'\n", values.join("\n")));
    }
    script.push_str(&format!(
        ". '{}'\nPROG='{}'\nGENERATED='{}'\nstart_service; echo \"status=$?\"\n",
        root().join("dist/openwrt/dnsward.init").display(),
        env!("CARGO_BIN_EXE_dnsward"),
        generated.display()
    ));
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    let out = run_bounded(cmd, Duration::from_secs(20));
    let stdout = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Started {
        ok: stdout.contains("status=0"),
        config: std::fs::read_to_string(&generated).unwrap_or_default(),
        out: stdout,
        generated,
    }
}

#[test]
fn the_uci_example_starts_dnsward_behind_dnsmasq() {
    let Started {
        ok,
        out,
        config,
        generated,
    } = start_service(|_| {});
    assert!(ok, "{out}");
    assert!(config.contains("listen = [\"127.0.0.1:5353\"]"), "{config}");
    assert!(
        config.contains("upstreams = [\"https://dns.quad9.net/dns-query#9.9.9.9,149.112.112.112\", \"tls://one.one.one.one#1.1.1.1,1.0.0.1\"]"),
        "{config}"
    );
    assert!(config.contains("rate-limit = 100"), "{config}");
    let command = format!(
        "PARAM command {} --config {} run --user nobody",
        env!("CARGO_BIN_EXE_dnsward"),
        generated.display()
    );
    assert!(out.lines().any(|l| l == command), "{out}");
    assert!(out.contains("PARAM respawn"), "{out}");

    // The generated file is what the real binary accepts.
    let dir = temp_dir("openwrt-check");
    let path = dir.join("dnsward.toml");
    std::fs::write(&path, &config).unwrap();
    let mut cmd = dnsward();
    cmd.arg("check-config").arg(&path);
    let out = run_bounded(cmd, Duration::from_secs(10));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("listening on 127.0.0.1:5353"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serving_the_lan_needs_the_allow_list() {
    let lan = |options: &mut Vec<(String, String, String)>| {
        options.retain(|(_, name, _)| name != "listen");
        for addr in ["127.0.0.1:53", "192.168.1.1:53"] {
            options.push(("list".into(), "listen".into(), addr.into()));
        }
    };
    // Without `list allow`, start_service stops at check-config, naming the fix.
    let Started { ok, out, .. } = start_service(lan);
    assert!(!ok, "{out}");
    assert!(out.contains("[clients] allow"), "{out}");
    assert!(!out.contains("PARAM command"), "{out}");

    let Started {
        ok, out, config, ..
    } = start_service(|options| {
        lan(options);
        options.push(("list".into(), "allow".into(), "192.168.1.0/24".into()));
        options.push(("list".into(), "allow".into(), "fd00::/8".into()));
    });
    assert!(ok, "{out}");
    assert!(
        config.contains("allow = [\"192.168.1.0/24\", \"fd00::/8\"]"),
        "{config}"
    );
}

#[test]
fn a_toml_file_of_ones_own_is_used_as_is() {
    let dir = temp_dir("openwrt-own");
    let own = dir.join("own.toml");
    std::fs::write(&own, "listen = [\"127.0.0.1:5353\"]\n").unwrap();
    let Started {
        ok, out, config, ..
    } = start_service(|options| {
        options.push(("option".into(), "config".into(), own.display().to_string()));
        options.push(("option".into(), "user".into(), "dnsward".into()));
    });
    assert!(ok, "{out}");
    assert!(config.is_empty(), "nothing generated");
    assert!(
        out.contains(&format!(
            "PARAM command {} --config {} run --user dnsward",
            env!("CARGO_BIN_EXE_dnsward"),
            own.display()
        )),
        "{out}"
    );
}

#[test]
fn a_disabled_instance_does_not_start() {
    let Started { ok, out, .. } = start_service(|options| {
        options.retain(|(_, name, _)| name != "enabled");
        options.push(("option".into(), "enabled".into(), "0".into()));
    });
    assert!(ok, "{out}");
    assert!(!out.contains("OPEN"), "{out}");
}
