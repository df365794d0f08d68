//! The hosts(5) file: `address canonical_name [aliases...]` per line, `#` starting a comment.
//!
//! Every name of a line gets an A or AAAA record for the line's address; the address's
//! reverse name (`d.c.b.a.in-addr.arpa`, RFC 1035 §3.5; nibbles under `ip6.arpa`,
//! RFC 3596 §2.5) gets a PTR to the line's canonical name, the first line for an address
//! winning, as the C library's `gethostbyaddr` does. The file is parsed into a [`Table`]
//! that is swapped whole when the file changes, so lookups never wait for a reload.

use std::fs::{self, Metadata};
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

use tracing::{debug, info, warn};

use super::table::{Rr, TYPE_PTR, Table, key};
use crate::dns::wire;

/// What identifies one version of the file: a change of either means it must be re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// Modification time (`None` where the platform has none).
    modified: Option<SystemTime>,
    /// Length in bytes, which catches rewrites within the mtime's granularity.
    len: u64,
}

impl Stamp {
    /// The stamp of the file `metadata` describes.
    fn of(metadata: &Metadata) -> Stamp {
        Stamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
        }
    }
}

/// A hosts file and its parsed contents.
#[derive(Debug)]
pub(crate) struct HostsFile {
    /// The file; `None` when no hosts file is configured.
    path: Option<PathBuf>,
    /// TTL of the records made from it.
    ttl: u32,
    /// The current table. Readers clone the `Arc` under the lock and look up outside it; a
    /// reload builds a new table first and holds the write lock only to swap the pointer.
    table: RwLock<Arc<Table>>,
    /// Stamp of the file version in `table` (`None`: nothing read yet). Its mutex also keeps
    /// two reloads from parsing the file at the same time.
    stamp: Mutex<Option<Stamp>>,
}

impl HostsFile {
    /// Reads `path` (if any). A missing or unreadable file serves nothing until a later
    /// [`HostsFile::reload_if_changed`] finds it readable.
    pub(crate) fn open(path: Option<PathBuf>, ttl: u32) -> HostsFile {
        let hosts = HostsFile {
            path,
            ttl,
            table: RwLock::new(Arc::new(Table::default())),
            stamp: Mutex::new(None),
        };
        match (hosts.refresh(), &hosts.path) {
            (Err(e), Some(path)) if e.kind() == io::ErrorKind::NotFound => {
                debug!(path = %path.display(), "no hosts file; serving nothing from it");
            }
            (Err(error), Some(path)) => {
                warn!(path = %path.display(), %error, "cannot read hosts file; serving nothing from it");
            }
            _ => {}
        }
        hosts
    }

    /// The current table.
    pub(crate) fn table(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Re-reads the file if its stamp changed; true if a new table is in place. A file that
    /// cannot be read now (gone, unreadable) keeps the old table and is retried next time.
    pub(crate) fn reload_if_changed(&self) -> bool {
        match self.refresh() {
            Ok(reloaded) => reloaded,
            Err(error) => {
                debug!(%error, "hosts file not reloaded; keeping the previous table");
                false
            }
        }
    }

    /// Reads and swaps in the file if its stamp differs from the table's.
    fn refresh(&self) -> io::Result<bool> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let mut stamp = lock(&self.stamp);
        // Stamp before reading: a write racing with the read changes the stamp again, so it
        // is picked up by the next check rather than lost.
        let current = Stamp::of(&fs::metadata(path)?);
        if *stamp == Some(current) {
            return Ok(false);
        }
        let text = fs::read(path)?;
        let table = parse(&String::from_utf8_lossy(&text), self.ttl);
        info!(path = %path.display(), names = table.len(), "hosts file loaded");
        *self
            .table
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(table);
        *stamp = Some(current);
        Ok(true)
    }
}

/// Locks `mutex`, ignoring poisoning: the stamp is a plain value, never left half-written.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Parses hosts-file text into a table of A, AAAA and PTR records with `ttl`. Lines that do
/// not parse are skipped (logged at debug), as the C library skips them.
pub(crate) fn parse(text: &str, ttl: u32) -> Table {
    let mut table = Table::default();
    for (index, line) in text.lines().enumerate() {
        if let Some((address, names)) = parse_line(line, index + 1) {
            add_line(&mut table, address, &names, ttl);
        }
    }
    table
}

/// The address and names of one line, or `None` for a blank, comment or unusable line.
fn parse_line(line: &str, number: usize) -> Option<(IpAddr, Vec<Vec<u8>>)> {
    let content = line.split('#').next().unwrap_or_default();
    let mut fields = content.split_whitespace();
    let address_text = fields.next()?;
    // A zone index (`fe80::1%eth0`) names a local interface; the address means nothing to
    // the clients of a DNS server, so the line is skipped (RFC 4007 §11.2 scoped addresses).
    let Some(address) = address_text
        .parse::<IpAddr>()
        .ok()
        .filter(|_| !address_text.contains('%'))
    else {
        debug!(
            line = number,
            address = address_text,
            "hosts: skipping line with unusable address"
        );
        return None;
    };
    let names: Vec<Vec<u8>> = fields.filter_map(host_name).collect();
    if names.is_empty() {
        debug!(line = number, "hosts: skipping line without usable names");
        return None;
    }
    Some((address, names))
}

