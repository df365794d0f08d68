//! Asking the plaintext resolver, and watching for more than one reply.
//!
//! An ordinary stub takes the first reply that matches its query and closes the socket; an
//! on-path injector relies on that, racing a forged reply ahead of the genuine one. Here the
//! socket stays open for a hold window after the first reply, and every matching reply is
//! kept, so two different replies to one query show up as evidence.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout, timeout_at};

use crate::dns::check_answer;
use crate::dns::wire::{self, Header, Section};
pub use crate::hijack::classify::reply_of;
use crate::hijack::classify::{Plain, Reply};

/// A query built for the plaintext resolver: random ID, RD, EDNS with a 1232-byte payload.
pub fn plain_query(name: &str, qtype: u16, qclass: u16) -> Option<Vec<u8>> {
    let mut query = crate::dns::new_query(name, qtype, false)?;
    query[0..2].copy_from_slice(&rand::random::<u16>().to_be_bytes());
    // new_query asks for class IN; the question's class sits just before the OPT record.
    let parsed = wire::parse(&query).ok()?;
    let end = parsed.question?.end;
    query[end - 2..end].copy_from_slice(&qclass.to_be_bytes());
    Some(query)
}

/// The TXT strings in the answer section, each character-string decoded lossily.
pub fn txt_of(answer: &[u8]) -> Option<(u8, Vec<String>)> {
    let parsed = wire::parse(answer).ok()?;
    let header = Header::of(answer)?;
    let mut out = Vec::new();
    for r in parsed.section(Section::Answer).filter(|r| r.rtype == 16) {
        let mut rdata = &answer[r.rdata.clone()];
        let mut text = String::new();
        while let Some((&len, rest)) = rdata.split_first() {
            let len = usize::from(len).min(rest.len());
            text.push_str(&String::from_utf8_lossy(&rest[..len]));
            rdata = &rest[len..];
        }
        out.push(text);
    }
    Some((header.rcode(), out))
}

/// Different replies kept per query; two are evidence enough, a few more show its extent.
const MAX_REPLIES: usize = 8;

/// Sends `query` to `server` over UDP and collects every distinct matching reply until
/// `hold` after the first one (or `limit` without any). A truncated first reply is asked
/// again over TCP for its contents. Replies from elsewhere, with another ID or for another
/// question are ignored (RFC 5452 §9.1), as a stub would.
pub async fn observe(
    server: SocketAddr,
    query: &[u8],
    limit: Duration,
    hold: Duration,
) -> (Plain, Vec<Vec<u8>>) {
    let deadline = Instant::now() + limit;
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let Ok(socket) = UdpSocket::bind(bind).await else {
        return (Plain::Timeout, Vec::new());
    };
    if socket.send_to(query, server).await.is_err() {
        return (Plain::Timeout, Vec::new());
    }
    let mut replies: Vec<Reply> = Vec::new();
    let mut raw: Vec<Vec<u8>> = Vec::new();
    let mut stop = deadline;
    let mut buf = vec![0u8; 65_535];
    loop {
        let (len, from) = match timeout_at(stop, socket.recv_from(&mut buf)).await {
            Ok(Ok(received)) => received,
            Ok(Err(_)) | Err(_) => break,
        };
        let wire = &buf[..len];
        if from != server
            || wire.len() < 2
            || wire[..2] != query[..2]
            || check_answer(query, wire).is_err()
        {
            continue;
        }
        let truncated = Header::of(wire).is_some_and(|h| h.truncated());
        // A later truncated datagram (a network duplicate of the first) says nothing its
        // TCP-fetched contents did not.
        if truncated && !raw.is_empty() {
            continue;
        }
        let mut contents = wire.to_vec();
        if truncated
            && raw.is_empty()
            && let Ok(Some(full)) = timeout_at(deadline, tcp_exchange(server, query)).await
        {
            contents = full;
        }
        let Some(reply) = reply_of(&contents) else {
            continue;
        };
        if replies.is_empty() {
            stop = Instant::now() + hold;
        }
        if !replies.contains(&reply) && replies.len() < MAX_REPLIES {
            replies.push(reply);
            raw.push(contents);
        }
    }
    if replies.is_empty() {
        (Plain::Timeout, raw)
    } else {
        (Plain::Replies(replies), raw)
    }
}

/// One query over TCP (RFC 1035 §4.2.2 framing); `None` on any failure.
async fn tcp_exchange(server: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let mut tcp = timeout(Duration::from_secs(2), TcpStream::connect(server))
        .await
        .ok()?
        .ok()?;
    let mut frame = (query.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(query);
    tcp.write_all(&frame).await.ok()?;
    let len = tcp.read_u16().await.ok()?;
    let mut answer = vec![0u8; usize::from(len)];
    tcp.read_exact(&mut answer).await.ok()?;
    check_answer(query, &answer).ok()?;
    Some(answer)
}
