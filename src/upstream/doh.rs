//! DNS-over-HTTPS (RFC 8484) over one long-lived, multiplexed HTTP/2 connection.
//!
//! Queries are sent with GET, base64url in the `dns` parameter, with message ID 0 (RFC 8484
//! §4.1, which keeps answers cacheable by HTTP caches). GET rather than POST: a request
//! without a body is one HEADERS frame, where hyper sends a POST's body from a task of its own
//! (one more task per query). The queries sent are rebuilt by dnsward (question, OPT, padding),
//! so they stay a few hundred bytes and their URLs short. HTTP/2 PINGs keep the connection honest: one that
//! stops answering pings is closed by hyper and replaced on the next query.

use std::sync::Arc;

use bytes::Bytes;
use data_encoding::BASE64URL_NOPAD;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tracing::debug;

use super::bootstrap::Endpoint;
use super::slot::Slot;
use super::tls::{self, PeerIdentity};
use super::{ConnectOptions, UpstreamError, UpstreamSpec};
use crate::dns::query::padded;

/// The DoH media type (RFC 8484 §6).
const DNS_MESSAGE: &str = "application/dns-message";
/// A DNS message never exceeds 65535 bytes.
const MAX_ANSWER: usize = 65_535;

/// A DoH client for one upstream.
pub struct DohClient {
    /// Absolute request URI (`https://host:port/path`), for logs.
    uri: Uri,
    /// `:authority` of every request.
    authority: Authority,
    /// The path and any query of the URL, followed by `?` or `&`: a request's path and query
    /// is this and `dns=` with the query in base64url.
    path_prefix: String,
    /// Where to connect.
    endpoint: Arc<Endpoint>,
    /// TLS settings with ALPN h2.
    tls: Arc<ClientConfig>,
    /// Name the certificate must match.
    server_name: ServerName<'static>,
    /// Timeouts.
    options: ConnectOptions,
    /// The current connection's request handle (cheap to clone; all clones share the connection).
    conn: Slot<SendRequest<Full<Bytes>>>,
    /// Who is on the other end of the current connection.
    identity: Arc<PeerIdentity>,
}

impl DohClient {
    /// A client for `spec`; it connects on first use.
    pub fn new(
        spec: &UpstreamSpec,
        endpoint: Endpoint,
        tls: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        options: ConnectOptions,
        identity: Arc<PeerIdentity>,
    ) -> DohClient {
        let host = if spec.host.contains(':') {
            format!("[{}]", spec.host)
        } else {
            spec.host.clone()
        };
        let uri = format!("https://{host}:{}{}", spec.port, spec.path)
            .parse()
            .unwrap_or_else(|_| Uri::from_static("https://invalid/"));
        let authority = uri
            .authority()
            .cloned()
            .unwrap_or_else(|| Authority::from_static("invalid"));
        let separator = if spec.path.contains('?') { '&' } else { '?' };
        DohClient {
            uri,
            authority,
            path_prefix: format!("{}{separator}dns=", spec.path),
            endpoint: Arc::new(endpoint),
            tls,
            server_name,
            options,
            conn: Slot::new(|s| !s.is_closed()),
            identity,
        }
    }

    /// Sends one query, retrying once on a fresh connection if a reused one turned out stale.
    pub async fn exchange(&self, query: &[u8]) -> Result<Bytes, UpstreamError> {
        let path = request_path(&self.path_prefix, &padded(query))?;
        let (sender, fresh) = self.sender().await?;
        match self.get(sender.clone(), path.clone()).await {
            // A reused connection that failed under us (closed by the server, or found dead
            // by PING): one more try on a fresh one.
            Err(e) if !fresh && (e.is_stale_connection() || sender.is_closed()) => {
                debug!(uri = %self.uri, error = %e, "DoH connection went stale; reconnecting");
                self.conn.forget();
                let (sender, _) = self.sender().await?;
                self.get(sender, path).await
            }
            other => other,
        }
    }