/// A host name as a wire-format name; `None` for the root or an invalid name.
fn host_name(text: &str) -> Option<Vec<u8>> {
    wire::name_from_str(text).filter(|name| name.len() > 1)
}

/// Adds one line's records: A/AAAA for every name, PTR for the address unless an earlier
/// line already gave it one.
fn add_line(table: &mut Table, address: IpAddr, names: &[Vec<u8>], ttl: u32) {
    let (rtype, rdata): (u16, Box<[u8]>) = match address {
        IpAddr::V4(v4) => (wire::TYPE_A, Box::new(v4.octets())),
        IpAddr::V6(v6) => (wire::TYPE_AAAA, Box::new(v6.octets())),
    };
    for name in names {
        let rdata = rdata.clone();
        table.insert(name, Rr { rtype, ttl, rdata });
    }
    let reverse = reverse_name(address);
    if !table.has_type(&key(&reverse), TYPE_PTR) {
        let rdata = names[0].clone().into_boxed_slice();
        table.insert(
            &reverse,
            Rr {
                rtype: TYPE_PTR,
                ttl,
                rdata,
            },
        );
    }
}

/// The reverse-mapping name of `address` in wire format: `d.c.b.a.in-addr.arpa`
/// (RFC 1035 §3.5) or the 32 nibbles, lowest first, under `ip6.arpa` (RFC 3596 §2.5).
pub(crate) fn reverse_name(address: IpAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(74);
    match address {
        IpAddr::V4(v4) => {
            for octet in v4.octets().iter().rev() {
                push_label(&mut out, octet.to_string().as_bytes());
            }
            push_label(&mut out, b"in-addr");
        }
        IpAddr::V6(v6) => {
            for octet in v6.octets().iter().rev() {
                push_label(&mut out, &[nibble(octet & 0x0f)]);
                push_label(&mut out, &[nibble(octet >> 4)]);
            }
            push_label(&mut out, b"ip6");
        }
    }
    push_label(&mut out, b"arpa");
    out.push(0);
    out
}

/// Appends one label (shorter than 64 octets) to a wire-format name.
fn push_label(out: &mut Vec<u8>, label: &[u8]) {
    out.push(label.len() as u8);
    out.extend_from_slice(label);
}

/// The lower-case hexadecimal digit of a nibble.
fn nibble(value: u8) -> u8 {
    b"0123456789abcdef"[usize::from(value & 0x0f)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::testing::{TempFile, temp_path};

    fn records(table: &Table, name: &str) -> Vec<(u16, Vec<u8>)> {
        let key = key(&wire::name_from_str(name).unwrap()).into_owned();
        table
            .get(&key)
            .unwrap_or_default()
            .iter()
            .map(|rr| (rr.rtype, rr.rdata.to_vec()))
            .collect()
    }

    #[test]
    fn reverse_names() {
        let v4 = reverse_name("192.168.1.10".parse().unwrap());
        assert_eq!(wire::name_to_string(&v4), "10.1.168.192.in-addr.arpa.");
        let v6 = reverse_name("2001:db8::1".parse().unwrap());
        assert_eq!(
            wire::name_to_string(&v6),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
    }

    #[test]
    fn parses_names_aliases_comments_and_skips_bad_lines() {
        let text = "\
# comment line
127.0.0.1\tlocalhost
192.168.1.10  NAS.lan nas   # trailing comment
192.168.1.10  other.lan
2001:db8::10 nas.lan
fe80::1%eth0 linklocal.lan
not-an-address bad.lan
192.168.1.11
10.0.0.1 a..b ok.lan
";
        let table = parse(text, 60);
        assert_eq!(records(&table, "nas.lan").len(), 2);
        assert_eq!(records(&table, "NAS")[0], (1, vec![192, 168, 1, 10]));
        assert!(records(&table, "linklocal.lan").is_empty());
        assert!(records(&table, "bad.lan").is_empty());
        assert_eq!(records(&table, "ok.lan").len(), 1);
        // First line wins the PTR, with the canonical name as written.
        let ptr = records(&table, "10.1.168.192.in-addr.arpa");
        assert_eq!(ptr, [(TYPE_PTR, wire::name_from_str("NAS.lan").unwrap())]);
        assert_eq!(records(&table, "1.0.0.127.in-addr.arpa").len(), 1);
    }

    #[test]
    fn a_missing_file_serves_nothing_and_is_picked_up_when_it_appears() {
        let file = TempFile(temp_path("hosts-missing"));
        let path = &file.0;
        let hosts = HostsFile::open(Some(path.clone()), 60);
        assert_eq!(hosts.table().len(), 0);
        assert!(!hosts.reload_if_changed());
        fs::write(path, "192.0.2.1 late.lan\n").unwrap();
        assert!(hosts.reload_if_changed());
        assert_eq!(records(&hosts.table(), "late.lan").len(), 1);
        fs::remove_file(path).unwrap();
        assert!(
            !hosts.reload_if_changed(),
            "a vanished file keeps the old table"
        );
        assert_eq!(records(&hosts.table(), "late.lan").len(), 1);
    }
}
