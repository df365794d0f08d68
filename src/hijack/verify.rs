//! Does an address really serve a name? A TLS handshake on port 443 with the name as SNI,
//! validated against the same roots as the upstreams (webpki-roots plus CA files): a CDN edge
//! or GeoDNS answer presents a valid certificate for the name; a block page or an attacker's
//! server cannot.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

/// The outcome of one verification handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsCheck {
    /// The certificate validates for the name.
    Valid,
    /// A certificate from a trusted CA, but for other names.
    WrongName,
    /// A certificate no trusted CA issued (self-signed, unknown issuer).
    Untrusted,
    /// A handshake happened but the certificate failed otherwise (expired, bad signature...).
    Invalid,
    /// No TLS handshake at all: connection refused, timed out, reset, or not TLS.
    NoHandshake,
}

impl TlsCheck {
    /// Whether the handshake got far enough to see a certificate that is wrong for the name.
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            TlsCheck::WrongName | TlsCheck::Untrusted | TlsCheck::Invalid
        )
    }

    /// The kebab-case name used in reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            TlsCheck::Valid => "valid",
            TlsCheck::WrongName => "wrong-name",
            TlsCheck::Untrusted => "untrusted",
            TlsCheck::Invalid => "invalid",
            TlsCheck::NoHandshake => "no-handshake",
        }
    }
}

/// How many outcomes are remembered, and for how long.
const REMEMBERED: u64 = 4096;
const REMEMBER_FOR: Duration = Duration::from_secs(600);

/// Runs verification handshakes and remembers their outcome per (address, name).
pub struct Verifier {
    /// Validates like the upstreams do (no ALPN offered, so any HTTPS server completes).
    config: Arc<ClientConfig>,
    /// The TLS port to try (443; tests use a free port).
    port: u16,
    /// For the TCP connection and the handshake together.
    timeout: Duration,
    /// Recent outcomes, so one (address, name) gets one handshake for a while; bounded, since
    /// the proxy runs for months and the names come from clients.
    seen: moka::sync::Cache<(IpAddr, String), TlsCheck>,
}

impl Verifier {
    /// A verifier using `config`'s roots, on `port`, giving up after `timeout`.
    pub fn new(config: Arc<ClientConfig>, port: u16, timeout: Duration) -> Verifier {
        Verifier {
            config,
            port,
            timeout,
            seen: moka::sync::Cache::builder()
                .max_capacity(REMEMBERED)
                .time_to_live(REMEMBER_FOR)
                .build(),
        }
    }

    /// Whether `addr` presents a valid certificate for `name`.
    pub async fn check(&self, addr: IpAddr, name: &str) -> TlsCheck {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let key = (addr, name.clone());
        if let Some(known) = self.seen.get(&key) {
            return known;
        }
        let outcome = match timeout(self.timeout, self.handshake(addr, &name)).await {
            Ok(outcome) => outcome,
            Err(_) => TlsCheck::NoHandshake,
        };
        self.seen.insert(key, outcome.clone());
        outcome
    }

    async fn handshake(&self, addr: IpAddr, name: &str) -> TlsCheck {
        let Ok(server_name) = ServerName::try_from(name.to_string()) else {
            return TlsCheck::Invalid;
        };
        let Ok(tcp) = TcpStream::connect(SocketAddr::new(addr, self.port)).await else {
            return TlsCheck::NoHandshake;
        };
        match TlsConnector::from(self.config.clone())
            .connect(server_name, tcp)
            .await
        {
            Ok(_) => TlsCheck::Valid,
            Err(e) => match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(cert)) => match cert {
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. } => TlsCheck::WrongName,
                    CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                        TlsCheck::Untrusted
                    }
                    _ => TlsCheck::Invalid,
                },
                // Alerts, protocol errors, resets: nothing was shown that we could judge.
                _ => TlsCheck::NoHandshake,
            },
        }
    }
}
