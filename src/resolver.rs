//! The path of one query, top to bottom:
//!
//! 1. validate the client's message (drop, or FORMERR / NOTIMP / REFUSED / BADVERS);
//!    answer ANY minimally (RFC 8482);
//! 2. answer names known locally (hosts file, static records); pick the route: a split-DNS
//!    rule (plain DNS to the resolver that serves the domain), a locally served zone (private
//!    reverse zones, home.arpa, local: answered here, never sent out), or the encrypted
//!    upstreams;
//! 3. answer from the cache if a fresh entry exists (and refresh it in the background if it
//!    is popular and about to expire);
//! 4. otherwise send a normalised query along the route (the router does failover between
//!    encrypted upstreams);
//! 5. check the answer against the question, cache it if its TTLs allow;
//! 6. render it for this client: its ID, its spelling of the name, decayed TTLs, its EDNS
//!    status, truncated with TC if it exceeds the client's UDP limit.
//!
//! When no upstream answers, an expired answer is served if the cache still has one
//! (RFC 8767), else SERVFAIL. The one exception to "encrypted or nothing" is the opt-in
//! captive-portal policy (see [`crate::captive`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{debug, info, trace};

use crate::cache::{Cache, Entry, Key, Lookup};
use crate::captive::CaptivePortal;
use crate::clock::Clock;
use crate::dns::{self, Answer, AnswerError, ClientQuery, Rcode, Rejected};
use crate::hijack::inspect::Inspector;
use crate::local::{self, LocalAnswers};
use crate::metrics::Metrics;
use crate::router::{RouteError, Router};
use crate::split::SplitDns;
use crate::upstream::plain::PlainClient;

/// The transport a query arrived on; it decides the size limit of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: answers are limited to the client's payload size.
    Udp,
    /// TCP: answers up to 65535 bytes.
    Tcp,
}

/// Behaviour switches of the resolver.
#[derive(Debug, Clone, Copy)]
pub struct ResolverOptions {
    /// Refresh popular answers shortly before they expire.
    pub prefetch: bool,
    /// With a stale answer at hand, how long a client waits for a fresh one before it gets
    /// the stale one (RFC 8767 §5 "client response timer"; the fetch goes on regardless).
    pub stale_answer_timeout: Duration,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        ResolverOptions {
            prefetch: true,
            stale_answer_timeout: Duration::from_millis(1800),
        }
    }
}

/// Most background refreshes (prefetches and fetches that outlived their client) at once.
const MAX_BACKGROUND_FETCHES: usize = 64;

/// Answers client queries.
pub struct Resolver {
    /// Answers, fresh and stale.
    cache: Cache,
    /// Upstreams and failover.
    router: Arc<Router>,
    /// Time source for cache freshness.
    clock: Clock,
    /// Switches.
    options: ResolverOptions,
    /// Bounds background fetches.
    background: Arc<Semaphore>,
    /// Names answered from the hosts file and static records.
    local: Arc<LocalAnswers>,
    /// Domains forwarded in plain DNS.
    split: SplitDns,
    /// The opt-in captive-portal exception.
    captive: Option<CaptivePortal>,
    /// Hijack checks on upstream answers, when enabled.
    inspector: Option<Arc<Inspector>>,
    /// Cache hit/miss/stale counters.
    metrics: Arc<Metrics>,
}

/// How far [`Resolver::begin`] got.
pub enum Begun {
    /// Answered at once (`None`: send nothing).
    Done(Option<Vec<u8>>),
    /// The network is needed: pass this to [`Resolver::resume`] with the same message.
    Wait(Waiting),
}

/// A query [`Resolver::begin`] could not answer at once, and what it found out.
pub struct Waiting(Stage);

enum Stage {
    /// The captive-portal exception comes first, then the cache.
    Captive,
    /// The cache was asked (and counted): fetch, with the stale entry if there is one.
    Fetch(Key, Option<Arc<Entry>>),
}

/// Where a query goes when the cache cannot answer it.
#[derive(Clone)]
enum Via {
    /// The encrypted upstreams.
    Router(Arc<Router>),
    /// A split-DNS rule's plain resolver.
    Plain(Arc<PlainClient>),
}

