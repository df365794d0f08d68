//! A bounded, lock-free memory of names recently seen with public addresses, for the
//! rebinding check: a name that had public addresses within the hour and now answers with a
//! special-use one is suspicious (DNS rebinding).
//!
//! Names are byte strings in whatever form the caller uses throughout (the inspector passes
//! the wire form of the question), compared without ASCII case.
//!
//! It runs on every cache miss, so it allocates nothing: a fixed table of 64-bit slots, each
//! holding a 40-bit fingerprint of a name (a keyed hash, so clients cannot aim collisions) and
//! the minute it was last seen. A name maps to one slot; a newer name landing on the same slot
//! replaces the older one, which is then forgotten early. Forgetting only makes the check
//! miss a rebinding, never report one that did not happen: a false match needs the same slot
//! and the same 40-bit fingerprint.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bits of each slot holding the minute; the rest hold the fingerprint.
const MINUTE_BITS: u32 = 24;
const MINUTE_MASK: u64 = (1 << MINUTE_BITS) - 1;

/// Names recently seen, by fingerprint.
pub struct RecentNames {
    /// Fingerprint (high 40 bits) and minute (low 24 bits); 0 is empty.
    slots: Box<[AtomicU64]>,
    /// Keys the fingerprints.
    hasher: RandomState,
    /// Minute 0.
    start: Instant,
    /// How long a name is remembered, in minutes.
    keep_minutes: u64,
}

impl RecentNames {
    /// A memory of at least `capacity` slots (rounded up to a power of two) keeping each name
    /// for `keep`.
    pub fn new(capacity: usize, keep: Duration) -> RecentNames {
        let slots = capacity.max(1).next_power_of_two();
        RecentNames {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            start: Instant::now(),
            keep_minutes: (keep.as_secs() / 60).max(1),
        }
    }

    /// Remembers `name` as seen at `now`.
    pub fn insert(&self, name: &[u8], now: Instant) {
        let (slot, fingerprint) = self.locate(name);
        // Minute 0 would make an empty slot of a real entry; minutes count from 1.
        let minute = (self.minute(now) + 1) & MINUTE_MASK;
        self.slots[slot].store(fingerprint | minute.max(1), Ordering::Relaxed);
    }

    /// Whether `name` was seen within the keeping time before `now`.
    pub fn contains(&self, name: &[u8], now: Instant) -> bool {
        let (slot, fingerprint) = self.locate(name);
        let stored = self.slots[slot].load(Ordering::Relaxed);
        if stored == 0 || stored & !MINUTE_MASK != fingerprint {
            return false;
        }
        let seen = stored & MINUTE_MASK;
        let minute = (self.minute(now) + 1) & MINUTE_MASK;
        minute.wrapping_sub(seen) & MINUTE_MASK < self.keep_minutes
    }

    /// Forgets everything.
    pub fn clear(&self) {
        for slot in &self.slots[..] {
            slot.store(0, Ordering::Relaxed);
        }
    }

    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs() / 60
    }

    /// The slot and fingerprint of `name`, without ASCII case.
    fn locate(&self, name: &[u8]) -> (usize, u64) {
        let mut hasher = self.hasher.build_hasher();
        // Folded a chunk at a time into one buffer: SipHash costs far more per `write` than
        // per byte, and a chunked stream hashes as the whole would.
        let mut folded = [0u8; 64];
        for chunk in name.chunks(folded.len()) {
            for (to, from) in folded.iter_mut().zip(chunk) {
                *to = from.to_ascii_lowercase();
            }
            hasher.write(&folded[..chunk.len()]);
        }
        let hash = hasher.finish();
        let slot = (hash as usize) & (self.slots.len() - 1);
        (slot, hash & !MINUTE_MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn remembers_a_name_for_the_keeping_time_whatever_its_case() {
        let recent = RecentNames::new(1024, HOUR);
        let t0 = Instant::now();
        let name = b"\x03www\x07example\x03com\x00";
        assert!(!recent.contains(name, t0));
        recent.insert(b"\x03WWW\x07Example\x03com\x00", t0);
        assert!(recent.contains(name, t0));
        assert!(recent.contains(name, t0 + Duration::from_secs(59 * 60)));
        assert!(!recent.contains(name, t0 + Duration::from_secs(61 * 60)));
        assert!(!recent.contains(b"\x07example\x03com\x00", t0));
        // Seen again: remembered from then on.
        recent.insert(name, t0 + Duration::from_secs(90 * 60));
        assert!(recent.contains(name, t0 + Duration::from_secs(140 * 60)));
        recent.clear();
        assert!(!recent.contains(name, t0 + Duration::from_secs(140 * 60)));
    }

    #[test]
    fn long_names_are_folded_and_told_apart_past_the_first_chunk() {
        let recent = RecentNames::new(1024, HOUR);
        let now = Instant::now();
        let long = |last: u8| {
            let mut n = vec![b'A'; 200];
            n.push(last);
            n
        };
        recent.insert(&long(b'X'), now);
        assert!(recent.contains(&long(b'x'), now));
        assert!(!recent.contains(&long(b'y'), now));
        assert!(!recent.contains(&long(b'x')[..150], now));
    }

    #[test]
    fn a_full_table_forgets_but_never_invents() {
        let recent = RecentNames::new(64, HOUR);
        let now = Instant::now();
        for i in 0..10_000 {
            recent.insert(format!("n{i}.test").as_bytes(), now);
        }
        let remembered = (0..10_000)
            .filter(|i| recent.contains(format!("n{i}.test").as_bytes(), now))
            .count();
        assert!(remembered <= 64, "{remembered} names in 64 slots");
        assert!(remembered > 0);
        let invented = (0..10_000)
            .filter(|i| recent.contains(format!("other{i}.test").as_bytes(), now))
            .count();
        assert_eq!(invented, 0);
    }

    #[test]
    fn every_slot_is_usable_and_capacity_rounds_up() {
        let recent = RecentNames::new(1000, HOUR);
        assert_eq!(recent.slots.len(), 1024);
        let now = Instant::now();
        for i in 0..100_000 {
            recent.insert(format!("n{i}.test").as_bytes(), now);
        }
        let used = recent
            .slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != 0)
            .count();
        assert_eq!(used, 1024);
    }
}
