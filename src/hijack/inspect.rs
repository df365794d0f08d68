//! The checks the proxy runs on every answer an encrypted upstream gives (cache misses only:
//! a cached answer was checked when it arrived). They are cheap: no network, no parsing
//! beyond the answer's addresses.
//!
//! - special-use addresses for a public name (`bogon-answer`), unless allowlisted; names in
//!   local zones and split-DNS domains never get here;
//! - known block-page addresses (`sinkhole-ip`);
//! - a name seen with public addresses that now has special-use ones (`rebinding`);
//! - optionally, a fraction of answers is asked again of another upstream in the background
//!   and differences are classified like the audit does (`cross-check-mismatch`).
//!
//! Findings go to the hijack log and to tracing; the configured policy decides whether the
//! answer is still served (`log`, the default) or replaced by REFUSED (`block`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::addrs::{AddressBook, Allowlist, Kind};
use super::classify::{self, Context, Plain, answer_addrs, reply_of};
use super::config::{Action, HijackSettings};
use super::log::{HijackLog, timestamp};
use super::recent::RecentNames;
use super::verify::Verifier;
use super::{Finding, Reason, Verdict};
use crate::dns::wire::{self, Parsed, TYPE_A, TYPE_AAAA};
use crate::router::Router;
use crate::upstream::Upstream;
use crate::upstream::pin::format_pin;

/// How long a name is remembered as having had public addresses (for rebinding).
const REMEMBER_PUBLIC: Duration = Duration::from_secs(3600);
/// Slots of that memory (8 bytes each): about as many names are remembered.
const PUBLIC_NAME_SLOTS: usize = 16_384;
/// How many recent findings are remembered, to log each once per window.
const REMEMBER_NAMES: u64 = 10_000;
/// The same finding for the same name and type is logged at most once in this window.
const REPORT_AGAIN_AFTER: Duration = Duration::from_secs(600);
/// Findings written to the process log per minute; the rest are counted (metrics, and the
/// hijack log when configured) and summed up in one line, so a network that answers many
/// names with private addresses cannot flood the log or spend its time writing it.
const WARNINGS_PER_MINUTE: u32 = 20;
/// Cross-checks running at once; more are skipped.
const MAX_CROSS_CHECKS: usize = 8;
/// Time a cross-check (second upstream plus verification) may take.
const CROSS_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// A counter of findings by verdict, for metrics.
pub type FindingHook = Box<dyn Fn(Verdict) + Send + Sync>;

/// Per-answer hijack checks.
pub struct Inspector {
    /// Policy and options.
    settings: HijackSettings,
    /// Address kinds.
    book: AddressBook,
    /// Names expected to have special-use addresses.
    allow: Allowlist,
    /// Names recently seen with public addresses.
    seen_public: RecentNames,
    /// Findings recently logged, to keep the log readable.
    reported: moka::sync::Cache<(String, u16, Vec<Reason>), ()>,
    /// Bounds the findings written to the process log.
    warnings: WarnBudget,
    /// The JSON-lines log, if configured.
    log: Option<HijackLog>,
    /// TLS verification for cross-check differences.
    verifier: Verifier,
    /// Bounds background cross-checks.
    cross_checks: Arc<Semaphore>,
    /// Called once per finding (metrics).
    on_finding: Option<FindingHook>,
}

/// One line of the hijack log.
#[derive(Debug, Serialize)]
struct LogEntry<'a> {
    /// When.
    time: String,
    /// `answer-check` or `cross-check`.
    check: &'static str,
    /// The name asked.
    name: &'a str,
    /// A or AAAA.
    #[serde(rename = "type")]
    rtype: &'static str,
    /// The upstream that answered.
    upstream: &'a str,
    /// `doh` or `dot`.
    transport: String,
    /// The server address on the connection.
    server: Option<String>,
    /// SHA-256 of the server certificate's public key, base64 (as `pin-sha256` takes it).
    tls_spki_sha256: Option<String>,
    /// The addresses in the answer.
    answer: Vec<IpAddr>,
    /// The judgement.
    verdict: Verdict,
    /// The evidence.
    reasons: &'a [Reason],
    /// `logged` or `blocked`.
    action: &'static str,
    /// Cross-check only: the other upstream and its addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    other_upstream: Option<&'a str>,
    /// Cross-check only: what the other upstream answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    other_answer: Option<Vec<IpAddr>>,
}

/// At most `limit` warnings per `window`; counts the ones held back.
struct WarnBudget {
    limit: u32,
    window: Duration,
    /// Start of the current window, warnings given in it, warnings held back in it.
    state: Mutex<(Option<Instant>, u32, u64)>,
}

impl WarnBudget {
    fn new(limit: u32, window: Duration) -> WarnBudget {
        WarnBudget {
            limit,
            window,
            state: Mutex::new((None, 0, 0)),
        }
    }

