//! TLS client configuration (rustls with the ring provider) and connection set-up.
//!
//! Certificates are validated against webpki-roots plus any CA files the user adds. A
//! certificate that does not validate for the upstream's name fails the handshake; there is
//! no fallback of any kind. Upstreams with `pin-sha256`s get their own configuration whose
//! verifier also requires a pinned key (see [`super::pin`]).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::UpstreamError;
use super::pin::PinnedVerifier;

/// ALPN for DoH: `h2` (RFC 8484 §5.2 recommends HTTP/2).
pub const DOH_ALPN: &[&[u8]] = &[b"h2"];
/// ALPN for DoT: none (RFC 7858 defines none; servers ignore it).
pub const DOT_ALPN: &[&[u8]] = &[];

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
    /// The certificate verifier could not be built (e.g. no trust anchor at all).
    #[error("certificate verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// The client configurations of unpinned upstreams, which differ only in ALPN, and what
/// pinned upstreams' configurations are made from.
#[derive(Clone)]
pub struct TlsConfigs {
    /// For DoH: ALPN `h2` ([`DOH_ALPN`]).
    pub doh: Arc<ClientConfig>,
    /// For DoT: no ALPN ([`DOT_ALPN`]).
    pub dot: Arc<ClientConfig>,
    /// The trusted roots (webpki-roots plus CA files), shared by every configuration.
    roots: Arc<RootCertStore>,
    /// The ring provider (never aws-lc-rs), shared by every configuration.
    provider: Arc<CryptoProvider>,
    /// The normal verifier over `roots`; pinned verifiers run it first.
    webpki: Arc<WebPkiServerVerifier>,
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
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let base = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let mut doh = base.clone();
        doh.alpn_protocols = alpn(DOH_ALPN);
        Ok(TlsConfigs {
            doh: Arc::new(doh),
            dot: Arc::new(base),
            roots,
            provider,
            webpki,
        })
    }

    /// A configuration offering `alpn` that accepts only certificates that validate as usual
    /// *and* have one of `pins` (SHA-256 of a SubjectPublicKeyInfo) in their validated chain.
    /// Empty `pins` accept nothing. Each call makes a new configuration with its own session
    /// cache, so a session resumed under it was always established under these pins.
    pub fn pinned(
        &self,
        pins: &[[u8; 32]],
        alpn_protocols: &[&[u8]],
    ) -> Result<Arc<ClientConfig>, TlsSetupError> {
        let verifier = PinnedVerifier::new(
            self.webpki.clone(),
            self.roots.clone(),
            self.provider.signature_verification_algorithms,
            pins.to_vec(),
        );
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = alpn(alpn_protocols);
        Ok(Arc::new(config))
    }
}

fn alpn(protocols: &[&[u8]]) -> Vec<Vec<u8>> {
    protocols.iter().map(|p| p.to_vec()).collect()
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

/// The identity of the server on the current connection: its address and the SHA-256 of its
/// certificate's SubjectPublicKeyInfo (the value `pin-sha256` takes). Reported in the hijack
/// log and the audit, so a finding says which server answered.
#[derive(Debug, Default)]
pub struct PeerIdentity {
    /// Set after each successful handshake.
    current: std::sync::Mutex<Option<(SocketAddr, [u8; 32])>>,
}

impl PeerIdentity {
    /// Records the server of a freshly established `stream`.
    pub fn record(&self, stream: &TlsStream<TcpStream>) {
        let (tcp, session) = stream.get_ref();
        let spki = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(super::pin::spki_sha256);
        if let (Ok(addr), Some(spki)) = (tcp.peer_addr(), spki) {
            *self.current.lock().expect("not poisoned") = Some((addr, spki));
        }
    }

    /// The last server seen: its address and SPKI hash.
    pub fn get(&self) -> Option<(SocketAddr, [u8; 32])> {
        *self.current.lock().expect("not poisoned")
    }
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
