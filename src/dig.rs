//! dig-style presentation of an answer, for `dnsward query`.

use std::fmt::Write;
use std::time::Duration;

use hickory_proto::op::Message;

/// Formats `answer` (wire format) the way dig does: header, flags, sections, timing.
pub fn format(answer: &[u8], server: &str, elapsed: Duration) -> String {
    let mut out = String::new();
    let message = match Message::from_vec(answer) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(out, ";; answer could not be decoded: {e}");
            return out;
        }
    };
    let h = &message.metadata;
    let _ = writeln!(
        out,
        ";; ->>HEADER<<- opcode: {}, status: {}, id: {}",
        format!("{:?}", h.op_code).to_uppercase(),
        rcode_name(u16::from(h.response_code)),
        h.id
    );
    let mut flags = vec!["qr"];
    for (set, name) in [
        (h.authoritative, "aa"),
        (h.truncation, "tc"),
        (h.recursion_desired, "rd"),
        (h.recursion_available, "ra"),
        (h.authentic_data, "ad"),
        (h.checking_disabled, "cd"),
    ] {
        if set {
            flags.push(name);
        }
    }
    let _ = writeln!(
        out,
        ";; flags: {}; QUERY: {}, ANSWER: {}, AUTHORITY: {}, ADDITIONAL: {}",
        flags.join(" "),
        message.queries.len(),
        message.answers.len(),
        message.authorities.len(),
        message.additionals.len() + usize::from(message.edns.is_some()),
    );
    if let Some(edns) = &message.edns {
        let _ = writeln!(out, "\n;; OPT PSEUDOSECTION:");
        let _ = writeln!(
            out,
            "; EDNS: version: {}, flags:{}; udp: {}",
            edns.version(),
            if edns.flags().dnssec_ok { " do" } else { "" },
            edns.max_payload()
        );
    }
    let _ = writeln!(out, "\n;; QUESTION SECTION:");
    for q in &message.queries {
        let _ = writeln!(
            out,
            ";{}\t\t{}\t{}",
            q.name(),
            q.query_class(),
            q.query_type()
        );
    }
    for (title, records) in [
        ("ANSWER", &message.answers),
        ("AUTHORITY", &message.authorities),
        ("ADDITIONAL", &message.additionals),
    ] {
        if records.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n;; {title} SECTION:");
        for r in records {
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                r.name,
                r.ttl,
                r.dns_class,
                r.record_type(),
                r.data
            );
        }
    }
    let _ = writeln!(out, "\n;; Query time: {} msec", elapsed.as_millis());
    let _ = writeln!(out, ";; SERVER: {server}");
    let _ = writeln!(out, ";; MSG SIZE  rcvd: {}", answer.len());
    out
}

/// The mnemonic dig prints for a response code (RFC 6895 §2.3).
pub fn rcode_name(code: u16) -> String {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        16 => "BADVERS".into(),
        n => format!("RCODE{n}"),
    }
}
