//! DNS-over-TLS (RFC 7858) with pipelining and out-of-order answers (RFC 7766 §6.2.1).
//!
//! One TLS connection per upstream carries many queries at once. Each query gets an ID that is
//! unique on its connection; a reader task matches answers to waiting queries by that ID, so
//! the server may answer in any order. A writer task owns the write half, so a query that is
//! cancelled half-way (its deadline passed) can never leave half a frame on the wire.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::bootstrap::Endpoint;
use super::slot::Slot;
use super::tls::{self, PeerIdentity};
use super::{ConnectOptions, UpstreamError};
use crate::dns::query::padded;

/// Most queries outstanding on one connection.
const MAX_IN_FLIGHT: usize = 1024;
/// A query unanswered this long, with nothing at all read since it was sent, marks the
/// connection as dead.
const STALLED_AFTER: Duration = Duration::from_secs(2);

/// A DoT client for one upstream.
pub struct DotClient {
    /// Where to connect.
    endpoint: Arc<Endpoint>,
    /// TLS settings.
    tls: Arc<ClientConfig>,
    /// Name the certificate must match.
    server_name: ServerName<'static>,
    /// Timeouts.
    options: ConnectOptions,
    /// The current connection.
    conn: Slot<Arc<Connection>>,
    /// Who is on the other end of the current connection.
    identity: Arc<PeerIdentity>,
}

/// One pipelined TLS connection.
struct Connection {
    /// Frames (length prefix included) for the writer task.
    frames: mpsc::Sender<Vec<u8>>,
    /// Queries waiting for answers, by the ID used on this connection.
    waiting: Mutex<Waiting>,
    /// Set once either task has stopped; the connection is then never reused.
    closed: AtomicBool,
    /// Cancelled with `closed`, so the writer lets go of the connection at once.
    closing: CancellationToken,
    /// When the last whole frame was read.
    last_read: Mutex<Instant>,
}

struct Waiting {
    /// Answer slots by wire ID.
    by_id: HashMap<u16, oneshot::Sender<Bytes>>,
    /// Next ID to try; IDs are handed out sequentially, skipping ones in use.
    next_id: u16,
}

impl Connection {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the connection dead and fails every waiting query (their senders are dropped).
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.closing.cancel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .clear();
    }

    /// Reserves an ID and the slot its answer will be delivered to.
    fn register(&self) -> Result<(u16, oneshot::Receiver<Bytes>), UpstreamError> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.by_id.len() >= MAX_IN_FLIGHT {
            return Err(UpstreamError::Busy);
        }
        let mut id = waiting.next_id;
        while waiting.by_id.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        waiting.next_id = id.wrapping_add(1);
        let (tx, rx) = oneshot::channel();
        waiting.by_id.insert(id, tx);
        Ok((id, rx))
    }
}

/// Frees a query's ID when the query finishes or is cancelled, and notices dead connections.
struct Registration<'a> {
    conn: &'a Connection,
    id: u16,
    /// When the query was handed to the writer.
    sent: Instant,
    /// Whether its answer arrived.
    answered: bool,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut waiting = self.conn.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.by_id.remove(&self.id);
        drop(waiting);
        if self.answered {
            return;
        }
        // A query abandoned after a long wait on a connection that has delivered nothing since
        // it was sent: the peer is gone without a FIN (network change, NAT timeout, blackhole).
        // Close it so the next query reconnects instead of waiting on it too.
        let last_read = *self
            .conn
            .last_read
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.sent.elapsed() >= STALLED_AFTER && last_read < self.sent {
            debug!("DoT connection stalled; closing it");
            self.conn.close();
        }
    }
}

impl DotClient {
    /// A client that connects on first use.
    pub fn new(
        endpoint: Endpoint,
        tls: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        options: ConnectOptions,
        identity: Arc<PeerIdentity>,
    ) -> DotClient {
        DotClient {
            endpoint: Arc::new(endpoint),
            tls,
            server_name,
            options,
            conn: Slot::new(|c| !c.is_closed()),
            identity,
        }
    }

