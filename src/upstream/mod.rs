//! Encrypted upstream resolvers: DNS-over-HTTPS ([`doh`]) and DNS-over-TLS ([`dot`]).
//!
//! An [`Upstream`] owns one reusable connection to one resolver and exchanges wire-format
//! messages over it; every answer is checked against its question before it is returned.
//! Which upstream to ask, and what to do when one fails, is the router's business.

pub mod bootstrap;
pub mod doh;
pub mod dot;
pub mod pin;
pub mod plain;
pub mod slot;
pub mod tls;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

use crate::dns::wire::Parsed;
use crate::dns::{AnswerError, check_answer};
use bootstrap::Endpoint;

/// The encrypted transport of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// DNS-over-HTTPS (RFC 8484) over HTTP/2.
    Doh,
    /// DNS-over-TLS (RFC 7858).
    Dot,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Doh => "DoH",
            Protocol::Dot => "DoT",
        })
    }
}

/// An upstream as configured: `https://NAME[:PORT]/PATH[#ADDR,...]` or `tls://NAME[:PORT][#ADDR,...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// The URL as written, for logs.
    pub url: String,
    /// DoH or DoT.
    pub protocol: Protocol,
    /// Host name (or IP literal) the certificate must be valid for, and the HTTP authority.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// DoH path and query (`/dns-query`); empty for DoT.
    pub path: String,
    /// Addresses to connect to, from the URL fragment; empty means "resolve `host`".
    pub addrs: Vec<IpAddr>,
    /// SHA-256 digests of SubjectPublicKeyInfos (`pin-sha256`, see [`pin`]), one of which the
    /// validated certificate chain must contain: so that a CA that can issue for `host` is not
    /// enough to impersonate this upstream. Empty means no pinning. Not part of the URL (the
    /// configuration fills it in per upstream).
    pub pin_sha256: Vec<[u8; 32]>,
}

/// Why an upstream URL is not acceptable.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpecError {
    /// Not a URL.
    #[error("not a URL: {0}")]
    Url(#[from] url::ParseError),
    /// A scheme other than https:// or tls://.
    #[error("unsupported scheme {0:?}: use https:// (DNS-over-HTTPS) or tls:// (DNS-over-TLS)")]
    Scheme(String),
    /// No host name.
    #[error("missing host name")]
    NoHost,
    /// A fragment entry that is not an IP address.
    #[error("bad address {0:?} after '#': expected IP addresses separated by commas")]
    BadAddress(String),
    /// User info or similar that makes no sense for a resolver.
    #[error("user names and passwords are not supported in upstream URLs")]
    Credentials,
}

