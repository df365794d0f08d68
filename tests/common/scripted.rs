//! A scripted plaintext DNS resolver on loopback (UDP and TCP), the resolver under audit in the
//! hijack-audit corpus. It answers like an honest recursive resolver, from its own copy of the
//! trusted zone ("mirror"), unless a rule of its script says how to misbehave for a name.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use super::zone::{RESPONSE_EDNS_PAYLOAD, Zone, name};

/// TTL of the records the script makes up.
const SCRIPTED_TTL: u32 = 60;
/// Bound on delayed UDP replies pending at once, and on open TCP connections.
const MAX_PENDING: usize = 64;
/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Names of the CHAOS TXT queries that ask a resolver who it is.
const IDENTITY_NAMES: [&str; 2] = ["id.server.", "hostname.bind."];

/// What the resolver does with a query that a rule matches.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Answers as the trusted zone does (an honest resolver).
    Mirror,
    /// Answers with these addresses: A records for the IPv4 ones, AAAA for the IPv6 ones, NODATA
    /// for other types; behind a CNAME to `cname` when given (as a CDN answer would be).
    Answer {
        addresses: Vec<IpAddr>,
        cname: Option<Name>,
    },
    /// Mirrors, but answers these addresses where the zone says NXDOMAIN (an ad-serving ISP).
    RewriteNxdomain(Vec<IpAddr>),
    /// Answers with this rcode and no records (NXDOMAIN, SERVFAIL, REFUSED).
    Rcode(ResponseCode),
    /// Never replies.
    Drop,
    /// Answers this rcode to the first query for a name and type, then mirrors (a resolver
    /// whose own upstream failed once).
    FailFirst(ResponseCode),
    /// Over UDP, an on-path injector racing the resolver: a reply with the `forged` addresses at
    /// once, then the genuine (mirrored) reply `after` later. Over TCP, where injectors do not
    /// race, only the genuine reply.
    Inject {
        forged: Vec<IpAddr>,
        after: Duration,
    },
}

/// One line of a script: which queries it matches and what to do with them.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The query name; None matches every name (a wildcard rule).
    pub name: Option<Name>,
    /// The query type; None matches every type.
    pub rtype: Option<RecordType>,
    pub action: Action,
}

/// How the resolver behaves: rules tried in order (first match wins), mirror otherwise.
#[derive(Clone, Debug, Default)]
pub struct Script {
    /// What an honest resolver would answer: the same records the trusted upstream serves.
    pub zone: Zone,
    pub rules: Vec<Rule>,
    /// The TXT string answered to CHAOS `id.server` / `hostname.bind` (REFUSED when None).
    pub identity: Option<String>,
}

impl Script {
    /// An honest resolver for `zone`.
    pub fn mirror(zone: Zone) -> Script {
        Script {
            zone,
            ..Script::default()
        }
    }

    /// Adds a rule; `n` = "*" matches every name.
    pub fn rule(mut self, n: &str, rtype: Option<RecordType>, action: Action) -> Script {
        let name = (n != "*").then(|| name(n));
        self.rules.push(Rule {
            name,
            rtype,
            action,
        });
        self
    }

    /// Sets the identity answered to CHAOS TXT queries.
    pub fn identity(mut self, id: &str) -> Script {
        self.identity = Some(id.to_string());
        self
    }

    fn action_for(&self, q: &Query) -> &Action {
        self.rules
            .iter()
            .find(|r| {
                r.name.as_ref().is_none_or(|n| n == q.name())
                    && r.rtype.is_none_or(|t| t == q.query_type())
            })
            .map_or(&Action::Mirror, |r| &r.action)
    }

    /// The replies to `query`, in sending order, each with its delay after the query; empty for
    /// no reply. `udp` says which transport asked (only UDP queries get injected replies);
    /// `earlier` is how many times the same question was asked before.
    pub fn replies(&self, query: &Message, udp: bool, earlier: usize) -> Vec<(Duration, Message)> {
        let Some(q) = query.queries.first() else {
            return vec![(Duration::ZERO, reply_to(query, ResponseCode::FormErr))];
        };
        if q.query_class() == DNSClass::CH {
            return vec![(Duration::ZERO, self.identity_reply(query, q))];
        }
        let now = |m| vec![(Duration::ZERO, m)];
        match self.action_for(q) {
            Action::Mirror => now(self.zone.answer(query)),
            Action::Answer { addresses, cname } => {
                now(address_reply(query, q, addresses, cname.as_ref()))
            }
            Action::RewriteNxdomain(addresses) => {
                let genuine = self.zone.answer(query);
                if genuine.metadata.response_code == ResponseCode::NXDomain {
                    now(address_reply(query, q, addresses, None))
                } else {
                    now(genuine)
                }
            }
            Action::Rcode(rcode) => now(reply_to(query, *rcode)),
            Action::Drop => Vec::new(),
            Action::FailFirst(rcode) if earlier == 0 => now(reply_to(query, *rcode)),
            Action::FailFirst(_) => now(self.zone.answer(query)),
            Action::Inject { forged, after } => {
                let genuine = self.zone.answer(query);
                if udp {
                    vec![
                        (Duration::ZERO, address_reply(query, q, forged, None)),
                        (*after, genuine),
                    ]
                } else {
                    now(genuine)
                }
            }
        }
    }