    /// Sends one query, retrying once on a fresh connection if a reused one turned out stale.
    pub async fn exchange(&self, query: &[u8]) -> Result<Bytes, UpstreamError> {
        let query = &padded(query);
        let (conn, fresh) = self.connection().await?;
        match send(&conn, query).await {
            Err(e) if !fresh && e.is_stale_connection() => {
                debug!(server = ?self.server_name, error = %e, "DoT connection went stale; reconnecting");
                conn.close();
                let (conn, _) = self.connection().await?;
                send(&conn, query).await
            }
            other => other,
        }
    }

    /// Closes the connection and drops any looked-up addresses (after a network change).
    pub fn reset(&self) {
        if let Some(conn) = self.conn.current() {
            conn.close();
        }
        self.conn.forget();
        self.endpoint.forget();
    }

    async fn connection(&self) -> Result<(Arc<Connection>, bool), UpstreamError> {
        // The usual case, without cloning what a new connection would need.
        if let Some(conn) = self.conn.current() {
            return Ok((conn, false));
        }
        let endpoint = self.endpoint.clone();
        let tls = self.tls.clone();
        let server_name = self.server_name.clone();
        let options = self.options.clone();
        let identity = self.identity.clone();
        self.conn
            .get_or_connect(move || async move {
                let started = Instant::now();
                let addrs = endpoint.addrs().await?;
                let left = options.connect_timeout.saturating_sub(started.elapsed());
                let stream = tls::connect(&addrs, tls, server_name.clone(), left).await?;
                identity.record(&stream);
                debug!(server = ?server_name, "DoT connection established");
                Ok(spawn_connection(stream, options.idle_timeout))
            })
            .await
    }
}

/// The pipelined connection DoT runs inside TLS, over any byte stream: two-byte length
/// prefixes, connection-unique IDs, answers matched by ID in any order. [`DotClient`] is what
/// dnsward uses; this is for driving the framing over an in-memory pipe (tests, fuzzing).
pub struct Pipeline(Arc<Connection>);

impl Pipeline {
    /// Starts the reader and writer tasks on `stream` (a tokio runtime must be running).
    pub fn over<S>(stream: S, idle: Duration) -> Pipeline
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Pipeline(spawn_connection(stream, idle))
    }

    /// Sends `query` (its ID is replaced) and waits for the answer with the same ID.
    pub async fn exchange(&self, query: &[u8]) -> Result<Bytes, UpstreamError> {
        send(&self.0, query).await
    }
}

/// Sends `query` on `conn` under a connection-unique ID and waits for its answer.
async fn send(conn: &Connection, query: &[u8]) -> Result<Bytes, UpstreamError> {
    if query.len() < 2 || query.len() > usize::from(u16::MAX) {
        return Err(UpstreamError::TooLarge);
    }
    let (id, answer) = conn.register()?;
    let mut registration = Registration {
        conn,
        id,
        sent: Instant::now(),
        answered: false,
    };
    let mut frame = Vec::with_capacity(query.len() + 2);
    frame.extend((query.len() as u16).to_be_bytes());
    frame.extend_from_slice(query);
    frame[2..4].copy_from_slice(&id.to_be_bytes());
    conn.frames
        .send(frame)
        .await
        .map_err(|_| UpstreamError::Closed)?;
    registration.sent = Instant::now();
    let answer = answer.await.map_err(|_| UpstreamError::Closed)?;
    registration.answered = true;
    Ok(answer)
}

fn spawn_connection<S>(stream: S, idle: Duration) -> Arc<Connection>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let (frames, queue) = mpsc::channel(256);
    let conn = Arc::new(Connection {
        frames,
        waiting: Mutex::new(Waiting {
            by_id: HashMap::new(),
            next_id: rand::random(),
        }),
        closed: AtomicBool::new(false),
        closing: CancellationToken::new(),
        last_read: Mutex::new(Instant::now()),
    });
    let reading = tokio::spawn(read_answers(reader, conn.clone()));
    tokio::spawn(write_queries(writer, queue, conn.clone(), idle, reading));
    conn
}

/// Most bytes of queued frames gathered into one write: one TLS record (RFC 8446 §5.1 caps
/// its plaintext at 16 KiB), one system call, however many queries are waiting.
const WRITE_BATCH: usize = 16 * 1024;

