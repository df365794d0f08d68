//! Many datagrams per system call: `recvmmsg` and `sendmmsg` on Linux (and FreeBSD, NetBSD),
//! one `recvfrom`/`sendto` at a time elsewhere.
//!
//! Under load most of a cache hit's cost is the kernel's, and a good part of that is paid
//! per system call. The UDP listener reads what is waiting in one call, answers what it can,
//! and sends those answers in one call.

use std::io;
use std::net::SocketAddr;

use super::socket::ListenSocket;

/// Datagrams read, or answers sent, in one system call at most.
pub const BATCH: usize = 16;

/// Room for one query. A larger one is cut to this size by the kernel and marked as such:
/// see [`Datagram::truncated`]. Queries are small (a question, an OPT record, perhaps a
/// cookie or padding); 4096 is above the largest EDNS payload size clients advertise.
pub const SLOT: usize = 4096;

/// One received datagram.
#[derive(Debug)]
pub struct Datagram<'a> {
    /// Its bytes (at most [`SLOT`]).
    pub bytes: &'a [u8],
    /// Who sent it.
    pub peer: SocketAddr,
    /// True if it was longer than [`SLOT`] and `bytes` holds only its beginning.
    pub truncated: bool,
}

/// Where received datagrams land: [`BATCH`] slots of [`SLOT`] bytes.
pub struct Inbox {
    buf: Box<[u8]>,
    /// Length, sender and whether cut, per filled slot.
    got: Vec<(usize, SocketAddr, bool)>,
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox {
            buf: vec![0; BATCH * SLOT].into_boxed_slice(),
            got: Vec::with_capacity(BATCH),
        }
    }
}

impl Inbox {
    /// Reads the datagrams waiting on `socket`, up to [`BATCH`], without waiting; forgets
    /// those read before. `WouldBlock` when none is waiting (and tokio is told so).
    pub fn receive(&mut self, socket: &ListenSocket) -> io::Result<usize> {
        self.got.clear();
        socket.try_receive(|socket| sys::receive(socket, &mut self.buf, &mut self.got))?;
        Ok(self.got.len())
    }

    /// The datagrams the last [`Inbox::receive`] read, in order of arrival.
    pub fn datagrams(&self) -> impl Iterator<Item = Datagram<'_>> {
        self.buf
            .chunks(SLOT)
            .zip(&self.got)
            .map(|(slot, &(len, peer, truncated))| Datagram {
                bytes: &slot[..len],
                peer,
                truncated,
            })
    }
}

/// Answers waiting to be sent, each with its destination.
#[derive(Default)]
pub struct Outbox {
    answers: Vec<(Vec<u8>, SocketAddr)>,
}

impl Outbox {
    /// Queues `answer` for `peer`.
    pub fn push(&mut self, answer: Vec<u8>, peer: SocketAddr) {
        self.answers.push((answer, peer));
    }

    /// Sends the queued answers, [`BATCH`] per system call, without waiting. Those the
    /// socket has no room for right now stay queued, in order; an answer the kernel refuses
    /// (an unreachable destination, say) is dropped and logged. Returns how many were sent.
    pub fn flush(&mut self, socket: &ListenSocket) -> usize {
        let mut done = 0;
        let mut sent = 0;
        while done < self.answers.len() {
            let pending = &self.answers[done..];
            let pending = &pending[..pending.len().min(BATCH)];
            match sys::send(socket.sender(), pending) {
                Ok(n) => {
                    done += n;
                    sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // The error is the first answer's: the kernel sent none of them.
                    tracing::debug!(peer = %pending[0].1, error = %e, "UDP send failed");
                    done += 1;
                }
            }
        }
        self.answers.drain(..done);
        sent
    }

    /// How many answers are queued.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// Takes the answers still queued.
    pub fn take(&mut self) -> std::vec::Drain<'_, (Vec<u8>, SocketAddr)> {
        self.answers.drain(..)
    }
}

/// Answers finished by tasks of their own (the cache misses), gathered so that those ready
/// at about the same time go out in one system call, as the cache hits do.
///
/// Each answer comes with a token (the task's in-flight permit) that is dropped once the
/// answer is sent. The task that queues the first answer becomes the sender: it lets the
/// tasks already woken queue theirs, then takes and sends everything queued, until the
/// queue is empty.
pub struct Gather<T> {
    state: std::sync::Mutex<Gathered<T>>,
}

struct Gathered<T> {
    outbox: Outbox,
    tokens: Vec<T>,
    /// Whether a task has taken on the sending.
    sending: bool,
}

impl<T> Default for Gather<T> {
    fn default() -> Self {
        Gather {
            state: std::sync::Mutex::new(Gathered {
                outbox: Outbox::default(),
                tokens: Vec::new(),
                sending: false,
            }),
        }
    }
}