    fn identity_reply(&self, query: &Message, q: &Query) -> Message {
        let asks_identity = q.query_type() == RecordType::TXT
            && IDENTITY_NAMES.iter().any(|n| q.name() == &name(n));
        match (&self.identity, asks_identity) {
            (Some(id), true) => {
                let mut m = reply_to(query, ResponseCode::NoError);
                let mut r =
                    Record::from_rdata(q.name().clone(), 0, RData::TXT(TXT::new(vec![id.clone()])));
                r.dns_class = DNSClass::CH;
                m.answers.push(r);
                m
            }
            _ => reply_to(query, ResponseCode::Refused),
        }
    }
}

/// An empty reply to `query` with `rcode`: same ID and question, RD copied, RA set, EDNS echoed.
fn reply_to(query: &Message, rcode: ResponseCode) -> Message {
    let mut m = Message::new(
        query.metadata.id,
        MessageType::Response,
        query.metadata.op_code,
    );
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    m.queries = query.queries.clone();
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(RESPONSE_EDNS_PAYLOAD);
        m.edns = Some(edns);
    }
    m
}

fn address_reply(
    query: &Message,
    q: &Query,
    addresses: &[IpAddr],
    cname: Option<&Name>,
) -> Message {
    let mut m = reply_to(query, ResponseCode::NoError);
    let mut owner = q.name().clone();
    if let Some(target) = cname {
        m.answers.push(Record::from_rdata(
            owner,
            SCRIPTED_TTL,
            RData::CNAME(CNAME(target.clone())),
        ));
        owner = target.clone();
    }
    for ip in addresses {
        let data = match (ip, q.query_type()) {
            (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
            (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
            _ => continue,
        };
        m.answers
            .push(Record::from_rdata(owner.clone(), SCRIPTED_TTL, data));
    }
    m
}

/// A scripted resolver listening on UDP and TCP (same port); stops when dropped.
pub struct ScriptedResolver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Questions received (name, type, class), in arrival order, over both transports.
    seen: Arc<Mutex<Vec<Query>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ScriptedResolver {
    /// Starts on 127.0.0.1 (a free port).
    pub async fn start(script: Script) -> ScriptedResolver {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), script).await
    }

    /// Starts on `ip` (a free port); `ip` must be loopback, e.g. 127.100.53.53 standing for a
    /// public resolver's address.
    pub async fn start_on(ip: IpAddr, script: Script) -> ScriptedResolver {
        assert!(
            ip.is_loopback(),
            "the scripted resolver binds loopback only, not {ip}"
        );
        let (udp, tcp) = bind_pair(ip).await;
        let addr = udp.local_addr().expect("local_addr");
        let script = Arc::new(script);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tasks = vec![
            tokio::spawn(serve_udp(Arc::new(udp), script.clone(), seen.clone())),
            tokio::spawn(serve_tcp(tcp, script, seen.clone())),
        ];
        ScriptedResolver { addr, seen, tasks }
    }

    /// Questions received so far.
    pub fn seen(&self) -> Vec<Query> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ScriptedResolver {
    fn drop(&mut self) {
        // Each task owns the JoinSet of its children: aborting it ends them too.
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A UDP socket and a TCP listener on the same free port of `ip` (bounded retries).
async fn bind_pair(ip: IpAddr) -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind(SocketAddr::new(ip, 0))
            .await
            .expect("bind UDP");
        let addr = udp.local_addr().expect("local_addr");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP on {ip}");
}

/// Records the query's question; returns how many times it was asked before.
fn record_query(seen: &Mutex<Vec<Query>>, query: &Message) -> usize {
    let mut seen = seen.lock().unwrap();
    let earlier = query
        .queries
        .first()
        .map_or(0, |q| seen.iter().filter(|s| *s == q).count());
    seen.extend(query.queries.iter().cloned());
    earlier
}

async fn serve_udp(socket: Arc<UdpSocket>, script: Arc<Script>, seen: Arc<Mutex<Vec<Query>>>) {
    let mut delayed = JoinSet::new();
    let mut buf = vec![0u8; 4096];
    while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
        while delayed.try_join_next().is_some() {}
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let earlier = record_query(&seen, &query);
        for (delay, reply) in script.replies(&query, true, earlier) {
            let wire = reply.to_vec().expect("encode reply");
            if delay.is_zero() {
                let _ = socket.send_to(&wire, peer).await;
            } else if delayed.len() < MAX_PENDING {
                let socket = socket.clone();
                delayed.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = socket.send_to(&wire, peer).await;
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, script: Arc<Script>, seen: Arc<Mutex<Vec<Query>>>) {
    let mut connections = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_PENDING {
            continue; // dropped: closes the connection
        }
        connections.spawn(serve_connection(stream, script.clone(), seen.clone()));
    }
}

/// Answers 2-byte length-prefixed queries one after another until EOF, error or idle timeout.
async fn serve_connection(
    mut stream: TcpStream,
    script: Arc<Script>,
    seen: Arc<Mutex<Vec<Query>>>,
) {
    loop {
        let Ok(Ok(len)) = timeout(TCP_IDLE, stream.read_u16()).await else {
            return;
        };
        let mut buf = vec![0u8; len as usize];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let Ok(query) = Message::from_vec(&buf) else {
            return;
        };
        let earlier = record_query(&seen, &query);
        for (delay, reply) in script.replies(&query, false, earlier) {
            tokio::time::sleep(delay).await;
            let wire = reply.to_vec().expect("encode reply");
            let mut frame = (wire.len() as u16).to_be_bytes().to_vec();
            frame.extend_from_slice(&wire);
            if stream.write_all(&frame).await.is_err() {
                return;
            }
        }
    }
}
