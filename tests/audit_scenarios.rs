//! The hijack-audit corpus (issue 4), run against the real binary: each tests/scenarios/*.toml
//! is built on loopback (trusted fake DoT upstream, scripted plain resolver, TLS sites, public
//! resolver stand-ins), audited with `dnsward audit --json -`, and the JSON compared with the
//! scenario's expectations. Prints the confusion matrix (expected × got verdict) over the whole
//! corpus (`-- --nocapture`); `DNSWARD_SCENARIO=substring` runs only matching scenarios.
//!
//! The bar: no `hijacked` verdict in a benign scenario, every hijack found with its reason.

mod common;
mod util;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::scenario::{self, INTERCEPTION_VERDICTS, Scenario, VERDICTS};
use common::*;
use futures_util::StreamExt;
use serde_json::Value;
use util::*;

/// Scenarios audited at once (each mostly waits on timeouts, not the CPU).
const PARALLEL: usize = 3;
/// Bound on one audit run.
const AUDIT_LIMIT: Duration = Duration::from_secs(120);
/// The test range the audit treats as public.
const ASSUME_PUBLIC: &str = "127.100.0.0/16";
/// Column of the confusion matrix for an expected result the audit did not report.
const MISSING: &str = "missing";

/// What one scenario's audit produced, judged against its expectations.
struct Outcome {
    id: String,
    benign: bool,
    exit: Option<i32>,
    /// (expected verdict, got verdict or MISSING) per expected result.
    verdicts: Vec<(String, String)>,
    /// (expected, got) per interception probe.
    interceptions: Vec<(String, String)>,
    /// (expected, got) NXDOMAIN rewriting; got None when absent.
    rewriting: (bool, Option<bool>),
    /// Hijacked verdicts and intercepted probes reported.
    hijacks_reported: usize,
    /// Every disagreement with the expectations, one line each.
    problems: Vec<String>,
}