impl<T> Gather<T> {
    /// Queues `answer` for `peer`. If no task is sending, the caller becomes the sender: it
    /// gets the turn, and must [`Turn::take`] until that returns `None`.
    pub fn push(&self, answer: Vec<u8>, peer: SocketAddr, token: T) -> Option<Turn<'_, T>> {
        let mut state = self.lock();
        state.outbox.push(answer, peer);
        state.tokens.push(token);
        let was_sending = std::mem::replace(&mut state.sending, true);
        drop(state);
        (!was_sending).then(|| Turn {
            gather: self,
            over: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gathered<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A task's turn as the sender of a [`Gather`].
pub struct Turn<'a, T> {
    gather: &'a Gather<T>,
    /// Whether [`Turn::take`] found nothing left.
    over: bool,
}

impl<T> Turn<'_, T> {
    /// The answers queued so far with their tokens, or `None` when there are none left,
    /// which ends the turn (the next answer queued makes a new sender).
    pub fn take(&mut self) -> Option<(Outbox, Vec<T>)> {
        let mut state = self.gather.lock();
        if state.tokens.is_empty() {
            state.sending = false;
            self.over = true;
            return None;
        }
        Some((
            std::mem::take(&mut state.outbox),
            std::mem::take(&mut state.tokens),
        ))
    }
}

impl<T> Drop for Turn<'_, T> {
    /// A sender stopped before its turn was over (its task panicked, or the runtime is
    /// shutting down): what it would have sent is dropped, tokens included, and the next
    /// answer queued makes a new sender, rather than waiting for one that is gone.
    fn drop(&mut self) {
        if !self.over {
            let mut state = self.gather.lock();
            state.outbox = Outbox::default();
            state.tokens.clear();
            state.sending = false;
        }
    }
}

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd"
))]
mod sys {
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage};

    use super::{BATCH, SLOT};

    /// One `recvmmsg` into the slots of `buf`; records each datagram in `got`.
    pub fn receive(
        socket: &UdpSocket,
        buf: &mut [u8],
        got: &mut Vec<(usize, SocketAddr, bool)>,
    ) -> io::Result<()> {
        let mut slots = buf.chunks_mut(SLOT);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let received = nix::sys::socket::recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        for message in received {
            // A datagram from a sender without an IP address cannot be answered.
            let Some(peer) = message.address.as_ref().and_then(socket_addr) else {
                continue;
            };
            let truncated = message.flags.contains(MsgFlags::MSG_TRUNC);
            got.push((message.bytes.min(SLOT), peer, truncated));
        }
        Ok(())
    }

    /// One `sendmmsg` of `answers` (at most [`BATCH`]); how many the kernel took.
    pub fn send(socket: &UdpSocket, answers: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut iovs = [[IoSlice::new(&[])]; BATCH];
        let mut addrs = [None; BATCH];
        for (i, (answer, peer)) in answers.iter().enumerate().take(BATCH) {
            iovs[i] = [IoSlice::new(answer)];
            addrs[i] = Some(SockaddrStorage::from(*peer));
        }
        let n = answers.len().min(BATCH);
        let sent = nix::sys::socket::sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            &iovs[..n],
            &addrs[..n],
            [],
            MsgFlags::MSG_DONTWAIT,
        )?;
        Ok(sent.count())
    }

    fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = addr.as_sockaddr_in() {
            return Some(SocketAddr::V4((*v4).into()));
        }
        addr.as_sockaddr_in6()
            .map(|v6| SocketAddr::V6((*v6).into()))
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd"
)))]
mod sys {
    use std::io;
    use std::net::{SocketAddr, UdpSocket};

    use super::SLOT;

    /// One datagram into the first slot of `buf` (it cannot tell whether it was cut).
    pub fn receive(
        socket: &UdpSocket,
        buf: &mut [u8],
        got: &mut Vec<(usize, SocketAddr, bool)>,
    ) -> io::Result<()> {
        let (len, peer) = socket.recv_from(&mut buf[..SLOT])?;
        got.push((len, peer, false));
        Ok(())
    }

