//! Choosing an upstream for each query, and failing over when one is slow or down.
//!
//! Every query has one overall deadline. Upstreams are tried in preference order: with the
//! `fastest` strategy, healthy upstreams by smoothed RTT; with `strict`, healthy upstreams in
//! configuration order; unhealthy ones always come last, so a query still has a chance when
//! everything looks down. An attempt that errors moves on at once; an attempt that is merely
//! slow (past `attempt_timeout`) is *hedged*: the next upstream is asked while the slow one may
//! still answer, and the first good answer wins. Upstreams that fail are marked unhealthy and
//! probed in the background with exponential backoff until they answer again.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use prometheus_client::metrics::histogram::Histogram;
use smallvec::SmallVec;
use thiserror::Error;
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{debug, info, warn};

use crate::dns::new_query;
use crate::metrics::Metrics;
use crate::upstream::{Upstream, UpstreamAnswer, UpstreamError};

/// How upstreams are ordered for each query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Lowest smoothed round-trip time first.
    #[default]
    Fastest,
    /// Configuration order.
    Strict,
}

/// Timing knobs of the router.
#[derive(Debug, Clone, Copy)]
pub struct RouterOptions {
    /// Ordering strategy.
    pub strategy: Strategy,
    /// Overall time a query may take before the client gets SERVFAIL.
    pub query_timeout: Duration,
    /// Time after which a slow attempt is hedged with the next upstream.
    pub attempt_timeout: Duration,
    /// First delay before an unhealthy upstream is probed; doubles per failed probe.
    pub min_backoff: Duration,
    /// Longest delay between probes of an unhealthy upstream.
    pub max_backoff: Duration,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            strategy: Strategy::Fastest,
            query_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_millis(1500),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Why no upstream produced an answer.
#[derive(Debug, Error)]
pub enum RouteError {
    /// Every upstream was tried and each one failed.
    #[error("all upstreams failed: {}", .0.iter().map(|(u, e)| format!("{u}: {e}")).collect::<Vec<_>>().join("; "))]
    AllFailed(Vec<(String, UpstreamError)>),
    /// The query deadline passed with attempts still outstanding.
    #[error("no answer within {0:?}")]
    Deadline(Duration),
    /// No upstream is configured.
    #[error("no upstream configured")]
    NoUpstreams,
    /// The answer raised a hijack finding whose policy is to block it.
    #[error("answer blocked by hijack policy: {0}")]
    Blocked(String),
}

/// Upstream indices in the order to try them (no allocation for up to 8 upstreams).
type Order = SmallVec<[usize; 8]>;

/// Where an upstream goes in the order; the sort is stable, so equals keep configuration
/// order.
#[derive(Debug, Clone, Copy)]
enum Rank {
    /// Healthy and not yet measured.
    Unmeasured,
    /// Healthy, with this smoothed RTT (µs; 0 for all under `strict`).
    Healthy(f64),
    /// Unhealthy, next probed at this time.
    Unhealthy(Instant),
}

impl Rank {
    fn cmp(&self, other: &Rank) -> std::cmp::Ordering {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match (self, other) {
            (Rank::Unmeasured, Rank::Unmeasured) => Equal,
            (Rank::Unmeasured, _) => Less,
            (_, Rank::Unmeasured) => Greater,
            (Rank::Healthy(a), Rank::Healthy(b)) => a.total_cmp(b),
            (Rank::Healthy(_), Rank::Unhealthy(_)) => Less,
            (Rank::Unhealthy(_), Rank::Healthy(_)) => Greater,
            (Rank::Unhealthy(a), Rank::Unhealthy(b)) => a.cmp(b),
        }
    }
}

/// What the router knows about one upstream's health.
#[derive(Debug, Clone)]
struct Health {
    /// False after a failure, until a query or probe succeeds.
    healthy: bool,
    /// Smoothed round-trip time in microseconds; `None` until measured.
    srtt_us: Option<f64>,
    /// When `srtt_us` was last updated.
    measured_at: Instant,
    /// Consecutive failures.
    failures: u32,
    /// When the background prober may next try it.
    next_probe: Instant,
    /// When it last failed.
    last_failure: Option<Instant>,
    /// When it last answered (a query or a probe).
    last_success: Option<Instant>,
}

/// An upstream and its health.
struct Slot {
    /// The upstream.
    upstream: Upstream,
    /// Its health record.
    health: Mutex<Health>,
    /// Its latency histogram in the metrics, once looked up.
    latency: OnceLock<Histogram>,
}

/// Health of one upstream, as reported to status displays and health checks.
#[derive(Debug, Clone)]
pub struct UpstreamStatus {
    /// The upstream's URL.
    pub url: String,
    /// Whether it is currently considered healthy.
    pub healthy: bool,
    /// Smoothed RTT, once measured.
    pub srtt: Option<Duration>,
}

/// The router: upstreams, their health, and the failover policy.
pub struct Router {
    /// Upstreams in configuration order.
    slots: Vec<Slot>,
    /// Policy.
    options: RouterOptions,
    /// When every upstream last failed at once and the router started over.
    last_network_change: Mutex<Option<Instant>>,
    /// Latency, failure and failover counters.
    metrics: Arc<Metrics>,
}

/// Every upstream failing within this window looks like our own network changing.
const NETWORK_CHANGE_WINDOW: Duration = Duration::from_secs(5);
/// After starting over, wait this long before starting over again.
const NETWORK_CHANGE_HOLDOFF: Duration = Duration::from_secs(10);

/// Weight of a new RTT sample in the smoothed RTT (as TCP's SRTT, RFC 6298 uses 1/8).
const SRTT_GAIN: f64 = 0.25;
/// An upstream's SRTT counts half as much after this long without a new sample, so an upstream
/// that was once slow is eventually tried (and measured) again.
const SRTT_HALF_LIFE: Duration = Duration::from_secs(10);

impl Health {
    /// The SRTT used for ordering: the measured one, decayed by the time since it was measured.
    fn effective_srtt(&self, now: Instant) -> Option<f64> {
        let age = now
            .saturating_duration_since(self.measured_at)
            .as_secs_f64();
        self.srtt_us
            .map(|s| s * 0.5f64.powf(age / SRTT_HALF_LIFE.as_secs_f64()))
    }
}

impl Router {
    /// The upstream at `index` (as returned by [`Router::exchange`]).
    pub fn upstream(&self, index: usize) -> Option<&Upstream> {
        self.slots.get(index).map(|s| &s.upstream)
    }

