//! The path of one query, top to bottom:
//!
//! 1. validate the client's message (drop, or FORMERR / NOTIMP / REFUSED / BADVERS);
//! 2. answer from the cache if a fresh entry exists (and refresh it in the background if it
//!    is popular and about to expire);
//! 3. otherwise send a normalised query through the router (encrypted upstreams, failover);
//! 4. check the answer against the question, cache it if its TTLs allow;
//! 5. render it for this client: its ID, its spelling of the name, decayed TTLs, its EDNS
//!    status, truncated with TC if it exceeds the client's UDP limit.
//!
//! When no upstream answers, an expired answer is served if the cache still has one
//! (RFC 8767), else SERVFAIL.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{debug, info, trace};

use crate::cache::{Cache, Entry, Key, Lookup};
use crate::clock::Clock;
use crate::dns::{self, Answer, ClientQuery, Rcode, Rejected};
use crate::router::{RouteError, Router};

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
}

impl Resolver {
    /// A resolver over `router` with `cache`.
    pub fn new(
        cache: Cache,
        router: Arc<Router>,
        clock: Clock,
        options: ResolverOptions,
    ) -> Resolver {
        Resolver {
            cache,
            router,
            clock,
            options,
            background: Arc::new(Semaphore::new(MAX_BACKGROUND_FETCHES)),
        }
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
        let query = match dns::read_query(message) {
            Ok(query) => query,
            Err(Rejected::Drop) => {
                trace!(len = message.len(), "dropping unanswerable message");
                return None;
            }
            Err(Rejected::Answer(answer)) => return Some(answer),
        };
        let udp_limit = (transport == Transport::Udp).then(|| query.udp_limit());
        let key = Key::of(&query);
        let now = self.clock.now();
        let stale = match self.cache.lookup(&key, now) {
            Lookup::Fresh(entry) => {
                if self.options.prefetch && entry.hit_wants_prefetch(now) {
                    self.prefetch(key, &query);
                }
                return Some(self.cache.render(&entry, &query, now, udp_limit));
            }
            Lookup::Stale(entry) => Some(entry),
            Lookup::Miss => None,
        };
        let fetched = match stale {
            None => self.fetcher(key, &query).run().await,
            Some(_) => self.fetch_or_give_up(key, &query).await,
        };
        match (fetched, stale) {
            // SERVFAIL from upstream usually means the name's servers are unreachable,
            // exactly when RFC 8767 says a stale answer serves the client better.
            (Ok(entry), Some(stale)) if entry.answer.rcode() == Rcode::ServFail as u8 => {
                info!(name = %query.name_string(), qtype = query.question.qtype, "upstream SERVFAIL; serving stale answer");
                Some(self.cache.render_stale(&stale, &query, udp_limit))
            }
            (Ok(entry), _) => Some(
                self.cache
                    .render(&entry, &query, self.clock.now(), udp_limit),
            ),
            (Err(error), Some(entry)) => {
                info!(name = %query.name_string(), qtype = query.question.qtype, %error, "serving stale answer");
                Some(self.cache.render_stale(&entry, &query, udp_limit))
            }
            (Err(error), None) => {
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
    ) -> Result<Arc<Entry>, RouteError> {
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            return self.fetcher(key, query).run().await;
        };
        let fetcher = self.fetcher(key, query);
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
    fn prefetch(&self, key: Key, query: &ClientQuery<'_>) {
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            return;
        };
        debug!(name = %query.name_string(), qtype = query.question.qtype, "prefetching");
        let fetcher = self.fetcher(key, query);
        tokio::spawn(async move {
            if let Err(error) = fetcher.run().await {
                debug!(%error, "prefetch failed");
            }
            drop(permit);
        });
    }

    fn fetcher(&self, key: Key, query: &ClientQuery<'_>) -> Fetch {
        Fetch {
            cache: self.cache.clone(),
            router: self.router.clone(),
            clock: self.clock.clone(),
            key,
            upstream_query: dns::upstream_query(query),
        }
    }
}

/// One upstream fetch with what it needs to store its result, owned so it can outlive the
/// client that started it.
struct Fetch {
    cache: Cache,
    router: Arc<Router>,
    clock: Clock,
    key: Key,
    upstream_query: Vec<u8>,
}

impl Fetch {
    /// Asks the router, checks and caches the answer.
    async fn run(self) -> Result<Arc<Entry>, RouteError> {
        let (wire, _) = self.router.exchange(&self.upstream_query).await?;
        // The router only returns answers that passed `check_answer`.
        let parsed = dns::check_answer(&self.upstream_query, &wire)
            .map_err(|e| RouteError::AllFailed(vec![("answer".into(), e.into())]))?;
        let answer = Answer::new(&wire, &parsed);
        Ok(self.cache.insert(self.key, answer, self.clock.now()))
    }
}
