//! The answer cache: moka underneath, TTL policy on top.
//!
//! Keys are the question as a resolver sees it: name lower-cased, type, class, and the DO and
//! CD bits (a DNSSEC-aware client must not get an answer fetched without RRSIGs, and CD=1
//! may return data a validating upstream would otherwise refuse). Entries are stored as the
//! upstream's wire answer; freshness is decided against a `now` passed in, so tests are exact.

use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache as Moka;
use smallvec::SmallVec;

use crate::dns::{Answer, ClientQuery};

/// Bytes of answer that count as one unit of cache size.
pub const WEIGHT_UNIT: usize = 512;

/// What identifies an answer in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// A keyed hash of the fields below, computed once: moka hashes a key on every lookup and
    /// insert, and again for every entry each time its table is rebuilt, which a full cache
    /// under a stream of new names does often. Keyed per process, so clients cannot choose
    /// names that collide.
    hash: u64,
    /// Question name in wire format, ASCII lower-cased; most names fit inline, so making a
    /// key (once per query) and keeping one (per entry) allocates nothing for them.
    name: SmallVec<[u8; INLINE_NAME]>,
    /// QTYPE.
    qtype: u16,
    /// QCLASS.
    qclass: u16,
    /// DNSSEC OK bit of the query (RFC 3225).
    dnssec_ok: bool,
    /// Checking Disabled bit of the query (RFC 4035 §3.2.2).
    checking_disabled: bool,
}

/// Bytes of a name kept inside a [`Key`]: `www.example.com` takes 17 in wire format.
const INLINE_NAME: usize = 40;

/// The key of [`Key`]'s hashes, chosen at random once per process.
static KEY_HASHER: LazyLock<RandomState> = LazyLock::new(RandomState::new);

impl Key {
    /// The key for a client's query.
    pub fn of(query: &ClientQuery<'_>) -> Key {
        let mut name = SmallVec::<[u8; INLINE_NAME]>::from_slice(query.name());
        name.make_ascii_lowercase();
        let (qtype, qclass) = (query.question.qtype, query.question.qclass);
        let (dnssec_ok, checking_disabled) =
            (query.dnssec_ok(), query.header().checking_disabled());
        // Two writes rather than one per field (each write into SipHash has a cost of its
        // own): the name's bytes, then the other fields packed into one word. The word is
        // always the last eight bytes hashed, so no two keys hash the same input.
        let mut hasher = KEY_HASHER.build_hasher();
        hasher.write(&name);
        hasher.write_u64(
            u64::from(qtype)
                | u64::from(qclass) << 16
                | u64::from(dnssec_ok) << 32
                | u64::from(checking_disabled) << 33,
        );
        Key {
            hash: hasher.finish(),
            name,
            qtype,
            qclass,
            dnssec_ok,
            checking_disabled,
        }
    }
}

impl Key {
    /// The question's name in wire form, lower-cased.
    pub fn name(&self) -> &[u8] {
        &self.name
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Hashes a [`Key`] by passing its precomputed hash through (anything else is mixed in
/// FNV-1a style, though the cache holds only keys).
#[derive(Default)]
struct KeyHashPassThrough(u64);

impl Hasher for KeyHashPassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 ^= hash;
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// TTL bounds applied to everything cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Answers are kept at least this long (seconds), even if their TTL is lower.
    pub min_ttl: u32,
    /// Positive answers are kept at most this long (seconds).
    pub max_ttl: u32,
    /// Negative answers (NXDOMAIN, NODATA) are kept at most this long (seconds).
    pub negative_max_ttl: u32,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        TtlPolicy {
            min_ttl: 0,
            max_ttl: 86_400,
            negative_max_ttl: 3_600,
        }
    }
}

/// Serving expired answers when no upstream can answer (RFC 8767).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StalePolicy {
    /// Whether expired answers may be served at all.
    pub enabled: bool,
    /// How long past its expiry an answer may still be served, in seconds.
    pub max_stale: u32,
    /// TTL given to a stale answer (RFC 8767 §4 recommends 30 s).
    pub answer_ttl: u32,
}

impl Default for StalePolicy {
    fn default() -> Self {
        StalePolicy {
            enabled: true,
            // RFC 8767 §5 suggests a stale limit of one to three days.
            max_stale: 86_400,
            answer_ttl: 30,
        }
    }
}

/// What the cache holds for a key at a given time.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh answer.
    Fresh(Arc<Entry>),
    /// An expired answer that may be served if no upstream answers (RFC 8767).
    Stale(Arc<Entry>),
    /// Nothing usable.
    Miss,
}

