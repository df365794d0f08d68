//! DNS over TCP (RFC 1035 §4.2.2, RFC 7766): length-prefixed messages, several queries per
//! connection, answers sent as they are ready (possibly out of order, RFC 7766 §6.2.1.1).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::clients::{self, Admission, ClientPolicy};
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

/// Accepts connections on `listener` until `shutdown` is cancelled. Queries from sources
/// outside the access list are answered REFUSED (see [`crate::clients`]).
pub async fn serve(
    listener: TcpListener,
    resolver: Arc<Service>,
    limits: TcpLimits,
    clients: Arc<ClientPolicy>,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            debug!(%peer, "too many TCP connections; closing new one");
            continue;
        };
        let resolver = match clients.admit_tcp(peer.ip()) {
            Admission::Serve => Some(resolver.clone()),
            _ => {
                debug!(%peer, "TCP client not on the access list; refusing its queries");
                None
            }
        };
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            connection(stream, resolver, limits, shutdown).await;
            drop(permit);
        });
    }
}

/// Serves one connection: a reader that starts a task per query, and a writer that sends
/// answers in completion order. Without a resolver (a client not on the access list) every
/// query is answered REFUSED.
async fn connection(
    stream: TcpStream,
    resolver: Option<Arc<Service>>,
    limits: TcpLimits,
    shutdown: CancellationToken,
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
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            // The writer gave up on this client.
            _ = answers.closed() => break,
            message = read_message(&mut reader, idle, &in_flight, limits.max_in_flight) => message,
        };
        let Some(message) = message else { break };
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = answers.closed() => break,
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let resolver = resolver.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            let answer = match resolver {
                Some(resolver) => resolver.handle(&message, Transport::Tcp).await,
                None => clients::refused(&message),
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