/// The local parts of a resolver: what is answered without the encrypted upstreams.
#[derive(Clone)]
pub struct LocalParts {
    /// hosts file and static records.
    pub answers: Arc<LocalAnswers>,
    /// Split-DNS rules.
    pub split: SplitDns,
    /// Captive-portal exception, if enabled.
    pub captive: Option<CaptivePortal>,
}

impl Resolver {
    /// A resolver over `router` with `cache`.
    pub fn new(
        cache: Cache,
        router: Arc<Router>,
        local: LocalParts,
        clock: Clock,
        options: ResolverOptions,
    ) -> Resolver {
        Resolver {
            cache,
            router,
            clock,
            options,
            background: Arc::new(Semaphore::new(MAX_BACKGROUND_FETCHES)),
            local: local.answers,
            split: local.split,
            captive: local.captive,
            inspector: None,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Runs `inspector`'s hijack checks on every answer from the encrypted upstreams.
    pub fn with_inspector(mut self, inspector: Arc<Inspector>) -> Resolver {
        self.inspector = Some(inspector);
        self
    }

    /// The same resolver, counting into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Resolver {
        self.metrics = metrics;
        self
    }

    /// The local answers (for reloading the hosts file).
    pub fn local(&self) -> &Arc<LocalAnswers> {
        &self.local
    }

    /// The router (for health reporting).
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The cache (for statistics and flushing).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Answers one client message. `None` means send nothing.
    pub async fn handle(&self, message: &[u8], transport: Transport) -> Option<Vec<u8>> {
        match self.begin(message, transport) {
            Begun::Done(answer) => answer,
            Begun::Wait(waiting) => self.resume(message, transport, waiting).await,
        }
    }

    /// Does what can be done for `message` without waiting: rejects, ANY, local names and
    /// zones, fresh cache hits. The rest is left to [`Resolver::resume`] with the same message,
    /// so a listener can answer most queries in place and start a task only for the others.
    pub fn begin(&self, message: &[u8], transport: Transport) -> Begun {
        let query = match dns::read_query(message) {
            Ok(query) => query,
            Err(Rejected::Drop) => {
                trace!(len = message.len(), "dropping unanswerable message");
                return Begun::Done(None);
            }
            Err(Rejected::Answer(answer)) => return Begun::Done(Some(answer)),
        };
        let udp_limit = (transport == Transport::Udp).then(|| query.udp_limit());
        if query.question.qtype == dns::wire::TYPE_ANY {
            // RFC 8482: one small synthesised record, never a full ANY sent upstream.
            let answer = local::any_answer(&query);
            return Begun::Done(Some(local::fit_to_limit(&query, answer, udp_limit)));
        }
        let internet_class = query.question.qclass == 1;
        if internet_class && let Some(answer) = self.local.answer(&query) {
            return Begun::Done(Some(local::fit_to_limit(&query, answer, udp_limit)));
        }
        let via = match self.split.route(query.name()) {
            Some(rule) => Via::Plain(rule.client.clone()),
            None => {
                if internet_class && let Some(zone) = local::locally_served(query.name()) {
                    // RFC 6303: private reverse zones and friends never leave the machine.
                    let answer = local::local_zone_answer(&query, zone);
                    return Begun::Done(Some(local::fit_to_limit(&query, answer, udp_limit)));
                }
                if self.captive_applies(&query) {
                    return Begun::Wait(Waiting(Stage::Captive));
                }
                Via::Router(self.router.clone())
            }
        };
        let key = Key::of(&query);
        let now = self.clock.now();
        let lookup = self.cache.lookup(&key, now);
        match &lookup {
            Lookup::Fresh(_) => self.metrics.cache_hit(),
            Lookup::Stale(_) => self.metrics.cache_stale(),
            Lookup::Miss => self.metrics.cache_miss(),
        }
        match lookup {
            Lookup::Fresh(entry) => {
                if self.options.prefetch && entry.hit_wants_prefetch(now) {
                    self.prefetch(key, &query, via);
                }
                Begun::Done(Some(self.cache.render(&entry, &query, now, udp_limit)))
            }
            Lookup::Stale(entry) => Begun::Wait(Waiting(Stage::Fetch(key, Some(entry)))),
            Lookup::Miss => Begun::Wait(Waiting(Stage::Fetch(key, None))),
        }
    }

    /// Finishes what [`Resolver::begin`] left waiting for the same `message`.
    pub async fn resume(
        &self,
        message: &[u8],
        transport: Transport,
        waiting: Waiting,
    ) -> Option<Vec<u8>> {
        // `begin` read this message already; it reads the same way again.
        let query = dns::read_query(message).ok()?;
        let udp_limit = (transport == Transport::Udp).then(|| query.udp_limit());
        let via = match self.split.route(query.name()) {
            Some(rule) => Via::Plain(rule.client.clone()),
            None => Via::Router(self.router.clone()),
        };
        let (key, stale) = match waiting.0 {
            Stage::Fetch(key, stale) => (key, stale),
            Stage::Captive => {
                if let Some(answer) = self.captive_check(&query, udp_limit, false).await {
                    return Some(answer);
                }
                let key = Key::of(&query);
                let lookup = self.cache.lookup(&key, self.clock.now());
                match lookup {
                    Lookup::Fresh(entry) => {
                        self.metrics.cache_hit();
                        let now = self.clock.now();
                        return Some(self.cache.render(&entry, &query, now, udp_limit));
                    }
                    Lookup::Stale(entry) => {
                        self.metrics.cache_stale();
                        (key, Some(entry))
                    }
                    Lookup::Miss => {
                        self.metrics.cache_miss();
                        (key, None)
                    }
                }
            }
        };
        let fetched = match stale {
            None => self.fetcher(key, &query, via).run().await,
            Some(_) => self.fetch_or_give_up(key, &query, via).await,
        };
        match (fetched, stale) {
            // The hijack policy said no: a clean error, never the suspicious data (and not a
            // stale answer either: the name's current data is what was judged).
            (Err(RouteError::Blocked(why)), _) => {
                let refused = dns::error_response(
                    query.wire,
                    Some(&query.question),
                    query.edns,
                    Rcode::Refused,
                );
                Some(dns::query::with_extended_error(
                    refused,
                    dns::query::EDE_BLOCKED,
                    &format!("dnsward hijack check: {why}"),
                ))
            }
            // SERVFAIL from upstream usually means the name's servers are unreachable,
            // exactly when RFC 8767 says a stale answer serves the client better.
            (Ok(entry), Some(stale)) if entry.answer.rcode() == Rcode::ServFail as u8 => {
                info!(name = %query.name_string(), qtype = query.question.qtype, "upstream SERVFAIL; serving stale answer");
                self.metrics.stale_answer();
                Some(self.cache.render_stale(&stale, &query, udp_limit))
            }
            (Ok(entry), _) => Some(
                self.cache
                    .render(&entry, &query, self.clock.now(), udp_limit),
            ),
            (Err(error), Some(entry)) => {
                info!(name = %query.name_string(), qtype = query.question.qtype, %error, "serving stale answer");
                self.metrics.stale_answer();
                Some(self.cache.render_stale(&entry, &query, udp_limit))
            }
            (Err(error), None) => {
                if let Some(answer) = self.captive_check(&query, udp_limit, true).await {
                    return Some(answer);
                }
                debug!(name = %query.name_string(), qtype = query.question.qtype, %error, "answering SERVFAIL");
                Some(dns::error_response(
                    query.wire,
                    Some(&query.question),
                    query.edns,
                    Rcode::ServFail,
                ))
            }
        }
    }

    /// With a stale answer in hand: fetch in a task of its own and wait for it only up to
    /// the client response timer; a late answer still lands in the cache.
    async fn fetch_or_give_up(
        &self,
        key: Key,
        query: &ClientQuery<'_>,
        via: Via,
    ) -> Result<Arc<Entry>, RouteError> {
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            return self.fetcher(key, query, via).run().await;
        };
        let fetcher = self.fetcher(key, query, via);
        let task = tokio::spawn(async move {
            let result = fetcher.run().await;
            drop(permit);
            result
        });
        match tokio::time::timeout(self.options.stale_answer_timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(RouteError::Deadline(self.options.stale_answer_timeout)),
        }
    }

