//! SPKI pinning: `pin-sha256` per upstream, in the format of HPKP (RFC 7469 §2.4), failing
//! closed.
//!
//! A pinned upstream must first pass the usual certificate validation (a chain to a trusted
//! root, the right name, validity dates, serverAuth). On top of that, some certificate of a
//! *validated* chain (the end-entity certificate, an intermediate, or the trust anchor) must
//! have a public key whose SHA-256 is one of the pins (RFC 7469 §2.6 checks pins against the
//! validated chain too). Certificates the server merely sends along do not count: any server
//! holding some valid certificate for the name could append the pinned CA's (public)
//! certificate to its chain. A mismatch fails the TLS handshake, so no query is ever sent over
//! an unpinned connection.

use std::fmt;
use std::sync::Arc;

use data_encoding::BASE64;
use ring::digest::{SHA256, digest};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use thiserror::Error;
use webpki::{EndEntityCert, KeyUsage, VerifiedPath};

/// The prefix HPKP headers put before the base64 digest; accepted and ignored.
const HPKP_PREFIX: &str = "sha256/";

/// Why a `pin-sha256` string is not acceptable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PinError {
    /// Not standard base64 (RFC 4648 §4 alphabet, with `=` padding).
    #[error("pin-sha256 {0:?} is not base64 (standard alphabet with '=' padding)")]
    Base64(String),
    /// Valid base64, but not of a SHA-256 digest.
    #[error("pin-sha256 {pin:?} decodes to {len} bytes; a SHA-256 digest has 32")]
    Length {
        /// The pin as given.
        pin: String,
        /// How many bytes it decodes to.
        len: usize,
    },
}

/// Parses a `pin-sha256`: the standard base64 (with padding) of the SHA-256 of a DER
/// SubjectPublicKeyInfo, as printed by
/// `openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der |
/// openssl dgst -sha256 -binary | openssl enc -base64`. An HPKP-style `sha256/` prefix and
/// surrounding white space are accepted.
pub fn parse_pin(s: &str) -> Result<[u8; 32], PinError> {
    let trimmed = s.trim();
    let b64 = trimmed.strip_prefix(HPKP_PREFIX).unwrap_or(trimmed);
    let bytes = BASE64
        .decode(b64.as_bytes())
        .map_err(|_| PinError::Base64(s.to_string()))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| PinError::Length {
        pin: s.to_string(),
        len: bytes.len(),
    })
}

/// A pin as [`parse_pin`] reads it (standard base64 with padding, no prefix), for messages.
pub fn format_pin(pin: &[u8; 32]) -> String {
    BASE64.encode(pin)
}

/// The SHA-256 of the DER SubjectPublicKeyInfo of `cert` (its `pin-sha256`), or `None` if
/// `cert` cannot be parsed as an X.509 certificate.
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let cert = EndEntityCert::try_from(cert).ok()?;
    Some(sha256(cert.subject_public_key_info().as_ref()))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    digest(&SHA256, data)
        .as_ref()
        .try_into()
        .expect("SHA-256 digests are 32 bytes")
}

/// Whether a key of `path` (end entity, intermediates or trust anchor) is one of `pins`.
fn path_is_pinned(path: &VerifiedPath<'_>, pins: &[[u8; 32]]) -> bool {
    let end_entity = path.end_entity().subject_public_key_info();
    let intermediates = path
        .intermediate_certificates()
        .map(|c| c.subject_public_key_info());
    let anchor = webpki::spki_for_anchor(path.anchor());
    std::iter::once(end_entity)
        .chain(intermediates)
        .chain(std::iter::once(anchor))
        .any(|spki| pins.contains(&sha256(spki.as_ref())))
}

/// A certificate verifier that runs the normal WebPKI verification and then requires a
/// validated chain through one of the pinned public keys.
pub struct PinnedVerifier {
    /// The normal verification (chain, name, validity, EKU); pinning only narrows it.
    inner: Arc<WebPkiServerVerifier>,
    /// The same trust anchors as `inner`, to find the validated chain the pins apply to.
    roots: Arc<RootCertStore>,
    /// The ring provider's signature algorithms, for building that chain as `inner` does.
    algorithms: WebPkiSupportedAlgorithms,
    /// SHA-256 digests of acceptable SubjectPublicKeyInfos; never empty.
    pins: Vec<[u8; 32]>,
}

