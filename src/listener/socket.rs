//! The UDP socket the listener answers on, watched by the runtime for reading only.
//!
//! tokio's `UdpSocket` asks epoll for both readability and writability. On Linux every
//! datagram sent makes a UDP socket writable again, so the runtime woke once more after each
//! answer, only to learn that the socket could take another: at a trickle of queries, every
//! query cost two wake-ups instead of one. This socket is registered for reading alone.
//! A send goes straight to the socket; the rare one that finds the socket's buffer full
//! waits on a second descriptor for the same socket, registered for writing only while it
//! waits. Such sends wait one at a time, so a burst that fills the buffer holds one extra
//! descriptor, not one per waiting answer.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;

/// A bound, non-blocking UDP socket registered with the runtime for reading.
#[derive(Debug)]
pub struct ListenSocket {
    io: AsyncFd<UdpSocket>,
    /// Held by the one send waiting for room; the others queue for it.
    waiting_turn: Mutex<()>,
}

impl ListenSocket {
    /// Binds `addr` (a tokio runtime must be running).
    pub fn bind(addr: SocketAddr) -> io::Result<ListenSocket> {
        ListenSocket::new(UdpSocket::bind(addr)?)
    }

    /// Takes over `socket` (a tokio runtime must be running), and gives it a receive buffer
    /// of at least [`RECEIVE_BUFFER`] bytes where the system allows.
    pub fn new(socket: UdpSocket) -> io::Result<ListenSocket> {
        socket.set_nonblocking(true)?;
        enlarge_receive_buffer(&socket);
        Ok(ListenSocket {
            io: register(socket, Interest::READABLE)?,
            waiting_turn: Mutex::new(()),
        })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// Waits until a datagram may be waiting.
    pub async fn readable(&self) -> io::Result<()> {
        self.io.readable().await.map(drop)
    }

    /// Runs `receive` on the socket if it may be readable. `WouldBlock` from `receive` (the
    /// socket had nothing after all) tells the runtime to wait for the next datagram.
    pub fn try_receive<R>(
        &self,
        receive: impl FnOnce(&UdpSocket) -> io::Result<R>,
    ) -> io::Result<R> {
        self.io.try_io(Interest::READABLE, receive)
    }

    /// The socket, to send on without waiting (`WouldBlock` when its buffer is full).
    pub fn sender(&self) -> &UdpSocket {
        self.io.get_ref()
    }

    /// Sends `datagram` to `peer`, waiting for room in the socket's buffer if there is none.
    pub async fn send_to(&self, datagram: &[u8], peer: SocketAddr) -> io::Result<usize> {
        match self.io.get_ref().send_to(datagram, peer) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
        // The buffer is full (a burst larger than it, a slow interface). Whoever waited
        // before may have found room for this one too.
        let _turn = self.waiting_turn.lock().await;
        match self.io.get_ref().send_to(datagram, peer) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
        // A duplicate of the descriptor, registered for writing, tells when there is room;
        // it goes when this send is done, so writability wakes the runtime only while a
        // send waits for it.
        let waiting = register(self.io.get_ref().try_clone()?, Interest::WRITABLE)?;
        loop {
            let mut ready = waiting.writable().await?;
            match ready.try_io(|socket| socket.get_ref().send_to(datagram, peer)) {
                Ok(done) => return done,
                Err(_would_block) => continue,
            }
        }
    }
}

/// The receive buffer a listening socket asks for. Linux's default (`net.core.rmem_default`,
/// 208 KiB unless changed) holds about 200 small queries, each datagram taking a kilobyte or
/// so of buffer: 200 queries that arrive while the process is not running (a busy core, a
/// container's CPU quota) already lose some. The kernel caps the request at
/// `net.core.rmem_max`, and doubles what it grants for its own bookkeeping, so even a
/// default system gives twice the default. The memory is only taken while datagrams wait.
pub const RECEIVE_BUFFER: usize = 1 << 20;

/// Raises `socket`'s receive buffer towards [`RECEIVE_BUFFER`] (never lowers it); a refusal
/// is logged, and the socket serves with what it has.
fn enlarge_receive_buffer(socket: &UdpSocket) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt::RcvBuf};
    match getsockopt(socket, RcvBuf) {
        Ok(size) if size >= RECEIVE_BUFFER => {}
        _ => {
            if let Err(e) = setsockopt(socket, RcvBuf, &RECEIVE_BUFFER) {
                tracing::debug!(error = %e, "cannot enlarge the UDP receive buffer");
            }
        }
    }
}

