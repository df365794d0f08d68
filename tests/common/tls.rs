//! rustls configs for the fakes and for test clients (ring provider only, never aws-lc-rs).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Path into the checked-in certs/ folder.
pub fn cert_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(file)
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// All certificates of a PEM file under certs/.
pub fn load_certs(file: &str) -> Vec<CertificateDer<'static>> {
    let path = cert_path(file);
    let certs: Vec<_> = CertificateDer::pem_file_iter(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    assert!(!certs.is_empty(), "no certificate in {}", path.display());
    certs
}

/// The private key of a PEM file under certs/.
pub fn load_key(file: &str) -> PrivateKeyDer<'static> {
    let path = cert_path(file);
    PrivateKeyDer::from_pem_file(&path).unwrap_or_else(|e| panic!("key {}: {e}", path.display()))
}

/// A server config presenting `cert_file` (chain) with `key_file`, offering `alpn`.
pub fn server_config(cert_file: &str, key_file: &str, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(load_certs(cert_file), load_key(key_file))
        .expect("server cert");
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// Root store holding only certs/ca.pem (the test CA).
pub fn test_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for c in load_certs("ca.pem") {
        roots.add(c).expect("add test CA");
    }
    roots
}

/// A client config trusting only certs/ca.pem, offering `alpn` (e.g. `&[b"h2"]`, `&[b"dot"]`, `&[]`).
pub fn client_config(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(test_roots())
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}