/// A cached answer.
#[derive(Debug)]
pub struct Entry {
    /// The upstream's answer.
    pub answer: Answer,
    /// When it was stored.
    pub stored: Instant,
    /// How long it is fresh, in seconds, after clamping.
    pub lifetime: u32,
    /// Fresh hits so far: only answers asked for more than once are prefetched.
    hits: AtomicU32,
    /// Set once a prefetch of this entry has started, so it starts once.
    prefetching: AtomicBool,
}

/// Entries with a shorter lifetime are not prefetched (they churn anyway).
const PREFETCH_MIN_LIFETIME: u32 = 10;

impl Entry {
    /// Counts a fresh hit and says whether the entry should now be refreshed ahead of its
    /// expiry: it has been asked for before, and under a tenth of its lifetime is left (as
    /// unbound's prefetch). True at most once per entry.
    pub fn hit_wants_prefetch(&self, now: Instant) -> bool {
        let hits = self.hits.fetch_add(1, Ordering::Relaxed) + 1;
        let left = self.lifetime.saturating_sub(self.age(now));
        hits >= 2
            && self.lifetime >= PREFETCH_MIN_LIFETIME
            && left <= self.lifetime / 10
            && !self.prefetching.swap(true, Ordering::Relaxed)
    }

    /// Whole seconds since it was stored.
    pub fn age(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.stored).as_secs() as u32
    }

    /// Whether it may still be served as fresh at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.age(now) < self.lifetime
    }
}

/// The cache.
#[derive(Clone)]
pub struct Cache {
    /// Entries by key; moka evicts by size (TinyLFU) and by per-entry expiry.
    entries: Moka<Key, Arc<Entry>, BuildHasherDefault<KeyHashPassThrough>>,
    /// TTL clamps.
    policy: TtlPolicy,
    /// Serving expired answers.
    stale: StalePolicy,
}

/// Tells moka when an entry can go: when it can no longer be served, even stale.
struct ExpireWhenUseless {
    /// Seconds an entry stays after its lifetime (the stale window, or 0).
    stale_window: u32,
}

impl Expiry<Key, Arc<Entry>> for ExpireWhenUseless {
    fn expire_after_create(&self, _: &Key, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(
            u64::from(entry.lifetime) + u64::from(self.stale_window),
        ))
    }
}

impl Cache {
    /// A cache holding at most `size` answers of up to [`WEIGHT_UNIT`] bytes; a larger answer
    /// counts as several, so memory stays bounded by about `size` × 512 bytes of answers
    /// whatever their sizes.
    pub fn new(size: u64, policy: TtlPolicy) -> Cache {
        Cache::with_stale(size, policy, StalePolicy::default())
    }

    /// As [`Cache::new`], with a serve-stale policy.
    pub fn with_stale(size: u64, policy: TtlPolicy, stale: StalePolicy) -> Cache {
        let stale_window = if stale.enabled { stale.max_stale } else { 0 };
        let entries = Moka::builder()
            .max_capacity(size)
            .weigher(|_, entry: &Arc<Entry>| entry.answer.len().div_ceil(WEIGHT_UNIT).max(1) as u32)
            .expire_after(ExpireWhenUseless { stale_window })
            .build_with_hasher(BuildHasherDefault::default());
        Cache {
            entries,
            policy,
            stale,
        }
    }

    /// The fresh entry for `key` at `now`, if any.
    pub fn get(&self, key: &Key, now: Instant) -> Option<Arc<Entry>> {
        match self.lookup(key, now) {
            Lookup::Fresh(entry) => Some(entry),
            _ => None,
        }
    }

    /// What the cache holds for `key` at `now`: fresh, stale-but-servable, or nothing.
    pub fn lookup(&self, key: &Key, now: Instant) -> Lookup {
        let Some(entry) = self.entries.get(key) else {
            return Lookup::Miss;
        };
        let age = entry.age(now);
        if age < entry.lifetime {
            Lookup::Fresh(entry)
        } else if self.stale.enabled && age - entry.lifetime < self.stale.max_stale {
            Lookup::Stale(entry)
        } else {
            Lookup::Miss
        }
    }

    /// Stores `answer` if it may be cached (RFC 2308 for negative answers; never SERVFAIL);
    /// returns the entry, cached or not, for rendering.
    pub fn insert(&self, key: Key, answer: Answer, now: Instant) -> Arc<Entry> {
        let lifetime = self.lifetime(&answer);
        let entry = Arc::new(Entry {
            answer,
            stored: now,
            lifetime: lifetime.unwrap_or(0),
            hits: AtomicU32::new(0),
            prefetching: AtomicBool::new(false),
        });
        if lifetime.is_some_and(|l| l > 0) {
            self.entries.insert(key, entry.clone());
        }
        entry
    }

    /// The clamped lifetime of an answer, `None` if it must not be cached.
    fn lifetime(&self, answer: &Answer) -> Option<u32> {
        let natural = answer.natural_ttl()?;
        let max = if answer.is_negative() {
            self.policy.negative_max_ttl
        } else {
            self.policy.max_ttl
        };
        Some(natural.max(self.policy.min_ttl).min(max))
    }

