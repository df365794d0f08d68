//! Plain (unencrypted) DNS over UDP with TCP fallback: for split-DNS rules that send a local
//! domain to the router's own resolver, and for bootstrap lookups of upstream names.
//!
//! Plain DNS can be forged by anyone on the path, so a reply is accepted only if it comes from
//! the server asked, to a fresh random source port, with the random ID sent and the same
//! question (RFC 5452 §9.1); anything else is ignored while the wait goes on. A reply with TC set
//! is asked again over TCP (RFC 1035 §4.2.2 framing; RFC 7766 §5 says a truncated UDP answer
//! means "retry over TCP").

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use super::UpstreamError;
use crate::dns::{check_answer, wire};

/// Largest DNS message (and so the receive buffer: a bigger EDNS answer is never cut short).
const MAX_MESSAGE: usize = 65_535;

/// A plain-DNS client for a list of servers, tried in order.
#[derive(Debug, Clone)]
pub struct PlainClient {
    /// Servers in the order they are tried; the next is asked only if one fails or is silent.
    servers: Vec<SocketAddr>,
    /// Time each server gets for the whole exchange (UDP, plus the TCP retry after TC).
    timeout: Duration,
}

impl PlainClient {
    /// A client asking `servers` in order, each allowed `timeout` for its answer (UDP and any
    /// TCP retry together), so one exchange takes at most `servers.len() × timeout`.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> PlainClient {
        PlainClient { servers, timeout }
    }

    /// The servers, in the order they are tried.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Sends `query` (its ID is replaced by a random one on the wire) over UDP from a fresh
    /// random port, accepts only a reply from that server with that ID and the same question
    /// (RFC 5452 §9.1: anything else is ignored and the wait goes on until the timeout), retries
    /// over TCP if the reply has TC set, and moves on to the next server on timeout or error.
    /// Returns the reply as received, with the random ID: callers restore IDs themselves.
    pub async fn exchange(&self, query: &[u8]) -> Result<Bytes, UpstreamError> {
        if query.len() > MAX_MESSAGE {
            return Err(UpstreamError::TooLarge);
        }
        // A query without exactly one question could never be matched by a reply.
        let has_question = wire::parse(query).is_ok_and(|p| p.question.is_some());
        if !has_question {
            return Err(UpstreamError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a DNS query with one question",
            )));
        }
        let mut last = UpstreamError::Connect {
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            source: io::Error::new(io::ErrorKind::AddrNotAvailable, "no plain DNS server"),
        };
        for &server in &self.servers {
            let deadline = Instant::now() + self.timeout;
            let mut query = query.to_vec();
            let id: u16 = rand::random();
            query[..2].copy_from_slice(&id.to_be_bytes());
            let result = match ask_udp(server, &query, id, deadline).await {
                Ok(reply) if is_truncated(&reply) => {
                    tracing::debug!(%server, "truncated UDP answer; retrying over TCP");
                    ask_tcp(server, &query, id, deadline).await
                }
                other => other,
            };
            match result {
                Ok(reply) => return Ok(reply),
                Err(e) => {
                    tracing::debug!(%server, error = %e, "plain DNS server failed");
                    last = e;
                }
            }
        }
        Err(last)
    }
}

fn is_truncated(reply: &[u8]) -> bool {
    wire::Header::of(reply).is_some_and(|h| h.truncated())
}

/// Whether `reply` answers `query`, whose wire ID is `id`.
fn matches(query: &[u8], id: u16, reply: &[u8]) -> bool {
    wire::Header::of(reply).is_some_and(|h| h.id() == id) && check_answer(query, reply).is_ok()
}

