//! Heap memory the answer cache holds per entry, counted exactly with a counting allocator.
//!
//!     cargo run --release --example cache_memory [ENTRIES]      (default 10000)
//!
//! Fills a cache (sized to hold them all) with ENTRIES typical answers (one A record, EDNS),
//! each made from its upstream message and key as a cache miss makes them, lets moka apply its
//! pending work, and prints the bytes and allocations still live per entry (what the allocator
//! was asked for; its own per-chunk overhead comes on top).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use dnsward::cache::{Cache, Key, TtlPolicy};
use dnsward::dns::{Answer, check_answer, new_query, read_query};

/// Counts live bytes and allocations.
struct Counting;

static BYTES: AtomicUsize = AtomicUsize::new(0);
static BLOCKS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.fetch_add(new_size, Ordering::Relaxed);
        BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The upstream's answer to `query`: one A record, then the query's OPT record.
fn answer_to(query: &[u8], i: u32) -> Vec<u8> {
    let (message, opt) = query.split_at(query.len() - 11);
    let mut reply = message.to_vec();
    reply[2] |= 0x80;
    reply[3] |= 0x80;
    reply[7] = 1;
    reply.extend([0xc0, 12, 0, 1, 0, 1]);
    reply.extend(3600u32.to_be_bytes());
    reply.extend([0, 4]);
    reply.extend((0x2d00_0000 | i).to_be_bytes());
    reply.extend(opt);
    reply
}

fn main() {
    let entries: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("ENTRIES is a number"))
        .unwrap_or(10_000);
    let cache = Cache::new(u64::from(entries) * 2, TtlPolicy::default());
    let now = Instant::now();
    // Queries and answers are made before counting starts, as they arrive from outside.
    let prepared: Vec<(Vec<u8>, Vec<u8>)> = (0..entries)
        .map(|i| {
            let query = new_query(&format!("n{i}.bench.zz"), 1, false).expect("a valid name");
            let answer = answer_to(&query, i);
            (query, answer)
        })
        .collect();
    let wire_bytes: usize = prepared.iter().map(|(_, a)| a.len()).sum();
    cache.len(); // moka's own lazily made parts
    let (bytes0, blocks0) = (
        BYTES.load(Ordering::Relaxed),
        BLOCKS.load(Ordering::Relaxed),
    );
    let mut inputs = (0, 0);
    for (query, reply) in prepared {
        let key = Key::of(&read_query(&query).expect("a valid query"));
        let answer = Answer::new(
            &reply,
            &check_answer(&query, &reply).expect("a valid answer"),
        );
        cache.insert(key, answer, now);
        // The inputs are freed as they are used, as a query's buffers are.
        inputs.0 += query.capacity() + reply.capacity();
        inputs.1 += 2;
    }
    let cached = cache.len();
    let bytes = BYTES.load(Ordering::Relaxed) + inputs.0 - bytes0;
    let blocks = BLOCKS.load(Ordering::Relaxed) + inputs.1 - blocks0;
    let n = cached.max(1) as f64;
    println!(
        "{cached} entries cached: {:.0} bytes and {:.1} allocations per entry live \
         ({:.0} of them the answer's wire format); {:.2} MB in all",
        bytes as f64 / n,
        blocks as f64 / n,
        wire_bytes as f64 / f64::from(entries),
        bytes as f64 / 1e6
    );
}
