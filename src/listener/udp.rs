//! DNS over UDP (RFC 1035 §4.2.1).

use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::clients::{self, Admission, ClientPolicy};
use crate::resolver::Transport;
use crate::service::Service;

/// Largest datagram read; bigger ones are cut by the kernel and then fail to parse.
const MAX_DATAGRAM: usize = 65_535;

/// Serves queries arriving on `socket` until `shutdown` is cancelled, with at most
/// `max_in_flight` queries being resolved at once; datagrams beyond that are dropped,
/// as an overloaded DNS server does (the client retries). Sources outside the access list
/// or over their rate limit get nothing (or, for some over the limit, an empty truncated
/// reply): see [`crate::clients`].
pub async fn serve(
    socket: UdpSocket,
    resolver: Arc<Service>,
    max_in_flight: usize,
    clients: Arc<ClientPolicy>,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let limit = Arc::new(Semaphore::new(max_in_flight));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                Err(e) => {
                    debug!(error = %e, "UDP receive error");
                    continue;
                }
            },
        };
        match clients.admit_udp(peer.ip(), Instant::now()) {
            Admission::Serve => {}
            Admission::Refuse | Admission::Drop => continue,
            Admission::Slip => {
                if let Some(reply) = clients::slip(&buf[..len]) {
                    let _ = socket.try_send_to(&reply, peer);
                }
                continue;
            }
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!(%peer, "too many queries in flight; dropping UDP query");
            continue;
        };
        let message = buf[..len].to_vec();
        let socket = socket.clone();
        let resolver = resolver.clone();
        tokio::spawn(async move {
            if let Some(answer) = resolver.handle(&message, Transport::Udp).await
                && let Err(e) = socket.send_to(&answer, peer).await
            {
                debug!(%peer, error = %e, "UDP send failed");
            }
            drop(permit);
        });
    }
}