    /// How many upstreams there are.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A router over `upstreams`.
    pub fn new(upstreams: Vec<Upstream>, options: RouterOptions) -> Router {
        let now = Instant::now();
        let slots = upstreams
            .into_iter()
            .map(|upstream| Slot {
                upstream,
                health: Mutex::new(Health {
                    healthy: true,
                    srtt_us: None,
                    measured_at: now,
                    failures: 0,
                    next_probe: now,
                    last_failure: None,
                    last_success: None,
                }),
                latency: OnceLock::new(),
            })
            .collect();
        Router {
            slots,
            options,
            last_network_change: Mutex::new(None),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The same router, counting into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Router {
        self.metrics = metrics;
        for slot in &mut self.slots {
            slot.latency = OnceLock::new();
        }
        self
    }

    /// When an upstream last answered (a query or a probe), counting only upstreams that have
    /// not failed since: evidence that the encrypted path works now. `None` if there is none.
    pub fn last_success(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| {
                let h = s.health();
                h.last_success
                    .filter(|ok| h.last_failure.is_none_or(|failed| failed < *ok))
            })
            .max()
    }

    /// The policy in force.
    pub fn options(&self) -> RouterOptions {
        self.options
    }

    /// True if no upstream is currently considered healthy.
    pub fn all_unhealthy(&self) -> bool {
        self.slots.iter().all(|s| !s.health().healthy)
    }

    /// Current health of every upstream, in configuration order.
    pub fn status(&self) -> Vec<UpstreamStatus> {
        self.slots
            .iter()
            .map(|s| {
                let h = s.health();
                UpstreamStatus {
                    url: s.upstream.spec().url.clone(),
                    healthy: h.healthy,
                    srtt: h.srtt_us.map(|us| Duration::from_micros(us as u64)),
                }
            })
            .collect()
    }

    /// Sends `query` (ID 0) upstream and returns the first checked answer, with the index
    /// of the upstream that gave it.
    pub async fn exchange(&self, query: &[u8]) -> Result<(UpstreamAnswer, usize), RouteError> {
        let order = self.order();
        if order.is_empty() {
            return Err(RouteError::NoUpstreams);
        }
        let start = Instant::now();
        let deadline = start + self.options.query_timeout;
        let attempt_timeout = self.options.attempt_timeout;
        let mut pending = FuturesUnordered::new();
        let mut started: SmallVec<[(usize, Instant); 4]> = SmallVec::new();
        let mut errors = Vec::new();
        let mut servfail = None;
        let attempt = |index: usize, sent: Instant| {
            let slot = &self.slots[index];
            async move { (index, sent, slot.upstream.exchange(query).await) }
        };
        pending.push(attempt(order[0], start));
        started.push((order[0], start));
        let mut next = 1;
        // One timer: when the newest attempt becomes slow, while another upstream is left to
        // ask (hedging); past that, the deadline.
        let wake = |newest: Instant, next: usize| {
            if next < order.len() {
                (newest + attempt_timeout).min(deadline)
            } else {
                deadline
            }
        };
        let timer = sleep_until(wake(start, next));
        tokio::pin!(timer);
        let (result, now) = loop {
            tokio::select! {
                // An attempt finished: take a good answer, or move on from a failure at once.
                Some((index, sent, result)) = pending.next() => {
                    let now = Instant::now();
                    started.retain(|&mut (i, _)| i != index);
                    match result {
                        Ok(answer) => {
                            self.succeeded(index, now - sent, now);
                            if index != order[0] {
                                self.metrics.failover();
                            }
                            break (Ok((answer, index)), now);
                        }
                        Err(error) => {
                            self.failed(index, &error, false);
                            if let UpstreamError::ServFail(answer) = &error {
                                servfail.get_or_insert((answer.clone(), index));
                            }
                            errors.push((self.slots[index].upstream.spec().url.clone(), error));
                            if next < order.len() {
                                pending.push(attempt(order[next], now));
                                started.push((order[next], now));
                                next += 1;
                                timer.as_mut().reset(wake(now, next));
                            } else if pending.is_empty() {
                                // Nobody did better than SERVFAIL: pass that answer on.
                                break (servfail.take().ok_or(RouteError::AllFailed(errors)), now);
                            }
                        }
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= deadline {
                        // Out of time: the client gets SERVFAIL now rather than a timeout.
                        break (servfail.take().ok_or(RouteError::Deadline(self.options.query_timeout)), now);
                    }
                    // The newest attempt is slow: ask the next upstream too (hedging).
                    debug!(upstream = %self.slots[order[next - 1]].upstream.spec(), "slow upstream; hedging");
                    self.metrics.hedge();
                    pending.push(attempt(order[next], now));
                    started.push((order[next], now));
                    next += 1;
                    timer.as_mut().reset(wake(now, next));
                }
            }
        };
        // Attempts still outstanding past the attempt timeout count as timeouts.
        for (index, since) in started {
            if now - since >= attempt_timeout {
                self.failed(index, &UpstreamError::Timeout, false);
            }
        }
        result
    }

    /// Upstream indices in the order to try them.
    fn order(&self) -> Order {
        if self.slots.len() == 1 {
            // Nothing to rank: the only upstream is tried whatever its health.
            return Order::from_slice(&[0]);
        }
        let now = Instant::now();
        // Healthy first; among them (with `fastest`) unmeasured ones first, to measure them,
        // then by SRTT. Among unhealthy ones, the one due for a probe soonest is likeliest to
        // be back.
        let mut ranked: SmallVec<[(usize, Rank); 8]> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let h = slot.health.lock().unwrap_or_else(|e| e.into_inner());
                let rank = if !h.healthy {
                    Rank::Unhealthy(h.next_probe)
                } else if self.options.strategy == Strategy::Strict {
                    Rank::Healthy(0.0)
                } else {
                    h.effective_srtt(now)
                        .map_or(Rank::Unmeasured, Rank::Healthy)
                };
                (i, rank)
            })
            .collect();
        ranked.sort_by(|a, b| a.1.cmp(&b.1));
        ranked.into_iter().map(|(i, _)| i).collect()
    }

