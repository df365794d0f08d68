//! Helpers shared by the unit tests of this module.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::Message;

use crate::dns::{new_query, wire};

/// The message ID test queries carry, to check it is echoed.
pub(crate) const TEST_ID: u16 = 0xbeef;

/// A query for `name`/`qtype` with ID [`TEST_ID`], with an OPT record (DO clear) or, with
/// `edns` false, without one (a pre-EDNS client).
pub(crate) fn query_bytes(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut query = new_query(name, qtype, false).expect("valid test name");
    query[..2].copy_from_slice(&TEST_ID.to_be_bytes());
    if !edns {
        query.truncate(query.len() - 11);
        query[11] = 0;
    }
    query
}

/// Decodes a response after checking its framing with dnsward's own reader.
pub(crate) fn decode(response: &[u8]) -> Message {
    wire::parse(response).expect("well-formed response");
    Message::from_vec(response).expect("hickory decodes the response")
}

/// The records of a section as "owner TYPE rdata" strings.
pub(crate) fn show(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect()
}

/// A path in the temporary directory no other test (or test run) uses.
pub(crate) fn temp_path(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "dnsward-local-{tag}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
    ))
}

/// A file that is deleted when the test holding it ends.
pub(crate) struct TempFile(
    /// The file's path.
    pub(crate) PathBuf,
);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
