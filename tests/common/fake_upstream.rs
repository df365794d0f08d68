//! Fake DoH (RFC 8484, HTTP/2) and DoT (RFC 7858) upstreams on loopback, answering from a `Zone`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hickory_proto::op::Message;
use hickory_proto::rr::Name;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio_rustls::TlsAcceptor;

pub use super::tls::cert_path;
use super::tls::server_config;
use super::zone::{Zone, formerr_wire};

/// Name put in the question of a `Behavior::WrongQuestion` response.
pub const WRONG_QUESTION_NAME: &str = "wrong-question.invalid.";

/// Bound on server-side TLS handshakes (the fakes never wait longer for a client).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Behavior {
    /// Answers from the zone.
    Answer,
    /// Completes TCP and TLS (and for DoH the HTTP/2 handshake) but never answers a query.
    /// Queries are still read, recorded and counted.
    Hang,
    /// Presents certs/wrong-name.pem (valid chain, wrong name); answers if the client goes on anyway.
    WrongCert,
    /// Presents certs/untrusted.pem (right name, unknown CA); answers if the client goes on anyway.
    UntrustedCert,
    /// Accepts TCP connections and closes them immediately (counted in connection_count).
    /// Set at runtime, a live connection is closed at its next query.
    CloseImmediately,
    /// Answers with a response whose question names WRONG_QUESTION_NAME (same ID, same type).
    WrongQuestion,
    /// DoT only: answers with an ID that matches no query seen on that connection. DoH: replies HTTP 500.
    Garbage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Doh,
    Dot,
}

struct Shared {
    zone: Zone,
    behavior: Mutex<Behavior>,
    queries: AtomicUsize,
    connections: AtomicUsize,
    received: Mutex<Vec<Vec<u8>>>,
}

impl Shared {
    fn behavior(&self) -> Behavior {
        *self.behavior.lock().unwrap()
    }

    /// Records raw bytes; returns the parsed query if it parses (and counts it).
    fn receive(&self, raw: &[u8]) -> Option<Message> {
        self.received.lock().unwrap().push(raw.to_vec());
        let msg = Message::from_vec(raw).ok()?;
        self.queries.fetch_add(1, Ordering::SeqCst);
        Some(msg)
    }
}

struct Acceptors {
    normal: TlsAcceptor,
    wrong_name: TlsAcceptor,
    untrusted: TlsAcceptor,
}

impl Acceptors {
    fn new(alpn: &[&[u8]]) -> Self {
        Self {
            normal: TlsAcceptor::from(server_config("server-chain.pem", "server.key", alpn)),
            wrong_name: TlsAcceptor::from(server_config("wrong-name.pem", "wrong-name.key", alpn)),
            untrusted: TlsAcceptor::from(server_config("untrusted.pem", "untrusted.key", alpn)),
        }
    }

    fn for_behavior(&self, b: Behavior) -> TlsAcceptor {
        match b {
            Behavior::WrongCert => self.wrong_name.clone(),
            Behavior::UntrustedCert => self.untrusted.clone(),
            _ => self.normal.clone(),
        }
    }
}

/// Resolves once the owning FakeUpstream is stopped or dropped.
async fn stopped(mut rx: watch::Receiver<()>) {
    let _ = rx.changed().await;
}

pub struct FakeUpstream {
    proto: Proto,
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping this sender stops every task of this upstream.
    _stop: watch::Sender<()>,
}