    fn succeeded(&self, index: usize, rtt: Duration, now: Instant) {
        let slot = &self.slots[index];
        slot.latency
            .get_or_init(|| self.metrics.upstream_latency(&slot.upstream.spec().url))
            .observe(rtt.as_secs_f64());
        let mut h = slot.health.lock().unwrap_or_else(|e| e.into_inner());
        let sample = rtt.as_micros() as f64;
        h.last_success = Some(now);
        h.srtt_us = Some(match h.effective_srtt(now) {
            Some(s) => s + SRTT_GAIN * (sample - s),
            None => sample,
        });
        h.measured_at = now;
        if !h.healthy {
            info!(upstream = %slot.upstream.spec(), "upstream is healthy again");
        }
        h.healthy = true;
        h.failures = 0;
    }

    /// Records a failure of upstream `index`. The first failure marks it unhealthy and
    /// schedules its first probe; after that only failed probes (`probe`) push the next probe
    /// further out. Queries that fail on an upstream already marked unhealthy (those in
    /// flight when it died, or sent to it as a last resort) leave the schedule alone: a burst
    /// of them would otherwise stretch the backoff to its maximum at once, and a restarted
    /// upstream would wait a minute for its first probe.
    fn failed(&self, index: usize, error: &UpstreamError, probe: bool) {
        let slot = &self.slots[index];
        self.metrics
            .upstream_failed(&slot.upstream.spec().url, error);
        if !error.counts_against_health() {
            debug!(upstream = %slot.upstream.spec(), %error, "upstream could not help");
            return;
        }
        let mut h = slot.health.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if h.healthy || probe {
            h.failures = h.failures.saturating_add(1);
            let backoff = self
                .options
                .min_backoff
                .saturating_mul(1 << (h.failures - 1).min(16))
                .min(self.options.max_backoff);
            h.next_probe = now + backoff;
        }
        h.last_failure = Some(now);
        if h.healthy {
            warn!(upstream = %slot.upstream.spec(), %error, "upstream failed; marking unhealthy");
        } else {
            debug!(upstream = %slot.upstream.spec(), %error, "unhealthy upstream failed again");
        }
        h.healthy = false;
        drop(h);
        self.maybe_network_changed();
    }

