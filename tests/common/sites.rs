//! TLS "web sites" on loopback addresses standing for public servers (127.100.x.y, all on one
//! port), with certificates issued at test time: what the hijack audit connects to when it
//! verifies an address. A site completes the TLS handshake and closes; no HTTP.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::Acceptor;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tokio_rustls::LazyConfigAcceptor;

use super::tls::{cert_path, load_certs, provider};

/// Bound on a client's handshake, and on handshakes in progress per site.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 32;

/// What a site presents on its TLS port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    /// A certificate for the site's names from the test CA (certs/ca.pem), which the audit trusts.
    Valid,
    /// A certificate from the test CA for other names than the ones asked for (a block page, a
    /// sinkhole): the site's `names` are the names on it.
    WrongName,
    /// A certificate for the site's names from certs/untrusted-ca.pem (an intercepting proxy).
    Untrusted,
    /// Nothing listens: connections are refused (a host without HTTPS).
    Closed,
}

/// One site: an address and what answers on the common port there.
#[derive(Clone, Debug)]
pub struct SiteSpec {
    pub ip: IpAddr,
    pub cert: CertKind,
    /// The DNS names on the certificate (unused for Closed).
    pub names: Vec<String>,
}

/// Each ClientHello seen: (site address, SNI).
type Hellos = Arc<Mutex<Vec<(IpAddr, Option<String>)>>>;

/// Running sites; stop when dropped.
pub struct Sites {
    /// The one TLS port every open site listens on (the audit's verify-port).
    pub port: u16,
    hellos: Hellos,
    tasks: Vec<JoinHandle<()>>,
}

/// Ports handed out in this process, so that a site closed in one scenario is not opened by
/// another scenario running at the same time.
static PORTS_IN_USE: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

impl Sites {
    /// Starts every open site of `specs` on one free port; nothing listens on that port at the
    /// addresses of Closed sites (checked).
    pub async fn start(specs: &[SiteSpec]) -> Sites {
        for s in specs {
            assert!(s.ip.is_loopback(), "sites bind loopback only, not {}", s.ip);
        }
        let open: Vec<&SiteSpec> = specs
            .iter()
            .filter(|s| s.cert != CertKind::Closed)
            .collect();
        let (port, listeners) = bind_all(&open).await;
        for closed in specs.iter().filter(|s| s.cert == CertKind::Closed) {
            let addr = SocketAddr::new(closed.ip, port);
            assert!(
                TcpStream::connect(addr).await.is_err(),
                "{addr} should be closed but something listens there"
            );
        }
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let tasks = open
            .iter()
            .zip(listeners)
            .map(|(spec, listener)| {
                let config = server_config(spec.cert, &spec.names);
                tokio::spawn(serve(listener, config, spec.ip, hellos.clone()))
            })
            .collect();
        Sites {
            port,
            hellos,
            tasks,
        }
    }

    /// The ClientHellos seen so far: (site address, SNI).
    pub fn hellos(&self) -> Vec<(IpAddr, Option<String>)> {
        self.hellos.lock().unwrap().clone()
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(ports) = PORTS_IN_USE.lock().unwrap().as_mut() {
            ports.remove(&self.port);
        }
    }
}

/// One port, not used by other Sites of this process, bound at every address of `open`.
async fn bind_all(open: &[&SiteSpec]) -> (u16, Vec<TcpListener>) {
    for _ in 0..50 {
        // An ephemeral port from the kernel, then the same port at every other address.
        let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        if !PORTS_IN_USE
            .lock()
            .unwrap()
            .get_or_insert_default()
            .insert(port)
        {
            continue;
        }
        let mut listeners = Vec::new();
        for spec in open {
            match TcpListener::bind(SocketAddr::new(spec.ip, port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => break,
            }
        }
        if listeners.len() == open.len() {
            return (port, listeners);
        }
        PORTS_IN_USE
            .lock()
            .unwrap()
            .get_or_insert_default()
            .remove(&port);
    }
    panic!("no port free at every site address");
}

async fn serve(listener: TcpListener, config: Arc<ServerConfig>, ip: IpAddr, hellos: Hellos) {
    let mut connections = JoinSet::new();
    while let Ok((tcp, _)) = listener.accept().await {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            continue;
        }
        let config = config.clone();
        let hellos = hellos.clone();
        connections.spawn(async move {
            let handshake = async {
                let start = LazyConfigAcceptor::new(Acceptor::default(), tcp)
                    .await
                    .ok()?;
                let sni = start.client_hello().server_name().map(str::to_string);
                hellos.lock().unwrap().push((ip, sni));
                start.into_stream(config).await.ok()
            };
            // Handshake done: close cleanly (close_notify, then FIN).
            if let Ok(Some(mut tls)) = timeout(HANDSHAKE_TIMEOUT, handshake).await {
                let _ = tls.shutdown().await;
            }
        });
    }
}

/// Which CA signs a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ca {
    /// certs/ca.pem, "dnsward test CA": trusted by the tests and the audit.
    Test,
    /// certs/untrusted-ca.pem, "dnsward untrusted test CA": trusted by nothing.
    Untrusted,
}

/// A leaf certificate for `names` signed by `ca` (chain: leaf, CA) and its private key.
pub fn issue_leaf(
    names: &[String],
    ca: Ca,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    assert!(!names.is_empty(), "a certificate needs at least one name");
    let (ca_cert, ca_key, ca_name) = match ca {
        Ca::Test => ("ca.pem", "ca.key", "dnsward test CA"),
        Ca::Untrusted => (
            "untrusted-ca.pem",
            "untrusted-ca.key",
            "dnsward untrusted test CA",
        ),
    };
    let key_pem = std::fs::read_to_string(cert_path(ca_key)).expect("read CA key");
    let mut ca_params = CertificateParams::default();
    // Must equal the subject of the checked-in CA certificate byte for byte (a UTF8String CN).
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = Issuer::new(
        ca_params,
        KeyPair::from_pem(&key_pem).expect("parse CA key"),
    );

    let mut params = CertificateParams::new(names.to_vec()).expect("certificate names");
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("generate key");
    let leaf = params.signed_by(&key, &issuer).expect("sign leaf");

    let mut chain = vec![leaf.der().clone()];
    chain.extend(load_certs(ca_cert));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (chain, key)
}

fn server_config(kind: CertKind, names: &[String]) -> Arc<ServerConfig> {
    let ca = match kind {
        CertKind::Untrusted => Ca::Untrusted,
        _ => Ca::Test,
    };
    let (chain, key) = issue_leaf(names, ca);
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server cert");
    Arc::new(cfg)
}
