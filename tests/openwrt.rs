//! The OpenWrt files: the procd init script is valid shell, and run against the shipped UCI
//! example (with OpenWrt's config_* and procd_* functions stubbed), it writes a configuration
//! the real binary accepts and starts dnsward with it as `nobody`; a reload sends SIGHUP, or
//! restarts dnsward when what changed is read only at start.

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

/// (kind, option, value) of the uncommented `option`/`list` lines of a UCI file.
fn uci_options(text: &str) -> Vec<Opt> {
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

/// Shell that stands in for OpenWrt's /lib/functions.sh, procd.sh and rc.common: options live
/// in variables UCI_<option> (lists newline-separated), procd calls are printed, and an
/// instance counts as running once one is registered (until the service is set again).
const STUBS: &str = r#"
exec 2>&1
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
procd_close_instance() { echo "CLOSE"; PROCD_RUNNING=1; }
procd_running() { [ "$1" = dnsward ] && [ -n "${PROCD_RUNNING-}" ]; }
procd_send_signal() { echo "SIGNAL $*"; }
# rc.common for USE_PROCD scripts: start sets the service's instances afresh (procd restarts
# one whose command or files changed), reload is reload_service if the script has one.
start() { echo "START"; PROCD_RUNNING=; start_service "$@"; }
reload() {
    if type reload_service >/dev/null 2>&1; then reload_service "$@"; else start "$@"; fi
}
"#;

/// One UCI `option` or `list` item: (kind, name, value).
type Opt = (String, String, String);

/// The options of the shipped UCI example.
fn example() -> Vec<Opt> {
    uci_options(&std::fs::read_to_string(root().join("dist/openwrt/dnsward.config")).unwrap())
}

/// Sets option `name` to `value`, or with `None` removes it (all its list items too).
fn set(options: &mut Vec<Opt>, name: &str, value: Option<&str>) {
    let kind = options
        .iter()
        .find(|(_, n, _)| n == name)
        .map_or("option", |(k, _, _)| k.as_str())
        .to_string();
    options.retain(|(_, n, _)| n != name);
    if let Some(value) = value {
        options.push((kind, name.into(), value.into()));
    }
}

/// Replaces the items of list `name` with `values`.
fn set_list(options: &mut Vec<Opt>, name: &str, values: &[&str]) {
    options.retain(|(_, n, _)| n != name);
    for value in values {
        options.push(("list".into(), name.into(), (*value).into()));
    }
}

/// A shell session with the init script loaded and OpenWrt stubbed, built up step by step:
/// set the options, call a function, change the options, call another...
struct Session {
    /// The shell script so far.
    script: String,
    /// Where the script generates its configuration (in `_dir`).
    generated: std::path::PathBuf,
    /// A directory of the session's own.
    _dir: TempDir,
    /// UCI variables set so far, unset when the options change.
    set: Vec<String>,
}

/// What one call in a [`Session`] did.
struct Call {
    /// It returned 0.
    ok: bool,
    /// What it printed (procd calls included).
    out: String,
}

impl Session {
    fn new() -> Session {
        let dir = temp_dir("openwrt");
        let generated = dir.join("dnsward.toml");
        let script = format!(
            "{STUBS}. '{}'\nPROG='{}'\nGENERATED='{}'\n",
            root().join("dist/openwrt/dnsward.init").display(),
            env!("CARGO_BIN_EXE_dnsward"),
            generated.display()
        );
        Session {
            script,
            generated,
            _dir: dir,
            set: Vec::new(),
        }
    }

    /// From here on, UCI holds `options` (and nothing else).
    fn uci(&mut self, options: &[Opt]) {
        for name in self.set.drain(..) {
            self.script.push_str(&format!("unset UCI_{name}\n"));
        }
        let mut values: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for (kind, name, value) in options {
            let items = values.entry(name).or_default();
            // A list collects its items; an option set twice keeps the last value.
            if kind != "list" {
                items.clear();
            }
            items.push(value);
        }
        for (name, values) in values {
            self.script
                .push_str(&format!("UCI_{name}='{}'\n", values.join("\n")));
            self.set.push(name.to_string());
        }
    }

    /// Calls the shell function `name` (start_service, or rc.common's reload).
    fn call(&mut self, name: &str) {
        self.script.push_str(&format!(
            "echo '@@ {name}'\n{name}\necho \"@@ status=$?\"\n"
        ));
    }

    /// Runs the session: what each call did, in order.
    fn run(&self) -> Vec<Call> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(&self.script);
        let out = run_bounded(cmd, Duration::from_secs(30));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut calls = Vec::new();
        let mut current: Option<String> = None;
        for line in stdout.lines() {
            if line.starts_with("@@ ") && current.is_none() {
                current = Some(String::new());
            } else if let Some(status) = line.strip_prefix("@@ status=") {
                let out = current.take().expect("a call was started");
                calls.push(Call {
                    ok: status == "0",
                    out,
                });
            } else if let Some(out) = current.as_mut() {
                out.push_str(line);
                out.push('\n');
            }
        }
        assert!(current.is_none(), "a call did not finish:\n{stdout}");
        calls
    }

    /// The configuration generated last ("" if none).
    fn config(&self) -> String {
        std::fs::read_to_string(&self.generated).unwrap_or_default()
    }
}

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
fn start_service(edit: impl FnOnce(&mut Vec<Opt>)) -> Started {
    let mut options = example();
    edit(&mut options);
    let mut session = Session::new();
    session.uci(&options);
    session.call("start_service");
    let Call { ok, out } = session.run().remove(0);
    Started {
        ok,
        out,
        config: session.config(),
        generated: session.generated.clone(),
    }
}