    /// Whether a warning may be written at `now`, and how many were held back in the window
    /// that just ended (to report once, when it ends and another warning comes).
    fn take(&self, now: Instant) -> (bool, u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (start, given, held) = &mut *state;
        let mut ended_held = 0;
        if start.is_none_or(|s| now.saturating_duration_since(s) >= self.window) {
            ended_held = std::mem::take(held);
            *start = Some(now);
            *given = 0;
        }
        if *given < self.limit {
            *given += 1;
            (true, ended_held)
        } else {
            *held += 1;
            (false, ended_held)
        }
    }
}

fn type_name(qtype: u16) -> &'static str {
    if qtype == TYPE_AAAA { "AAAA" } else { "A" }
}

impl Inspector {
    /// Checks configured by `settings`; verification handshakes use `tls`.
    pub fn new(settings: &HijackSettings, tls: Arc<rustls::ClientConfig>) -> Inspector {
        Inspector {
            settings: settings.clone(),
            book: AddressBook::new(&settings.sinkholes, &settings.assume_public),
            allow: Allowlist::new(&settings.allow),
            seen_public: RecentNames::new(PUBLIC_NAME_SLOTS, REMEMBER_PUBLIC),
            reported: moka::sync::Cache::builder()
                .max_capacity(REMEMBER_NAMES)
                .time_to_live(REPORT_AGAIN_AFTER)
                .build(),
            warnings: WarnBudget::new(WARNINGS_PER_MINUTE, Duration::from_secs(60)),
            log: settings
                .log_file
                .as_deref()
                .map(|p| HijackLog::new(p, settings.log_max_bytes)),
            verifier: Verifier::new(tls, settings.verify_port, Duration::from_secs(3)),
            cross_checks: Arc::new(Semaphore::new(MAX_CROSS_CHECKS)),
            on_finding: None,
        }
    }

    /// Calls `hook` once per finding (for metrics).
    pub fn on_finding(mut self, hook: FindingHook) -> Inspector {
        self.on_finding = Some(hook);
        self
    }

    /// Checks `answer` (from `upstream`, `parsed` its records) to `name`/`qtype`, `name` in
    /// wire form. Returns the reasons when the policy says to block the answer.
    pub fn check(
        &self,
        name: &[u8],
        qtype: u16,
        answer: &[u8],
        parsed: &Parsed,
        upstream: &Upstream,
    ) -> Option<Vec<Reason>> {
        if qtype != TYPE_A && qtype != TYPE_AAAA {
            return None;
        }
        let mut finding = Finding {
            verdict: Verdict::Consistent,
            reasons: Vec::new(),
        };
        let (mut any, mut public, mut special) = (false, false, false);
        for addr in answer_addrs(answer, parsed) {
            any = true;
            match self.book.kind(addr) {
                Kind::Sinkhole => finding.add(Verdict::Hijacked, Reason::SinkholeIp),
                Kind::LearnedRedirect => finding.add(Verdict::Hijacked, Reason::NxdomainRewrite),
                // From a trusted upstream, a special-use address may be the name owner's
                // choice (some names point at 127.0.0.1 on purpose): suspicious, not proof.
                Kind::SpecialUse(_) => {
                    special = true;
                    finding.add(Verdict::Suspicious, Reason::BogonAnswer);
                }
                Kind::Public => public = true,
            }
        }
        if !any {
            return None;
        }
        let now = Instant::now();
        if special && self.seen_public.contains(name, now) {
            finding.add(Verdict::Suspicious, Reason::Rebinding);
        }
        if public && !special {
            self.seen_public.insert(name, now);
        }
        // The common case, public addresses only, ends here without allocating.
        if finding.reasons.is_empty() {
            return None;
        }
        let text = wire::name_to_string(name);
        if self.allow.covers(&text) {
            return None;
        }
        let key = text.trim_end_matches('.').to_ascii_lowercase();
        let action = self.settings.action_for(&finding.reasons);
        self.report(
            "answer-check",
            &key,
            qtype,
            upstream,
            // Sorted, without repeats, as the audit reports them.
            answer_addrs(answer, parsed)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            &finding,
            action,
            None,
        );
        (action == Action::Block).then_some(finding.reasons)
    }