/// Writes frames until the connection closes or stays idle (nothing sent, nothing waiting)
/// for `idle`; then shuts the connection down (RFC 7766 §6.2.2 asks clients to close idle
/// connections rather than leave it to the server).
///
/// Frames queued by the time it runs go out together, so a busy connection costs one TLS
/// record and one system call per batch rather than per query.
async fn write_queries<S: AsyncWrite>(
    mut writer: WriteHalf<S>,
    mut queue: mpsc::Receiver<Vec<u8>>,
    conn: Arc<Connection>,
    idle: Duration,
    reading: tokio::task::JoinHandle<()>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let received = tokio::select! {
            // The reader saw the stream end, or a query found the connection stalled: shut
            // down now rather than hold the socket until the idle timeout.
            _ = conn.closing.cancelled() => break,
            received = tokio::time::timeout(idle, queue.recv()) => received,
        };
        let frame = match received {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => {
                let busy = !conn
                    .waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .by_id
                    .is_empty();
                if busy && !conn.is_closed() {
                    continue;
                }
                break;
            }
        };
        if conn.is_closed() {
            break;
        }
        // Let the queries that are ready to run queue their frames first (on a busy runtime
        // this task would otherwise run right after each sender, one frame at a time); on an
        // idle one this returns at once.
        tokio::task::yield_now().await;
        batch.clear();
        batch.extend_from_slice(&frame);
        while batch.len() < WRITE_BATCH {
            match queue.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        let written = async {
            writer.write_all(&batch).await?;
            writer.flush().await
        };
        if let Err(e) = written.await {
            debug!(error = %e, "DoT write failed");
            break;
        }
        if batch.capacity() > 4 * WRITE_BATCH {
            batch = Vec::with_capacity(WRITE_BATCH);
        }
    }
    // Refuse further frames first, so no query can slip in after the final close.
    queue.close();
    conn.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
    reading.abort();
}

/// Room the reader asks the stream to fill per read. TLS hands over about one record per
/// read, which from most servers is one answer: with a buffer, that is one read per answer
/// rather than two (its length, then its body).
const READ_CHUNK: usize = 4096;

/// Reads length-prefixed answers and hands each to the query waiting for its ID.
async fn read_answers<S: AsyncRead>(mut reader: ReadHalf<S>, conn: Arc<Connection>) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        let mut delivered = false;
        while let Some(answer) = next_frame(&mut buf) {
            deliver(&conn, answer);
            delivered = true;
        }
        if delivered {
            // A whole answer arrived: the connection is alive (part of one does not say so).
            *conn.last_read.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
        // Room for the rest of a frame begun, or for more frames; the space of those handed
        // on is reused.
        buf.reserve(READ_CHUNK);
        match reader.read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() => {
                debug!("DoT connection closed");
                break;
            }
            Ok(0) => {
                debug!("DoT connection closed mid-answer");
                break;
            }
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "DoT connection closed");
                break;
            }
        }
    }
    conn.close();
}

/// Takes the first whole frame (two bytes of length, then the message) off `buf`, if it
/// holds one; the message is copied out, so the buffer's space is free again once read.
fn next_frame(buf: &mut BytesMut) -> Option<Bytes> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    let frame = buf.get(2..2 + len)?;
    let message = Bytes::copy_from_slice(frame);
    buf.advance(2 + len);
    Some(message)
}

