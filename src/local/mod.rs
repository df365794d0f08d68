//! Answers for names that must never go to a public resolver.
//!
//! [`LocalAnswers`] serves the names of the local network from a hosts(5) file and from
//! static records in the configuration; [`zones`] serves the locally served zones (private
//! reverse zones, `home.arpa`, `local`, `localhost`, ...) that public resolvers can only
//! answer with NXDOMAIN. Both write complete responses: the client's ID and question, AA set,
//! an OPT record only for clients that sent one. Nothing here touches the network.
//!
//! Intended order in the query path: [`LocalAnswers::answer`] first, then any split-DNS
//! forwarding the user configured, then [`locally_served`] / [`local_zone_answer`], then the
//! cache and upstreams. Local answers are cheap and change on reload, so they bypass the cache.

mod any;
mod hosts;
mod records;
mod response;
mod table;
#[cfg(test)]
mod testing;
pub mod zones;

use std::path::PathBuf;

use thiserror::Error;

use crate::dns::query::{ClientQuery, Rcode};
use crate::dns::wire;
use hosts::HostsFile;
use response::{CLASS_IN, Owner, Response};
use table::{Rr, TYPE_ANY, Table, key};

pub use any::any_answer;
pub use records::RecordProblem;
pub use response::fit_to_limit;
pub use zones::{ZONES, local_zone_answer, locally_served};

/// Most CNAMEs followed within local data for one answer: more means a loop or a mistake
/// (RFC 1034 §3.6.2 calls CNAME loops an error).
const MAX_CNAME_CHAIN: usize = 8;

/// Where local data comes from.
#[derive(Debug, Clone, Default)]
pub struct LocalConfig {
    /// hosts(5) file to read (None: none). A missing file is not an error: it is logged at
    /// debug, serves nothing, and is read once it appears (see
    /// [`LocalAnswers::reload_if_changed`]).
    pub hosts_file: Option<PathBuf>,
    /// Static records in presentation form, e.g. "nas.lan. 300 IN A 192.168.1.10" or
    /// "printer.home.arpa A 192.168.1.20": TTL and class optional, a name without trailing
    /// dot is absolute. Types: A, AAAA, NS, CNAME, PTR, MX, TXT, SRV, and any type in the
    /// RFC 3597 generic form (`TYPE65 \# 3 0a0b0c`).
    pub records: Vec<String>,
    /// TTL for hosts-file answers, and for static records written without a TTL (seconds).
    pub hosts_ttl: u32,
}

/// Why the local data cannot be served.
#[derive(Debug, Error)]
pub enum LocalError {
    /// A static record that does not parse or breaks a DNS rule.
    #[error("records[{index}] {text:?}: {problem}")]
    BadRecord {
        /// Its position in [`LocalConfig::records`], to point at the configuration line.
        index: usize,
        /// The record as written.
        text: String,
        /// What is wrong with it.
        problem: RecordProblem,
    },
}

/// Local names: the hosts file (reloadable) and the static records (fixed at start).
#[derive(Debug)]
pub struct LocalAnswers {
    /// Static records from the configuration, validated once by [`LocalAnswers::new`].
    statics: Table,
    /// The hosts file and its current table, swapped whole on reload.
    hosts: HostsFile,
}

impl LocalAnswers {
    /// Validates the static records and reads the hosts file.
    pub fn new(config: &LocalConfig) -> Result<LocalAnswers, LocalError> {
        Ok(LocalAnswers {
            statics: static_table(&config.records, config.hosts_ttl)?,
            hosts: HostsFile::open(config.hosts_file.clone(), config.hosts_ttl),
        })
    }

    /// The answer to `query` if its name is known locally (from the hosts file or static
    /// records), else `None`. Only class IN is local (other classes are not ours). A known
    /// name gets its records of the queried type, NODATA if it has none (RFC 2308 §2.2), or
    /// its CNAME followed through local data (RFC 1034 §3.6.2). The response may exceed the
    /// client's UDP limit: pass it through [`fit_to_limit`].
    pub fn answer(&self, query: &ClientQuery<'_>) -> Option<Vec<u8>> {
        if query.question.qclass != CLASS_IN {
            return None;
        }
        let hosts = self.hosts.table();
        let sources = Sources {
            statics: &self.statics,
            hosts: &hosts,
        };
        let name = key(query.name());
        let records = sources.records_at(&name)?;
        let mut response = Response::new(query, Rcode::NoError);
        sources.add_answers(
            &mut response,
            name.into_owned(),
            records,
            query.question.qtype,
        );
        Some(response.finish(query))
    }

    /// Re-reads the hosts file if its modification time or length changed; returns true if
    /// it was reloaded. A file that cannot be read keeps the previous table.
    pub fn reload_if_changed(&self) -> bool {
        self.hosts.reload_if_changed()
    }

