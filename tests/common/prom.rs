//! Parses `/metrics` output with the reference parsers: the Python Prometheus client's
//! OpenMetrics parser (strict: it rejects malformed exposition) and its classic text-format
//! parser, from Debian's python3-prometheus-client (scripts/install-test-deps installs it).

use std::io::Write;
use std::process::{Command, Stdio};

/// The interpreter the Debian package installs into (not whatever `python3` is first on PATH).
const PYTHON: &str = "/usr/bin/python3";

/// Parses stdin with both parsers; prints the OpenMetrics samples as JSON, and fails if the
/// classic parser disagrees about which samples there are.
const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic
text = sys.stdin.read()
samples = [
    {"family": f.name, "type": f.type, "name": s.name, "labels": s.labels, "value": s.value}
    for f in openmetrics(text) for s in f.samples
]
classic_names = sorted({s.name for f in classic(text) for s in f.samples})
open_names = sorted({s["name"] for s in samples})
if classic_names != open_names:
    sys.exit("classic parser saw %r, OpenMetrics parser %r" % (classic_names, open_names))
json.dump(samples, sys.stdout)
"#;

/// One sample.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Sample {
    /// Its metric family.
    pub family: String,
    /// The family's type (counter, gauge, histogram, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The sample's name (e.g. with `_total` or `_bucket`).
    pub name: String,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Every sample of one exposition.
#[derive(Debug, Clone)]
pub struct Scrape(pub Vec<Sample>);

impl Scrape {
    /// The value of sample `name` whose labels include all of `labels`; `None` if absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|s| s.value)
    }

    /// As [`Scrape::value`], 0 when absent (a counter not yet incremented).
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// The type of family `family`.
    pub fn kind(&self, family: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|s| s.family == family)
            .map(|s| s.kind.as_str())
    }
}

/// Whether the parsers are installed; fails instead when DNSWARD_REQUIRE_TOOLS=1.
pub fn parser_available() -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("DNSWARD_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
            panic!("{PYTHON} with prometheus_client missing: run scripts/test, which installs it");
        }
        eprintln!("SKIPPED: python3-prometheus-client missing (scripts/test installs it)");
    }
    ok
}

/// Parses `text`; panics with the parser's complaint if it is not valid exposition.
pub fn parse_metrics(text: &str) -> Scrape {
    let mut child = Command::new(PYTHON)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Prometheus parser");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "the Prometheus parsers reject /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Scrape(serde_json::from_slice(&out.stdout).expect("parser JSON"))
}
