//! DNS over TCP (RFC 1035 §4.2.2, RFC 7766): length-prefixed messages, several queries per
//! connection, answers sent as they are ready (possibly out of order, RFC 7766 §6.2.1.1).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::clients::{self, Admission, ClientPolicy};
use crate::metrics::Metrics;
use crate::resolver::Transport;
use crate::service::Service;

/// Limits that keep TCP clients from exhausting the proxy.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Connections served at once; further connections are closed on accept.
    pub max_connections: usize,
    /// Queries resolved at once per connection; reading pauses beyond it.
    pub max_in_flight: usize,
    /// A connection with nothing outstanding is closed after this long without a query
    /// (RFC 7766 §6.2.3); it also bounds how long a started message may take to arrive.
    pub idle_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 256,
            max_in_flight: 32,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// What a connection does with its queries, decided once when it is accepted.
#[derive(Clone)]
enum Handling {
    /// Resolve them: the source is on the access list.
    Resolve(Arc<Service>),
    /// Answer each REFUSED, and count it, without ever resolving: the source is not.
    Refuse(Arc<Metrics>),
}

/// A connection becomes a candidate for closing, when the connection limit is reached, once
/// it has gone this long without delivering a whole query and has none outstanding.
const EVICTABLE_AFTER: Duration = Duration::from_secs(1);
/// How long a new connection waits for the slot of one closed to make room for it.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// The connections being served, so that one can be closed to make room for another.
struct Connections {
    /// Free connection slots.
    slots: Arc<Semaphore>,
    /// Live connections by number.
    live: Mutex<HashMap<u64, Live>>,
    /// Number for the next connection.
    next: AtomicU64,
    /// Time origin of [`Live::last_query`].
    epoch: Instant,
    /// Per-connection query limit, to tell a connection with nothing outstanding.
    max_in_flight: usize,
}

/// What the listener knows about one live connection.
struct Live {
    /// Cancelled to close the connection.
    close: CancellationToken,
    /// The connection's in-flight permits: all free means nothing is outstanding.
    in_flight: Arc<Semaphore>,
    /// Milliseconds after [`Connections::epoch`] at which it opened or last delivered a
    /// whole query.
    last_query: Arc<AtomicU64>,
}

impl Connections {
    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Closes the connection that has gone longest without a query, if one has gone at least
    /// [`EVICTABLE_AFTER`] and has nothing outstanding. RFC 7766 §6.2.3 lets a server close
    /// idle connections under pressure; without this, clients that open connections and
    /// never finish a query (or never send one) would shut everyone else out of TCP until
    /// the idle timeout.
    fn evict_idlest(&self) -> bool {
        let cutoff = self
            .millis()
            .saturating_sub(EVICTABLE_AFTER.as_millis() as u64);
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let victim = live
            .iter()
            .filter(|(_, c)| c.in_flight.available_permits() == self.max_in_flight)
            .map(|(&id, c)| (id, c.last_query.load(Ordering::Relaxed)))
            .filter(|&(_, at)| at <= cutoff)
            .min_by_key(|&(_, at)| at);
        match victim.and_then(|(id, _)| live.remove(&id)) {
            Some(c) => {
                c.close.cancel();
                true
            }
            None => false,
        }
    }