/// Registers `socket` with the runtime, for `interest` alone.
fn register(socket: UdpSocket, interest: Interest) -> io::Result<AsyncFd<UdpSocket>> {
    // SAFETY: the `AsyncFd` owns the socket, so its descriptor stays open and stays the
    // same (a std `UdpSocket` never changes what `as_raw_fd` returns) until the `AsyncFd`
    // is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn receives_what_is_sent_to_it_and_answers() {
        let server = ListenSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(b"query", server.local_addr().unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let (len, peer) = loop {
            server.readable().await.unwrap();
            match server.try_receive(|s| s.recv_from(&mut buf)) {
                Ok(got) => break got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(
            (&buf[..len], peer),
            (&b"query"[..], client.local_addr().unwrap())
        );
        let nothing = server.try_receive(|s| s.recv_from(&mut buf)).unwrap_err();
        assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);

        server.send_to(b"answer", peer).await.unwrap();
        let (len, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            (&buf[..len], from),
            (&b"answer"[..], server.local_addr().unwrap())
        );
    }

    /// The receive buffer grows as far as the system allows: the kernel grants twice what is
    /// asked, capped at `net.core.rmem_max` (Linux).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_receive_buffer_is_enlarged_as_far_as_the_system_allows() {
        use nix::sys::socket::{getsockopt, sockopt::RcvBuf};
        let read = |path: &str| -> usize {
            std::fs::read_to_string(path)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let (default, max) = (
            read("/proc/sys/net/core/rmem_default"),
            read("/proc/sys/net/core/rmem_max"),
        );
        let server = ListenSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let granted = getsockopt(server.sender(), RcvBuf).unwrap();
        let expected = if default >= RECEIVE_BUFFER {
            default
        } else {
            2 * RECEIVE_BUFFER.min(max)
        };
        assert_eq!(granted, expected, "rmem_default {default}, rmem_max {max}");
    }

    /// Sends that find the socket's buffer full wait for room, one at a time, and every
    /// datagram arrives.
    ///
    /// On loopback a datagram leaves the send buffer as it is sent, so the buffer never
    /// fills. In a network namespace of its own, this test's thread slows loopback down with
    /// a token-bucket qdisc (1 Mbit/s), so datagrams wait there and fill a small send buffer.
    /// The thread also takes a descriptor table of its own, so that it can count the
    /// descriptors the waiting sends hold while other tests open and close theirs. Needs root
    /// and `tc`: skipped when not root, and without `tc` unless the test script requires it.
    #[cfg(target_os = "linux")]
    #[test]
    fn sends_that_find_the_buffer_full_wait_their_turn_for_room() {
        use nix::sched::{CloneFlags, unshare};
        std::thread::spawn(|| {
            if !nix::unistd::geteuid().is_root() {
                return eprintln!("SKIPPED: not root");
            }
            // Namespaces and an unshared descriptor table belong to this thread (and what
            // it starts) alone.
            if let Err(e) = unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_FILES) {
                return skip(&format!("no network namespace: {e}"));
            }
            for command in [
                "ip link set lo up",
                "tc qdisc add dev lo root tbf rate 1mbit burst 16kb latency 2s",
            ] {
                let mut words = command.split(' ');
                let status = std::process::Command::new(words.next().unwrap())
                    .args(words)
                    .status();
                if !status.is_ok_and(|s| s.success()) {
                    return skip(&format!("`{command}` failed"));
                }
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(fill_and_wait());
        })
        .join()
        .unwrap();
    }

    #[cfg(target_os = "linux")]
    async fn fill_and_wait() {
        use nix::sys::socket::{setsockopt, sockopt};
        use std::sync::Arc;
        use std::time::Duration;
        let descriptors = || std::fs::read_dir("/proc/thread-self/fd").unwrap().count();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        setsockopt(&socket, sockopt::SndBuf, &4096).unwrap();
        let server = Arc::new(ListenSocket::new(socket).unwrap());
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        setsockopt(&client, sockopt::RcvBuf, &(1 << 20)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let peer = client.local_addr().unwrap();
        let datagram = |i: usize| vec![i as u8; 1000];

        // Fill the buffer with sends that do not wait, until one is refused.
        let mut sent = 0;
        loop {
            match server.sender().send_to(&datagram(sent), peer) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(sent < 100, "the send buffer never filled");
        }
        // Forty sends at once, which must wait for room, then go: one at a time holds a
        // descriptor for it (about 8 ms per datagram at this rate).
        let before = descriptors();
        let mut sends = tokio::task::JoinSet::new();
        for i in sent..sent + 40 {
            let server = server.clone();
            sends.spawn(async move { server.send_to(&datagram(i), peer).await });
        }
        let mut most = before;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !sends.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the sends never finished"
            );
            most = most.max(descriptors());
            tokio::time::sleep(Duration::from_millis(2)).await;
            while let Some(done) = sends.try_join_next() {
                done.unwrap().unwrap();
            }
        }
        assert_eq!(most, before + 1, "descriptors held while sends waited");
        assert_eq!(descriptors(), before, "descriptors after the sends");

        // The first ones in order; those that waited in any order.
        let mut buf = [0u8; 2048];
        let mut waited = Vec::new();
        for i in 0..sent + 40 {
            let len = client.recv(&mut buf).expect("every datagram arrives");
            if i < sent {
                assert_eq!(&buf[..len], &datagram(i)[..], "datagram {i}");
            } else {
                assert!(len == 1000 && buf[..len].iter().all(|&b| b == buf[0]));
                waited.push(buf[0] as usize);
            }
        }
        waited.sort_unstable();
        assert_eq!(waited, (sent..sent + 40).collect::<Vec<_>>());
    }

    #[cfg(target_os = "linux")]
    fn skip(why: &str) {
        if std::env::var_os("DNSWARD_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
            panic!("{why}: this test needs network namespaces and tc (iproute2)");
        }
        eprintln!("SKIPPED: {why}");
    }
}
