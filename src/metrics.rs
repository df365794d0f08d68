//! Counters for the control endpoint's `/metrics` and `/stats`.
//!
//! One [`Metrics`] lives as long as the process (it outlives configuration reloads) and is
//! shared by the listeners (queries by transport and RCODE, queries from sources off the
//! access list or over their rate limit), the resolver (cache hits, misses, stale answers),
//! the router (per-upstream latency and failures, failovers) and whoever classifies hijacks
//! ([`Metrics::hijack_finding`]). Values that are state rather than events
//! (upstream health, cache size) are filled in when the metrics are rendered
//! ([`Metrics::render`]), from a [`Snapshot`] of the resolver in force.
//!
//! The exposition format is OpenMetrics text (what Prometheus asks for first), encoded by the
//! official `prometheus-client` crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::resolver::Transport;
use crate::upstream::UpstreamError;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of a family with one label.
type One = [(&'static str, String); 1];
/// Labels of a family with two labels.
type Two = [(&'static str, String); 2];
/// How a latency histogram is made (a plain `fn` so the family type can be named).
type HistogramMaker = fn() -> Histogram;

/// Every counter dnsward keeps.
pub struct Metrics {
    /// What `/metrics` renders; the families below are registered in it.
    registry: Registry,
    /// Answered client queries by `transport` and `rcode`.
    queries: Family<Two, Counter>,
    /// Client messages that got no answer at all (not a query, or unparseable), by `transport`.
    dropped: Family<One, Counter>,
    /// Client messages from sources not on the access list, by `transport` (REFUSED over TCP,
    /// nothing over UDP). Not in `queries` or `dropped`: the resolver never sees them.
    denied: Family<One, Counter>,
    /// UDP queries over their client's rate limit, by `action`: dropped, or slipped (an empty
    /// truncated reply). Not in `queries` or `dropped` either.
    rate_limited: Family<One, Counter>,
    /// Cache lookups by `result`: hit (fresh), stale (expired but servable), miss.
    cache_lookups: Family<One, Counter>,
    /// Expired answers served because no upstream answered in time (RFC 8767).
    stale_answers: Counter,
    /// Answers in the cache, set when rendered.
    cache_entries: Gauge,
    /// Round-trip time of answered upstream exchanges, by `upstream`.
    upstream_latency: Family<One, Histogram, HistogramMaker>,
    /// Failed upstream exchanges by `upstream` and `reason`.
    upstream_failures: Family<Two, Counter>,
    /// 1 if the router considers the upstream healthy, else 0; set when rendered.
    upstream_healthy: Family<One, Gauge>,
    /// Queries answered by an upstream other than the first one tried.
    failovers: Counter,
    /// Queries for which a slow upstream was hedged with the next one.
    hedges: Counter,
    /// Times every upstream failed at once and the router started over.
    network_changes: Counter,
    /// Health evaluations (control endpoint) by `result`.
    health_checks: Family<One, Counter>,
    /// Configuration reloads by `result` (ok, error).
    reloads: Family<One, Counter>,
    /// 1 if the last reload succeeded (or none happened), 0 if it failed.
    last_reload_ok: Gauge,
    /// Hijack findings by `verdict`.
    hijack_findings: Family<One, Counter>,
    /// Cache flushes requested through the control endpoint, by `scope` (all, name).
    cache_flushes: Family<One, Counter>,
    /// Plain totals for `/stats`, which should not need to parse the families.
    totals: Totals,
    /// The busiest series, looked up once each (see [`Hot`]).
    hot: Hot,
    /// Serialises rendering, which first refreshes the gauges.
    render_lock: Mutex<()>,
}

/// RCODEs 0-5 (NOERROR to REFUSED) are counted through [`Hot`] handles.
const HOT_RCODES: usize = 6;

/// Handles on the series touched by every query, each created on first use. A family lookup
/// builds its label strings and hashes them under a lock; these skip that. A handle shares
/// its value with the family, which renders it as usual.
#[derive(Default)]
struct Hot {
    /// `queries` by transport (UDP, TCP) and RCODE.
    queries: [[OnceLock<Counter>; HOT_RCODES]; 2],
    /// `dropped` by transport.
    dropped: [OnceLock<Counter>; 2],
    /// `denied` by transport. A flood from forged sources lands here, so it is as hot as any.
    denied: [OnceLock<Counter>; 2],
    /// `rate_limited`: dropped, slipped.
    rate_limited: [OnceLock<Counter>; 2],
    /// `cache_lookups`: hit, miss, stale.
    cache: [OnceLock<Counter>; 3],
}

/// Totals kept beside the families, for `/stats`.
#[derive(Default)]
struct Totals {
    /// Answered queries.
    answered: AtomicU64,
    /// Messages dropped unanswered.
    dropped: AtomicU64,
    /// Fresh cache hits.
    hits: AtomicU64,
    /// Cache misses.
    misses: AtomicU64,
    /// Stale lookups.
    stale: AtomicU64,
    /// Failovers.
    failovers: AtomicU64,
    /// Successful reloads.
    reloads_ok: AtomicU64,
    /// Failed reloads.
    reloads_failed: AtomicU64,
}

/// State read from the resolver in force, put into gauges when metrics are rendered.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// (upstream URL, healthy) for each configured upstream.
    pub upstreams: Vec<(String, bool)>,
    /// Answers in the cache.
    pub cache_entries: u64,
}

/// Plain totals, for `/stats`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct TotalsSnapshot {
    /// Answered client queries.
    pub queries: u64,
    /// Client messages dropped unanswered.
    pub dropped: u64,
    /// Fresh cache hits.
    pub cache_hits: u64,
    /// Cache misses.
    pub cache_misses: u64,
    /// Lookups that found only an expired answer.
    pub cache_stale: u64,
    /// Queries answered by an upstream other than the first tried.
    pub failovers: u64,
    /// Successful configuration reloads.
    pub reloads_ok: u64,
    /// Failed configuration reloads.
    pub reloads_failed: u64,
}

/// Upper bounds of the upstream latency buckets: 1 ms doubling to about 8 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh counters, registered under the `dnsward_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dnsward");
        let m = Metrics {
            queries: Family::default(),
            dropped: Family::default(),
            denied: Family::default(),
            rate_limited: Family::default(),
            cache_lookups: Family::default(),
            stale_answers: Counter::default(),
            cache_entries: Gauge::default(),
            upstream_latency: Family::new_with_constructor(latency_histogram as HistogramMaker),
            upstream_failures: Family::default(),
            upstream_healthy: Family::default(),
            failovers: Counter::default(),
            hedges: Counter::default(),
            network_changes: Counter::default(),
            health_checks: Family::default(),
            reloads: Family::default(),
            last_reload_ok: Gauge::default(),
            hijack_findings: Family::default(),
            cache_flushes: Family::default(),
            totals: Totals::default(),
            hot: Hot::default(),
            render_lock: Mutex::new(()),
            registry: Registry::default(),
        };
        m.last_reload_ok.set(1);
        let info: Family<One, Gauge> = Family::default();
        info.get_or_create(&[("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        registry.register("build_info", "dnsward version", info);
        registry.register(
            "queries",
            "Client queries answered, by transport and response code",
            m.queries.clone(),
        );
        registry.register(
            "queries_dropped",
            "Client messages dropped without an answer (not a DNS query), by transport",
            m.dropped.clone(),
        );
        registry.register(
            "queries_denied",
            "Client messages from sources not on the access list (clients.allow), by transport",
            m.denied.clone(),
        );
        registry.register(
            "queries_rate_limited",
            "UDP queries over their client's rate limit, by action: dropped or slipped (TC reply)",
            m.rate_limited.clone(),
        );
        registry.register(
            "cache_lookups",
            "Cache lookups by result: hit (fresh), stale (expired, servable), miss",
            m.cache_lookups.clone(),
        );
        registry.register(
            "cache_stale_answers",
            "Expired answers served because no upstream answered in time (RFC 8767)",
            m.stale_answers.clone(),
        );
        registry.register(
            "cache_entries",
            "Answers in the cache",
            m.cache_entries.clone(),
        );
        registry.register_with_unit(
            "upstream_latency",
            "Round-trip time of answered upstream exchanges",
            prometheus_client::registry::Unit::Seconds,
            m.upstream_latency.clone(),
        );
        registry.register(
            "upstream_failures",
            "Failed upstream exchanges, by upstream and reason",
            m.upstream_failures.clone(),
        );
        registry.register(
            "upstream_healthy",
            "1 if the upstream is considered healthy, else 0",
            m.upstream_healthy.clone(),
        );
        registry.register(
            "failovers",
            "Queries answered by an upstream other than the first one tried",
            m.failovers.clone(),
        );
        registry.register(
            "hedged_queries",
            "Queries for which a slow upstream was hedged with the next one",
            m.hedges.clone(),
        );
        registry.register(
            "network_changes",
            "Times every upstream failed at once and all connections were started over",
            m.network_changes.clone(),
        );
        registry.register(
            "health_checks",
            "Health evaluations by the control endpoint, by result",
            m.health_checks.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP), by result",
            m.reloads.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "1 if the last configuration reload succeeded (or none was tried), else 0",
            m.last_reload_ok.clone(),
        );
        registry.register(
            "hijack_findings",
            "Answers the hijack checks found suspicious, by verdict",
            m.hijack_findings.clone(),
        );
        registry.register(
            "cache_flushes",
            "Cache flushes requested through the control endpoint, by scope",
            m.cache_flushes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A client query on `transport` got `answer` (`None`: dropped unanswered).
    pub fn query(&self, transport: Transport, answer: Option<&[u8]>) {
        let (index, transport) = transport_label(transport);
        match answer {
            Some(wire) => {
                let rcode = full_rcode(wire);
                let family = || {
                    self.queries
                        .get_or_create(&[
                            ("transport", transport.into()),
                            ("rcode", rcode_name(rcode)),
                        ])
                        .clone()
                };
                match self.hot.queries[index].get(usize::from(rcode)) {
                    Some(hot) => hot.get_or_init(family).inc(),
                    None => family().inc(),
                };
                self.totals.answered.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                inc_hot(
                    &self.hot.dropped[index],
                    &self.dropped,
                    ("transport", transport),
                );
                self.totals.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A message on `transport` came from a source not on the access list.
    pub fn query_denied(&self, transport: Transport) {
        let (index, transport) = transport_label(transport);
        inc_hot(
            &self.hot.denied[index],
            &self.denied,
            ("transport", transport),
        );
    }

    /// A UDP query over its client's rate limit was dropped.
    pub fn rate_limit_drop(&self) {
        inc_hot(
            &self.hot.rate_limited[0],
            &self.rate_limited,
            ("action", "dropped"),
        );
    }

    /// A UDP query over its client's rate limit got an empty truncated reply (a slip).
    pub fn rate_limit_slip(&self) {
        inc_hot(
            &self.hot.rate_limited[1],
            &self.rate_limited,
            ("action", "slipped"),
        );
    }

    /// The cache had a fresh answer.
    pub fn cache_hit(&self) {
        self.cache_lookup(0, "hit", &self.totals.hits);
    }

    /// The cache had nothing usable.
    pub fn cache_miss(&self) {
        self.cache_lookup(1, "miss", &self.totals.misses);
    }

    /// The cache had only an expired answer, servable if upstreams fail (RFC 8767).
    pub fn cache_stale(&self) {
        self.cache_lookup(2, "stale", &self.totals.stale);
    }

    fn cache_lookup(&self, index: usize, result: &str, total: &AtomicU64) {
        inc_hot(
            &self.hot.cache[index],
            &self.cache_lookups,
            ("result", result),
        );
        total.fetch_add(1, Ordering::Relaxed);
    }

    /// An expired answer was served.
    pub fn stale_answer(&self) {
        self.stale_answers.inc();
    }

    /// `upstream` answered after `rtt`.
    pub fn upstream_answered(&self, upstream: &str, rtt: Duration) {
        self.upstream_latency(upstream).observe(rtt.as_secs_f64());
    }

    /// The latency histogram of `upstream`, to keep and observe into without a lookup.
    pub fn upstream_latency(&self, upstream: &str) -> Histogram {
        self.upstream_latency
            .get_or_create(&[("upstream", upstream.into())])
            .clone()
    }

    /// An exchange with `upstream` failed with `error`.
    pub fn upstream_failed(&self, upstream: &str, error: &UpstreamError) {
        self.upstream_failures
            .get_or_create(&[
                ("upstream", upstream.into()),
                ("reason", failure_reason(error).into()),
            ])
            .inc();
    }

    /// A query was answered by an upstream other than the first one tried.
    pub fn failover(&self) {
        self.failovers.inc();
        self.totals.failovers.fetch_add(1, Ordering::Relaxed);
    }

    /// A slow upstream was hedged with the next one.
    pub fn hedge(&self) {
        self.hedges.inc();
    }

    /// Every upstream failed at once and the router started over.
    pub fn network_change(&self) {
        self.network_changes.inc();
    }

    /// The control endpoint evaluated health.
    pub fn health_check(&self, healthy: bool) {
        let result = if healthy { "healthy" } else { "unhealthy" };
        self.health_checks
            .get_or_create(&[("result", result.into())])
            .inc();
    }

    /// A configuration reload was tried.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads
            .get_or_create(&[("result", result.into())])
            .inc();
        self.last_reload_ok.set(i64::from(ok));
        let total = if ok {
            &self.totals.reloads_ok
        } else {
            &self.totals.reloads_failed
        };
        total.fetch_add(1, Ordering::Relaxed);
    }

    /// The hijack checks classified an answer as `verdict` (e.g. "nxdomain-rewrite").
    pub fn hijack_finding(&self, verdict: &str) {
        self.hijack_findings
            .get_or_create(&[("verdict", verdict.into())])
            .inc();
    }

    /// The cache was flushed, whole (`scope` "all") or for one name ("name").
    pub fn cache_flush(&self, scope: &str) {
        self.cache_flushes
            .get_or_create(&[("scope", scope.into())])
            .inc();
    }

    /// Plain totals, for `/stats`.
    pub fn totals(&self) -> TotalsSnapshot {
        let t = &self.totals;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TotalsSnapshot {
            queries: get(&t.answered),
            dropped: get(&t.dropped),
            cache_hits: get(&t.hits),
            cache_misses: get(&t.misses),
            cache_stale: get(&t.stale),
            failovers: get(&t.failovers),
            reloads_ok: get(&t.reloads_ok),
            reloads_failed: get(&t.reloads_failed),
        }
    }

    /// Renders every metric in the OpenMetrics text format, with gauges set from `state`.
    pub fn render(&self, state: &Snapshot) -> String {
        let _guard = self.render_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.cache_entries
            .set(i64::try_from(state.cache_entries).unwrap_or(i64::MAX));
        // Upstreams come and go with reloads: only the ones in force are reported.
        self.upstream_healthy.clear();
        for (url, healthy) in &state.upstreams {
            self.upstream_healthy
                .get_or_create(&[("upstream", url.clone())])
                .set(i64::from(*healthy));
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Counts one in the series `label` of the one-label `family`, through the handle kept in
/// `hot` (the family is looked up only the first time).
fn inc_hot(hot: &OnceLock<Counter>, family: &Family<One, Counter>, label: (&'static str, &str)) {
    hot.get_or_init(|| family.get_or_create(&[(label.0, label.1.into())]).clone())
        .inc();
}

/// The index of `transport` in the [`Hot`] arrays, and its label.
fn transport_label(transport: Transport) -> (usize, &'static str) {
    match transport {
        Transport::Udp => (0, "udp"),
        Transport::Tcp => (1, "tcp"),
    }
}

/// The RCODE of a DNS message: the header's four bits, extended by the OPT record's eight
/// (RFC 6891 §6.1.3) when the OPT is the message's only record, as in dnsward's own error
/// answers (BADVERS). Other answers are not parsed for it, to keep counting cheap.
fn full_rcode(wire: &[u8]) -> u16 {
    if wire.len() < 12 {
        return 0;
    }
    let header = u16::from(wire[3] & 0x0f);
    let counts = |i: usize| u16::from_be_bytes([wire[i], wire[i + 1]]);
    let only_opt = counts(6) == 0 && counts(8) == 0 && counts(10) == 1;
    let n = wire.len();
    // An OPT at the very end: root name, TYPE 41, size, ext-rcode, version, flags, RDLEN 0.
    if only_opt && n >= 12 + 11 && wire[n - 11] == 0 && wire[n - 10..n - 8] == [0, 41] {
        let rdlen = u16::from_be_bytes([wire[n - 2], wire[n - 1]]);
        if rdlen == 0 {
            return (u16::from(wire[n - 6]) << 4) | header;
        }
    }
    header
}

/// The mnemonic of an RCODE (RFC 6895 §2.3).
fn rcode_name(rcode: u16) -> String {
    let name = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        23 => "BADCOOKIE",
        n => return format!("RCODE{n}"),
    };
    name.to_string()
}

/// A short, stable label for why an upstream exchange failed.
fn failure_reason(error: &UpstreamError) -> &'static str {
    match error {
        UpstreamError::Bootstrap { .. } => "bootstrap",
        UpstreamError::Connect { .. } => "connect",
        UpstreamError::Tls { .. } => "tls",
        UpstreamError::NoHttp2 | UpstreamError::Http(_) => "http",
        UpstreamError::HttpStatus(_) | UpstreamError::ContentType(_) => "http-response",
        UpstreamError::TooLarge | UpstreamError::Answer(_) => "bad-answer",
        UpstreamError::Closed | UpstreamError::Io(_) => "connection",
        UpstreamError::Timeout => "timeout",
        UpstreamError::Busy => "busy",
        UpstreamError::Refused => "refused",
        UpstreamError::ServFail(_) => "servfail",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{Rcode, error_response, read_query};

    #[test]
    fn rcodes_are_named_including_extended_ones() {
        let q = crate::dns::new_query("a.test", 1, false).unwrap();
        let mut a = q.clone();
        a[2] |= 0x80;
        a[3] = 3;
        assert_eq!(rcode_name(full_rcode(&a)), "NXDOMAIN");
        // An EDNS version-1 query gets BADVERS (16): header 0, OPT extended RCODE 1.
        let mut edns1 = crate::dns::new_query("a.test", 1, false).unwrap();
        let n = edns1.len();
        edns1[n - 5] = 1; // OPT version
        let Err(crate::dns::Rejected::Answer(badvers)) = read_query(&edns1) else {
            panic!("EDNS version 1 is rejected");
        };
        assert_eq!(rcode_name(full_rcode(&badvers)), "BADVERS");
        let servfail = error_response(&q, None, None, Rcode::ServFail);
        assert_eq!(rcode_name(full_rcode(&servfail)), "SERVFAIL");
        assert_eq!(rcode_name(full_rcode(&[0; 5])), "NOERROR");
    }

    #[test]
    fn rendering_has_the_families_and_the_end_marker() {
        let m = Metrics::new();
        // Twice through a kept handle, once (NOTAUTH) through the family itself.
        for _ in 0..2 {
            m.query(
                Transport::Udp,
                Some(&[0, 0, 0x81, 0x83, 0, 0, 0, 0, 0, 0, 0, 0]),
            );
        }
        m.query(
            Transport::Udp,
            Some(&[0, 0, 0x81, 0x89, 0, 0, 0, 0, 0, 0, 0, 0]),
        );
        m.query(Transport::Tcp, None);
        m.cache_miss();
        m.upstream_answered("tls://a", Duration::from_millis(3));
        m.hijack_finding("nxdomain-rewrite");
        let text = m.render(&Snapshot {
            upstreams: vec![("tls://a".into(), true)],
            cache_entries: 7,
        });
        for line in [
            "dnsward_queries_total{transport=\"udp\",rcode=\"NXDOMAIN\"} 2",
            "dnsward_queries_total{transport=\"udp\",rcode=\"NOTAUTH\"} 1",
            "dnsward_queries_dropped_total{transport=\"tcp\"} 1",
            "dnsward_cache_lookups_total{result=\"miss\"} 1",
            "dnsward_cache_entries 7",
            "dnsward_upstream_latency_seconds_bucket{le=\"0.004\",upstream=\"tls://a\"} 1",
            "dnsward_upstream_healthy{upstream=\"tls://a\"} 1",
            "dnsward_hijack_findings_total{verdict=\"nxdomain-rewrite\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(m.totals().queries, 3);
    }

    #[test]
    fn denied_and_rate_limited_queries_are_counted_apart_from_answered_ones() {
        let m = Metrics::new();
        let text = m.render(&Snapshot::default());
        assert!(
            !text.contains("queries_denied"),
            "nothing counted yet:\n{text}"
        );
        for _ in 0..3 {
            m.query_denied(Transport::Udp);
        }
        m.query_denied(Transport::Tcp);
        for _ in 0..2 {
            m.rate_limit_drop();
        }
        m.rate_limit_slip();
        let text = m.render(&Snapshot::default());
        for line in [
            "# TYPE dnsward_queries_denied counter",
            "dnsward_queries_denied_total{transport=\"udp\"} 3",
            "dnsward_queries_denied_total{transport=\"tcp\"} 1",
            "# TYPE dnsward_queries_rate_limited counter",
            "dnsward_queries_rate_limited_total{action=\"dropped\"} 2",
            "dnsward_queries_rate_limited_total{action=\"slipped\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        let totals = m.totals();
        assert_eq!((totals.queries, totals.dropped), (0, 0));
    }
}