    /// Registers a connection, serves it, and forgets it.
    async fn serve(
        &self,
        stream: TcpStream,
        handling: Handling,
        limits: TcpLimits,
        shutdown: CancellationToken,
    ) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let live = Live {
            close: shutdown.child_token(),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            last_query: Arc::new(AtomicU64::new(self.millis())),
        };
        let (close, in_flight, last_query) = (
            live.close.clone(),
            live.in_flight.clone(),
            live.last_query.clone(),
        );
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, live);
        let seen = || last_query.store(self.millis(), Ordering::Relaxed);
        connection(stream, handling, limits, close, in_flight, seen).await;
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// Accepts connections on `listener` until `shutdown` is cancelled. Queries from sources
/// outside the access list are answered REFUSED (see [`crate::clients`]).
pub async fn serve(
    listener: TcpListener,
    resolver: Arc<Service>,
    limits: TcpLimits,
    clients: Arc<ClientPolicy>,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Connections {
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        live: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
        epoch: Instant::now(),
        max_in_flight: limits.max_in_flight,
    });
    while let Some((stream, peer)) = super::accept(&listener, &shutdown, "TCP listener").await {
        let handling = match clients.admit_tcp(peer.ip()) {
            Admission::Serve => Handling::Resolve(resolver.clone()),
            _ => {
                debug!(%peer, "TCP client not on the access list; refusing its queries");
                Handling::Refuse(resolver.metrics().clone())
            }
        };
        let shutdown = shutdown.clone();
        let connections = connections.clone();
        let permit = match connections.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) if connections.evict_idlest() => {
                // Wait for the closed connection's slot off the accept loop.
                tokio::spawn(async move {
                    let slot = timeout(EVICTION_WAIT, connections.slots.clone().acquire_owned());
                    if let Ok(Ok(permit)) = slot.await {
                        connections.serve(stream, handling, limits, shutdown).await;
                        drop(permit);
                    }
                });
                continue;
            }
            Err(_) => {
                debug!(%peer, "too many TCP connections; closing new one");
                continue;
            }
        };
        tokio::spawn(async move {
            connections.serve(stream, handling, limits, shutdown).await;
            drop(permit);
        });
    }
}

/// Serves one connection: a reader that starts a task per query, and a writer that sends
/// answers in completion order. A client not on the access list has every query answered
/// REFUSED (and counted as denied). `shutdown` closes it (the listener's shutdown, or eviction);
/// `in_flight` bounds its queries; `seen` is told of every whole query read.
async fn connection(
    stream: TcpStream,
    handling: Handling,
    limits: TcpLimits,
    shutdown: CancellationToken,
    in_flight: Arc<Semaphore>,
    seen: impl Fn(),
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (answers, mut outbox) = mpsc::channel::<Vec<u8>>(limits.max_in_flight);
    let idle = limits.idle_timeout;
    let writing = tokio::spawn(async move {
        while let Some(answer) = outbox.recv().await {
            let mut frame = Vec::with_capacity(answer.len() + 2);
            frame.extend((answer.len() as u16).to_be_bytes());
            frame.extend_from_slice(&answer);
            // A client that stops reading its answers is cut off rather than allowed to
            // pin this connection's tasks (and its connection slot) forever.
            if !matches!(timeout(idle, writer.write_all(&frame)).await, Ok(Ok(()))) {
                return;
            }
        }
        let _ = timeout(idle, writer.shutdown()).await;
    });
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            // The writer gave up on this client.
            _ = answers.closed() => break,
            message = read_message(&mut reader, idle, &in_flight, limits.max_in_flight) => message,
        };
        let Some(message) = message else { break };
        seen();
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = answers.closed() => break,
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let handling = handling.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            let answer = match handling {
                Handling::Resolve(resolver) => resolver.handle(&message, Transport::Tcp).await,
                Handling::Refuse(metrics) => {
                    metrics.query_denied(Transport::Tcp);
                    clients::refused(&message)
                }
            };
            if let Some(answer) = answer {
                let _ = answers.send(answer).await;
            }
            drop(permit);
        });
    }
    // The writer ends once every query task has sent its answer and dropped its sender.
    drop(answers);
    let _ = writing.await;
}

/// Reads one length-prefixed message. `None` on EOF, error, or idleness: no message starts
/// within `idle` while nothing is outstanding, or a started message stalls for `idle`.
async fn read_message(
    reader: &mut OwnedReadHalf,
    idle: Duration,
    in_flight: &Semaphore,
    max_in_flight: usize,
) -> Option<Vec<u8>> {
    // `read` (unlike `read_exact`) is cancel-safe, so a timeout never loses half a prefix.
    let mut len = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match timeout(idle, reader.read(&mut len[got..])).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => got += n,
            // Idle only counts while no answers are pending (RFC 7766 §6.2.3).
            Err(_) if got == 0 && in_flight.available_permits() < max_in_flight => continue,
            Err(_) => return None,
        }
    }
    let mut message = vec![0u8; u16::from_be_bytes(len) as usize];
    match timeout(idle, reader.read_exact(&mut message)).await {
        Ok(Ok(_)) => Some(message),
        _ => None,
    }
}
