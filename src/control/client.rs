//! The client side of `/healthz`, for `dnsward health` (and so for keepalived's
//! `vrrp_script`): one request, one line of output, an exit status.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;

/// Longest health answer read.
const MAX_BODY: usize = 4096;

/// What the endpoint said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthAnswer {
    /// 200: an encrypted upstream answers.
    Healthy,
    /// 503, with the endpoint's reason.
    Unhealthy(String),
}

/// Why the health could not be learnt.
#[derive(Debug, Error)]
pub enum HealthError {
    /// No connection to the endpoint.
    #[error("cannot reach the control endpoint at {addr}: {source}")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("control endpoint at {addr}: {message}")]
    Http {
        /// The endpoint.
        addr: SocketAddr,
        /// What went wrong.
        message: String,
    },
    /// No answer in time.
    #[error("control endpoint at {addr} did not answer within {limit:?}")]
    Timeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The limit.
        limit: Duration,
    },
}

/// Where to connect to reach an endpoint listening on `listen`: a wildcard address is reached
/// through loopback.
pub fn connect_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Asks `GET /healthz` at `addr`, all within `limit`.
pub async fn check(addr: SocketAddr, limit: Duration) -> Result<HealthAnswer, HealthError> {
    tokio::time::timeout(limit, ask(addr))
        .await
        .map_err(|_| HealthError::Timeout { addr, limit })?
}

async fn ask(addr: SocketAddr) -> Result<HealthAnswer, HealthError> {
    let http = |e: &dyn std::fmt::Display| HealthError::Http {
        addr,
        message: e.to_string(),
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HealthError::Connect { addr, source })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(&e))?;
    let driver = tokio::spawn(connection);
    let request = Request::get("/healthz")
        .header(HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(&e))?;
    let response = sender.send_request(request).await.map_err(|e| http(&e))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| http(&*e))?
        .to_bytes();
    driver.abort();
    let body = String::from_utf8_lossy(&body).trim().to_string();
    match status {
        StatusCode::OK => Ok(HealthAnswer::Healthy),
        StatusCode::SERVICE_UNAVAILABLE => Ok(HealthAnswer::Unhealthy(
            body.strip_prefix("unhealthy: ")
                .unwrap_or(&body)
                .to_string(),
        )),
        other => Err(http(&format!("unexpected status {other}: {body}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_reached_through_loopback() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(connect_addr(a("0.0.0.0:8053")), a("127.0.0.1:8053"));
        assert_eq!(connect_addr(a("[::]:8053")), a("[::1]:8053"));
        assert_eq!(connect_addr(a("10.0.0.1:1")), a("10.0.0.1:1"));
    }
}