impl FakeUpstream {
    /// DoH on 127.0.0.1: TLS (ALPN h2) + hyper HTTP/2 server; POST and GET on /dns-query.
    pub async fn doh(zone: Zone, behavior: Behavior) -> FakeUpstream {
        Self::start(Proto::Doh, zone, behavior, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// DoT on 127.0.0.1: 2-byte length prefixed messages, many per connection, answered concurrently.
    pub async fn dot(zone: Zone, behavior: Behavior) -> FakeUpstream {
        Self::start(Proto::Dot, zone, behavior, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// Starts a fake on `ip` port 0; `ip` must be loopback (127.0.0.1 or ::1).
    pub async fn start(proto: Proto, zone: Zone, behavior: Behavior, ip: IpAddr) -> FakeUpstream {
        Self::start_on(proto, zone, behavior, SocketAddr::new(ip, 0)).await
    }

    /// Starts a fake on `addr` (loopback), e.g. the address of one that was stopped, to
    /// bring an upstream back; binding is retried for up to 5 s while the old socket closes.
    pub async fn start_on(
        proto: Proto,
        zone: Zone,
        behavior: Behavior,
        addr: SocketAddr,
    ) -> FakeUpstream {
        let ip = addr.ip();
        assert!(
            ip.is_loopback(),
            "fake upstreams bind loopback only, not {ip}"
        );
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("bind fake upstream on {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            zone,
            behavior: Mutex::new(behavior),
            queries: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
        });
        let (stop_tx, stop_rx) = watch::channel(());
        let alpn: &[&[u8]] = match proto {
            Proto::Doh => &[b"h2"],
            Proto::Dot => &[b"dot"],
        };
        let acceptors = Acceptors::new(alpn);
        tokio::spawn(accept_loop(
            proto,
            listener,
            acceptors,
            shared.clone(),
            stop_rx,
        ));
        FakeUpstream {
            proto,
            addr,
            shared,
            _stop: stop_tx,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// "https://localhost:PORT/dns-query#127.0.0.1" or "tls://localhost:PORT#127.0.0.1"
    /// (the fragment is the bound IP as `IpAddr::to_string`, so "::1" for IPv6).
    pub fn url(&self) -> String {
        url_for(self.proto, self.addr)
    }

    /// Queries received that parsed as DNS messages.
    pub fn query_count(&self) -> usize {
        self.shared.queries.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Raw query messages as received (parseable or not), in arrival order.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The received messages that parse, in arrival order.
    pub fn received_messages(&self) -> Vec<Message> {
        self.received()
            .iter()
            .filter_map(|r| Message::from_vec(r).ok())
            .collect()
    }

    pub fn behavior(&self) -> Behavior {
        self.shared.behavior()
    }

    /// Switches behavior at runtime. Certificate choice and CloseImmediately apply to new
    /// connections (CloseImmediately also closes a live connection at its next query);
    /// the answer behaviors apply to the next query on any connection.
    pub fn set_behavior(&self, b: Behavior) {
        *self.shared.behavior.lock().unwrap() = b;
    }

    /// Stops accepting and drops live connections (the same happens on Drop). The tasks notice on
    /// their next poll, so a connect racing with stop may briefly succeed and then be reset.
    pub fn stop(self) {
        drop(self);
    }
}

fn url_for(proto: Proto, addr: SocketAddr) -> String {
    match proto {
        Proto::Doh => format!("https://localhost:{}/dns-query#{}", addr.port(), addr.ip()),
        Proto::Dot => format!("tls://localhost:{}#{}", addr.port(), addr.ip()),
    }
}

/// A loopback URL on which nothing listens (bind 127.0.0.1:0, note the port, drop the socket).
pub async fn refused_url(scheme: &str) -> String {
    let proto = match scheme {
        "https" => Proto::Doh,
        "tls" => Proto::Dot,
        other => panic!("refused_url: scheme must be \"https\" or \"tls\", not {other:?}"),
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    drop(listener);
    url_for(proto, addr)
}

async fn accept_loop(
    proto: Proto,
    listener: TcpListener,
    acceptors: Acceptors,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        let tcp = tokio::select! {
            biased;
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let behavior = shared.behavior();
        if behavior == Behavior::CloseImmediately {
            drop(tcp);
            continue;
        }
        let acceptor = acceptors.for_behavior(behavior);
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let conn_stop = stop.clone();
            tokio::select! {
                _ = stopped(stop) => {}
                _ = serve_connection(proto, tcp, acceptor, shared, conn_stop) => {}
            }
        });
    }
}

async fn serve_connection(
    proto: Proto,
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    stop: watch::Receiver<()>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        _ => return,
    };
    match proto {
        Proto::Dot => serve_dot(tls, shared, stop).await,
        Proto::Doh => serve_doh(tls, shared).await,
    }
}

type ServerTls = tokio_rustls::server::TlsStream<TcpStream>;

/// Writer-channel item: a message to frame and send, or None to close the connection.
type Outgoing = Option<Vec<u8>>;

async fn serve_dot(tls: ServerTls, shared: Arc<Shared>, stop: watch::Receiver<()>) {
    let (mut rd, mut wr) = tokio::io::split(tls);
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();

    // One writer per connection: serializes the answers of concurrently running query tasks.
    let writer_stop = stop.clone();
    tokio::spawn(async move {
        let write_all = async move {
            while let Some(Some(msg)) = rx.recv().await {
                let mut frame = Vec::with_capacity(msg.len() + 2);
                frame.extend_from_slice(&(msg.len() as u16).to_be_bytes());
                frame.extend_from_slice(&msg);
                if wr.write_all(&frame).await.is_err() || wr.flush().await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        };
        tokio::select! {
            _ = stopped(writer_stop) => {}
            _ = write_all => {}
        }
    });

    let mut seen_ids: HashSet<u16> = HashSet::new();
    while let Ok(len) = rd.read_u16().await {
        let len = len as usize;
        let mut buf = vec![0u8; len];
        if rd.read_exact(&mut buf).await.is_err() {
            break;
        }
        let parsed = shared.receive(&buf);
        if let Some(q) = &parsed {
            seen_ids.insert(q.metadata.id);
        }
        let behavior = shared.behavior();
        let delay = parsed.as_ref().and_then(|q| shared.zone.delay_for_query(q));
        let reply = match (behavior, parsed) {
            (Behavior::CloseImmediately, _) => {
                let _ = tx.send(None);
                break;
            }
            (Behavior::Hang, _) => continue,
            (_, None) => formerr_wire(&buf),
            (Behavior::Garbage, Some(q)) => {
                let mut resp = shared.zone.answer(&q);
                let mut id = q.metadata.id.wrapping_add(0x5a5a);
                while seen_ids.contains(&id) {
                    id = id.wrapping_add(1);
                }
                resp.metadata.id = id;
                resp.to_vec().expect("encode")
            }
            (Behavior::WrongQuestion, Some(q)) => wrong_question(&shared.zone, &q),
            (_, Some(q)) => shared.zone.answer(&q).to_vec().expect("encode"),
        };
        // Each answer in its own task, so a delayed name does not hold back later queries.
        let tx = tx.clone();
        let task_stop = stop.clone();
        tokio::spawn(async move {
            let send = async move {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                let _ = tx.send(Some(reply));
            };
            tokio::select! {
                _ = stopped(task_stop) => {}
                _ = send => {}
            }
        });
    }
    // Reader done (EOF/error): the writer ends once every pending answer task has sent.
}

fn wrong_question(zone: &Zone, q: &Message) -> Vec<u8> {
    let mut resp = zone.answer(q);
    if let Some(first) = resp.queries.first_mut() {
        first.set_name(Name::from_ascii(WRONG_QUESTION_NAME).unwrap());
    }
    resp.to_vec().expect("encode")
}

async fn serve_doh(tls: ServerTls, shared: Arc<Shared>) {
    let close = Arc::new(Notify::new());
    let svc_close = close.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let close = svc_close.clone();
        async move { Ok::<_, Infallible>(handle_doh(req, shared, close).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), svc);
    tokio::select! {
        _ = conn => {}
        _ = close.notified() => {}
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Decodes base64url, with or without padding.
fn base64url(s: &str) -> Option<Vec<u8>> {
    data_encoding::BASE64URL_NOPAD
        .decode(s.trim_end_matches('=').as_bytes())
        .ok()
}

async fn handle_doh(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    close: Arc<Notify>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/dns-query" {
        return status(StatusCode::NOT_FOUND);
    }
    let raw: Vec<u8> = match *req.method() {
        Method::POST => {
            let ct = req
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                });
            if ct.as_deref() != Some("application/dns-message") {
                return status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
            }
            match Limited::new(req.into_body(), 65535).collect().await {
                Ok(b) => b.to_bytes().to_vec(),
                Err(_) => return status(StatusCode::PAYLOAD_TOO_LARGE),
            }
        }
        Method::GET => {
            let dns = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("dns="));
            match dns.and_then(base64url) {
                Some(b) => b,
                None => return status(StatusCode::BAD_REQUEST),
            }
        }
        _ => return status(StatusCode::METHOD_NOT_ALLOWED),
    };
    let Some(q) = shared.receive(&raw) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let wire = match shared.behavior() {
        Behavior::Hang => std::future::pending().await,
        Behavior::CloseImmediately => {
            close.notify_one();
            std::future::pending().await
        }
        behavior => {
            if let Some(d) = shared.zone.delay_for_query(&q) {
                tokio::time::sleep(d).await;
            }
            match behavior {
                Behavior::Garbage => return status(StatusCode::INTERNAL_SERVER_ERROR),
                Behavior::WrongQuestion => wrong_question(&shared.zone, &q),
                _ => shared.zone.answer(&q).to_vec().expect("encode"),
            }
        }
    };
    let min_ttl = Message::from_vec(&wire)
        .ok()
        .and_then(|m| m.answers.iter().map(|r| r.ttl).min());
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, "application/dns-message")
        .header(hyper::header::CONTENT_LENGTH, wire.len());
    if let Some(ttl) = min_ttl {
        resp = resp.header(hyper::header::CACHE_CONTROL, format!("max-age={ttl}"));
    }
    resp.body(Full::new(Bytes::from(wire))).unwrap()
}