    /// The TTL to serve for a record whose original TTL is `original`, from `entry` at `age`.
    ///
    /// Clamped like the entry; negative answers never advertise more than their lifetime
    /// (so an SOA TTL of 3600 with MINIMUM 60 is served as 60, RFC 2308 §5).
    pub fn served_ttl(&self, entry: &Entry, original: u32, age: u32) -> u32 {
        let mut ttl = original.max(self.policy.min_ttl).min(self.policy.max_ttl);
        if entry.answer.is_negative() {
            ttl = ttl.min(entry.lifetime);
        }
        ttl.saturating_sub(age)
    }

    /// Renders `entry` for `client` as seen at `now`.
    pub fn render(
        &self,
        entry: &Entry,
        client: &ClientQuery<'_>,
        now: Instant,
        udp_limit: Option<usize>,
    ) -> Vec<u8> {
        let age = entry.age(now);
        entry
            .answer
            .render(client, |ttl| self.served_ttl(entry, ttl, age), udp_limit)
    }

    /// Renders an expired `entry` for `client` with the stale TTL (RFC 8767 §4).
    pub fn render_stale(
        &self,
        entry: &Entry,
        client: &ClientQuery<'_>,
        udp_limit: Option<usize>,
    ) -> Vec<u8> {
        entry
            .answer
            .render(client, |_| self.stale.answer_ttl, udp_limit)
    }

