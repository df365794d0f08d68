//! The audit report for people: a terminal table, and a self-contained HTML page.

use std::fmt::Write;

use super::Report;
use super::probes::Interception;
use crate::hijack::Verdict;

/// One line per result plus the probes and a summary, for the terminal.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let width = report
        .results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "Plaintext resolver {} compared with {} trusted upstream(s)\n",
        report.plain_resolver,
        report.trusted.len()
    );
    let _ = writeln!(
        out,
        "{:width$}  {:4}  {:16}  {:28}  REASONS",
        "NAME", "TYPE", "VERDICT", "PLAIN"
    );
    for r in &report.results {
        let plain = match (&r.plain.rcode, r.plain.addresses.is_empty()) {
            (None, _) => "no reply".to_string(),
            (Some(rcode), true) => rcode.clone(),
            (Some(_), false) => join(&r.plain.addresses),
        };
        let reasons: Vec<&str> = r.reasons.iter().map(|x| x.as_str()).collect();
        let _ = writeln!(
            out,
            "{:width$}  {:4}  {:16}  {:28}  {}",
            r.name,
            r.rtype,
            r.verdict.as_str(),
            truncate(&plain, 28),
            reasons.join(",")
        );
    }
    let nx = &report.probes.nxdomain;
    let _ = writeln!(
        out,
        "\nNXDOMAIN rewriting: {} ({} of {} probes){}",
        if nx.rewriting { "YES" } else { "no" },
        nx.agree,
        nx.of,
        if nx.redirect_addresses.is_empty() {
            String::new()
        } else {
            format!(", redirected to {}", join(&nx.redirect_addresses))
        }
    );
    for p in &report.probes.interception {
        let verdict = match p.verdict {
            Interception::Intercepted => "INTERCEPTED",
            Interception::NotIntercepted => "not intercepted",
            Interception::Unreachable => "unreachable (no verdict)",
        };
        let _ = writeln!(
            out,
            "Interception of plain DNS to {} ({}): {verdict}; answers: {}",
            p.label,
            p.server,
            p.answers.join(" | ")
        );
    }
    let summary: Vec<String> = report
        .summary
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    let _ = writeln!(out, "\nSummary: {}", summary.join(", "));
    let _ = writeln!(
        out,
        "{}",
        if report.found_hijacking() {
            "Hijacking found: see the rows marked hijacked and their reasons."
        } else {
            "No hijacking found."
        }
    );
    out
}

fn join(addrs: &[std::net::IpAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What each verdict means, in plain words.
fn explain(v: Verdict) -> &'static str {
    match v {
        Verdict::Consistent => "Your network's resolver gave the same answer as the trusted ones.",
        Verdict::BenignVariation => {
            "A different answer, but one honest DNS gives too (load balancing, a nearer server of the same site, confirmed by its certificate)."
        }
        Verdict::Inconclusive => {
            "Could not be compared (the trusted resolvers or your resolver did not answer reliably)."
        }
        Verdict::Suspicious => "Different and unexplained, but not proof of tampering.",
        Verdict::Hijacked => "Your network's resolver gave an answer that is provably wrong.",
    }
}

/// A self-contained HTML page (no external resources) a non-expert can read.
pub fn html(report: &Report) -> String {
    let mut rows = String::new();
    for r in &report.results {
        let trusted: Vec<String> = r
            .trusted
            .iter()
            .map(|t| match (&t.rcode, t.addresses.is_empty()) {
                (None, _) => format!("{}: {}", t.upstream, t.error.clone().unwrap_or_default()),
                (Some(rc), true) => format!("{}: {rc}", t.upstream),
                (Some(_), false) => format!("{}: {}", t.upstream, join(&t.addresses)),
            })
            .collect();
        let plain = match (&r.plain.rcode, r.plain.addresses.is_empty()) {
            (None, _) => "no reply".to_string(),
            (Some(rc), true) => rc.clone(),
            (Some(_), false) => join(&r.plain.addresses),
        };
        let reasons: Vec<&str> = r.reasons.iter().map(|x| x.as_str()).collect();
        let checks: Vec<String> = r
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{} ({}{}{})",
                    c.address,
                    c.kind,
                    c.tls.map(|t| format!(", TLS {t}")).unwrap_or_default(),
                    c.asn.map(|a| format!(", AS{a}")).unwrap_or_default()
                )
            })
            .collect();
        let _ = writeln!(
            rows,
            "<tr class=\"{v}\"><td>{}</td><td>{}</td><td><b>{v}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.name),
            r.rtype,
            esc(&plain),
            esc(&trusted.join("\n")).replace('\n', "<br>"),
            esc(&reasons.join(", ")),
            esc(&checks.join("; ")),
            v = r.verdict.as_str(),
        );
    }
    let nx = &report.probes.nxdomain;
    let mut probes = format!(
        "<li>NXDOMAIN rewriting (answers for names that do not exist): <b>{}</b> ({} of {} probes){}</li>",
        if nx.rewriting { "yes" } else { "no" },
        nx.agree,
        nx.of,
        if nx.rewriting {
            format!(", redirected to {}", esc(&join(&nx.redirect_addresses)))
        } else {
            String::new()
        }
    );
    for p in &report.probes.interception {
        let verdict = match p.verdict {
            Interception::Intercepted => "<b>intercepted</b>: someone else answered in its name",
            Interception::NotIntercepted => "not intercepted",
            Interception::Unreachable => "no reply (plain DNS to it may be blocked; no verdict)",
        };
        let _ = write!(
            probes,
            "<li>Plain DNS sent to {} ({}): {verdict}. Answers: {}</li>",
            esc(&p.label),
            esc(&p.server),
            esc(&p.answers.join(" | "))
        );
    }
    let mut legend = String::new();
    for v in Verdict::ALL {
        let _ = write!(
            legend,
            "<li class=\"{v}\"><b>{v}</b>: {} ({} results)</li>",
            explain(v),
            report.summary.get(v.as_str()).copied().unwrap_or(0),
            v = v.as_str()
        );
    }
    let headline = if report.found_hijacking() {
        "<p class=\"alert\">Your network tampers with DNS answers. Use encrypted DNS (dnsward run) so that it cannot.</p>"
    } else {
        "<p class=\"ok\">No tampering found.</p>"
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>dnsward audit: {plain}</title><style>\
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #ccc;padding:4px 6px;vertical-align:top;font-size:90%}}\
th{{background:#eee;text-align:left}}\
.consistent td:nth-child(3){{color:#2a7a2a}}.benign-variation td:nth-child(3){{color:#4a6fa5}}\
.suspicious{{background:#fff6d8}}.hijacked{{background:#fde0e0}}.inconclusive{{background:#f2f2f2}}\
.alert{{background:#fde0e0;padding:1em;font-weight:bold}}.ok{{background:#e3f5e3;padding:1em}}\
</style></head><body>\
<h1>DNS audit of {plain}</h1>{headline}\
<p>Each name was asked of your network's resolver ({plain}) in plaintext and of {n} trusted encrypted resolver(s). Different answers are normal for big sites; dnsward only calls an answer hijacked when there is evidence.</p>\
<ul>{legend}</ul><h2>Resolver-wide checks</h2><ul>{probes}</ul>\
<h2>Names</h2><table><tr><th>Name</th><th>Type</th><th>Verdict</th><th>Your resolver</th><th>Trusted resolvers</th><th>Reasons</th><th>Address checks</th></tr>\n{rows}</table>\
</body></html>\n",
        plain = esc(&report.plain_resolver),
        n = report.trusted.len(),
    )
}