    /// One `sendto` of the first answer.
    pub fn send(socket: &UdpSocket, answers: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
        let (answer, peer) = &answers[0];
        socket.send_to(answer, *peer)?;
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UdpSocket;

    fn listen(addr: &str) -> io::Result<ListenSocket> {
        ListenSocket::bind(addr.parse().unwrap())
    }

    async fn pair() -> (ListenSocket, UdpSocket) {
        let a = listen("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn reads_waiting_datagrams_in_order_and_marks_the_one_cut_short() {
        let (server, client) = pair().await;
        let to = server.local_addr().unwrap();
        let mut sizes: Vec<usize> = (1..=BATCH + 3).collect();
        sizes[2] = SLOT + 100;
        for (i, &size) in sizes.iter().enumerate() {
            client.send_to(&vec![i as u8; size], to).await.unwrap();
        }
        let mut inbox = Inbox::default();
        let mut seen = Vec::new();
        while seen.len() < sizes.len() {
            server.readable().await.unwrap();
            match inbox.receive(&server) {
                Ok(n) => assert!(n <= BATCH),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
            for d in inbox.datagrams() {
                assert_eq!(d.peer, client.local_addr().unwrap());
                seen.push((d.bytes.to_vec(), d.truncated));
            }
        }
        for (i, (bytes, truncated)) in seen.iter().enumerate() {
            assert_eq!(bytes.len(), sizes[i].min(SLOT), "datagram {i}");
            assert!(bytes.iter().all(|&b| b == i as u8), "datagram {i}");
            assert_eq!(*truncated, i == 2, "datagram {i}");
        }
        let none = inbox.receive(&server).unwrap_err();
        assert_eq!(none.kind(), io::ErrorKind::WouldBlock);
    }

    #[tokio::test]
    async fn sends_every_queued_answer_to_its_own_peer() {
        let server = listen("127.0.0.1:0").unwrap();
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        let mut outbox = Outbox::default();
        for round in 0..BATCH + 2 {
            let client = &clients[round % clients.len()];
            outbox.push(vec![round as u8; round + 1], client.local_addr().unwrap());
        }
        assert_eq!(outbox.flush(&server), BATCH + 2);
        assert_eq!(outbox.take().count(), 0);
        let mut buf = [0u8; 64];
        for round in 0..BATCH + 2 {
            let client = &clients[round % clients.len()];
            let (len, from) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, server.local_addr().unwrap());
            assert_eq!(&buf[..len], &vec![round as u8; round + 1][..]);
        }
    }

    #[tokio::test]
    async fn ipv6_senders_are_read_and_answered() {
        // Not every machine has ::1 (IPv6 may be disabled); then there is nothing to test.
        let Ok(server) = listen("[::1]:0") else {
            return;
        };
        let client = UdpSocket::bind("[::1]:0").await.unwrap();
        client
            .send_to(b"query", server.local_addr().unwrap())
            .await
            .unwrap();
        let mut inbox = Inbox::default();
        let peer = loop {
            server.readable().await.unwrap();
            if let Ok(1) = inbox.receive(&server) {
                let d = inbox.datagrams().next().unwrap();
                assert_eq!((d.bytes, d.truncated), (&b"query"[..], false));
                break d.peer;
            }
        };
        assert_eq!(peer, client.local_addr().unwrap());
        let mut outbox = Outbox::default();
        outbox.push(b"answer".to_vec(), peer);
        assert_eq!(outbox.flush(&server), 1);
        let mut buf = [0u8; 16];
        let (len, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            (&buf[..len], from),
            (&b"answer"[..], server.local_addr().unwrap())
        );
    }

    #[test]
    fn the_first_answer_gathered_makes_its_task_the_sender_until_none_are_left() {
        let gather = Gather::default();
        let peer: SocketAddr = "127.0.0.1:5300".parse().unwrap();
        let mut turn = gather.push(vec![1], peer, 'a').expect("first: the sender");
        assert!(gather.push(vec![2], peer, 'b').is_none());
        let (mut outbox, tokens) = turn.take().unwrap();
        assert_eq!(tokens, ['a', 'b']);
        let answers: Vec<_> = outbox.take().map(|(answer, _)| answer).collect();
        assert_eq!(answers, [vec![1], vec![2]]);
        // Queued while the sender sends: still its to send, and no second sender.
        assert!(gather.push(vec![3], peer, 'c').is_none());
        assert_eq!(turn.take().unwrap().1, ['c']);
        assert!(turn.take().is_none());
        drop(turn);
        // Its turn is over: the next answer makes a new sender.
        assert!(gather.push(vec![4], peer, 'd').is_some());
    }

    #[test]
    fn a_sender_gone_before_its_turn_is_over_leaves_the_turn_to_the_next() {
        let gather = Gather::default();
        let peer: SocketAddr = "127.0.0.1:5300".parse().unwrap();
        let token = std::sync::Arc::new(());
        let turn = gather.push(vec![1], peer, token.clone()).unwrap();
        assert!(gather.push(vec![2], peer, token.clone()).is_none());
        drop(turn); // as when its task panics or is cancelled
        assert_eq!(
            std::sync::Arc::strong_count(&token),
            1,
            "its tokens are released"
        );
        let mut next = gather
            .push(vec![3], peer, token.clone())
            .expect("a new sender");
        let (mut outbox, _) = next.take().unwrap();
        assert_eq!(outbox.take().map(|(a, _)| a).collect::<Vec<_>>(), [vec![3]]);
    }

    #[tokio::test]
    async fn an_answer_the_kernel_refuses_is_dropped_and_the_rest_still_go() {
        let server = listen("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut outbox = Outbox::default();
        // IPv6 destination from an IPv4 socket: EAFNOSUPPORT or EINVAL.
        outbox.push(vec![1], "[::1]:53".parse().unwrap());
        outbox.push(vec![2], client.local_addr().unwrap());
        assert_eq!(outbox.flush(&server), 1);
        assert_eq!(outbox.take().count(), 0);
        let mut buf = [0u8; 8];
        let (len, _) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..len], &[2]);
    }
}
