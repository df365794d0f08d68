//! The path of one query, top to bottom:
//!
//! 1. validate the client's message (drop, or FORMERR / NOTIMP / REFUSED / BADVERS);
//! 2. answer from the cache if a fresh entry exists;
//! 3. otherwise send a normalised query through the router (encrypted upstreams, failover);
//! 4. check the answer against the question, cache it if its TTLs allow;
//! 5. render it for this client: its ID, its spelling of the name, decayed TTLs, its EDNS
//!    status, truncated with TC if it exceeds the client's UDP limit.
//!
//! When no upstream answers in time the client gets SERVFAIL.

use std::sync::Arc;

use tracing::{debug, trace};

use crate::cache::{Cache, Key};
use crate::clock::Clock;
use crate::dns::{self, Answer, ClientQuery, Rcode, Rejected};
use crate::router::Router;

/// The transport a query arrived on; it decides the size limit of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: answers are limited to the client's payload size.
    Udp,
    /// TCP: answers up to 65535 bytes.
    Tcp,
}

/// Answers client queries.
pub struct Resolver {
    /// Fresh answers.
    cache: Cache,
    /// Upstreams and failover.
    router: Arc<Router>,
    /// Time source for cache freshness.
    clock: Clock,
}

impl Resolver {
    /// A resolver over `router` with `cache`.
    pub fn new(cache: Cache, router: Arc<Router>, clock: Clock) -> Resolver {
        Resolver {
            cache,
            router,
            clock,
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
        if let Some(entry) = self.cache.get(&key, self.clock.now()) {
            return Some(
                self.cache
                    .render(&entry, &query, self.clock.now(), udp_limit),
            );
        }
        let upstream_query = dns::upstream_query(&query);
        match self.router.exchange(&upstream_query).await {
            Ok((wire, _)) => {
                // The router only returns answers that passed `check_answer`.
                let Ok(parsed) = dns::check_answer(&upstream_query, &wire) else {
                    return Some(self.servfail(&query));
                };
                let answer = Answer::new(&wire, &parsed);
                let now = self.clock.now();
                let entry = self.cache.insert(key, answer, now);
                Some(self.cache.render(&entry, &query, now, udp_limit))
            }
            Err(error) => {
                debug!(name = %query.name_string(), qtype = query.question.qtype, %error, "answering SERVFAIL");
                Some(self.servfail(&query))
            }
        }
    }

    fn servfail(&self, query: &ClientQuery<'_>) -> Vec<u8> {
        dns::error_response(
            query.wire,
            Some(&query.question),
            query.edns,
            Rcode::ServFail,
        )
    }
}