    /// Number of entries (approximate; moka applies writes lazily).
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Total weight of the entries, in [`WEIGHT_UNIT`]s.
    pub fn weight(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    /// True if nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// Drops every entry for `name` (wire format, any case): all types, classes and DO/CD
    /// variants. Returns how many entries went.
    pub fn remove_name(&self, name: &[u8]) -> usize {
        let name = name.to_ascii_lowercase();
        let keys: Vec<_> = self
            .entries
            .iter()
            .filter(|(key, _)| *key.name == *name)
            .map(|(key, _)| key)
            .collect();
        for key in &keys {
            self.entries.invalidate(key.as_ref());
        }
        keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{check_answer, new_query, read_query};

    fn answer_for(query: &[u8], rcode: u8, ttl: u32, soa: bool) -> Answer {
        let mut reply = query.to_vec();
        reply.truncate(reply.len() - 11);
        reply[2] |= 0x80;
        reply[3] = 0x80 | rcode;
        reply[11] = 0;
        if soa {
            reply[9] = 1;
            reply.extend([0xc0, 12, 0, 6, 0, 1]);
            reply.extend(ttl.to_be_bytes());
            reply.extend(22u16.to_be_bytes());
            reply.extend([0, 0]);
            reply.extend([0; 16]);
            reply.extend(30u32.to_be_bytes());
        } else {
            reply[7] = 1;
            reply.extend([0xc0, 12, 0, 1, 0, 1]);
            reply.extend(ttl.to_be_bytes());
            reply.extend([0, 4, 192, 0, 2, 1]);
        }
        Answer::new(&reply, &check_answer(query, &reply).unwrap())
    }

    #[test]
    fn fresh_until_the_ttl_runs_out_and_ttls_decay() {
        let cache = Cache::new(100, TtlPolicy::default());
        let wire = new_query("a.test", 1, false).unwrap();
        let q = read_query(&wire).unwrap();
        let t0 = Instant::now();
        cache.insert(Key::of(&q), answer_for(&wire, 0, 300, false), t0);
        let e = cache
            .get(&Key::of(&q), t0 + Duration::from_secs(100))
            .unwrap();
        assert_eq!(
            cache.served_ttl(&e, 300, e.age(t0 + Duration::from_secs(100))),
            200
        );
        assert!(
            cache
                .get(&Key::of(&q), t0 + Duration::from_secs(299))
                .is_some()
        );
        assert!(
            cache
                .get(&Key::of(&q), t0 + Duration::from_secs(300))
                .is_none()
        );
    }

    #[test]
    fn keys_ignore_case_but_not_do_bit() {
        let cache = Cache::new(100, TtlPolicy::default());
        let lower = new_query("a.test", 1, false).unwrap();
        let upper = new_query("A.TEST", 1, false).unwrap();
        let dnssec = new_query("a.test", 1, true).unwrap();
        let now = Instant::now();
        cache.insert(
            Key::of(&read_query(&lower).unwrap()),
            answer_for(&lower, 0, 60, false),
            now,
        );
        assert!(
            cache
                .get(&Key::of(&read_query(&upper).unwrap()), now)
                .is_some()
        );
        assert!(
            cache
                .get(&Key::of(&read_query(&dnssec).unwrap()), now)
                .is_none()
        );
    }

    #[test]
    fn negative_answers_use_soa_minimum_and_clamps() {
        let policy = TtlPolicy {
            min_ttl: 0,
            max_ttl: 100,
            negative_max_ttl: 10,
        };
        let cache = Cache::new(100, policy);
        let wire = new_query("nx.test", 1, false).unwrap();
        let q = read_query(&wire).unwrap();
        let now = Instant::now();
        let e = cache.insert(Key::of(&q), answer_for(&wire, 3, 3600, true), now);
        assert_eq!(e.lifetime, 10); // min(3600, MINIMUM 30) clamped to 10
        assert_eq!(cache.served_ttl(&e, 3600, 4), 6);
        let pos = cache.insert(Key::of(&q), answer_for(&wire, 0, 3600, false), now);
        assert_eq!(pos.lifetime, 100);
    }

    #[test]
    fn large_answers_weigh_more() {
        // Regression (review #6): capacity counted entries, so big answers were unbounded.
        let cache = Cache::new(100, TtlPolicy::default());
        let now = Instant::now();
        for i in 0..15 {
            let wire = new_query(&format!("n{i}.test"), 16, false).unwrap();
            let mut reply = wire[..wire.len() - 11].to_vec();
            reply[2] |= 0x80;
            reply[3] = 0x80;
            reply[7] = 1;
            reply[11] = 0;
            reply.extend([0xc0, 12, 0, 16, 0, 1, 0, 0, 1, 0]);
            reply.extend(5000u16.to_be_bytes());
            reply.extend(std::iter::repeat_n(0u8, 5000));
            let answer = Answer::new(&reply, &check_answer(&wire, &reply).unwrap());
            cache.insert(Key::of(&read_query(&wire).unwrap()), answer, now);
        }
        assert!(cache.weight() <= 100, "weight {}", cache.weight());
        assert!(cache.len() <= 10, "5 kB answers count as 10 units each");
    }

    #[test]
    fn expired_answers_are_stale_until_the_stale_limit() {
        let stale = StalePolicy {
            enabled: true,
            max_stale: 100,
            answer_ttl: 30,
        };
        let cache = Cache::with_stale(100, TtlPolicy::default(), stale);
        let wire = new_query("a.test", 1, false).unwrap();
        let key = Key::of(&read_query(&wire).unwrap());
        let t0 = Instant::now();
        cache.insert(key.clone(), answer_for(&wire, 0, 60, false), t0);
        let at = |s| t0 + Duration::from_secs(s);
        assert!(matches!(cache.lookup(&key, at(59)), Lookup::Fresh(_)));
        assert!(matches!(cache.lookup(&key, at(60)), Lookup::Stale(_)));
        assert!(matches!(cache.lookup(&key, at(159)), Lookup::Stale(_)));
        assert!(matches!(cache.lookup(&key, at(160)), Lookup::Miss));
        let off = Cache::with_stale(
            100,
            TtlPolicy::default(),
            StalePolicy {
                enabled: false,
                ..stale
            },
        );
        off.insert(key.clone(), answer_for(&wire, 0, 60, false), t0);
        assert!(matches!(off.lookup(&key, at(60)), Lookup::Miss));
    }

    #[test]
    fn prefetch_only_popular_entries_near_expiry_and_once() {
        let cache = Cache::new(100, TtlPolicy::default());
        let wire = new_query("a.test", 1, false).unwrap();
        let t0 = Instant::now();
        let e = cache.insert(
            Key::of(&read_query(&wire).unwrap()),
            answer_for(&wire, 0, 100, false),
            t0,
        );
        let at = |s| t0 + Duration::from_secs(s);
        assert!(!e.hit_wants_prefetch(at(50)), "first hit, mid-life");
        assert!(!e.hit_wants_prefetch(at(89)), "11 s of 100 left");
        assert!(e.hit_wants_prefetch(at(91)), "popular and under 10% left");
        assert!(!e.hit_wants_prefetch(at(92)), "only once");
        let short = cache.insert(
            Key::of(&read_query(&wire).unwrap()),
            answer_for(&wire, 0, 5, false),
            t0,
        );
        short.hit_wants_prefetch(at(1));
        assert!(
            !short.hit_wants_prefetch(at(4)),
            "too short-lived to bother"
        );
    }

    #[test]
    fn servfail_and_zero_ttl_are_not_cached() {
        let cache = Cache::new(100, TtlPolicy::default());
        let wire = new_query("a.test", 1, false).unwrap();
        let q = read_query(&wire).unwrap();
        let now = Instant::now();
        cache.insert(Key::of(&q), answer_for(&wire, 2, 300, true), now);
        assert!(cache.get(&Key::of(&q), now).is_none());
        cache.insert(Key::of(&q), answer_for(&wire, 0, 0, false), now);
        assert!(cache.get(&Key::of(&q), now).is_none());
    }
}
