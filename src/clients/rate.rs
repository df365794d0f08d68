//! Token buckets per client network, in a bounded table.
//!
//! Each client network (the source address cut to a configured prefix) has a bucket that holds
//! up to `burst` tokens and refills at `per_second`; a query takes one token. The table is a
//! moka cache bounded in entries, so a flood from many addresses cannot grow it without limit;
//! an evicted or idle client simply starts again with a full bucket. Time is passed in, so
//! tests are exact.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use moka::sync::Cache;

use super::{Admission, RateLimit};

/// One client network's bucket.
#[derive(Debug)]
struct Bucket {
    /// Tokens left (fractional: refill is continuous).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
    /// Queries over the limit so far, counting towards the next slip.
    over: u64,
}

/// Buckets per client network.
pub struct RateTable {
    /// The buckets.
    buckets: Cache<IpNet, Arc<Mutex<Bucket>>>,
    /// Refill rate.
    per_second: f64,
    /// Bucket size.
    burst: f64,
    /// Every `slip`-th query over the limit is answered with TC (0: none).
    slip: u64,
    /// Prefix lengths that define a client network.
    ipv4_prefix: u8,
    /// As above, for IPv6.
    ipv6_prefix: u8,
}

impl RateTable {
    /// A table for `limit`; buckets unused for `idle` are forgotten.
    pub fn new(limit: &RateLimit, idle: Duration) -> RateTable {
        RateTable {
            buckets: Cache::builder()
                .max_capacity(limit.max_clients)
                .time_to_idle(idle)
                .build(),
            per_second: limit.per_second,
            burst: f64::from(limit.burst),
            slip: u64::from(limit.slip),
            ipv4_prefix: limit.ipv4_prefix,
            ipv6_prefix: limit.ipv6_prefix,
        }
    }

    /// Takes a token for a query from `source` at `now`, or says what to do instead.
    pub fn admit(&self, source: IpAddr, now: Instant) -> Admission {
        let prefix = match source {
            IpAddr::V4(_) => self.ipv4_prefix,
            IpAddr::V6(_) => self.ipv6_prefix,
        };
        let key = IpNet::new(source, prefix)
            .expect("configuration checked the prefix length")
            .trunc();
        let bucket = self.buckets.get_with(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: self.burst,
                updated: now,
                over: 0,
            }))
        });
        let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = bucket.updated.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Admission::Serve;
        }
        bucket.over += 1;
        if self.slip > 0 && bucket.over.is_multiple_of(self.slip) {
            Admission::Slip
        } else {
            Admission::Drop
        }
    }

    /// Client networks currently tracked (approximate: moka counts lazily).
    pub fn len(&self) -> u64 {
        self.buckets.run_pending_tasks();
        self.buckets.entry_count()
    }

    /// True when no client is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(per_second: f64, burst: u32, slip: u32) -> RateTable {
        RateTable::new(
            &RateLimit {
                per_second,
                burst,
                slip,
                ipv4_prefix: 24,
                ipv6_prefix: 56,
                ..RateLimit::default()
            },
            Duration::from_secs(60),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_is_served_then_the_rest_is_dropped() {
        let t = table(10.0, 5, 0);
        let now = Instant::now();
        let served = (0..50)
            .filter(|_| t.admit(ip("192.0.2.1"), now) == Admission::Serve)
            .count();
        assert_eq!(served, 5);
    }

    #[test]
    fn tokens_come_back_with_time() {
        let t = table(10.0, 5, 0);
        let start = Instant::now();
        for _ in 0..5 {
            assert_eq!(t.admit(ip("192.0.2.1"), start), Admission::Serve);
        }
        assert_eq!(t.admit(ip("192.0.2.1"), start), Admission::Drop);
        // 10 per second: one token after 100 ms, not before.
        let later = start + Duration::from_millis(99);
        assert_eq!(t.admit(ip("192.0.2.1"), later), Admission::Drop);
        let later = start + Duration::from_millis(101);
        assert_eq!(t.admit(ip("192.0.2.1"), later), Admission::Serve);
        assert_eq!(t.admit(ip("192.0.2.1"), later), Admission::Drop);
        // A long pause refills to the burst size, no more.
        let much_later = start + Duration::from_secs(3600);
        let served = (0..50)
            .filter(|_| t.admit(ip("192.0.2.1"), much_later) == Admission::Serve)
            .count();
        assert_eq!(served, 5);
    }

    #[test]
    fn every_slip_th_query_over_the_limit_is_truncated() {
        let t = table(1.0, 2, 3);
        let now = Instant::now();
        let outcomes: Vec<Admission> = (0..10).map(|_| t.admit(ip("192.0.2.1"), now)).collect();
        use Admission::*;
        assert_eq!(
            outcomes,
            [Serve, Serve, Drop, Drop, Slip, Drop, Drop, Slip, Drop, Drop]
        );
    }

    #[test]
    fn clients_share_a_bucket_by_prefix() {
        let t = table(1.0, 2, 0);
        let now = Instant::now();
        assert_eq!(t.admit(ip("192.0.2.1"), now), Admission::Serve);
        assert_eq!(t.admit(ip("192.0.2.200"), now), Admission::Serve);
        assert_eq!(t.admit(ip("192.0.2.9"), now), Admission::Drop, "same /24");
        assert_eq!(t.admit(ip("192.0.3.1"), now), Admission::Serve, "other /24");
        assert_eq!(t.admit(ip("2001:db8:0:1::1"), now), Admission::Serve);
        assert_eq!(t.admit(ip("2001:db8:0:2::1"), now), Admission::Serve);
        assert_eq!(
            t.admit(ip("2001:db8:0:3::1"), now),
            Admission::Drop,
            "same /56"
        );
        assert_eq!(
            t.admit(ip("2001:db8:1::1"), now),
            Admission::Serve,
            "other /56"
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let t = RateTable::new(
            &RateLimit {
                max_clients: 100,
                ..RateLimit::default()
            },
            Duration::from_secs(60),
        );
        let now = Instant::now();
        for i in 0..5_000u32 {
            let addr = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            t.admit(addr, now);
        }
        assert!(t.len() <= 100, "{} buckets", t.len());
    }
}