impl PinnedVerifier {
    /// A verifier accepting only chains that `inner` accepts and that contain one of `pins`;
    /// `roots` and `algorithms` must be those `inner` was built from. With no pins at all
    /// nothing is accepted (fail closed): unpinned upstreams use `inner` directly instead.
    pub fn new(
        inner: Arc<WebPkiServerVerifier>,
        roots: Arc<RootCertStore>,
        algorithms: WebPkiSupportedAlgorithms,
        pins: Vec<[u8; 32]>,
    ) -> PinnedVerifier {
        PinnedVerifier {
            inner,
            roots,
            algorithms,
            pins,
        }
    }

    /// Whether some validated chain from `end_entity` through `intermediates` passes a pinned
    /// key. Path building tries every candidate chain (cross-signed roots included) until
    /// one contains a pin.
    fn is_pinned(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> bool {
        let Ok(cert) = EndEntityCert::try_from(end_entity) else {
            return false;
        };
        if self
            .pins
            .contains(&sha256(cert.subject_public_key_info().as_ref()))
        {
            return true;
        }
        let pinned = |path: &VerifiedPath<'_>| {
            if path_is_pinned(path, &self.pins) {
                Ok(())
            } else {
                // Not fatal: path building goes on with other candidate chains.
                Err(webpki::Error::UnknownIssuer)
            }
        };
        cert.verify_for_usage(
            self.algorithms.all,
            &self.roots.roots,
            intermediates,
            now,
            KeyUsage::server_auth(),
            None,
            Some(&pinned),
        )
        .is_ok()
    }
}