impl FromStr for UpstreamSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let url = url::Url::parse(s)?;
        let (protocol, default_port) = match url.scheme() {
            "https" => (Protocol::Doh, 443),
            "tls" => (Protocol::Dot, 853),
            other => return Err(SpecError::Scheme(other.to_string())),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SpecError::Credentials);
        }
        let host = match url.host().ok_or(SpecError::NoHost)? {
            url::Host::Domain("") => return Err(SpecError::NoHost),
            url::Host::Domain(d) => d.to_string(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let addrs = url
            .fragment()
            .filter(|f| !f.is_empty())
            .map(|f| {
                f.split(',')
                    .map(|a| {
                        let a = a.trim();
                        let bare = a.trim_start_matches('[').trim_end_matches(']');
                        bare.parse::<IpAddr>()
                            .map_err(|_| SpecError::BadAddress(a.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let path = match protocol {
            Protocol::Doh => {
                let mut p = url.path().to_string();
                if let Some(q) = url.query() {
                    p.push('?');
                    p.push_str(q);
                }
                p
            }
            Protocol::Dot => String::new(),
        };
        Ok(UpstreamSpec {
            url: s.to_string(),
            protocol,
            host,
            port: url.port().unwrap_or(default_port),
            path,
            addrs,
            pin_sha256: Vec::new(),
        })
    }
}

impl fmt::Display for UpstreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// Why an exchange with an upstream failed. The router decides failover by variant.
#[derive(Debug, Error)]
pub enum UpstreamError {
    /// The upstream's host name could not be turned into addresses.
    #[error("cannot resolve {host}: {reason}")]
    Bootstrap {
        /// The name that was looked up.
        host: String,
        /// What went wrong.
        reason: String,
    },
    /// TCP connection failed (refused, unreachable, ...).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Address tried last.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// TLS handshake failed, including certificates that do not validate for the name.
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// Address of the peer.
        addr: SocketAddr,
        /// The TLS error (a rustls error wrapped in `io::Error`).
        source: io::Error,
    },
    /// The server did not negotiate HTTP/2 through ALPN.
    #[error("server did not negotiate HTTP/2 (ALPN h2)")]
    NoHttp2,
    /// An HTTP/2 protocol error or a closed HTTP/2 connection.
    #[error("HTTP/2: {0}")]
    Http(#[from] hyper::Error),
    /// The DoH server answered with a non-200 status.
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    /// The DoH server answered with a body that is not `application/dns-message`.
    #[error("unexpected content type {0:?}")]
    ContentType(String),
    /// The answer is larger than a DNS message can be.
    #[error("answer larger than 65535 bytes")]
    TooLarge,
    /// The connection was closed before the answer arrived.
    #[error("connection closed before the answer arrived")]
    Closed,
    /// Reading or writing the connection failed.
    #[error("I/O error: {0}")]
    Io(io::Error),
    /// No answer within the allowed time.
    #[error("timed out")]
    Timeout,
    /// Too many queries already outstanding on the connection.
    #[error("too many queries in flight")]
    Busy,
    /// The reply failed validation against the query.
    #[error("{0}")]
    Answer(#[from] AnswerError),
    /// The upstream answered REFUSED: it will not serve us, so ask another.
    #[error("upstream answered REFUSED")]
    Refused,
    /// The upstream answered SERVFAIL. Another upstream may do better, but this one is alive
    /// (a DNSSEC failure is SERVFAIL everywhere), so it is not held against its health. The
    /// answer is kept to pass on if no upstream does better.
    #[error("upstream answered SERVFAIL")]
    ServFail(UpstreamAnswer),
}

/// An upstream's answer that passed [`check_reply`] against the query sent, with its records
/// found, so nothing after it parses the message again. Reads as the message's bytes.
#[derive(Debug, Clone)]
pub struct UpstreamAnswer {
    /// The message as received.
    pub wire: Bytes,
    /// Its records, found by the check.
    pub parsed: Parsed,
}

impl Deref for UpstreamAnswer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.wire
    }
}

impl UpstreamError {
    /// Whether this failure says the upstream is unwell (so it should be marked unhealthy),
    /// as opposed to our own load or an answer that is valid but unhelpful.
    pub fn counts_against_health(&self) -> bool {
        !matches!(self, UpstreamError::Busy | UpstreamError::ServFail(_))
    }

    /// True if the failure happened on a connection that may simply have gone stale
    /// (closed by the server while idle), so one retry on a fresh connection is worthwhile.
    pub fn is_stale_connection(&self) -> bool {
        match self {
            UpstreamError::Closed | UpstreamError::Io(_) => true,
            UpstreamError::Http(e) => e.is_closed() || e.is_canceled() || e.is_incomplete_message(),
            _ => false,
        }
    }
}

/// The transport-specific client behind an [`Upstream`].
enum Client {
    Doh(doh::DohClient),
    Dot(dot::DotClient),
}

/// Settings shared by every upstream connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Time allowed for TCP connect plus TLS handshake (plus HTTP/2 handshake).
    pub connect_timeout: Duration,
    /// How long an unused connection is kept open.
    pub idle_timeout: Duration,
    /// How often an HTTP/2 PING checks a DoH connection that has requests outstanding; an
    /// unanswered PING (within the same time) closes the connection.
    pub keepalive_interval: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(1),
        }
    }
}

/// One encrypted upstream resolver with its reusable connection.
pub struct Upstream {
    /// What was configured.
    spec: UpstreamSpec,
    /// The transport client.
    client: Client,
    /// The server on the current connection (for hijack reports).
    identity: Arc<tls::PeerIdentity>,
}

impl Upstream {
    /// Creates the upstream; nothing is connected until the first exchange. With
    /// `spec.pin_sha256` set, its TLS configuration also requires a pinned key.
    pub fn new(
        spec: UpstreamSpec,
        tls: &tls::TlsConfigs,
        bootstrap: Option<Arc<bootstrap::Bootstrap>>,
        options: ConnectOptions,
    ) -> Result<Upstream, tls::TlsSetupError> {
        let endpoint = Endpoint::new(&spec, bootstrap);
        let server_name = tls::server_name(&spec.host)?;
        let config = match (spec.protocol, spec.pin_sha256.is_empty()) {
            (Protocol::Doh, true) => tls.doh.clone(),
            (Protocol::Dot, true) => tls.dot.clone(),
            (Protocol::Doh, false) => tls.pinned(&spec.pin_sha256, tls::DOH_ALPN)?,
            (Protocol::Dot, false) => tls.pinned(&spec.pin_sha256, tls::DOT_ALPN)?,
        };
        let identity = Arc::new(tls::PeerIdentity::default());
        let client = match spec.protocol {
            Protocol::Doh => Client::Doh(doh::DohClient::new(
                &spec,
                endpoint,
                config,
                server_name,
                options,
                identity.clone(),
            )),
            Protocol::Dot => Client::Dot(dot::DotClient::new(
                endpoint,
                config,
                server_name,
                options,
                identity.clone(),
            )),
        };
        Ok(Upstream {
            spec,
            client,
            identity,
        })
    }

    /// The configuration it was made from.
    pub fn spec(&self) -> &UpstreamSpec {
        &self.spec
    }

    /// The server of the current (or last) connection: its address and SPKI SHA-256.
    pub fn peer(&self) -> Option<(SocketAddr, [u8; 32])> {
        self.identity.get()
    }

    /// Drops the connection and any looked-up addresses, so the next query starts afresh
    /// (used when our network seems to have changed).
    pub fn reset(&self) {
        match &self.client {
            Client::Doh(c) => c.reset(),
            Client::Dot(c) => c.reset(),
        }
    }

    /// Sends `query` (ID ignored) and returns the checked answer; its ID is unspecified.
    pub async fn exchange(&self, query: &[u8]) -> Result<UpstreamAnswer, UpstreamError> {
        let answer = match &self.client {
            Client::Doh(c) => c.exchange(query).await?,
            Client::Dot(c) => c.exchange(query).await?,
        };
        check_reply(query, answer)
    }
}

/// Checks an upstream's `answer` against the `query` sent, and sorts out the answers that
/// should make the router ask elsewhere (SERVFAIL, REFUSED).
pub fn check_reply(query: &[u8], answer: Bytes) -> Result<UpstreamAnswer, UpstreamError> {
    let parsed = check_answer(query, &answer)?;
    let rcode = answer[3] & 0x0f;
    let answer = UpstreamAnswer {
        wire: answer,
        parsed,
    };
    match rcode {
        2 => Err(UpstreamError::ServFail(answer)),
        5 => Err(UpstreamError::Refused),
        _ => Ok(answer),
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.spec.url)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_doh_and_dot_urls_with_addresses() {
        let s: UpstreamSpec = "https://dns.quad9.net/dns-query#9.9.9.9,149.112.112.112"
            .parse()
            .unwrap();
        assert_eq!(s.protocol, Protocol::Doh);
        assert_eq!(
            (s.host.as_str(), s.port, s.path.as_str()),
            ("dns.quad9.net", 443, "/dns-query")
        );
        assert_eq!(s.addrs.len(), 2);
        let s: UpstreamSpec = "tls://localhost:15301#127.0.0.1,[::1]".parse().unwrap();
        assert_eq!((s.protocol, s.port), (Protocol::Dot, 15301));
        assert_eq!(
            s.addrs,
            [
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        let s: UpstreamSpec = "tls://[::1]".parse().unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 853));
    }

    /// Regression: the connecting future (TCP, TLS and HTTP/2 handshakes) used to be part of
    /// every exchange's future, 14 kB in a release build, and each query in flight held two
    /// of them (the router's `FuturesUnordered` allocates a stub of the same size): some
    /// 3 MB at 100 queries in flight, most of it left behind as heap fragmentation.
    #[test]
    fn an_exchange_future_does_not_carry_the_connecting_future() {
        let tls = tls::TlsConfigs::new(&[]).unwrap();
        let query = crate::dns::new_query("a.test", 1, false).unwrap();
        for url in [
            "tls://localhost#127.0.0.1",
            "https://localhost/dns-query#127.0.0.1",
        ] {
            let spec: UpstreamSpec = url.parse().unwrap();
            let upstream = Upstream::new(spec, &tls, None, ConnectOptions::default()).unwrap();
            let size = std::mem::size_of_val(&upstream.exchange(&query));
            assert!(size < 4096, "{url}: an exchange future takes {size} bytes");
        }
    }

    #[test]
    fn rejects_bad_urls() {
        assert!(matches!(
            "udp://x".parse::<UpstreamSpec>(),
            Err(SpecError::Scheme(_))
        ));
        assert!(matches!(
            "tls://x#nope".parse::<UpstreamSpec>(),
            Err(SpecError::BadAddress(_))
        ));
        assert!(matches!(
            "dns.google".parse::<UpstreamSpec>(),
            Err(SpecError::Url(_))
        ));
        assert!(matches!(
            "https://u:p@x/".parse::<UpstreamSpec>(),
            Err(SpecError::Credentials)
        ));
    }
}
