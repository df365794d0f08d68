//! The control endpoint: a small HTTP/1.1 server for operators and monitoring.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 `ok` when an encrypted upstream answers, else 503 `unhealthy: REASON` |
//! | `GET /metrics` | Prometheus metrics (OpenMetrics text) |
//! | `GET /stats` | JSON: totals, cache size, upstream health, last reload |
//! | `POST /cache/flush` | drops the whole cache |
//! | `POST /cache/flush?name=NAME` | drops every cached answer for NAME (all types) |
//!
//! Off unless `[control] listen` is set. It has no authentication, so it listens on loopback
//! unless `allow-remote = true`. Connections, request heads and connection lifetimes are
//! bounded; requests with a body are refused.

pub mod client;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONNECTION, CONTENT_TYPE};
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::{ConfigError, parse_addr};
use crate::listener;
use crate::metrics;
use crate::service::Service;

/// Connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 16;
/// A request head must arrive within this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection is kept, idle or not (a scraper reconnects).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Largest request head accepted (hyper's minimum buffer).
const MAX_HEAD: usize = 8192;

/// `[control]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawControl {
    /// Address of the HTTP endpoint, e.g. "127.0.0.1:8053".
    pub listen: Option<String>,
    /// Allow a non-loopback `listen` (the endpoint has no authentication).
    pub allow_remote: Option<bool>,
}

/// A validated `[control]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSettings {
    /// Where the endpoint listens.
    pub listen: SocketAddr,
}

/// Validates `[control]`: `None` when the endpoint is off.
pub fn settings(raw: Option<RawControl>) -> Result<Option<ControlSettings>, ConfigError> {
    let raw = raw.unwrap_or_default();
    let Some(listen) = raw.listen else {
        return Ok(None);
    };
    let invalid = |message: String| ConfigError::Invalid {
        key: "control.listen".into(),
        message,
    };
    let addr = parse_addr(&listen, 8053).map_err(invalid)?;
    if !addr.ip().is_loopback() && !raw.allow_remote.unwrap_or(false) {
        return Err(invalid(format!(
            "{addr} is not a loopback address; the control endpoint has no authentication, \
             so serving it beyond this machine needs control.allow-remote = true"
        )));
    }
    Ok(Some(ControlSettings { listen: addr }))
}

/// Serves the control endpoint on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, service: Arc<Service>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    while let Some((stream, peer)) =
        listener::accept(&listener, &shutdown, "control endpoint").await
    {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "control endpoint: too many connections; closing new one");
            continue;
        };
        let service = service.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let handler = service_fn(move |request| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(respond(&service, request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), handler);
            tokio::select! {
                // Shutting down: drop the connection.
                _ = shutdown.cancelled() => {}
                result = tokio::time::timeout(CONNECTION_LIFETIME, connection) => {
                    if let Ok(Err(e)) = result {
                        debug!(%peer, error = %e, "control endpoint: connection error");
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Answers one request.
async fn respond(service: &Service, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if !request.body().is_end_stream() {
        // Nothing here takes a body; refusing it keeps a client from streaming one in.
        let mut response = text(StatusCode::PAYLOAD_TOO_LARGE, "requests take no body\n");
        response
            .headers_mut()
            .insert(CONNECTION, "close".parse().expect("valid header"));
        return response;
    }
    let method = request.method();
    let get = method == Method::GET || method == Method::HEAD;
    match request.uri().path() {
        "/healthz" if get => {
            let health = service.health().await;
            if health.healthy {
                text(StatusCode::OK, "ok\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("unhealthy: {}\n", health.reason),
                )
            }
        }
        "/metrics" if get => {
            let body = service.metrics().render(&service.snapshot());
            with_type(StatusCode::OK, body.into(), metrics::CONTENT_TYPE)
        }
        "/stats" if get => {
            let mut body = serde_json::to_vec_pretty(&service.stats()).expect("stats serialise");
            body.push(b'\n');
            with_type(StatusCode::OK, body.into(), "application/json")
        }
        "/cache/flush" if method == Method::POST => {
            let name = request.uri().query().and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "name")
                    .map(|(_, v)| v.into_owned())
            });
            match service.flush(name.as_deref()) {
                Ok(None) => json(StatusCode::OK, serde_json::json!({ "flushed": "all" })),
                Ok(Some(removed)) => json(
                    StatusCode::OK,
                    serde_json::json!({ "flushed": name, "entries": removed }),
                ),
                Err(message) => json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({ "error": message }),
                ),
            }
        }
        "/healthz" | "/metrics" | "/stats" => not_allowed("GET, HEAD"),
        "/cache/flush" => not_allowed("POST"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /metrics, /stats or POST /cache/flush\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    with_type(
        status,
        Bytes::copy_from_slice(body.as_bytes()),
        "text/plain; charset=utf-8",
    )
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string().into_bytes();
    body.push(b'\n');
    with_type(status, body.into(), "application/json")
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(ALLOW, allow.parse().expect("valid header"));
    response
}

fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, content_type.parse().expect("valid header"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<ControlSettings>, ConfigError> {
        let raw: RawControl = toml::from_str(text).unwrap();
        settings(Some(raw))
    }

    #[test]
    fn off_unless_listen_is_set() {
        assert_eq!(settings(None).unwrap(), None);
        assert_eq!(parse("").unwrap(), None);
        let on = parse("listen = \"127.0.0.1:9153\"").unwrap().unwrap();
        assert_eq!(on.listen, "127.0.0.1:9153".parse().unwrap());
        let port = parse("listen = \"::1\"").unwrap().unwrap();
        assert_eq!(port.listen, "[::1]:8053".parse().unwrap());
    }

    #[test]
    fn a_remote_address_needs_the_opt_in() {
        let err = parse("listen = \"0.0.0.0:8053\"").unwrap_err().to_string();
        assert!(
            err.starts_with("control.listen:") && err.contains("allow-remote"),
            "{err}"
        );
        let ok = parse("listen = \"0.0.0.0:8053\"\nallow-remote = true").unwrap();
        assert_eq!(ok.unwrap().listen, "0.0.0.0:8053".parse().unwrap());
        assert!(parse("listen = \"localhost\"").is_err());
    }
}