    async fn get(
        &self,
        mut sender: SendRequest<Full<Bytes>>,
        path: PathAndQuery,
    ) -> Result<Bytes, UpstreamError> {
        sender.ready().await?;
        let uri = Uri::builder()
            .scheme(Scheme::HTTPS)
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| UpstreamError::TooLarge)?;
        let request = Request::get(uri)
            .header(ACCEPT, HeaderValue::from_static(DNS_MESSAGE))
            .body(Full::new(Bytes::new()))
            .expect("static request parts are valid");
        let response = sender.send_request(request).await?;
        read_response(response).await
    }

    /// Drops the connection and any looked-up addresses (after a network change).
    pub fn reset(&self) {
        self.conn.forget();
        self.endpoint.forget();
    }

    /// The live connection, or a new one; the flag says whether it was just opened.
    async fn sender(&self) -> Result<(SendRequest<Full<Bytes>>, bool), UpstreamError> {
        // The usual case, without cloning what a new connection would need.
        if let Some(sender) = self.conn.current() {
            return Ok((sender, false));
        }
        let (uri, endpoint) = (self.uri.clone(), self.endpoint.clone());
        let (tls, server_name, options) = (
            self.tls.clone(),
            self.server_name.clone(),
            self.options.clone(),
        );
        let identity = self.identity.clone();
        self.conn
            .get_or_connect(move || connect(uri, endpoint, tls, server_name, options, identity))
            .await
    }
}

/// The path and query of the GET request for `query` (RFC 8484 §4.1: the message in base64url
/// without padding, after `prefix`, which ends in `dns=`).
fn request_path(prefix: &str, query: &[u8]) -> Result<PathAndQuery, UpstreamError> {
    let mut path = String::with_capacity(prefix.len() + query.len().div_ceil(3) * 4);
    path.push_str(prefix);
    BASE64URL_NOPAD.encode_append(query, &mut path);
    PathAndQuery::from_maybe_shared(Bytes::from(path)).map_err(|_| UpstreamError::TooLarge)
}

/// Opens a TLS connection with ALPN h2 and performs the HTTP/2 handshake; a task drives it.
async fn connect(
    uri: Uri,
    endpoint: Arc<Endpoint>,
    tls: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    options: ConnectOptions,
    identity: Arc<PeerIdentity>,
) -> Result<SendRequest<Full<Bytes>>, UpstreamError> {
    let limit = options.connect_timeout;
    let started = tokio::time::Instant::now();
    let addrs = endpoint.addrs().await?;
    let left = limit.saturating_sub(started.elapsed());
    let stream = tls::connect(&addrs, tls, server_name, left).await?;
    identity.record(&stream);
    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(UpstreamError::NoHttp2);
    }
    let left = limit.saturating_sub(started.elapsed());
    let handshake = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(options.keepalive_interval)
        .keep_alive_timeout(options.keepalive_interval)
        .keep_alive_while_idle(false)
        .handshake(TokioIo::new(stream));
    let (sender, connection) = tokio::time::timeout(left, handshake)
        .await
        .map_err(|_| UpstreamError::Timeout)??;
    debug!(%uri, "DoH connection established");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(%uri, error = %e, "DoH connection ended");
        }
    });
    Ok(sender)
}

/// The DNS message in a DoH response: status 200, type `application/dns-message`, and a body
/// of at most 65535 bytes. Whether it answers the question is checked later, by the caller.
pub async fn read_response<B>(response: Response<B>) -> Result<Bytes, UpstreamError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if response.status() != StatusCode::OK {
        return Err(UpstreamError::HttpStatus(response.status().as_u16()));
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.eq_ignore_ascii_case(DNS_MESSAGE) {
        return Err(UpstreamError::ContentType(content_type.to_string()));
    }
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(e) => UpstreamError::Http(*e),
            Err(_) => UpstreamError::TooLarge,
        })?;
    Ok(body.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    #[test]
    fn queries_go_in_the_dns_parameter_in_base64url_without_padding() {
        // RFC 8484 §4.1.1's example: www.example.com A, ID 0, RD.
        let query = [
            0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w', b'w', 7, b'e', b'x', b'a', b'm',
            b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0, 1, 0, 1,
        ];
        let path = request_path("/dns-query?dns=", &query).unwrap();
        assert_eq!(
            path.as_str(),
            "/dns-query?dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB"
        );
        let path = request_path("/q?token=x&dns=", &[0xfb, 0xff]).unwrap();
        assert_eq!(path.as_str(), "/q?token=x&dns=-_8");
    }

    #[tokio::test]
    async fn only_a_200_dns_message_of_at_most_65535_bytes_is_read() {
        let ok = read_response(response(200, "Application/DNS-Message", vec![1; 12])).await;
        assert_eq!(ok.unwrap().len(), 12);
        let status = read_response(response(502, DNS_MESSAGE, vec![1; 12])).await;
        assert!(matches!(status, Err(UpstreamError::HttpStatus(502))));
        let html = read_response(response(200, "text/html", vec![1; 12])).await;
        assert!(matches!(html, Err(UpstreamError::ContentType(t)) if t == "text/html"));
        let big = read_response(response(200, DNS_MESSAGE, vec![0; MAX_ANSWER + 1])).await;
        assert!(matches!(big, Err(UpstreamError::TooLarge)));
    }
}
