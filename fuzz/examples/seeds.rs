//! Writes the seed inputs of every fuzz target into `corpus/TARGET/seed-*`:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`.

use std::fs;
use std::path::Path;

use dnsward::dns::{new_query, read_query, upstream_query};
use dnsward_fuzz::{cached_answers, client_query, response};

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = root.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(format!("seed-{name}")), bytes)
    };

    // query: valid queries for local, cached, locally served and unknown names, and a few
    // that must be rejected.
    let queries = [
        ("local-a", client_query("nas.lan", 1, 0x1234, true, false)),
        ("local-cname", client_query("WWW.lan", 28, 7, false, false)),
        ("local-big", client_query("big.lan", 16, 8, false, false)),
        ("cached", client_query("Cached.Test", 1, 9, true, true)),
        (
            "cached-big-udp512",
            client_query("big.test", 16, 10, false, false),
        ),
        (
            "cached-negative",
            client_query("gone.test", 1, 11, true, false),
        ),
        (
            "zone-reverse",
            client_query("1.1.168.192.in-addr.arpa", 12, 12, true, false),
        ),
        (
            "zone-localhost",
            client_query("localhost", 1, 13, false, false),
        ),
        ("miss", client_query("example.com", 1, 14, true, false)),
        ("axfr", client_query("example.com", 252, 15, false, false)),
    ];
    for (name, q) in &queries {
        write("query", name, q)?;
    }
    let mut notimp = client_query("a.test", 1, 16, true, false);
    notimp[2] = (2 << 3) | 1;
    write("query", "notimp", &notimp)?;
    let mut badvers = client_query("a.test", 1, 17, true, false);
    let n = badvers.len();
    badvers[n - 5] = 1;
    write("query", "badvers", &badvers)?;
    write("query", "short", &[0x12, 0x34, 0x01, 0x00, 0, 1])?;

    // answer: (client query, upstream answer) pairs; and doh_response / dot_stream bodies.
    let client = client_query("A.Test", 1, 0x4242, true, false);
    let sent = upstream_query(&read_query(&client).expect("valid"));
    let pairs = [
        (
            "positive",
            client.clone(),
            response(&sent, 0, &[(1, 300, &[192, 0, 2, 1])], None, true),
        ),
        (
            "nxdomain",
            client.clone(),
            response(&sent, 3, &[], Some((3600, 60)), true),
        ),
        (
            "servfail",
            client.clone(),
            response(&sent, 2, &[], None, false),
        ),
        (
            "no-edns-client",
            client_query("a.test", 1, 1, false, false),
            response(&sent, 0, &[(1, 60, &[192, 0, 2, 1])], None, true),
        ),
    ];
    for (name, client, answer) in &pairs {
        let mut input = (client.len() as u16).to_be_bytes().to_vec();
        input.extend_from_slice(client);
        input.extend_from_slice(answer);
        write("answer", name, &input)?;
    }
    for (name, qtype, answer) in cached_answers() {
        let client = client_query(name, qtype, 3, false, false);
        let mut input = (client.len() as u16).to_be_bytes().to_vec();
        input.extend_from_slice(&client);
        input.extend_from_slice(&answer);
        write("answer", &format!("cached-{name}"), &input)?;
    }

    let a_test = new_query("a.test", 1, false).expect("valid");
    let doh_answer = response(&a_test, 0, &[(1, 300, &[192, 0, 2, 1])], None, true);
    let mut doh = vec![0, 200, 0, 1];
    doh.extend_from_slice(&doh_answer);
    write("doh_response", "ok", &doh)?;
    let mut raw_type = vec![0, 200, 9, 23];
    raw_type.extend_from_slice(b"application/dns-message");
    raw_type.push(0);
    raw_type.extend_from_slice(&doh_answer);
    write("doh_response", "raw-type", &raw_type)?;

    let mut dot = vec![1];
    for i in [1u8, 0] {
        let q = new_query(&format!("q{i}.test"), 1, false).expect("valid");
        let mut answer = response(&q, 0, &[(1, 300, &[192, 0, 2, i])], None, false);
        answer[..2].copy_from_slice(&[0, i]);
        dot.extend((answer.len() as u16).to_be_bytes());
        dot.extend_from_slice(&answer);
    }
    dot.extend([0, 100, 0, 1]); // a frame cut short by the end of the stream
    write("dot_stream", "two-answers-out-of-order", &dot)?;
    Ok(())
}