    /// When every upstream has failed within a few seconds, the likeliest cause is our own
    /// network (WAN reconnect, laptop resume, new Wi-Fi), not every resolver at once. Then
    /// the pooled connections are dead weight and bootstrap addresses may be stale: drop them
    /// all and give every upstream a clean slate, instead of backing off from all of them.
    fn maybe_network_changed(&self) {
        let now = Instant::now();
        let all_failed_together = self.slots.iter().all(|s| {
            let h = s.health();
            !h.healthy
                && h.last_failure
                    .is_some_and(|t| now.duration_since(t) < NETWORK_CHANGE_WINDOW)
        });
        if !all_failed_together {
            return;
        }
        let mut last = self
            .last_network_change
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < NETWORK_CHANGE_HOLDOFF) {
            return;
        }
        *last = Some(now);
        drop(last);
        info!("every upstream failed at once; assuming the network changed: reconnecting all");
        self.metrics.network_change();
        for slot in &self.slots {
            slot.upstream.reset();
            let mut h = slot.health.lock().unwrap_or_else(|e| e.into_inner());
            h.healthy = true;
            h.failures = 0;
            h.next_probe = now;
        }
    }

    /// When the router last started over after a network change, if ever (for tests/stats).
    pub fn last_network_change(&self) -> Option<Instant> {
        *self
            .last_network_change
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Probes unhealthy upstreams whose backoff has passed, until `shutdown` resolves.
    /// A probe is a query for the root NS set; any checked answer counts as alive.
    pub async fn probe_unhealthy(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let probe = new_query(".", 2, false).expect("root is a valid name");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = sleep(Duration::from_millis(250)) => {}
            }
            let now = Instant::now();
            let due: Vec<usize> = (0..self.slots.len())
                .filter(|&i| {
                    let h = self.slots[i].health();
                    !h.healthy && h.next_probe <= now
                })
                .collect();
            for index in due {
                // Claim the probe so a slow probe is not started twice.
                self.slots[index]
                    .health
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .next_probe = now + self.options.max_backoff;
                let router = self.clone();
                let probe = probe.clone();
                tokio::spawn(async move {
                    let slot = &router.slots[index];
                    let sent = Instant::now();
                    let limit = router.options.query_timeout;
                    match tokio::time::timeout(limit, slot.upstream.exchange(&probe)).await {
                        Ok(Ok(_)) | Ok(Err(UpstreamError::ServFail(_))) => {
                            let now = Instant::now();
                            router.succeeded(index, now - sent, now)
                        }
                        Ok(Err(e)) => router.failed(index, &e, true),
                        Err(_) => router.failed(index, &UpstreamError::Timeout, true),
                    }
                });
            }
        }
    }
}

impl Slot {
    fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