/// One UDP exchange with `server` until `deadline`.
async fn ask_udp(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    deadline: Instant,
) -> Result<Bytes, UpstreamError> {
    let io = UpstreamError::Io;
    // Port 0: the kernel picks a fresh ephemeral port (randomised on Linux, RFC 6056), so
    // each query has its own port and a forger must guess it as well as the ID.
    let bind = match server {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(bind).await.map_err(io)?;
    // A connected socket only receives datagrams from `server` (the kernel drops the rest),
    // and learns of ICMP port-unreachable, so a dead server fails fast instead of timing out.
    socket
        .connect(server)
        .await
        .map_err(|source| UpstreamError::Connect {
            addr: server,
            source,
        })?;
    timeout_at(deadline, socket.send(query))
        .await
        .map_err(|_| UpstreamError::Timeout)?
        .map_err(io)?;
    let mut buf = vec![0; MAX_MESSAGE];
    loop {
        let n = timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(io)?;
        let reply = &buf[..n];
        // Ignore anything that is not the answer to this query (RFC 5452 §9.1).
        if matches(query, id, reply) {
            return Ok(Bytes::copy_from_slice(reply));
        }
        tracing::debug!(%server, "ignoring a UDP reply that does not match the query");
    }
}

/// One exchange over a fresh TCP connection to `server` until `deadline`, with the 2-byte
/// length prefix of RFC 1035 §4.2.2.
async fn ask_tcp(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    deadline: Instant,
) -> Result<Bytes, UpstreamError> {
    let exchange = async {
        let mut tcp =
            TcpStream::connect(server)
                .await
                .map_err(|source| UpstreamError::Connect {
                    addr: server,
                    source,
                })?;
        let _ = tcp.set_nodelay(true);
        let mut frame = Vec::with_capacity(query.len() + 2);
        frame.extend((query.len() as u16).to_be_bytes());
        frame.extend_from_slice(query);
        tcp.write_all(&frame).await.map_err(UpstreamError::Io)?;
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).await.map_err(closed_or_io)?;
        let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
        tcp.read_exact(&mut reply).await.map_err(closed_or_io)?;
        check_answer(query, &reply)?;
        if wire::Header::of(&reply).map(|h| h.id()) != Some(id) {
            return Err(UpstreamError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "TCP reply carries another message ID",
            )));
        }
        // RFC 7766 §6.2.1: the client closes; nothing more is expected on this connection.
        let _ = tcp.shutdown().await;
        Ok(Bytes::from(reply))
    };
    timeout_at(deadline, exchange)
        .await
        .map_err(|_| UpstreamError::Timeout)?
}

