//! A TCP relay on loopback that can "freeze": connections open at that moment stop carrying
//! bytes in either direction but stay open, as when a NAT forgets a flow or a laptop resumes
//! on another network. Connections opened afterwards work normally.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The relay; everything stops when it is dropped.
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Bumped by `freeze`; connections from an older generation go silent.
    generation: Arc<AtomicU64>,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    tasks: JoinSet<()>,
}

impl Relay {
    /// Relays 127.0.0.1:0 to `target` (which must be loopback).
    pub async fn start(target: SocketAddr) -> Relay {
        assert!(target.ip().is_loopback(), "relay targets loopback only");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind relay");
        let addr = listener.local_addr().unwrap();
        let generation = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        let (g, c) = (generation.clone(), connections.clone());
        tasks.spawn(async move {
            let mut pumps = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let born = g.load(Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                pumps.spawn(pump(cr, sw, g.clone(), born));
                pumps.spawn(pump(sr, cw, g.clone(), born));
            }
        });
        Relay {
            addr,
            generation,
            connections,
            tasks,
        }
    }

    /// Silences every connection open now; later connections are unaffected.
    pub fn freeze(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The URL of `upstream_url` rewritten to go through this relay (same scheme and name).
    pub fn url_for(&self, upstream_url: &str) -> String {
        let (scheme, rest) = upstream_url.split_once("://").expect("URL");
        let after_port = rest.split_once(':').expect("port").1;
        let tail = after_port.trim_start_matches(|c: char| c.is_ascii_digit());
        format!("{scheme}://localhost:{}{tail}", self.addr.port())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Copies bytes until EOF, or forever holds the sockets silently once frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    generation: Arc<AtomicU64>,
    born: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if generation.load(Ordering::SeqCst) != born {
            // Frozen: keep both sockets open and say nothing, ever.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
