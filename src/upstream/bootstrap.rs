//! Where to connect: an upstream's addresses, from its URL or looked up through bootstrap
//! resolvers.
//!
//! dnsward usually *is* the system resolver, so an upstream's own name must never be looked up
//! through the system: either the URL lists addresses (`#9.9.9.9,...`), the host is an IP
//! literal, or the name is resolved over plain DNS through the configured bootstrap servers and
//! re-resolved when the answer's TTL (at least a minute) has run out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::plain::PlainClient;
use super::{UpstreamError, UpstreamSpec};
use crate::dns::{check_answer, new_query, wire};

/// Shortest time a bootstrap answer is reused, whatever its TTL.
const MIN_REUSE: Duration = Duration::from_secs(60);
/// Longest time a bootstrap answer is reused.
const MAX_REUSE: Duration = Duration::from_secs(3600);

/// Plain-DNS resolvers used only to find upstream addresses.
#[derive(Debug)]
pub struct Bootstrap {
    /// One client per server, tried in order until one has addresses: each server is asked
    /// for A and AAAA together, and an empty answer moves on to the next server as a failure
    /// does (so [`PlainClient`]'s own failover, which stops at any answer, is not enough).
    servers: Vec<PlainClient>,
}

impl Bootstrap {
    /// Bootstrap resolvers at `servers`, each allowed `timeout` to answer.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Bootstrap {
        Bootstrap {
            servers: servers
                .into_iter()
                .map(|server| PlainClient::new(vec![server], timeout))
                .collect(),
        }
    }

    /// A and AAAA addresses of `host` and how long they may be reused.
    pub async fn resolve(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), UpstreamError> {
        let fail = |reason: String| UpstreamError::Bootstrap {
            host: host.to_string(),
            reason,
        };
        let mut last = fail("no bootstrap resolver configured".into());
        for client in &self.servers {
            let (v4, v6) = tokio::join!(
                ask(client, host, wire::TYPE_A),
                ask(client, host, wire::TYPE_AAAA)
            );
            let mut addrs = Vec::new();
            let mut ttl = MAX_REUSE;
            for (found, t) in [&v4, &v6].into_iter().flatten() {
                addrs.extend(found);
                ttl = ttl.min(*t);
            }
            if !addrs.is_empty() {
                return Ok((addrs, ttl.max(MIN_REUSE)));
            }
            let reason = match (v4, v6) {
                (Err(e), _) | (_, Err(e)) => e,
                _ => "no A or AAAA records".into(),
            };
            let server = client.servers().first().map(ToString::to_string);
            last = fail(format!("{}: {reason}", server.unwrap_or_default()));
        }
        Err(last)
    }
}

/// The `qtype` (A or AAAA) addresses of `host` from `client`, and their smallest TTL.
async fn ask(
    client: &PlainClient,
    host: &str,
    qtype: u16,
) -> Result<(Vec<IpAddr>, Duration), String> {
    let query = new_query(host, qtype, false).ok_or("not a valid DNS name")?;
    let reply = client.exchange(&query).await.map_err(|e| e.to_string())?;
    // PlainClient only returns replies that passed this check; it is repeated for the offsets.
    let parsed = check_answer(&query, &reply).map_err(|e| e.to_string())?;
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    for r in parsed.section(wire::Section::Answer) {
        let rdata = &reply[r.rdata.clone()];
        let addr = match (r.rtype, rdata.len()) {
            (wire::TYPE_A, 4) => IpAddr::from(<[u8; 4]>::try_from(rdata).expect("len 4")),
            (wire::TYPE_AAAA, 16) => IpAddr::from(<[u8; 16]>::try_from(rdata).expect("len 16")),
            _ => continue,
        };
        addrs.push(addr);
        ttl = ttl.min(r.ttl);
    }
    Ok((addrs, Duration::from_secs(u64::from(ttl))))
}

/// An upstream's host and port, and how to find its addresses.
#[derive(Debug)]
pub struct Endpoint {
    /// Host from the URL.
    host: String,
    /// Port from the URL.
    port: u16,
    /// Fixed addresses (URL fragment or IP-literal host); empty means "look it up".
    fixed: Vec<IpAddr>,
    /// Where to look it up.
    bootstrap: Option<Arc<Bootstrap>>,
    /// The last lookup and when it goes stale.
    resolved: Mutex<Option<(Vec<SocketAddr>, Instant)>>,
}

impl Endpoint {
    /// The endpoint of `spec`.
    pub fn new(spec: &UpstreamSpec, bootstrap: Option<Arc<Bootstrap>>) -> Endpoint {
        let mut fixed = spec.addrs.clone();
        if fixed.is_empty()
            && let Ok(ip) = spec.host.parse::<IpAddr>()
        {
            fixed.push(ip);
        }
        Endpoint {
            host: spec.host.clone(),
            port: spec.port,
            fixed,
            bootstrap,
            resolved: Mutex::new(None),
        }
    }

    /// Forgets looked-up addresses, so the next connection looks the name up again.
    pub fn forget(&self) {
        *self.resolved.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Socket addresses to try, in order.
    pub async fn addrs(&self) -> Result<Vec<SocketAddr>, UpstreamError> {
        if !self.fixed.is_empty() {
            return Ok(self
                .fixed
                .iter()
                .map(|&ip| SocketAddr::new(ip, self.port))
                .collect());
        }
        if let Some((addrs, until)) = &*self.resolved.lock().unwrap_or_else(|e| e.into_inner())
            && Instant::now() < *until
        {
            return Ok(addrs.clone());
        }
        let bootstrap = self
            .bootstrap
            .as_ref()
            .ok_or_else(|| UpstreamError::Bootstrap {
                host: self.host.clone(),
                reason: "no addresses in the URL (add #ADDR) and no bootstrap resolvers".into(),
            })?;
        let (ips, ttl) = bootstrap.resolve(&self.host).await?;
        let addrs: Vec<SocketAddr> = ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, self.port))
            .collect();
        tracing::debug!(host = %self.host, ?addrs, "bootstrap resolved upstream");
        *self.resolved.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((addrs.clone(), Instant::now() + ttl));
        Ok(addrs)
    }
}