#[test]
fn the_audit_judges_every_scenario_as_expected() {
    let filter = std::env::var("DNSWARD_SCENARIO").ok();
    let scenarios: Vec<Scenario> = scenario::load_all()
        .into_iter()
        .filter(|s| filter.as_deref().is_none_or(|f| s.id.contains(f)))
        .collect();
    assert!(!scenarios.is_empty(), "no scenario matches {filter:?}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcomes: Vec<Outcome> = rt.block_on(
        futures_util::stream::iter(&scenarios)
            .map(run_scenario)
            .buffered(PARALLEL)
            .collect(),
    );

    let report = report(&outcomes);
    println!("{report}");
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.problems.is_empty()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} scenarios disagree with their expectations:\n{}",
        failed.len(),
        outcomes.len(),
        failed
            .iter()
            .map(|o| format!("{}:\n  {}", o.id, o.problems.join("\n  ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Builds the scenario's network, runs the audit on it and judges the JSON.
async fn run_scenario(s: &Scenario) -> Outcome {
    let upstream = FakeUpstream::dot(s.trusted_zone(), Behavior::Answer).await;
    let plain = ScriptedResolver::start(s.script()).await;
    let sites = Sites::start(&s.site_specs()).await;
    let mut targets = Vec::new(); // kept alive until the audit is done
    let mut interception_toml = String::new();
    let mut expected_interceptions = Vec::new();
    for i in s.interception_targets() {
        let script = match i.answered_by.as_str() {
            "genuine" => {
                let id = i.identity.as_deref().expect("checked by scenario::load");
                Some(Script::mirror(s.zone()).identity(id))
            }
            // Intercepted: the resolver under audit answers what is sent to this address.
            "plain" => Some(s.script()),
            _ => None, // nobody listens
        };
        let server = match script {
            Some(script) => {
                let r = ScriptedResolver::start_on(i.address, script).await;
                let addr = r.addr;
                targets.push(r);
                addr
            }
            None => unused_udp_port(i.address),
        };
        let _ = write!(
            interception_toml,
            "\n[[audit.interception]]\nlabel = {:?}\nserver = \"{server}\"\nname = \"id.server\"\n\
             class = \"CH\"\ntype = \"TXT\"\nexpect = {:?}\n",
            i.label, i.expect
        );
        expected_interceptions.push((i.label, i.verdict));
    }

    let dir = temp_dir(&format!("audit-{}", s.id));
    let names = dir.join("names.txt");
    std::fs::write(&names, s.names_file()).unwrap();
    let quoted = |v: &[String]| {
        v.iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sinkholes: Vec<String> = s
        .audit
        .sinkhole_addresses
        .iter()
        .map(|a| a.to_string())
        .collect();
    let config = format!(
        "upstreams = [{upstream:?}]\nca-files = [{ca:?}]\n\n[audit]\nplain = \"{plain}\"\n\
         timeout-ms = 1500\nhold-ms = 300\nverify-port = {port}\nverify-timeout-ms = 2000\n\
         assume-public = [\"{ASSUME_PUBLIC}\"]\nnxdomain-tlds = [\"test\", \"example\"]\n\
         allow = [{allow}]\nsinkhole-addresses = [{sinkholes}]\n{interception_toml}",
        upstream = upstream.url(),
        ca = cert_path("ca.pem").display().to_string(),
        plain = plain.addr,
        port = sites.port,
        allow = quoted(&s.audit.allow),
        sinkholes = quoted(&sinkholes),
    );
    let config_path = dir.join("dnsward.toml");
    std::fs::write(&config_path, &config).unwrap();

    let mut cmd = dnsward();
    cmd.arg("audit")
        .arg("--config")
        .arg(&config_path)
        .arg("--names")
        .arg(&names)
        .args(["--json", "-", "--no-progress"]);
    if !s.asn.is_empty() {
        let networks: Vec<_> = s.asn.iter().map(|a| a.parsed()).collect();
        let db = dir.join("asn.mmdb");
        std::fs::write(&db, common::mmdb::asn_db(&networks)).unwrap();
        cmd.arg("--asn-db").arg(db);
    }
    let out = tokio::task::spawn_blocking(move || run_bounded(cmd, AUDIT_LIMIT))
        .await
        .unwrap();
    let mut outcome = Outcome {
        id: s.id.clone(),
        benign: s.benign,
        exit: out.status.code(),
        verdicts: Vec::new(),
        interceptions: Vec::new(),
        rewriting: (s.nxdomain_probes.rewriting, None),
        hijacks_reported: 0,
        problems: Vec::new(),
    };
    match serde_json::from_slice::<Value>(&out.stdout) {
        Ok(doc) => judge(s, &doc, &expected_interceptions, &sites, &mut outcome),
        Err(e) => {
            outcome.problems.push(format!(
                "no JSON document on stdout ({e}); exit {:?}; stderr:\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
            for x in &s.expect {
                outcome.verdicts.push((x.verdict.clone(), MISSING.into()));
            }
        }
    }
    if outcome.problems.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        outcome
            .problems
            .push(format!("config and names kept in {}", dir.display()));
    }
    outcome
}

/// A port on `ip` where nothing listens (bound for a moment, then released).
fn unused_udp_port(ip: IpAddr) -> SocketAddr {
    let s = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind");
    s.local_addr().unwrap()
}

fn norm_name(n: &str) -> String {
    n.trim_end_matches('.').to_ascii_lowercase()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn sorted_ips(v: &[String]) -> Vec<String> {
    let mut ips: Vec<String> = v
        .iter()
        .map(|s| s.parse::<IpAddr>().map_or(s.clone(), |ip| ip.to_string()))
        .collect();
    ips.sort();
    ips
}

/// Compares the audit's JSON document with the scenario's expectations.
fn judge(
    s: &Scenario,
    doc: &Value,
    expected_interceptions: &[(String, String)],
    sites: &Sites,
    o: &mut Outcome,
) {
    let results = doc["results"].as_array().cloned().unwrap_or_default();
    let key = |r: &Value| {
        (
            norm_name(r["name"].as_str().unwrap_or("")),
            r["type"].as_str().unwrap_or("").to_string(),
        )
    };
    // Results per verdict must add up to the summary.
    for v in VERDICTS {
        let n = results.iter().filter(|r| r["verdict"] == v).count() as u64;
        if doc["summary"][v].as_u64() != Some(n) {
            o.problems.push(format!(
                "summary.{v} = {} but {n} results say {v}",
                doc["summary"][v]
            ));
        }
    }
    for r in &results {
        let k = key(r);
        if !s
            .expect
            .iter()
            .any(|e| norm_name(&e.name) == k.0 && e.rtype == k.1)
        {
            o.problems
                .push(format!("result for a name not asked: {} {}", k.0, k.1));
        }
    }
    let hellos = sites.hellos();
    for e in &s.expect {
        let what = format!("{} {}", e.name, e.rtype);
        let Some(r) = results
            .iter()
            .find(|r| key(r) == (norm_name(&e.name), e.rtype.clone()))
        else {
            o.problems.push(format!("{what}: no result"));
            o.verdicts.push((e.verdict.clone(), MISSING.into()));
            continue;
        };
        let got = r["verdict"].as_str().unwrap_or("?").to_string();
        let reasons = strings(&r["reasons"]);
        let plain_addrs = strings(&r["plain"]["addresses"]);
        let context = format!(
            "plain {} {:?} replies {}; trusted {}; checks {}",
            r["plain"]["rcode"], plain_addrs, r["plain"]["replies"], r["trusted"], r["checks"]
        );
        if got != e.verdict {
            o.problems.push(format!(
                "{what}: expected {} {:?}, got {got} {reasons:?} ({context})",
                e.verdict, e.reasons
            ));
        } else if let Some(missing) = e.reasons.iter().find(|x| !reasons.contains(x)) {
            o.problems.push(format!(
                "{what}: verdict {got} as expected, but reason {missing} missing from {reasons:?} ({context})"
            ));
        }
        if let Some(want) = &e.plain_addresses {
            let want: Vec<String> = want.iter().map(|a| a.to_string()).collect();
            if sorted_ips(&want) != sorted_ips(&plain_addrs) {
                o.problems.push(format!(
                    "{what}: plain addresses {plain_addrs:?}, expected {want:?}"
                ));
            }
        }
        // A verdict resting on a certificate must come from a handshake with SNI = the name.
        if e.reasons
            .iter()
            .any(|x| x == "certificate-valid" || x == "tls-mismatch")
        {
            for a in &plain_addrs {
                let Ok(ip) = a.parse::<IpAddr>() else {
                    continue;
                };
                if !hellos.contains(&(ip, Some(norm_name(&e.name)))) {
                    o.problems.push(format!(
                        "{what}: no TLS ClientHello with SNI {} reached {ip}",
                        e.name
                    ));
                }
            }
        }
        if got == "hijacked" {
            o.hijacks_reported += 1;
        }
        o.verdicts.push((e.verdict.clone(), got));
    }

    let nx = &doc["probes"]["nxdomain"];
    let rewriting = nx["rewriting"].as_bool();
    o.rewriting.1 = rewriting;
    if rewriting != Some(s.nxdomain_probes.rewriting) {
        o.problems.push(format!(
            "NXDOMAIN probes: rewriting {:?}, expected {} ({nx})",
            rewriting, s.nxdomain_probes.rewriting
        ));
    }
    let redirects = sorted_ips(&strings(&nx["redirect_addresses"]));
    for a in &s.nxdomain_probes.redirect_addresses {
        if !redirects.contains(&a.to_string()) {
            o.problems.push(format!(
                "NXDOMAIN probes: redirect address {a} not learned ({redirects:?})"
            ));
        }
    }

    let probes = doc["probes"]["interception"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if probes.len() != expected_interceptions.len() {
        o.problems.push(format!(
            "{} interception probes reported, {} configured",
            probes.len(),
            expected_interceptions.len()
        ));
    }
    for (label, want) in expected_interceptions {
        let got = probes
            .iter()
            .find(|p| p["label"] == label.as_str())
            .and_then(|p| p["verdict"].as_str())
            .unwrap_or(MISSING)
            .to_string();
        if &got != want {
            let probe = probes.iter().find(|p| p["label"] == label.as_str());
            o.problems.push(format!(
                "interception {label}: expected {want}, got {got} ({probe:?})"
            ));
        }
        if got == "intercepted" {
            o.hijacks_reported += 1;
        }
        o.interceptions.push((want.clone(), got));
    }

    // Exit status: 3 iff something was judged hijacked; the scenario says which it must be.
    let want_exit = if s.benign { 0 } else { 3 };
    if o.exit != Some(want_exit) {
        o.problems
            .push(format!("exit status {:?}, expected {want_exit}", o.exit));
    }
    let reported = o.hijacks_reported > 0 || rewriting == Some(true);
    if (o.exit == Some(3)) != reported && o.exit.is_some_and(|c| c == 0 || c == 3) {
        o.problems.push(format!(
            "exit status {:?} disagrees with the document ({} hijacked results/probes, rewriting {:?})",
            o.exit, o.hijacks_reported, rewriting
        ));
    }
    if s.benign && o.hijacks_reported > 0 {
        o.problems.push(format!(
            "BAR: {} hijacked verdicts/probes in a benign scenario",
            o.hijacks_reported
        ));
    }
}

/// The per-scenario lines, the confusion matrices and the bar, as text.
fn report(outcomes: &[Outcome]) -> String {
    let mut t = String::from("\nhijack-audit corpus\n");
    for o in outcomes {
        let right = o.verdicts.iter().filter(|(e, g)| e == g).count();
        let _ = writeln!(
            t,
            "  {:4} {:26} {:7} exit {:>4}  verdicts {right}/{}  {}",
            if o.problems.is_empty() { "ok" } else { "FAIL" },
            o.id,
            if o.benign { "benign" } else { "hijack" },
            o.exit.map_or("none".into(), |c| c.to_string()),
            o.verdicts.len(),
            o.problems
                .first()
                .map_or("", |p| p.as_str())
                .chars()
                .take(90)
                .collect::<String>(),
        );
    }

    let mut cols: Vec<&str> = VERDICTS.to_vec();
    cols.push(MISSING);
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (e, g) in outcomes.iter().flat_map(|o| &o.verdicts) {
        let g = cols.iter().find(|c| **c == g).copied().unwrap_or(MISSING);
        *counts.entry((e.as_str(), g)).or_default() += 1;
    }
    let _ = writeln!(
        t,
        "\nconfusion matrix: results (rows expected, columns got)"
    );
    let _ = write!(t, "  {:18}", "");
    for c in &cols {
        let _ = write!(t, "{:>12}", abbreviate(c));
    }
    t.push('\n');
    for r in VERDICTS {
        let _ = write!(t, "  {r:18}");
        for c in &cols {
            let _ = write!(t, "{:>12}", counts.get(&(r, *c)).copied().unwrap_or(0));
        }
        t.push('\n');
    }

    let _ = writeln!(
        t,
        "\nconfusion matrix: interception probes (rows expected, columns got)"
    );
    let icols = [INTERCEPTION_VERDICTS.as_slice(), &[MISSING]].concat();
    let _ = write!(t, "  {:18}", "");
    for c in &icols {
        let _ = write!(t, "{c:>17}");
    }
    t.push('\n');
    for r in INTERCEPTION_VERDICTS {
        let _ = write!(t, "  {r:18}");
        for c in &icols {
            let n = outcomes
                .iter()
                .flat_map(|o| &o.interceptions)
                .filter(|(e, g)| {
                    e == r
                        && (g == c
                            || (*c == MISSING && !INTERCEPTION_VERDICTS.contains(&g.as_str())))
                })
                .count();
            let _ = write!(t, "{n:>17}");
        }
        t.push('\n');
    }
    let nx_right = outcomes
        .iter()
        .filter(|o| Some(o.rewriting.0) == o.rewriting.1)
        .count();
    let _ = writeln!(
        t,
        "\nNXDOMAIN rewriting probe right in {nx_right}/{} scenarios",
        outcomes.len()
    );

    let benign_hijacks: usize = outcomes
        .iter()
        .filter(|o| o.benign)
        .map(|o| o.hijacks_reported)
        .sum();
    let hijack_scenarios = outcomes.iter().filter(|o| !o.benign).count();
    let detected = outcomes
        .iter()
        .filter(|o| !o.benign && o.problems.is_empty())
        .count();
    let _ = writeln!(
        t,
        "bar: {benign_hijacks} hijacked verdicts/probes in benign scenarios (must be 0); \
         {detected}/{hijack_scenarios} hijack scenarios detected with the right reasons"
    );
    t
}

fn abbreviate(verdict: &str) -> &str {
    match verdict {
        "benign-variation" => "benign-var",
        "inconclusive" => "inconcl",
        other => other,
    }
}
