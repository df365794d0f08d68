//! Plain DNS (UDP / TCP) clients for talking to the proxy under test. Loopback only; every
//! network await is bounded by a timeout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use super::zone::name;

pub const UDP_TIMEOUT: Duration = Duration::from_secs(3);
pub const TCP_TIMEOUT: Duration = Duration::from_secs(5);

fn assert_loopback(server: SocketAddr) {
    assert!(
        server.ip().is_loopback(),
        "test clients talk to loopback only, not {server}"
    );
}

/// A standard query: RD set, random ID, one question (name made fully qualified).
pub fn query(n: &str, rtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(n), rtype));
    m
}

/// `query` plus an OPT record advertising `payload` with the DO bit as given.
pub fn query_edns(n: &str, rtype: RecordType, payload: u16, dnssec_ok: bool) -> Message {
    let mut m = query(n, rtype);
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    edns.set_dnssec_ok(dnssec_ok);
    m.edns = Some(edns);
    m
}

/// Encodes a message (panics on failure: test code).
pub fn wire(msg: &Message) -> Vec<u8> {
    msg.to_vec().expect("encode DNS message")
}

/// Decodes a message (panics on failure: test code).
pub fn parse(bytes: &[u8]) -> Message {
    Message::from_vec(bytes)
        .unwrap_or_else(|e| panic!("bad DNS message ({} bytes): {e}", bytes.len()))
}

/// Sends one datagram and returns the first datagram back from `server`; None on 3 s timeout.
pub async fn udp_exchange(server: SocketAddr, wire: &[u8]) -> Option<Vec<u8>> {
    udp_exchange_timeout(server, wire, UDP_TIMEOUT).await
}

/// `udp_exchange` with a caller-chosen timeout (e.g. to assert that no answer comes).
pub async fn udp_exchange_timeout(
    server: SocketAddr,
    wire: &[u8],
    limit: Duration,
) -> Option<Vec<u8>> {
    assert_loopback(server);
    let local: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    };
    let sock = UdpSocket::bind(SocketAddr::new(local, 0))
        .await
        .expect("bind UDP client");
    sock.connect(server).await.expect("connect UDP client");
    sock.send(wire).await.expect("send UDP query");
    let mut buf = vec![0u8; 65535];
    match timeout(limit, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => {
            buf.truncate(n);
            Some(buf)
        }
        // ICMP port unreachable surfaces as ECONNREFUSED on a connected socket: no answer.
        Ok(Err(_)) | Err(_) => None,
    }
}

/// One query over UDP; panics on timeout or an unparseable answer.
pub async fn udp(server: SocketAddr, msg: &Message) -> Message {
    let bytes = udp_exchange(server, &wire(msg))
        .await
        .unwrap_or_else(|| panic!("no UDP answer from {server} within {UDP_TIMEOUT:?}"));
    parse(&bytes)
}

async fn tcp_connect(server: SocketAddr) -> TcpStream {
    assert_loopback(server);
    let s = timeout(TCP_TIMEOUT, TcpStream::connect(server))
        .await
        .unwrap_or_else(|_| panic!("TCP connect to {server} timed out"))
        .unwrap_or_else(|e| panic!("TCP connect to {server}: {e}"));
    let _ = s.set_nodelay(true);
    s
}

fn frame(msg: &Message) -> Vec<u8> {
    let w = wire(msg);
    let mut f = Vec::with_capacity(w.len() + 2);
    f.extend_from_slice(&(w.len() as u16).to_be_bytes());
    f.extend_from_slice(&w);
    f
}

/// Reads one 2-byte length-prefixed message.
pub async fn read_framed<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let len = r.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Writes one 2-byte length-prefixed message (no flush).
pub async fn write_framed<W: AsyncWriteExt + Unpin>(w: &mut W, msg: &[u8]) -> std::io::Result<()> {
    let mut f = Vec::with_capacity(msg.len() + 2);
    f.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    f.extend_from_slice(msg);
    w.write_all(&f).await
}

/// One query on a fresh TCP connection (5 s bound); panics on failure.
pub async fn tcp(server: SocketAddr, msg: &Message) -> Message {
    let mut s = tcp_connect(server).await;
    let io = async {
        s.write_all(&frame(msg)).await?;
        read_framed(&mut s).await
    };
    let bytes = timeout(TCP_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| panic!("no TCP answer from {server} within {TCP_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("TCP exchange with {server}: {e}"));
    parse(&bytes)
}

/// Sends all queries back to back on one TCP connection before reading, then reads exactly that
/// many answers (in whatever order they come), 5 s bound overall; panics on failure.
pub async fn tcp_pipelined(server: SocketAddr, msgs: &[Message]) -> Vec<Message> {
    let mut s = tcp_connect(server).await;
    let io = async {
        let mut all = Vec::new();
        for m in msgs {
            all.extend_from_slice(&frame(m));
        }
        s.write_all(&all).await?;
        let mut out = Vec::with_capacity(msgs.len());
        for _ in 0..msgs.len() {
            out.push(read_framed(&mut s).await?);
        }
        Ok::<_, std::io::Error>(out)
    };
    let answers = timeout(TCP_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| {
            panic!("pipelined TCP answers from {server} not all in within {TCP_TIMEOUT:?}")
        })
        .unwrap_or_else(|e| panic!("pipelined TCP exchange with {server}: {e}"));
    answers.iter().map(|b| parse(b)).collect()
}
