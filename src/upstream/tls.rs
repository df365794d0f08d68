//! TLS client configuration (rustls with the ring provider) and connection set-up.
//!
//! Certificates are validated against webpki-roots plus any CA files the user adds. A
//! certificate that does not validate for the upstream's name fails the handshake; there is
//! no fallback of any kind.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::UpstreamError;

/// Why the TLS configuration could not be built.
#[derive(Debug, Error)]
pub enum TlsSetupError {
    /// A CA file could not be read or holds no usable certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The upstream host is not a valid TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// The two client configurations dnsward needs; they differ only in ALPN.
#[derive(Clone)]
pub struct TlsConfigs {
    /// For DoH: ALPN `h2` (RFC 8484 §5.2 recommends HTTP/2).
    pub doh: Arc<ClientConfig>,
    /// For DoT: no ALPN (RFC 7858 defines none; servers ignore it).
    pub dot: Arc<ClientConfig>,
}

impl TlsConfigs {
    /// Trusts webpki-roots plus every certificate in `ca_files`.
    pub fn new(ca_files: &[PathBuf]) -> Result<TlsConfigs, TlsSetupError> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for path in ca_files {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| TlsSetupError::CaFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let base = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut doh = base.clone();
        doh.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsConfigs {
            doh: Arc::new(doh),
            dot: Arc::new(base),
        })
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bad = |reason: String| TlsSetupError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The TLS server name for an upstream host (a DNS name or an IP literal).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsSetupError::ServerName(host.into()))
}

/// Connects to the first address that accepts and completes a TLS handshake, within `limit`
/// overall. Each address gets an equal share of the time left, so one that stalls cannot use
/// up the budget of those after it; a TLS failure on one address moves on to the next too.
pub async fn connect(
    addrs: &[SocketAddr],
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    limit: Duration,
) -> Result<TlsStream<TcpStream>, UpstreamError> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    for (i, &addr) in addrs.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let share = left / (addrs.len() - i) as u32;
        match timeout(share, handshake(addr, config.clone(), server_name.clone())).await {
            Ok(Ok(tls)) => return Ok(tls),
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(UpstreamError::Timeout),
        }
    }
    Err(last.unwrap_or(UpstreamError::Connect {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source: io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to connect to"),
    }))
}

async fn handshake(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
) -> Result<TlsStream<TcpStream>, UpstreamError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    // Queries are small and latency-bound.
    let _ = tcp.set_nodelay(true);
    TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|source| UpstreamError::Tls { addr, source })
}