    /// Number of names known, counting a name in both sources once (for logs).
    pub fn len(&self) -> usize {
        let hosts = self.hosts.table();
        let hosts_only = hosts
            .keys()
            .filter(|name| self.statics.get(name).is_none())
            .count();
        self.statics.len() + hosts_only
    }

    /// True if no name is known (clippy's `len_without_is_empty`; also handy for logs).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses and validates the static records, reporting the first bad one with its index.
fn static_table(records: &[String], default_ttl: u32) -> Result<Table, LocalError> {
    let mut table = Table::default();
    for (index, text) in records.iter().enumerate() {
        let bad = |problem| LocalError::BadRecord {
            index,
            text: text.clone(),
            problem,
        };
        let (owner, rr) = records::parse_record(text, default_ttl).map_err(bad)?;
        records::check_cname_rule(&table, &owner, &rr).map_err(bad)?;
        table.insert(&owner, rr);
    }
    Ok(table)
}

/// Both sources of local data, seen as one for a lookup.
struct Sources<'t> {
    /// Static records; they win over the hosts file where a CNAME is involved.
    statics: &'t Table,
    /// The hosts-file table current when the lookup started.
    hosts: &'t Table,
}

impl<'t> Sources<'t> {
    /// The records at `name` (a lookup key), or `None` if neither source knows it. A static
    /// CNAME hides hosts-file data at the same name, since a CNAME stands alone
    /// (RFC 2181 §10.1).
    fn records_at(&self, name: &[u8]) -> Option<Vec<&'t Rr>> {
        let statics = self.statics.get(name);
        let hosts = self.hosts.get(name);
        if statics.is_none() && hosts.is_none() {
            return None;
        }
        let statics = statics.unwrap_or_default();
        if statics.iter().any(Rr::is_cname) {
            return Some(statics.iter().collect());
        }
        Some(statics.iter().chain(hosts.unwrap_or_default()).collect())
    }

    /// Adds the answer for `name` (whose `records` are known): the records of `qtype`, or
    /// the CNAME and then whatever its target has locally (RFC 1034 §4.3.2 step 3a).
    fn add_answers(
        &self,
        response: &mut Response,
        name: Vec<u8>,
        mut records: Vec<&'t Rr>,
        qtype: u16,
    ) {
        let mut owner = Owner::QUESTION;
        let mut seen = vec![name];
        while let Some(cname) = cname_to_follow(&records, qtype) {
            let Some(at) = response.answer(owner, cname.rtype, cname.ttl, &cname.rdata) else {
                return;
            };
            let target = key(&cname.rdata).into_owned();
            if seen.contains(&target) || seen.len() > MAX_CNAME_CHAIN {
                return;
            }
            let Some(next) = self.records_at(&target) else {
                return;
            };
            owner = Owner::at(at, &cname.rdata);
            seen.push(target);
            records = next;
        }
        add_matching(response, owner, &records, qtype);
    }
}

/// The CNAME among `records` that a `qtype` query follows: none when the CNAME itself (or
/// everything, ANY) was asked for (RFC 1034 §3.6.2).
fn cname_to_follow<'t>(records: &[&'t Rr], qtype: u16) -> Option<&'t Rr> {
    if matches!(qtype, wire::TYPE_CNAME | TYPE_ANY) {
        return None;
    }
    records.iter().copied().find(|rr| rr.is_cname())
}

