//! Plaintext DNS listeners: UDP ([`udp`]) and TCP ([`tcp`]) on the same addresses.

pub mod batch;
pub mod socket;
pub mod tcp;
pub mod udp;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use socket::ListenSocket;

/// Why a listening socket could not be opened.
#[derive(Debug, Error)]
pub enum BindError {
    /// Ports below 1024 need privilege.
    #[error(
        "cannot listen on {addr}: permission denied. Ports below 1024 need privilege: run as root, \
         grant the capability (sudo setcap cap_net_bind_service=+ep $(command -v dnsward)), \
         or choose another port with --listen 127.0.0.1:5353"
    )]
    Privileged {
        /// The address.
        addr: SocketAddr,
    },
    /// Anything else (address in use, address not on this machine, ...).
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Other {
        /// The address.
        addr: SocketAddr,
        /// "UDP" or "TCP".
        proto: &'static str,
        /// The socket error.
        source: io::Error,
    },
}

impl BindError {
    fn new(addr: SocketAddr, proto: &'static str, source: io::Error) -> BindError {
        if source.kind() == io::ErrorKind::PermissionDenied {
            BindError::Privileged { addr }
        } else {
            BindError::Other {
                addr,
                proto,
                source,
            }
        }
    }

    /// True if the address does not exist on this machine (e.g. ::1 with IPv6 disabled).
    pub fn is_address_unavailable(&self) -> bool {
        matches!(self, BindError::Other { source, .. } if source.kind() == io::ErrorKind::AddrNotAvailable)
    }
}

/// The sockets dnsward serves on: one UDP socket and one TCP listener per address.
#[derive(Debug, Default)]
pub struct Sockets {
    /// UDP sockets.
    pub udp: Vec<ListenSocket>,
    /// TCP listeners.
    pub tcp: Vec<TcpListener>,
}

impl Sockets {
    /// Binds UDP and TCP on every address. Port 0 picks one free port for both protocols.
    pub async fn bind(addrs: &[SocketAddr]) -> Result<Sockets, BindError> {
        let mut sockets = Sockets::default();
        for &addr in addrs {
            let (udp, tcp) = bind_pair(addr).await?;
            sockets.udp.push(udp);
            sockets.tcp.push(tcp);
        }
        Ok(sockets)
    }

    /// Local addresses of the UDP sockets (the TCP listeners share them).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }
}

/// The next connection on `listener`, or `None` once `shutdown` is cancelled. A failed
/// accept (typically EMFILE: out of file descriptors) is logged with `what` and retried after
/// a short pause rather than in a spin.
pub async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    warn!(error = %e, "{what}: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn bind_pair(addr: SocketAddr) -> Result<(ListenSocket, TcpListener), BindError> {
    // With port 0, the UDP port the kernel picks may be taken for TCP; try a few times.
    for _ in 0..16 {
        let udp = ListenSocket::bind(addr).map_err(|e| BindError::new(addr, "UDP", e))?;
        let actual = udp
            .local_addr()
            .map_err(|e| BindError::new(addr, "UDP", e))?;
        match TcpListener::bind(actual).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(BindError::new(addr, "TCP", e)),
        }
    }
    Err(BindError::new(addr, "TCP", io::ErrorKind::AddrInUse.into()))
}
