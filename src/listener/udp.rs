//! DNS over UDP (RFC 1035 §4.2.1).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::batch::{Datagram, Gather, Inbox, Outbox};
use super::socket::ListenSocket;
use crate::clients::{self, Admission, ClientPolicy};
use crate::resolver::Transport;
use crate::service::{Resume, Service};

/// What is left to do for a datagram once the listener has looked at it.
enum Work {
    /// Send this answer (the socket had no room for it at once).
    Send(Vec<u8>),
    /// Resolve this message (it needs the network), then answer.
    Resolve(Vec<u8>, Resume),
}

/// Serves queries arriving on `socket` until `shutdown` is cancelled, with at most
/// `max_in_flight` queries being resolved at once; datagrams beyond that are dropped,
/// as an overloaded DNS server does (the client retries). Sources outside the access list
/// or over their rate limit get nothing (or, for some over the limit, an empty truncated
/// reply): see [`crate::clients`].
///
/// Answers that need no waiting (cache hits above all) are made by the receiving task
/// itself, so one receiving task runs per CPU (up to [`MAX_RECEIVERS`]), all on the one
/// socket, to keep every core busy.
pub async fn serve(
    socket: ListenSocket,
    resolver: Arc<Service>,
    max_in_flight: usize,
    clients: Arc<ClientPolicy>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        socket,
        resolver,
        limit: Arc::new(Semaphore::new(max_in_flight)),
        gathered: Gather::default(),
        clients,
        shutdown,
    });
    let receivers = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_RECEIVERS));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 1..receivers {
        tasks.spawn(receive(shared.clone()));
    }
    receive(shared).await;
    while tasks.join_next().await.is_some() {}
}

/// Most tasks receiving on one socket.
pub const MAX_RECEIVERS: usize = 8;

/// What the receiving tasks of one socket share.
struct Shared {
    socket: ListenSocket,
    resolver: Arc<Service>,
    /// Bounds queries resolved in tasks of their own.
    limit: Arc<Semaphore>,
    /// Their answers, on the way out (each with its permit).
    gathered: Gather<OwnedSemaphorePermit>,
    clients: Arc<ClientPolicy>,
    shutdown: CancellationToken,
}

/// One receiving task: reads datagrams and answers or hands them on, until shutdown.
///
/// Once the socket is readable it takes what is waiting, up to [`super::batch::BATCH`]
/// datagrams per system call, answers those that need no waiting and sends their answers in
/// one system call, until nothing is left. It awaits no future per datagram; tokio's task
/// budget, charged one unit per datagram, still makes it yield now and then, so the tasks
/// resolving misses on the same thread get their turn.
async fn receive(shared: Arc<Shared>) {
    let mut inbox = Inbox::default();
    let mut outbox = Outbox::default();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            ready = shared.socket.readable() => if let Err(e) = ready {
                warn!(error = %e, "UDP socket no longer usable");
                return;
            },
        }
        loop {
            let received = match inbox.receive(&shared.socket) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                Err(e) => {
                    debug!(error = %e, "UDP receive error");
                    1
                }
            };
            for datagram in inbox.datagrams() {
                handle(&shared, datagram, &mut outbox);
            }
            outbox.flush(&shared.socket);
            // The socket's buffer is full: the answers left wait in tasks, like the misses.
            for (answer, peer) in outbox.take() {
                hand_on(&shared, Work::Send(answer), peer);
            }
            for _ in 0..received {
                tokio::task::consume_budget().await;
            }
            if shared.shutdown.is_cancelled() {
                return;
            }
        }
    }
}

/// Answers one datagram (into `outbox`), or hands it to a task of its own.
fn handle(shared: &Arc<Shared>, datagram: Datagram<'_>, outbox: &mut Outbox) {
    let Shared {
        resolver, clients, ..
    } = &**shared;
    let Datagram {
        bytes,
        peer,
        truncated,
    } = datagram;
    match clients.admit_udp(peer.ip(), Instant::now) {
        Admission::Serve => {}
        Admission::Refuse => {
            resolver.metrics().query_denied(Transport::Udp);
            return;
        }
        Admission::Drop => {
            resolver.metrics().rate_limit_drop();
            return;
        }
        Admission::Slip => {
            // Counted as what was done: a message not worth a reply is dropped.
            match clients::slip(bytes) {
                Some(reply) => {
                    resolver.metrics().rate_limit_slip();
                    outbox.push(reply, peer);
                }
                None => resolver.metrics().rate_limit_drop(),
            }
            return;
        }
    }
    if truncated {
        // Longer than any query has reason to be, and no longer whole: FORMERR.
        if let Some(answer) = resolver.oversized(bytes, Transport::Udp) {
            outbox.push(answer, peer);
        }
        return;
    }
    // Most queries (cache hits, local names, malformed ones) are answered right here,
    // without a task of their own; the rest continue in one.
    match resolver.begin(bytes, Transport::Udp) {
        Ok(None) => {}
        Ok(Some(answer)) => outbox.push(answer, peer),
        Err(resume) => hand_on(shared, Work::Resolve(bytes.to_vec(), resume), peer),
    }
}

/// Finishes `work` for `peer` in a task of its own, if fewer than the limit are in flight.
fn hand_on(shared: &Arc<Shared>, work: Work, peer: SocketAddr) {
    let Ok(permit) = shared.limit.clone().try_acquire_owned() else {
        warn!(%peer, "too many queries in flight; dropping UDP query");
        return;
    };
    let shared = shared.clone();
    // Boxed: the task then holds a pointer, not the whole resolving future, which tokio
    // would otherwise copy several times on the way into the task (kilobytes per query).
    tokio::spawn(Box::pin(async move {
        match work {
            Work::Send(answer) => {
                send_waiting(&shared, &answer, peer).await;
                drop(permit);
            }
            Work::Resolve(message, resume) => {
                let answer = (shared.resolver)
                    .resume(&message, Transport::Udp, resume)
                    .await;
                match answer {
                    Some(answer) => send_gathered(&shared, answer, peer, permit).await,
                    None => drop(permit),
                }
            }
        }
    }));
}

/// Sends `answer`, gathered with the others finished about now: one `sendmmsg` for the
/// answers that a single read from an upstream made ready, not one `sendto` each.
async fn send_gathered(
    shared: &Shared,
    answer: Vec<u8>,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let Some(mut turn) = shared.gathered.push(answer, peer, permit) else {
        return; // another task is sending, and will send this one too
    };
    loop {
        // The tasks already woken (by the same upstream read, most often) queue theirs first:
        // this task runs again once the runtime has polled the others that were ready.
        tokio::task::yield_now().await;
        let Some((mut outbox, mut permits)) = turn.take() else {
            return;
        };
        outbox.flush(&shared.socket);
        // The permits of those sent go now; the rest wait for room in the socket's buffer,
        // in order, each keeping its permit until it is sent.
        let waiting = outbox.len();
        permits.drain(..permits.len() - waiting);
        for ((answer, peer), permit) in outbox.take().zip(permits) {
            send_waiting(shared, &answer, peer).await;
            drop(permit);
        }
    }
}

/// Sends `answer`, waiting for room in the socket's buffer if need be.
async fn send_waiting(shared: &Shared, answer: &[u8], peer: SocketAddr) {
    if let Err(e) = shared.socket.send_to(answer, peer).await {
        debug!(%peer, error = %e, "UDP send failed");
    }
}
