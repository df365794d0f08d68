//! Local records indexed by owner name.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::dns::wire;

/// Record type PTR (RFC 1035 §3.3.12).
pub(crate) const TYPE_PTR: u16 = 12;
/// QTYPE `*` (RFC 1035 §3.2.3): every record at the name (RFC 8482 allows a subset; local
/// data is small, so all of it is given).
pub(crate) const TYPE_ANY: u16 = 255;

/// One local record: everything but its owner and class (always IN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rr {
    /// TYPE.
    pub rtype: u16,
    /// TTL served.
    pub ttl: u32,
    /// RDATA in wire format; names in it are uncompressed, so it can be copied as is and a
    /// CNAME's RDATA is directly its target's name.
    pub rdata: Box<[u8]>,
}

impl Rr {
    /// True for a CNAME, which stands alone at its name (RFC 2181 §10.1).
    pub(crate) fn is_cname(&self) -> bool {
        self.rtype == wire::TYPE_CNAME
    }
}

/// Records by owner name. Keys are lower-cased wire-format names so lookups ignore ASCII
/// case, as DNS names compare (RFC 4343 §3).
#[derive(Debug, Default)]
pub(crate) struct Table {
    /// Records of each name, in the order they were added.
    names: HashMap<Box<[u8]>, Vec<Rr>>,
}

/// The lookup key of an uncompressed wire-format name: the name itself when it is already
/// lower-case (nearly always, so nearly no query allocates here).
pub(crate) fn key(name: &[u8]) -> Cow<'_, [u8]> {
    if name.iter().any(u8::is_ascii_uppercase) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

impl Table {
    /// Adds `rr` at `owner` (any case) unless an identical record is there already: an RRset
    /// holds no duplicates (RFC 2181 §5). Returns whether it was added.
    pub(crate) fn insert(&mut self, owner: &[u8], rr: Rr) -> bool {
        let records = self.names.entry(key(owner).into()).or_default();
        let duplicate = records
            .iter()
            .any(|r| r.rtype == rr.rtype && r.rdata == rr.rdata);
        if !duplicate {
            records.push(rr);
        }
        !duplicate
    }

    /// The records at `key` (a name already passed through [`key`]), if the name is known.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&[Rr]> {
        self.names.get(key).map(Vec::as_slice)
    }

    /// True if `key` has a record of type `rtype`.
    pub(crate) fn has_type(&self, key: &[u8], rtype: u16) -> bool {
        self.get(key)
            .is_some_and(|records| records.iter().any(|r| r.rtype == rtype))
    }

    /// Number of names.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// The names, as keys.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.names.keys().map(|k| &k[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(last: u8) -> Rr {
        Rr {
            rtype: wire::TYPE_A,
            ttl: 60,
            rdata: Box::new([192, 0, 2, last]),
        }
    }

    #[test]
    fn lookups_ignore_case_and_duplicates_are_dropped() {
        let mut table = Table::default();
        let name = wire::name_from_str("Nas.LAN").unwrap();
        assert!(table.insert(&name, a(1)));
        assert!(!table.insert(&key(&name), a(1)));
        assert!(table.insert(&name, a(2)));
        let lower = wire::name_from_str("nas.lan").unwrap();
        assert_eq!(table.get(&lower).unwrap().len(), 2);
        assert!(table.has_type(&lower, wire::TYPE_A));
        assert!(!table.has_type(&lower, wire::TYPE_AAAA));
        assert_eq!(table.len(), 1);
    }
}