    /// Refreshes an entry in the background; the client has already been answered.
    fn prefetch(&self, key: Key, query: &ClientQuery<'_>, via: Via) {
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            return;
        };
        debug!(name = %query.name_string(), qtype = query.question.qtype, "prefetching");
        let fetcher = self.fetcher(key, query, via);
        tokio::spawn(async move {
            if let Err(error) = fetcher.run().await {
                debug!(%error, "prefetch failed");
            }
            drop(permit);
        });
    }

    /// Whether the captive-portal exception may answer `query` before the cache is asked (see
    /// [`Resolver::captive_check`]).
    fn captive_applies(&self, query: &ClientQuery<'_>) -> bool {
        self.captive
            .as_ref()
            .is_some_and(|c| c.covers(query.name()) && self.router.all_unhealthy())
    }

    /// The captive-portal exception: a connectivity-check name, with the policy enabled, and
    /// either no healthy encrypted upstream or (`failed`) the encrypted attempt just failed.
    /// Resolved in plaintext, logged, never cached.
    async fn captive_check(
        &self,
        query: &ClientQuery<'_>,
        udp_limit: Option<usize>,
        failed: bool,
    ) -> Option<Vec<u8>> {
        let captive = self.captive.as_ref()?;
        if !captive.covers(query.name()) || !(failed || self.router.all_unhealthy()) {
            return None;
        }
        let upstream_query = dns::upstream_query(query);
        let wire = captive
            .exchange(&upstream_query, &query.name_string())
            .await
            .ok()?;
        let parsed = dns::check_answer(&upstream_query, &wire).ok()?;
        Some(Answer::new(&wire, &parsed).render(query, |ttl| ttl, udp_limit))
    }

    fn fetcher(&self, key: Key, query: &ClientQuery<'_>, via: Via) -> Fetch {
        // Padding is added by the encrypted transports only (RFC 7830 §6).
        let upstream_query = dns::upstream_query(query);
        let inspection = self
            .inspector
            .as_ref()
            .filter(|_| query.question.qclass == 1)
            .map(|i| (i.clone(), query.question.qtype));
        Fetch {
            cache: self.cache.clone(),
            via,
            clock: self.clock.clone(),
            key,
            upstream_query,
            inspection,
        }
    }
}

