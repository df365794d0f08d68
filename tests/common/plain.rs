//! A plain-DNS (UDP) server on loopback answering from a [`Zone`]: stands in for bootstrap
//! resolvers.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::zone::Zone;

/// A UDP DNS server; stops when dropped.
pub struct PlainDns {
    /// Where it listens.
    pub addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl PlainDns {
    /// Starts answering on 127.0.0.1:0.
    pub async fn start(zone: Zone) -> PlainDns {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let counter = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                counter.fetch_add(1, Ordering::SeqCst);
                let answer = zone.answer_wire(&buf[..n]);
                let _ = socket.send_to(&answer, peer).await;
            }
        });
        PlainDns {
            addr,
            queries,
            task,
        }
    }

    /// Queries received so far.
    pub fn query_count(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for PlainDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}