    /// With the configured probability, asks another upstream the same question in the
    /// background and classifies any difference. The client has its answer already.
    pub fn maybe_cross_check(
        self: &Arc<Self>,
        router: &Arc<Router>,
        index: usize,
        query: &[u8],
        answer: Bytes,
        name: &[u8],
        qtype: u16,
    ) {
        let fraction = self.settings.cross_check;
        if fraction <= 0.0
            || router.len() < 2
            || (qtype != TYPE_A && qtype != TYPE_AAAA)
            || rand::random::<f64>() >= fraction
        {
            return;
        }
        let Ok(permit) = self.cross_checks.clone().try_acquire_owned() else {
            debug!("cross-checks busy; skipping one");
            return;
        };
        let other = (index + 1 + rand::random_range(0..router.len() - 1)) % router.len();
        let (me, router, query, name) = (
            self.clone(),
            router.clone(),
            query.to_vec(),
            wire::name_to_string(name),
        );
        tokio::spawn(async move {
            let work = me.cross_check(&router, index, other, &query, &answer, &name, qtype);
            if tokio::time::timeout(CROSS_CHECK_TIMEOUT, work)
                .await
                .is_err()
            {
                debug!(%name, "cross-check timed out");
            }
            drop(permit);
        });
    }

    #[allow(clippy::too_many_arguments)]
    async fn cross_check(
        &self,
        router: &Router,
        index: usize,
        other: usize,
        query: &[u8],
        answer: &[u8],
        name: &str,
        qtype: u16,
    ) {
        let (Some(first), Some(second)) = (router.upstream(index), router.upstream(other)) else {
            return;
        };
        let Ok(second_answer) = second.exchange(query).await else {
            return;
        };
        let (Some(mine), Some(theirs)) = (reply_of(answer), reply_of(&second_answer)) else {
            return;
        };
        let ctx = Context {
            book: &self.book,
            allow: &self.allow,
            verifier: Some(&self.verifier),
            asn: None,
            nxdomain_rewriting: false,
        };
        let (mut finding, _) = classify::classify(
            name,
            &Plain::Replies(vec![mine.clone()]),
            std::slice::from_ref(&theirs),
            &ctx,
        )
        .await;
        if !finding.is_alarming() {
            debug!(%name, verdict = %finding.verdict, "cross-check agrees");
            return;
        }
        finding.add(finding.verdict, Reason::CrossCheckMismatch);
        self.report(
            "cross-check",
            name,
            qtype,
            first,
            mine.addrs.iter().copied().collect(),
            &finding,
            Action::Log,
            Some((
                second.spec().url.as_str(),
                theirs.addrs.iter().copied().collect(),
            )),
        );
    }

    /// Logs a finding (once per window per name, type and reasons).
    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        check: &'static str,
        name: &str,
        qtype: u16,
        upstream: &Upstream,
        answer: Vec<IpAddr>,
        finding: &Finding,
        action: Action,
        other: Option<(&str, Vec<IpAddr>)>,
    ) {
        if let Some(hook) = &self.on_finding {
            hook(finding.verdict);
        }
        let name = &super::addrs::normalise(name);
        let key = (name.clone(), qtype, finding.reasons.clone());
        if self.reported.contains_key(&key) {
            return;
        }
        self.reported.insert(key, ());
        let spec = upstream.spec();
        let peer = upstream.peer();
        let reasons: Vec<&str> = finding.reasons.iter().map(|r| r.as_str()).collect();
        let action_name = if action == Action::Block {
            "blocked"
        } else {
            "logged"
        };
        let (may_warn, unlogged) = self.warnings.take(Instant::now());
        if unlogged > 0 {
            warn!(
                unlogged,
                "hijack check findings over the last minute not logged one by one (see the \
                 dnsward_hijack_findings_total metric, or the hijack log)"
            );
        }
        if may_warn {
            warn!(
            %name,
            qtype = type_name(qtype),
            upstream = %spec.url,
            verdict = %finding.verdict,
            reasons = %reasons.join(","),
            answer = ?answer,
            action = action_name,
            check,
            "hijack check finding"
            );
        }
        if let Some(log) = &self.log {
            log.write(&LogEntry {
                time: timestamp(SystemTime::now()),
                check,
                name,
                rtype: type_name(qtype),
                upstream: &spec.url,
                transport: spec.protocol.to_string().to_ascii_lowercase(),
                server: peer.map(|(addr, _)| addr.to_string()),
                tls_spki_sha256: peer.map(|(_, spki)| format_pin(&spki)),
                answer,
                verdict: finding.verdict,
                reasons: &finding.reasons,
                action: action_name,
                other_upstream: other.as_ref().map(|(u, _)| *u),
                other_answer: other.map(|(_, a)| a),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_bounded_per_window_and_the_rest_are_counted() {
        let budget = WarnBudget::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(budget.take(t0), (true, 0));
        assert_eq!(budget.take(t0), (true, 0));
        assert_eq!(budget.take(t0 + Duration::from_secs(1)), (false, 0));
        assert_eq!(budget.take(t0 + Duration::from_secs(2)), (false, 0));
        // The next window: allowed again, with the two held back reported once.
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(budget.take(t1), (true, 2));
        assert_eq!(budget.take(t1), (true, 0));
        assert_eq!(budget.take(t1), (false, 0));
        assert_eq!(budget.take(t1 + Duration::from_secs(60)), (true, 1));
    }
}
