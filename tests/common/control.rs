//! A small HTTP/1.1 client for the control endpoint (loopback only, every await bounded).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Bound on one request to the control endpoint (a health probe takes up to 2.5 s).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer from the control endpoint.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends `method path` to `addr` on a fresh connection and reads the whole answer.
pub async fn http(addr: SocketAddr, method: Method, path: &str) -> HttpAnswer {
    assert!(
        addr.ip().is_loopback(),
        "control endpoint tests use loopback"
    );
    let io = async {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect control endpoint");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("HTTP request");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        HttpAnswer {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).expect("UTF-8 body"),
        }
    };
    timeout(HTTP_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| panic!("no HTTP answer from {addr} within {HTTP_TIMEOUT:?}"))
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> HttpAnswer {
    http(addr, Method::GET, path).await
}
