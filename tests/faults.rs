//! Faults under load, all on loopback: an upstream killed mid-load and brought back, one
//! that goes silent, upstreams answering garbage, oversized or mismatched messages, a
//! thousand TCP clients at once, clients that never finish a length prefix, and a flood of
//! malformed datagrams. Through each, well-behaved clients must keep getting answers, the
//! proxy must not die, and its memory and open files must stay bounded.
//!
//! The proxy is the real binary, so its resident memory and file descriptors can be read
//! from /proc without counting the test's own; upstreams are in-process fakes. Every load is
//! bounded in count and time; no assertion is about speed. Bounds on memory are generous
//! (64 MB, the peak target) since they guard against leaks, not against growth of a
//! few megabytes.

mod common;
mod util;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use util::{Daemon, dnsward, free_port, temp_dir};

/// Resident memory the proxy may use at any point in these tests (the peak target).
const MAX_RSS_KB: u64 = 64 * 1024;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Names n<i>.load.test do not exist: the zone answers NXDOMAIN with its SOA, so every
/// unique name is a cache miss that goes upstream, and the answer is still an answer.
fn load_zone() -> Zone {
    Zone::new().records(
        "load.test. 3600 IN SOA ns.load.test. host.load.test. 1 3600 600 86400 60
         a.load.test. 300 IN A 192.0.2.1",
    )
}

/// The real proxy, killed when dropped.
struct RealProxy {
    daemon: Daemon,
    addr: SocketAddr,
}

impl RealProxy {
    /// Starts `dnsward run` on a free loopback port over `upstreams`, with `extra` TOML.
    async fn start(tag: &str, upstreams: &[String], extra: &str) -> RealProxy {
        let dir = temp_dir(tag);
        let addr = SocketAddr::new(LOCALHOST, free_port());
        let config = dir.join("dnsward.toml");
        std::fs::write(
            &config,
            format!("hosts-file = \"\"\nbootstrap = []\n{extra}\n"),
        )
        .expect("write config");
        let mut cmd = dnsward();
        cmd.arg("-c")
            .arg(&config)
            .arg("run")
            .args(["--listen", &addr.to_string()])
            .arg("--ca-file")
            .arg(cert_path("ca.pem"));
        for url in upstreams {
            cmd.args(["--upstream", url]);
        }
        let daemon = Daemon::spawn(cmd, &dir.join("dnsward.log")).owning(dir);
        let mut proxy = RealProxy { daemon, addr };
        let started = Instant::now();
        // The proxy answers a local zone (localhost) without any upstream.
        let probe = query("localhost", RecordType::A);
        loop {
            proxy.assert_alive();
            let answer = udp_exchange_timeout(addr, &wire(&probe), ms(200)).await;
            if answer.is_some_and(|a| parse(&a).metadata.id == probe.metadata.id) {
                return proxy;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "dnsward did not start; log:\n{}",
                proxy.daemon.log()
            );
        }
    }

    fn pid(&self) -> u32 {
        self.daemon.child.id()
    }

    /// Resident memory in kB, from /proc.
    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("proxy is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    /// Open file descriptors.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("proxy is running")
            .count()
    }

    /// Panics with the log if the process has exited.
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.daemon.child.try_wait() {
            panic!("dnsward exited ({status}); log:\n{}", self.daemon.log());
        }
    }

    fn assert_memory_bounded(&self, when: &str) {
        let rss = self.rss_kb();
        assert!(
            rss <= MAX_RSS_KB,
            "{when}: resident memory {rss} kB over {MAX_RSS_KB} kB"
        );
    }

    /// Waits (bounded) until the open descriptors are back within `slack` of `baseline`.
    async fn assert_fds_return(&self, baseline: usize, slack: usize) {
        let started = Instant::now();
        loop {
            let now = self.open_fds();
            if now <= baseline + slack {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "open descriptors stayed at {now}, baseline {baseline}"
            );
            tokio::time::sleep(ms(100)).await;
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// How a batch of client queries fared.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    /// Answers other than SERVFAIL, with the query's ID.
    answered: usize,
    /// SERVFAIL answers.
    servfail: usize,
    /// No answer within the client's deadline (after its retries).
    unanswered: usize,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.answered += other.answered;
        self.servfail += other.servfail;
        self.unanswered += other.unanswered;
    }
}