fn closed_or_io(e: io::Error) -> UpstreamError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        UpstreamError::Closed
    } else {
        UpstreamError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::new_query;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

    /// An answer to `query` (same ID and question) with one A record `ip`, TC set if `tc`.
    fn answer(query: &[u8], ip: [u8; 4], tc: bool) -> Vec<u8> {
        let end = wire::parse(query).unwrap().question.unwrap().end;
        let mut out = query[..end].to_vec();
        out[2] = 0x81 | if tc { 0x02 } else { 0 }; // QR, RD (+TC)
        out[3] = 0x80; // RA, NOERROR
        out[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]); // ANCOUNT 1, no OPT
        out.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        out.extend(ip);
        out
    }

    fn a_of(reply: &[u8]) -> [u8; 4] {
        let parsed = wire::parse(reply).unwrap();
        let r = parsed.section(wire::Section::Answer).next().unwrap();
        reply[r.rdata.clone()].try_into().unwrap()
    }

    fn test_query() -> Vec<u8> {
        new_query("router.lan", wire::TYPE_A, false).unwrap()
    }

    /// A UDP server that answers each query with what `reply` makes of it.
    async fn udp_server(
        reply: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            let mut buf = vec![0; 65_535];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                count.fetch_add(1, Ordering::SeqCst);
                for datagram in reply(&buf[..n]) {
                    socket.send_to(&datagram, from).await.unwrap();
                }
            }
        });
        (addr, seen)
    }

    /// A UDP socket that receives queries and never answers.
    async fn silent_server() -> (SocketAddr, Arc<AtomicUsize>) {
        udp_server(|_| Vec::new()).await
    }

    #[tokio::test]
    async fn ignores_a_reply_with_the_wrong_id_and_takes_the_right_one() {
        let (addr, _) = udp_server(|q| {
            let mut wrong = answer(q, [192, 0, 2, 66], false);
            wrong[0] ^= 0xff;
            let mut other_question = answer(q, [192, 0, 2, 67], false);
            other_question[13] = b'x'; // "router.lan" -> "xouter.lan"
            vec![wrong, other_question, answer(q, [192, 0, 2, 1], false)]
        })
        .await;
        let client = PlainClient::new(vec![addr], Duration::from_secs(2));
        let query = test_query();
        let reply = client.exchange(&query).await.unwrap();
        assert_eq!(a_of(&reply), [192, 0, 2, 1]);
        check_answer(&query, &reply).unwrap();
    }

    #[tokio::test]
    async fn retries_over_tcp_when_the_udp_answer_is_truncated() {
        let (addr, _) = udp_server(|q| vec![answer(q, [192, 0, 2, 99], true)]).await;
        let listener = TcpListener::bind(addr).await.unwrap();
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let count = tcp_queries.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mut len = [0u8; 2];
                conn.read_exact(&mut len).await.unwrap();
                let mut q = vec![0; usize::from(u16::from_be_bytes(len))];
                conn.read_exact(&mut q).await.unwrap();
                let a = answer(&q, [192, 0, 2, 7], false);
                let mut frame = (a.len() as u16).to_be_bytes().to_vec();
                frame.extend(a);
                conn.write_all(&frame).await.unwrap();
            }
        });
        let client = PlainClient::new(vec![addr], Duration::from_secs(2));
        let reply = client.exchange(&test_query()).await.unwrap();
        assert_eq!(a_of(&reply), [192, 0, 2, 7]);
        assert!(!is_truncated(&reply));
        assert_eq!(tcp_queries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn moves_on_to_the_next_server_when_one_is_silent() {
        let (silent, asked) = silent_server().await;
        let (answering, _) = udp_server(|q| vec![answer(q, [192, 0, 2, 2], false)]).await;
        let per_server = Duration::from_millis(500);
        let client = PlainClient::new(vec![silent, answering], per_server);
        assert_eq!(client.servers(), [silent, answering]);
        let started = Instant::now();
        let reply = client.exchange(&test_query()).await.unwrap();
        assert_eq!(a_of(&reply), [192, 0, 2, 2]);
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        let took = started.elapsed();
        assert!(
            took >= per_server && took < 2 * per_server,
            "answered after {took:?}"
        );
    }

    #[tokio::test]
    async fn fails_after_every_server_timed_out() {
        let (a, asked_a) = silent_server().await;
        let (b, asked_b) = silent_server().await;
        let per_server = Duration::from_millis(200);
        let client = PlainClient::new(vec![a, b], per_server);
        let started = Instant::now();
        let err = client.exchange(&test_query()).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Timeout), "{err}");
        let took = started.elapsed();
        assert!(
            took >= 2 * per_server && took < 2 * per_server + Duration::from_secs(1),
            "failed after {took:?}"
        );
        assert_eq!(asked_a.load(Ordering::SeqCst), 1);
        assert_eq!(asked_b.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn sends_a_random_id_and_a_fresh_port_per_query() {
        let sources = Arc::new(std::sync::Mutex::new(Vec::new()));
        let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = sources.clone();
        tokio::spawn(async move {
            let mut buf = vec![0; 65_535];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let q = &buf[..n];
                seen.lock()
                    .unwrap()
                    .push((from.port(), u16::from_be_bytes([q[0], q[1]])));
                let _ = socket
                    .send_to(&answer(q, [192, 0, 2, 3], false), from)
                    .await;
            }
        });
        let client = PlainClient::new(vec![addr], Duration::from_secs(2));
        for _ in 0..4 {
            client.exchange(&test_query()).await.unwrap();
        }
        let seen = sources.lock().unwrap().clone();
        let ports: std::collections::HashSet<_> = seen.iter().map(|&(p, _)| p).collect();
        let ids: std::collections::HashSet<_> = seen.iter().map(|&(_, id)| id).collect();
        assert!(ports.len() > 1, "source ports {seen:?}");
        assert!(ids.len() > 1, "IDs {seen:?}");
    }

    #[tokio::test]
    async fn rejects_a_query_without_a_question_and_fails_without_servers() {
        let client = PlainClient::new(vec![], Duration::from_millis(100));
        assert!(client.exchange(&[0; 5]).await.is_err());
        let err = client.exchange(&test_query()).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Connect { .. }), "{err}");
    }
}