impl fmt::Debug for PinnedVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pins: Vec<String> = self.pins.iter().map(format_pin).collect();
        f.debug_struct("PinnedVerifier")
            .field("pins", &pins)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if self.is_pinned(end_entity, intermediates, now) {
            return Ok(verified);
        }
        let presented = spki_sha256(end_entity)
            .map(|p| format!("; the server's own key is pin-sha256 {:?}", format_pin(&p)))
            .unwrap_or_default();
        Err(rustls::Error::General(format!(
            "certificate public key does not match any pin-sha256 of this upstream \
             (neither the server's key nor a CA key of its validated chain){presented}"
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use std::path::PathBuf;
    use std::process::Command;

    fn cert_path(file: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("certs")
            .join(file)
    }

    fn certs(file: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(cert_path(file))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The pin of a PEM certificate file as the openssl pipeline in [`parse_pin`]'s docs
    /// prints it.
    fn openssl_pin(file: &str) -> String {
        let pipeline = "openssl x509 -in \"$1\" -pubkey -noout \
            | openssl pkey -pubin -outform der \
            | openssl dgst -sha256 -binary \
            | openssl enc -base64";
        let out = Command::new("sh")
            .args(["-c", pipeline, "sh"])
            .arg(cert_path(file))
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn pin_of(file: &str) -> [u8; 32] {
        spki_sha256(&certs(file)[0]).unwrap()
    }

    #[test]
    fn spki_sha256_matches_the_openssl_pipeline() {
        for file in ["server.pem", "ca.pem"] {
            let want = parse_pin(&openssl_pin(file)).unwrap();
            assert_eq!(pin_of(file), want, "{file}");
        }
        assert_ne!(pin_of("server.pem"), pin_of("ca.pem"));
        assert_eq!(
            spki_sha256(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])),
            None
        );
    }

    #[test]
    fn trust_anchor_spki_hashes_like_the_certificate() {
        let ca = &certs("ca.pem")[0];
        let anchor = webpki::anchor_from_trusted_cert(ca).unwrap();
        let spki = webpki::spki_for_anchor(&anchor);
        assert_eq!(sha256(spki.as_ref()), pin_of("ca.pem"));
    }

    #[test]
    fn parses_good_pins() {
        let pin = pin_of("server.pem");
        let b64 = format_pin(&pin);
        assert_eq!(b64.len(), 44);
        assert!(b64.ends_with('='));
        assert_eq!(parse_pin(&b64), Ok(pin));
        assert_eq!(parse_pin(&format!("sha256/{b64}")), Ok(pin));
        assert_eq!(parse_pin(&format!(" {b64}\n")), Ok(pin));
        // RFC 7469 §2.1.1's example pin.
        assert!(parse_pin("d6qzRu9zOECb90Uez27xWltNsj0e1Md7GkYYkVoZWmM=").is_ok());
    }

    #[test]
    fn rejects_bad_pins() {
        let b64 = format_pin(&pin_of("server.pem"));
        let unpadded = b64.trim_end_matches('=');
        assert!(matches!(parse_pin(unpadded), Err(PinError::Base64(_))));
        let url_safe = b64.replace('+', "-").replace('/', "_");
        if url_safe != b64 {
            assert!(matches!(parse_pin(&url_safe), Err(PinError::Base64(_))));
        }
        assert!(matches!(parse_pin("not a pin"), Err(PinError::Base64(_))));
        assert!(matches!(
            parse_pin(""),
            Err(PinError::Length { len: 0, .. })
        ));
        assert!(matches!(parse_pin("sha1/"), Err(PinError::Base64(_))));
        // A SHA-1 digest (20 bytes) and a SHA-512 digest (64 bytes) are not SHA-256 pins.
        let sha1 = BASE64.encode(&[7; 20]);
        assert_eq!(
            parse_pin(&sha1),
            Err(PinError::Length {
                pin: sha1.clone(),
                len: 20
            })
        );
        assert!(matches!(
            parse_pin(&BASE64.encode(&[7; 64])),
            Err(PinError::Length { len: 64, .. })
        ));
    }

    fn roots(files: &[&str]) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for file in files {
            for cert in certs(file) {
                roots.add(cert).unwrap();
            }
        }
        Arc::new(roots)
    }

    fn verifier(roots: Arc<RootCertStore>, pins: Vec<[u8; 32]>) -> PinnedVerifier {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .unwrap();
        PinnedVerifier::new(
            inner,
            roots,
            provider.signature_verification_algorithms,
            pins,
        )
    }

    /// Runs `verifier` on the chain in `file` for the name `localhost`.
    fn verify(verifier: &PinnedVerifier, file: &str) -> Result<(), rustls::Error> {
        verify_chain(verifier, &certs(file))
    }

    fn verify_chain(
        verifier: &PinnedVerifier,
        chain: &[CertificateDer<'static>],
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from("localhost").unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn accepts_a_leaf_or_ca_pin_and_rejects_others() {
        let roots = roots(&["ca.pem"]);
        let leaf = pin_of("server.pem");
        let ca = pin_of("ca.pem");
        let other = pin_of("untrusted-ca.pem");
        for chain in ["server.pem", "server-chain.pem"] {
            assert!(verify(&verifier(roots.clone(), vec![leaf]), chain).is_ok());
            // The CA is the trust anchor: pinned whether or not the server sends it.
            assert!(verify(&verifier(roots.clone(), vec![other, ca]), chain).is_ok());
            let err = verify(&verifier(roots.clone(), vec![other]), chain).unwrap_err();
            assert!(
                err.to_string().contains("does not match any pin-sha256"),
                "{err}"
            );
            assert!(verify(&verifier(roots.clone(), vec![]), chain).is_err());
        }
    }

    #[test]
    fn a_pin_never_overrides_normal_validation() {
        let roots = roots(&["ca.pem"]);
        let pins = vec![
            pin_of("wrong-name.pem"),
            pin_of("untrusted.pem"),
            pin_of("ca.pem"),
        ];
        let v = verifier(roots, pins);
        assert!(verify(&v, "wrong-name.pem").is_err());
        assert!(verify(&v, "untrusted.pem").is_err());
    }

    #[test]
    fn a_pinned_ca_merely_sent_along_does_not_count() {
        // Both CAs trusted; the leaf chains to the untrusted-ca one. Sending ca.pem as well
        // must not satisfy a pin on ca.pem's key: it is not part of the validated chain.
        let roots = roots(&["ca.pem", "untrusted-ca.pem"]);
        let mut chain = certs("untrusted.pem");
        chain.extend(certs("ca.pem"));
        assert!(verify_chain(&verifier(roots.clone(), vec![pin_of("ca.pem")]), &chain).is_err());
        let untrusted_ca = pin_of("untrusted-ca.pem");
        assert!(verify_chain(&verifier(roots, vec![untrusted_ca]), &chain).is_ok());
    }
}