/// One UDP query as a stub resolver sends it: up to `tries` attempts of `wait` each.
async fn ask(server: SocketAddr, name: &str, tries: usize, wait: Duration) -> Tally {
    let msg = query(name, RecordType::A);
    let bytes = wire(&msg);
    for _ in 0..tries {
        if let Some(answer) = udp_exchange_timeout(server, &bytes, wait).await {
            let answer = parse(&answer);
            assert_eq!(
                answer.metadata.id, msg.metadata.id,
                "answer with the query's ID"
            );
            return if answer.metadata.response_code == hickory_proto::op::ResponseCode::ServFail {
                Tally {
                    servfail: 1,
                    ..Tally::default()
                }
            } else {
                Tally {
                    answered: 1,
                    ..Tally::default()
                }
            };
        }
    }
    Tally {
        unanswered: 1,
        ..Tally::default()
    }
}

/// `count` queries for distinct names `<tag><i>.load.test` (cache misses), `concurrency` at
/// a time, each with one attempt of `wait`; `progress` counts finished queries.
async fn udp_load(
    server: SocketAddr,
    tag: &'static str,
    count: usize,
    concurrency: usize,
    wait: Duration,
    progress: Arc<AtomicUsize>,
) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (next, progress) = (next.clone(), progress.clone());
        workers.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    return tally;
                }
                tally.add(ask(server, &format!("{tag}{i}.load.test"), 1, wait).await);
                progress.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let mut total = Tally::default();
    while let Some(t) = workers.join_next().await {
        total.add(t.expect("load worker"));
    }
    total
}

/// Waits (bounded by `limit`) until `done()`.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(ms(10)).await;
    }
}

/// Settings for the upstream fault tests: strict order (the first upstream is preferred, so
/// traffic moving back to it is visible), short attempt and query timeouts.
const STRICT: &str = "strategy = \"strict\"\nquery-timeout-ms = 3000\nattempt-timeout-ms = 300";