/// Starts with the UCI example, then sets the options `edit` makes of it and reloads: what the
/// reload did, and the configuration generated last.
fn reload_after(edit: impl FnOnce(&mut Vec<Opt>)) -> (Call, String) {
    let mut options = example();
    let mut session = Session::new();
    session.uci(&options);
    session.call("start_service");
    edit(&mut options);
    session.uci(&options);
    session.call("reload");
    let mut calls = session.run();
    assert!(calls[0].ok, "{}", calls[0].out);
    (calls.remove(1), session.config())
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
    let lan = |options: &mut Vec<Opt>| {
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

/// The reload of a running instance that dnsward can take without a restart.
const SIGHUP: &str = "SIGNAL dnsward * HUP";

#[test]
fn a_reload_regenerates_the_configuration_and_sends_sighup() {
    let (reload, config) = reload_after(|options| {
        set_list(options, "upstream", &["tls://dns.example#192.0.2.1"]);
        set(options, "hosts_file", None);
    });
    assert!(reload.ok, "{}", reload.out);
    assert!(reload.out.lines().any(|l| l == SIGHUP), "{}", reload.out);
    assert!(!reload.out.contains("START"), "{}", reload.out);
    assert!(
        config.contains("upstreams = [\"tls://dns.example#192.0.2.1\"]"),
        "{config}"
    );
    assert!(!config.contains("hosts-file"), "{config}");
}

#[test]
fn a_reload_restarts_dnsward_when_what_it_reads_only_at_start_changed() {
    type Edit = fn(&mut Vec<Opt>);
    let changes: [(&str, Edit); 4] = [
        ("listen", |o| set_list(o, "listen", &["127.0.0.1:5354"])),
        ("allow", |o| set_list(o, "allow", &["192.168.1.0/24"])),
        ("rate_limit", |o| set(o, "rate_limit", Some("50"))),
        ("user", |o| set(o, "user", Some("dnsward"))),
    ];
    for (what, edit) in changes {
        let (reload, _) = reload_after(edit);
        assert!(reload.ok, "{what}: {}", reload.out);
        assert!(!reload.out.contains("SIGNAL"), "{what}: {}", reload.out);
        // rc.common's start sets the instance again; procd restarts it, its command line or
        // files having changed.
        assert!(reload.out.starts_with("START\n"), "{what}: {}", reload.out);
        assert!(
            reload.out.contains("PARAM command"),
            "{what}: {}",
            reload.out
        );
    }
}

#[test]
fn a_rejected_configuration_is_not_reloaded_and_the_one_in_force_stays() {
    let (reload, config) = reload_after(|options| {
        set_list(options, "upstream", &["tls://dns.example#192.0.2.1"]);
        set_list(options, "listen", &["192.168.1.1:53"]);
    });
    assert!(!reload.ok, "{}", reload.out);
    assert!(reload.out.contains("[clients] allow"), "{}", reload.out);
    assert!(!reload.out.contains("SIGNAL"), "{}", reload.out);
    assert!(!reload.out.contains("START"), "{}", reload.out);
    assert!(config.contains("listen = [\"127.0.0.1:5353\"]"), "{config}");
    assert!(config.contains("dns.quad9.net"), "{config}");
}

#[test]
fn reloading_a_disabled_or_stopped_instance_does_what_procd_would_by_default() {
    // Disabled on reload: start_service sets no instance, so procd stops the running one.
    let (reload, _) = reload_after(|options| set(options, "enabled", Some("0")));
    assert!(reload.ok, "{}", reload.out);
    assert!(reload.out.starts_with("START\n"), "{}", reload.out);
    assert!(!reload.out.contains("OPEN"), "{}", reload.out);
    assert!(!reload.out.contains("SIGNAL"), "{}", reload.out);

    // Enabled on reload: there is nothing to signal, so it is started.
    let mut options = example();
    set(&mut options, "enabled", Some("0"));
    let mut session = Session::new();
    session.uci(&options);
    session.call("start_service");
    set(&mut options, "enabled", Some("1"));
    session.uci(&options);
    session.call("reload");
    let calls = session.run();
    assert!(!calls[0].out.contains("OPEN"), "{}", calls[0].out);
    assert!(calls[1].ok, "{}", calls[1].out);
    assert!(calls[1].out.starts_with("START\n"), "{}", calls[1].out);
    assert!(calls[1].out.contains("PARAM command"), "{}", calls[1].out);
    assert!(!calls[1].out.contains("SIGNAL"), "{}", calls[1].out);
}

#[test]
fn a_toml_file_of_ones_own_is_reloaded_with_sighup_unless_its_path_or_the_user_changed() {
    let dir = temp_dir("openwrt-own-reload");
    let own = dir.join("own.toml");
    let other = dir.join("other.toml");
    std::fs::write(&own, "listen = [\"127.0.0.1:5353\"]\n").unwrap();
    std::fs::write(&other, "listen = [\"127.0.0.1:5353\"]\n").unwrap();
    let mut options = example();
    set(&mut options, "config", Some(&own.display().to_string()));
    let mut session = Session::new();
    session.uci(&options);
    session.call("start_service");
    // Edited in place (here: between the calls, as the session runs).
    session.script.push_str(&format!(
        "echo 'upstreams = [\"tls://dns.example#192.0.2.1\"]' >> '{}'\n",
        own.display()
    ));
    session.call("reload");
    set(&mut options, "config", Some(&other.display().to_string()));
    session.uci(&options);
    session.call("reload");
    let calls = session.run();
    assert!(calls[0].ok, "{}", calls[0].out);
    assert!(calls[1].ok, "{}", calls[1].out);
    assert_eq!(calls[1].out.trim(), SIGHUP);
    assert!(session.config().is_empty(), "nothing generated");
    assert!(calls[2].ok, "{}", calls[2].out);
    assert!(calls[2].out.starts_with("START\n"), "{}", calls[2].out);
    assert!(
        calls[2]
            .out
            .contains(&format!("--config {} run", other.display())),
        "{}",
        calls[2].out
    );
}
