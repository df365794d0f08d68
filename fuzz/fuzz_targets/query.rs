//! A client message, as the UDP and TCP listeners hand it over, through the whole resolver
//! pipeline: validation, local names and zones, the cache (some names are cached), and
//! SERVFAIL for misses (there is no upstream). Every answer must be well-formed and fit.
#![no_main]

use std::sync::{Arc, OnceLock};

use dnsward::resolver::{Resolver, Transport};
use dnsward_fuzz::{check_client_answer, offline_resolver};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

struct Fixture {
    runtime: Runtime,
    resolver: Arc<Resolver>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let resolver = runtime.block_on(async { offline_resolver() });
        Fixture { runtime, resolver }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    for (transport, udp) in [(Transport::Udp, true), (Transport::Tcp, false)] {
        let answer = f.runtime.block_on(f.resolver.handle(data, transport));
        match answer {
            Some(answer) => check_client_answer(data, &answer, udp),
            None => assert!(
                matches!(
                    dnsward::dns::read_query(data),
                    Err(dnsward::dns::Rejected::Drop)
                ),
                "only unanswerable messages go unanswered"
            ),
        }
    }
});