/// One upstream fetch with what it needs to store its result, owned so it can outlive the
/// client that started it.
struct Fetch {
    cache: Cache,
    via: Via,
    clock: Clock,
    key: Key,
    upstream_query: Vec<u8>,
    /// The hijack checks, with the question type (the name is the key's).
    inspection: Option<(Arc<Inspector>, u16)>,
}

impl Fetch {
    /// Asks the router, checks and caches the answer.
    async fn run(self) -> Result<Arc<Entry>, RouteError> {
        let answer = match &self.via {
            Via::Router(router) => {
                // Checked against the query and parsed by the upstream layer.
                let (answer, index) = router.exchange(&self.upstream_query).await?;
                if let Some((inspector, qtype)) = &self.inspection
                    && let Some(upstream) = router.upstream(index)
                {
                    let name = self.key.name();
                    let (wire, parsed) = (&answer.wire, &answer.parsed);
                    if let Some(reasons) = inspector.check(name, *qtype, wire, parsed, upstream) {
                        let codes: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
                        return Err(RouteError::Blocked(codes.join(",")));
                    }
                    inspector.maybe_cross_check(
                        router,
                        index,
                        &self.upstream_query,
                        wire.clone(),
                        name,
                        *qtype,
                    );
                }
                Answer::new(&answer.wire, &answer.parsed)
            }
            Via::Plain(client) => {
                let wire = client.exchange(&self.upstream_query).await.map_err(|e| {
                    RouteError::AllFailed(vec![(format!("{:?}", client.servers()), e)])
                })?;
                // Passed `check_answer` against this query: parsing once more finds the
                // record offsets the cache needs.
                let parsed = dns::wire::parse(&wire).map_err(|e| {
                    RouteError::AllFailed(vec![("answer".into(), AnswerError::from(e).into())])
                })?;
                Answer::new(&wire, &parsed)
            }
        };
        Ok(self.cache.insert(self.key, answer, self.clock.now()))
    }
}
