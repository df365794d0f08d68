//! An upstream's answer to a client's query: checked against the query sent upstream,
//! classified (SERVFAIL, REFUSED), stored in the cache, and rendered for the client over UDP
//! and TCP, fresh and stale. Input: a two-byte length, the client query, then the answer.
#![no_main]

use bytes::Bytes;
use dnsward::cache::{Cache, Key, StalePolicy, TtlPolicy};
use dnsward::dns::{Answer, check_answer, read_query, upstream_query};
use dnsward::upstream::check_reply;
use dnsward_fuzz::check_client_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return;
    }
    let (client, upstream_answer) = rest.split_at(len);
    let Ok(query) = read_query(client) else {
        return;
    };
    let sent = upstream_query(&query);
    let classified = check_reply(&sent, Bytes::copy_from_slice(upstream_answer));
    let Ok(parsed) = check_answer(&sent, upstream_answer) else {
        assert!(
            classified.is_err(),
            "check_reply accepted what check_answer refused"
        );
        return;
    };
    let answer = Answer::new(upstream_answer, &parsed);
    let now = std::time::Instant::now();
    let cache = Cache::with_stale(16, TtlPolicy::default(), StalePolicy::default());
    let entry = cache.insert(Key::of(&query), answer, now);
    for udp_limit in [Some(query.udp_limit()), None] {
        let udp = udp_limit.is_some();
        check_client_answer(client, &cache.render(&entry, &query, now, udp_limit), udp);
        let later = now + std::time::Duration::from_secs(3600);
        check_client_answer(client, &cache.render(&entry, &query, later, udp_limit), udp);
        check_client_answer(client, &cache.render_stale(&entry, &query, udp_limit), udp);
    }
});