async fn killed_mid_load_then_restarted(first: Proto, second: Proto) {
    let zone = load_zone();
    let a = FakeUpstream::start(first, zone.clone(), Behavior::Answer, LOCALHOST).await;
    let b = FakeUpstream::start(second, zone.clone(), Behavior::Answer, LOCALHOST).await;
    let a_addr = a.addr();
    let mut proxy = RealProxy::start("faults-kill", &[a.url(), b.url()], STRICT).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(udp_load(
        proxy.addr,
        "kill",
        3000,
        32,
        Duration::from_secs(5),
        progress.clone(),
    ));
    wait_until("a third of the load", Duration::from_secs(60), || {
        progress.load(Ordering::SeqCst) >= 1000
    })
    .await;
    let a_served = a.query_count();
    a.stop(); // killed mid-load: its connections are dropped
    wait_until("two thirds of the load", Duration::from_secs(60), || {
        progress.load(Ordering::SeqCst) >= 2000
    })
    .await;
    let a = FakeUpstream::start_on(first, zone, Behavior::Answer, a_addr).await;
    let tally = load.await.expect("load");
    assert_eq!(
        tally,
        Tally {
            answered: 3000,
            servfail: 0,
            unanswered: 0
        },
        "every query answered while the preferred upstream died"
    );
    assert!(a_served > 0, "the preferred upstream served before it died");
    assert!(b.query_count() > 0, "the other upstream took over");

    // Once the restarted upstream is found healthy, strict order sends traffic back to it.
    let started = Instant::now();
    let mut round = 0;
    loop {
        let (a_before, b_before) = (a.query_count(), b.query_count());
        let mut tally = Tally::default();
        for i in 0..10 {
            tally.add(
                ask(
                    proxy.addr,
                    &format!("back{round}-{i}.load.test"),
                    1,
                    ms(4000),
                )
                .await,
            );
        }
        assert_eq!(tally.answered, 10, "{tally:?}");
        if b.query_count() == b_before && a.query_count() >= a_before + 10 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "traffic did not return to the restarted upstream; log:\n{}",
            proxy.daemon.log()
        );
        round += 1;
        tokio::time::sleep(ms(200)).await;
    }
    proxy.assert_alive();
    proxy.assert_memory_bounded("after the kill and restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_upstream_killed_mid_load_and_restarted() {
    killed_mid_load_then_restarted(Proto::Dot, Proto::Doh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doh_upstream_killed_mid_load_and_restarted() {
    killed_mid_load_then_restarted(Proto::Doh, Proto::Dot).await;
}

async fn goes_silent_mid_load(first: Proto, second: Proto) {
    let zone = load_zone();
    let a = FakeUpstream::start(first, zone.clone(), Behavior::Answer, LOCALHOST).await;
    let b = FakeUpstream::start(second, zone, Behavior::Answer, LOCALHOST).await;
    let mut proxy = RealProxy::start("faults-silent", &[a.url(), b.url()], STRICT).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(udp_load(
        proxy.addr,
        "silent",
        1500,
        32,
        Duration::from_secs(5),
        progress.clone(),
    ));
    wait_until("a third of the load", Duration::from_secs(60), || {
        progress.load(Ordering::SeqCst) >= 500
    })
    .await;
    // Connections stay open and queries are read, but nothing comes back.
    a.set_behavior(Behavior::Hang);
    let tally = load.await.expect("load");
    assert_eq!(
        tally,
        Tally {
            answered: 1500,
            servfail: 0,
            unanswered: 0
        },
        "every query answered after the preferred upstream went silent"
    );
    proxy.assert_alive();
    proxy.assert_memory_bounded("after an upstream went silent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_upstream_that_stops_answering_mid_load() {
    goes_silent_mid_load(Proto::Dot, Proto::Doh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doh_upstream_that_stops_answering_mid_load() {
    goes_silent_mid_load(Proto::Doh, Proto::Dot).await;
}

/// A query's ID, question name and bytes, as a hostile upstream sees them.
fn reply_to_other_question(query: &[u8]) -> Vec<u8> {
    let mut msg = Message::from_vec(query).expect("dnsward sends valid queries");
    msg.metadata.message_type = hickory_proto::op::MessageType::Response;
    if let Some(q) = msg.queries.first_mut() {
        q.set_name(Name::from_ascii("other.load.test.").unwrap());
    }
    msg.to_vec().unwrap()
}

/// Junk of `len` bytes that starts with `id`, so a DoT client matches it to its query.
fn junk_with_id(id: [u8; 2], len: usize) -> Vec<u8> {
    let mut out = id.to_vec();
    out.extend((0..len.saturating_sub(2)).map(|i| (i * 7 + 13) as u8));
    out
}

/// A DoT server answering every query with something unusable, in turn: junk carrying the
/// query's ID, a 65535-byte frame of junk, an answer to another question, a valid answer
/// with another ID, a header that promises more than it carries, and a frame cut off by
/// closing the connection.
async fn hostile_dot() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server_config("server-chain.pem", "server.key", &[b"dot"]));
    let turn = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, turn) = (acceptor.clone(), turn.clone());
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) = timeout(ms(5000), acceptor.accept(tcp)).await else {
                    return;
                };
                while let Ok(Ok(query)) = timeout(ms(10_000), read_framed(&mut tls)).await {
                    let id = [query[0], query[1]];
                    let reply = match turn.fetch_add(1, Ordering::SeqCst) % 6 {
                        0 => junk_with_id(id, 40),
                        1 => junk_with_id(id, 65_535),
                        2 => reply_to_other_question(&query),
                        3 => {
                            let mut r = Zone::new().answer_wire(&query);
                            r[0] ^= 0x55;
                            r
                        }
                        4 => {
                            let mut r = Zone::new().answer_wire(&query)[..12].to_vec();
                            r[5] = 9; // nine questions, none present
                            r
                        }
                        _ => {
                            let _ = tls.write_all(&[0, 80, id[0], id[1], 0x81]).await;
                            return;
                        }
                    };
                    if write_framed(&mut tls, &reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A DoH server answering every request with something unusable, in turn: HTML, a body
/// over 65535 bytes, junk typed as a DNS message, an answer to another question, and a 503.
async fn hostile_doh() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server_config("server-chain.pem", "server.key", &[b"h2"]));
    let turn = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, turn) = (acceptor.clone(), turn.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) = timeout(ms(5000), acceptor.accept(tcp)).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    let turn = turn.clone();
                    async move {
                        let body = Limited::new(req.into_body(), 65_535)
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let dns = "application/dns-message";
                        let (status, kind, body) = match turn.fetch_add(1, Ordering::SeqCst) % 5 {
                            0 => (200, "text/html", b"<html>hello</html>".to_vec()),
                            1 => (200, dns, vec![0x42; 70_000]),
                            2 => (200, dns, junk_with_id([0, 0], 30)),
                            3 => (200, dns, reply_to_other_question(&body)),
                            _ => (503, dns, Vec::new()),
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", kind)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = timeout(
                    Duration::from_secs(60),
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service),
                )
                .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversized_and_mismatched_answers_never_reach_clients() {
    let (dot, dot_task) = hostile_dot().await;
    let (doh, doh_task) = hostile_doh().await;
    let hostile = [
        format!("tls://localhost:{}#127.0.0.1", dot.port()),
        format!("https://localhost:{}/dns-query#127.0.0.1", doh.port()),
    ];
    let settings = "query-timeout-ms = 2000\nattempt-timeout-ms = 300\nconnect-timeout-ms = 1000";

    // Only hostile upstreams: every client still gets an answer (SERVFAIL), promptly.
    let mut proxy = RealProxy::start("faults-hostile", &hostile, settings).await;
    let tally = udp_load(
        proxy.addr,
        "hostile",
        300,
        16,
        Duration::from_secs(4),
        Arc::default(),
    )
    .await;
    assert_eq!(
        tally.unanswered,
        0,
        "{tally:?}; log:\n{}",
        proxy.daemon.log()
    );
    assert_eq!(
        tally.answered, 0,
        "nothing usable came from upstream: {tally:?}"
    );
    proxy.assert_alive();
    proxy.assert_memory_bounded("with only hostile upstreams");
    drop(proxy);

    // Hostile upstreams first, a good one last: clients get the good one's answers.
    let good = FakeUpstream::dot(load_zone(), Behavior::Answer).await;
    let mut upstreams = hostile.to_vec();
    upstreams.push(good.url());
    let mut proxy = RealProxy::start(
        "faults-hostile-good",
        &upstreams,
        &format!("{settings}\nstrategy = \"strict\""),
    )
    .await;
    let tally = udp_load(
        proxy.addr,
        "mixed",
        600,
        16,
        Duration::from_secs(4),
        Arc::default(),
    )
    .await;
    assert_eq!(
        tally,
        Tally {
            answered: 600,
            servfail: 0,
            unanswered: 0
        }
    );
    proxy.assert_alive();
    proxy.assert_memory_bounded("with hostile and good upstreams");
    dot_task.abort();
    doh_task.abort();
}

/// One DNS-over-TCP client: connect, ask, read the answer. `Some(true)` answered,
/// `Some(false)` closed by the server without an answer, `None` nothing within 10 s.
async fn tcp_client(server: SocketAddr, name: String) -> Option<bool> {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.ok()?;
        let msg = query(&name, RecordType::A);
        if write_framed(&mut stream, &wire(&msg)).await.is_err() {
            return Some(false);
        }
        match read_framed(&mut stream).await {
            Ok(answer) => Some(parse(&answer).metadata.id == msg.metadata.id),
            Err(_) => Some(false),
        }
    };
    timeout(Duration::from_secs(10), exchange).await.ok()?
}

/// A well-behaved stub resolver asking `count` questions over UDP (three tries of a second).
async fn well_behaved(server: SocketAddr, tag: &str, count: usize) -> Tally {
    let mut tally = Tally::default();
    for i in 0..count {
        tally.add(ask(server, &format!("{tag}{i}.load.test"), 3, ms(1000)).await);
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_tcp_clients() {
    let upstream = FakeUpstream::dot(load_zone(), Behavior::Answer).await;
    // Room for all of them: every one is answered.
    let mut proxy = RealProxy::start(
        "faults-tcp1000",
        &[upstream.url()],
        "[tcp]\nmax-connections = 1100",
    )
    .await;
    let baseline = proxy.open_fds();
    let mut clients = JoinSet::new();
    for i in 0..1000 {
        clients.spawn(tcp_client(proxy.addr, format!("tcp{}.load.test", i % 200)));
    }
    let good = tokio::spawn(well_behaved(proxy.addr, "tcpgood", 50));
    let mut answered = 0;
    while let Some(outcome) = clients.join_next().await {
        assert_eq!(outcome.unwrap(), Some(true), "a TCP client went unanswered");
        answered += 1;
    }
    assert_eq!(answered, 1000);
    assert_eq!(good.await.unwrap().answered, 50);
    proxy.assert_alive();
    proxy.assert_memory_bounded("with 1000 TCP clients");
    proxy.assert_fds_return(baseline, 16).await;
    drop(proxy);

    // With the default limit (256), clients past it are turned away at once, not left
    // hanging, and UDP clients are served throughout.
    let mut proxy = RealProxy::start("faults-tcp256", &[upstream.url()], "").await;
    let baseline = proxy.open_fds();
    let mut clients = JoinSet::new();
    for i in 0..1000 {
        clients.spawn(tcp_client(proxy.addr, format!("tcp{}.load.test", i % 200)));
    }
    let good = tokio::spawn(well_behaved(proxy.addr, "tcpgood", 50));
    let (mut answered, mut turned_away) = (0, 0);
    while let Some(outcome) = clients.join_next().await {
        match outcome.unwrap() {
            Some(true) => answered += 1,
            Some(false) => turned_away += 1,
            None => panic!("a TCP client was left hanging"),
        }
    }
    assert!(
        answered >= 256,
        "{answered} answered, {turned_away} turned away"
    );
    assert_eq!(good.await.unwrap().answered, 50);
    proxy.assert_alive();
    proxy.assert_memory_bounded("with 1000 TCP clients over the limit");
    proxy.assert_fds_return(baseline, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_that_never_finish_a_length_prefix_do_not_lock_out_others() {
    let upstream = FakeUpstream::dot(load_zone(), Behavior::Answer).await;
    // A long idle timeout: left alone, each slow client would hold its slot for 60 s.
    let mut proxy = RealProxy::start(
        "faults-slow",
        &[upstream.url()],
        "[tcp]\nidle-timeout-ms = 60000",
    )
    .await;
    let baseline = proxy.open_fds();
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        // One byte of a two-byte length prefix, then nothing, ever.
        let _ = stream.write_all(&[0]).await;
        slow.push(stream);
    }
    // Well-behaved clients get in (those turned away retry a few times, as stubs do)
    // long before the slow ones' idle timeout.
    let started = Instant::now();
    for i in 0..20 {
        let mut tries = 0;
        while tcp_client(proxy.addr, format!("slowgood{i}.load.test")).await != Some(true) {
            tries += 1;
            assert!(tries < 20, "a well-behaved TCP client was shut out");
            tokio::time::sleep(ms(200)).await;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "well-behaved clients only got in as the slow ones timed out"
    );
    assert_eq!(well_behaved(proxy.addr, "slowudp", 20).await.answered, 20);
    proxy.assert_alive();
    proxy.assert_memory_bounded("with 300 slow TCP clients");
    drop(slow);
    proxy.assert_fds_return(baseline, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_malformed_datagrams() {
    let upstream = FakeUpstream::dot(load_zone(), Behavior::Answer).await;
    let mut proxy = RealProxy::start("faults-flood", &[upstream.url()], "").await;
    let target = proxy.addr;
    let flood = tokio::spawn(async move {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let valid = wire(&query("a.load.test", RecordType::A));
        let mut state: u32 = 0x1234_5678;
        let mut next = move || {
            // xorshift: cheap, reproducible junk.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for i in 0..20_000u32 {
            let packet = match i % 5 {
                // Random bytes of random length (including empty and sub-header sizes).
                0 => (0..next() % 600).map(|_| next() as u8).collect::<Vec<u8>>(),
                // A valid query cut short.
                1 => valid[..(next() as usize % valid.len())].to_vec(),
                // A valid query with random bytes flipped.
                2 => {
                    let mut v = valid.clone();
                    for _ in 0..3 {
                        let at = next() as usize % v.len();
                        v[at] ^= next() as u8 | 1;
                    }
                    v
                }
                // A response (QR set), which must never be answered.
                3 => {
                    let mut v = valid.clone();
                    v[2] |= 0x80;
                    v
                }
                // A header claiming thousands of records.
                _ => {
                    let mut v = valid[..12].to_vec();
                    v[4..12].copy_from_slice(&[0xff; 8]);
                    v
                }
            };
            let _ = socket.send_to(&packet, target).await;
            if i % 256 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let good = well_behaved(proxy.addr, "flood", 100).await;
    flood.await.unwrap();
    assert_eq!(good.answered, 100, "{good:?}");
    proxy.assert_alive();
    proxy.assert_memory_bounded("after 20,000 malformed datagrams");
    // Still serving after the flood.
    assert_eq!(well_behaved(proxy.addr, "after", 10).await.answered, 10);
}