/// Adds the records of `qtype` (all of them for ANY) under `owner`, as many as fit.
fn add_matching(response: &mut Response, owner: Owner<'_>, records: &[&Rr], qtype: u16) {
    let wanted = records
        .iter()
        .filter(|rr| qtype == TYPE_ANY || rr.rtype == qtype);
    for rr in wanted {
        if response
            .answer(owner, rr.rtype, rr.ttl, &rr.rdata)
            .is_none()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use hickory_proto::op::{Message, ResponseCode};

    use super::*;
    use crate::dns::read_query;
    use crate::dns::wire::Header;
    use crate::local::testing::{TEST_ID, TempFile, decode, query_bytes, show, temp_path};

    const HOSTS: &str = "\
127.0.0.1 localhost
192.168.1.10 NAS.lan nas
2001:db8::10 nas.lan
192.168.1.11 printer.lan
";

    /// Local answers over a fresh hosts file with `hosts` and the given static records.
    fn local(hosts: &str, records: &[&str]) -> (LocalAnswers, TempFile) {
        let path = temp_path("hosts");
        fs::write(&path, hosts).unwrap();
        let config = LocalConfig {
            hosts_file: Some(path.clone()),
            records: records.iter().map(|r| r.to_string()).collect(),
            hosts_ttl: 60,
        };
        (LocalAnswers::new(&config).unwrap(), TempFile(path))
    }

    /// The decoded answer of `local` to `name`/`qtype`, if any.
    fn ask(local: &LocalAnswers, name: &str, qtype: u16, edns: bool) -> Option<Message> {
        let bytes = query_bytes(name, qtype, edns);
        let query = read_query(&bytes).unwrap();
        local.answer(&query).map(|response| decode(&response))
    }

    #[test]
    fn hosts_file_answers_a_aaaa_and_ptr() {
        let (local, _) = local(HOSTS, &[]);
        let a = ask(&local, "nas.lan", wire::TYPE_A, true).unwrap();
        assert_eq!(show(&a.answers), ["nas.lan. A 192.168.1.10"]);
        assert_eq!(a.answers[0].ttl, 60);
        let aaaa = ask(&local, "nas", wire::TYPE_AAAA, true).unwrap();
        assert!(
            show(&aaaa.answers).is_empty(),
            "alias only on the IPv4 line"
        );
        let aaaa = ask(&local, "nas.lan", wire::TYPE_AAAA, true).unwrap();
        assert_eq!(show(&aaaa.answers), ["nas.lan. AAAA 2001:db8::10"]);
        let ptr = ask(&local, "10.1.168.192.in-addr.arpa", 12, true).unwrap();
        assert_eq!(
            show(&ptr.answers),
            ["10.1.168.192.in-addr.arpa. PTR NAS.lan."]
        );
        let v6 = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";
        let ptr = ask(&local, v6, 12, true).unwrap();
        assert_eq!(show(&ptr.answers), [format!("{v6}. PTR nas.lan.")]);
    }

    #[test]
    fn header_question_and_opt_follow_the_query() {
        let (local, _) = local(HOSTS, &[]);
        let mut bytes = query_bytes("Printer.LAN", wire::TYPE_A, true);
        let at = bytes.len() - 4;
        bytes[at] = 0x80; // DO
        let query = read_query(&bytes).unwrap();
        let response = local.answer(&query).unwrap();
        let message = decode(&response);
        let meta = message.metadata;
        assert_eq!(meta.id, TEST_ID);
        assert!(meta.authoritative && meta.recursion_desired && meta.recursion_available);
        assert!(!meta.authentic_data);
        assert_eq!(meta.response_code, ResponseCode::NoError);
        let parsed = wire::parse(&response).unwrap();
        assert_eq!(
            &response[parsed.question.clone().unwrap().name],
            query.name()
        );
        assert!(parsed.edns().unwrap().dnssec_ok, "DO copied");
        assert_eq!(show(&message.answers), ["Printer.LAN. A 192.168.1.11"]);
        // A client without EDNS gets no OPT (RFC 6891 §7).
        let plain = query_bytes("printer.lan", wire::TYPE_A, false);
        let response = local.answer(&read_query(&plain).unwrap()).unwrap();
        assert_eq!(Header::of(&response).unwrap().arcount(), 0);
        assert!(decode(&response).edns.is_none());
    }

    #[test]
    fn known_name_without_the_type_is_nodata_and_unknown_names_are_not_ours() {
        let (local, _) = local(HOSTS, &[]);
        let mx = ask(&local, "nas.lan", 15, false).unwrap();
        assert_eq!(mx.metadata.response_code, ResponseCode::NoError);
        assert!(mx.answers.is_empty() && mx.authorities.is_empty());
        assert!(mx.metadata.authoritative);
        assert!(ask(&local, "unknown.lan", wire::TYPE_A, true).is_none());
        assert!(ask(&local, "example.com", wire::TYPE_A, true).is_none());
        // Class CH is not ours.
        let mut bytes = query_bytes("nas.lan", wire::TYPE_A, true);
        let class_at = read_query(&bytes).unwrap().question.end - 2;
        bytes[class_at..class_at + 2].copy_from_slice(&3u16.to_be_bytes());
        assert!(local.answer(&read_query(&bytes).unwrap()).is_none());
    }

    #[test]
    fn static_records_of_every_type() {
        let records = [
            "mail.lan. 300 IN MX 10 nas.lan.",
            "mail.lan TXT \"v=spf1 -all\"",
            "_smb._tcp.lan SRV 0 5 445 nas.lan",
            "box.lan A 192.168.1.30",
            "box.lan AAAA fd00::30",
        ];
        let (local, _) = local(HOSTS, &records);
        let mx = ask(&local, "MAIL.lan", 15, true).unwrap();
        assert_eq!(show(&mx.answers), ["MAIL.lan. MX 10 nas.lan."]);
        assert_eq!(mx.answers[0].ttl, 300);
        let txt = ask(&local, "mail.lan", 16, true).unwrap();
        assert_eq!(txt.answers.len(), 1);
        assert_eq!(txt.answers[0].ttl, 60, "default TTL");
        let srv = ask(&local, "_smb._tcp.lan", 33, true).unwrap();
        assert_eq!(show(&srv.answers), ["_smb._tcp.lan. SRV 0 5 445 nas.lan."]);
        let any = ask(&local, "box.lan", TYPE_ANY, true).unwrap();
        assert_eq!(any.answers.len(), 2);
    }

    #[test]
    fn cnames_are_followed_through_local_data() {
        let records = [
            "www.lan CNAME alias.lan",
            "alias.lan CNAME NAS.lan.",
            "ext.lan CNAME example.com",
            "loop1.lan CNAME loop2.lan",
            "loop2.lan CNAME loop1.lan",
        ];
        let (local, _) = local(HOSTS, &records);
        let a = ask(&local, "WWW.lan", wire::TYPE_A, true).unwrap();
        assert_eq!(
            show(&a.answers),
            [
                "WWW.lan. CNAME alias.lan.",
                "alias.lan. CNAME NAS.lan.",
                "NAS.lan. A 192.168.1.10"
            ]
        );
        // The target has no MX: the CNAMEs alone (NOERROR).
        let mx = ask(&local, "www.lan", 15, true).unwrap();
        assert_eq!(mx.answers.len(), 2);
        // Asking for the CNAME itself does not follow it.
        let cname = ask(&local, "www.lan", wire::TYPE_CNAME, true).unwrap();
        assert_eq!(show(&cname.answers), ["www.lan. CNAME alias.lan."]);
        // A target outside local data: the CNAME alone.
        let ext = ask(&local, "ext.lan", wire::TYPE_A, true).unwrap();
        assert_eq!(show(&ext.answers), ["ext.lan. CNAME example.com."]);
        // A loop ends after each CNAME was given once.
        let looped = ask(&local, "loop1.lan", wire::TYPE_A, true).unwrap();
        assert_eq!(looped.answers.len(), 2);
    }

    #[test]
    fn a_static_cname_hides_hosts_data_at_its_name() {
        let (local, _) = local(HOSTS, &["printer.lan CNAME nas.lan"]);
        let a = ask(&local, "printer.lan", wire::TYPE_A, true).unwrap();
        assert_eq!(
            show(&a.answers),
            ["printer.lan. CNAME nas.lan.", "nas.lan. A 192.168.1.10"]
        );
    }

    #[test]
    fn reload_picks_up_a_changed_file_only() {
        let (local, file) = local(HOSTS, &[]);
        let path = &file.0;
        assert!(!local.reload_if_changed(), "unchanged");
        let names = local.len();
        fs::write(path, "192.168.1.99 nas.lan\n192.168.1.98 new.lan\n").unwrap();
        assert!(local.reload_if_changed());
        let a = ask(&local, "nas.lan", wire::TYPE_A, true).unwrap();
        assert_eq!(show(&a.answers), ["nas.lan. A 192.168.1.99"]);
        assert!(ask(&local, "new.lan", wire::TYPE_A, true).is_some());
        assert!(ask(&local, "printer.lan", wire::TYPE_A, true).is_none());
        assert!(!local.reload_if_changed(), "unchanged again");
        assert_ne!(local.len(), names);
    }

    #[test]
    fn a_bad_static_record_is_rejected_with_its_index() {
        let config = LocalConfig {
            hosts_file: None,
            records: vec!["ok.lan A 192.0.2.1".into(), "bad.lan A 192.0.2.300".into()],
            hosts_ttl: 60,
        };
        let error = LocalAnswers::new(&config).unwrap_err();
        let LocalError::BadRecord { index, .. } = &error;
        assert_eq!(*index, 1);
        let message = error.to_string();
        assert!(message.starts_with("records[1]"), "{message}");
        assert!(message.contains("192.0.2.300"), "{message}");
        let config = LocalConfig {
            records: vec!["w.lan CNAME x.lan".into(), "w.lan A 192.0.2.1".into()],
            ..config
        };
        let error = LocalAnswers::new(&config).unwrap_err().to_string();
        assert!(
            error.starts_with("records[1]") && error.contains("CNAME"),
            "{error}"
        );
    }

    #[test]
    fn len_counts_each_name_once() {
        let (local, _) = local("192.0.2.1 a.lan\n", &["a.lan TXT x", "b.lan TXT y"]);
        // a.lan, b.lan and 1.2.0.192.in-addr.arpa.
        assert_eq!(local.len(), 3);
        assert!(!local.is_empty());
        let empty = LocalAnswers::new(&LocalConfig::default()).unwrap();
        assert!(empty.is_empty());
        assert!(!empty.reload_if_changed());
    }
}