/// Hands `answer` to the query waiting for its ID.
fn deliver(conn: &Connection, answer: Bytes) {
    if answer.len() < 2 {
        return;
    }
    let id = u16::from_be_bytes([answer[0], answer[1]]);
    let slot = conn
        .waiting
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .by_id
        .remove(&id);
    match slot {
        Some(slot) => {
            let _ = slot.send(answer);
        }
        // A late answer to a cancelled query, or an ID we never sent: ignore it.
        None => debug!(id, "DoT answer for no waiting query"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::new_query;
    use tokio::io::{DuplexStream, duplex};

    /// Reads one length-prefixed frame from the server side of the pipe.
    async fn read_frame(server: &mut DuplexStream) -> Vec<u8> {
        let mut len = [0u8; 2];
        server.read_exact(&mut len).await.unwrap();
        let mut frame = vec![0; u16::from_be_bytes(len) as usize];
        server.read_exact(&mut frame).await.unwrap();
        frame
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = (message.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(message);
        out
    }

    #[tokio::test]
    async fn answers_are_matched_by_id_in_any_order_and_junk_is_skipped() {
        let (client, mut server) = duplex(1 << 16);
        let pipeline = Pipeline::over(client, Duration::from_secs(30));
        let a = new_query("a.test", 1, false).unwrap();
        let b = new_query("b.test", 1, false).unwrap();
        let (first, second) = (pipeline.exchange(&a), pipeline.exchange(&b));
        let serve = async {
            let qa = read_frame(&mut server).await;
            let qb = read_frame(&mut server).await;
            assert_ne!(qa[..2], qb[..2], "IDs are unique on a connection");
            let mut stream = Vec::new();
            stream.extend(framed(&[7])); // too short to carry an ID: skipped
            let mut unknown = qa.clone();
            unknown[0] ^= 0xff;
            unknown[1] ^= 0xff;
            stream.extend(framed(&unknown)); // an ID nobody waits for: skipped
            stream.extend(framed(&qb)); // answers out of order
            stream.extend(framed(&qa));
            server.write_all(&stream).await.unwrap();
            (qa, qb)
        };
        let (ra, rb, (qa, qb)) = tokio::join!(first, second, serve);
        assert_eq!(ra.unwrap().as_ref(), &qa[..]);
        assert_eq!(rb.unwrap().as_ref(), &qb[..]);
    }

    #[tokio::test]
    async fn answers_cut_anywhere_by_the_stream_are_put_back_together() {
        let (client, mut server) = duplex(1 << 17);
        let pipeline = Pipeline::over(client, Duration::from_secs(30));
        let small = new_query("a.test", 1, false).unwrap();
        let big = new_query("b.test", 1, false).unwrap();
        let (first, second) = (pipeline.exchange(&small), pipeline.exchange(&big));
        let serve = async {
            let qa = read_frame(&mut server).await;
            let qb = read_frame(&mut server).await;
            // The second answer is as large as a frame can be, well beyond the read buffer.
            let mut large = qb.clone();
            large.resize(usize::from(u16::MAX), 0xab);
            let mut stream = framed(&qa);
            stream.extend(framed(&large));
            // Cut inside a length prefix, where a prefix and its body meet, inside the second
            // frame's prefix, and anywhere.
            let second = 2 + qa.len();
            let cuts = [0, 1, 2, second + 1, second + 1000, stream.len()];
            for piece in cuts.windows(2).map(|w| &stream[w[0]..w[1]]) {
                server.write_all(piece).await.unwrap();
                server.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            (qa, large)
        };
        let both = async { tokio::join!(first, second, serve) };
        let (ra, rb, (qa, large)) = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .expect("both answers within 10 s");
        assert_eq!(ra.unwrap().as_ref(), &qa[..]);
        assert_eq!(rb.unwrap().as_ref(), &large[..]);
    }

    #[tokio::test]
    async fn a_connection_the_server_ended_is_shut_down_at_once_not_at_the_idle_timeout() {
        let (client, server) = duplex(1 << 16);
        let (mut server_read, mut server_write) = tokio::io::split(server);
        let pipeline = Pipeline::over(client, Duration::from_secs(3600));
        server_write.shutdown().await.unwrap();
        // The reader sees the end; the writer then closes its side too, which the server
        // reads as end of stream.
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), server_read.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?}");
        let query = new_query("a.test", 1, false).unwrap();
        assert!(pipeline.exchange(&query).await.is_err());
    }

    #[tokio::test]
    async fn a_stream_ending_mid_frame_fails_the_waiting_query() {
        let (client, mut server) = duplex(1 << 16);
        let pipeline = Pipeline::over(client, Duration::from_secs(30));
        let query = new_query("a.test", 1, false).unwrap();
        let serve = async {
            let q = read_frame(&mut server).await;
            // A length prefix promising more than is ever sent, then EOF.
            server.write_all(&[0, 200, q[0], q[1]]).await.unwrap();
            drop(server);
        };
        let (answer, ()) = tokio::join!(pipeline.exchange(&query), serve);
        assert!(matches!(answer, Err(UpstreamError::Closed)), "{answer:?}");
    }
}
