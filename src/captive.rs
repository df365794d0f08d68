//! Captive portals: the one, narrow exception to "never in plaintext".
//!
//! Behind a hotel or airport portal the encrypted upstreams are unreachable until the user
//! logs in, and the operating system finds the login page by resolving a few well-known
//! connectivity-check names. When enabled, and only while no encrypted upstream is healthy,
//! those names (and nothing else) are resolved through the local network's plain resolver.
//! Every such answer is logged as plaintext and never cached, so encrypted resolution resumes
//! by itself as soon as an upstream answers again.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tracing::warn;

use crate::config::parse_addr;
use crate::dns::wire;
use crate::split::is_within;
use crate::upstream::UpstreamError;
use crate::upstream::plain::PlainClient;

/// Files that may name the network's own resolvers, most specific first: NetworkManager's
/// and systemd-resolved's lists of what DHCP gave them, then the classic file.
const RESOLV_CONF_FILES: &[&str] = &[
    "/run/NetworkManager/no-stub-resolv.conf",
    "/run/systemd/resolve/resolv.conf",
    "/etc/resolv.conf",
];

/// Where the network's plain resolvers come from.
#[derive(Debug, Clone)]
pub enum Resolvers {
    /// These addresses.
    Fixed(Vec<SocketAddr>),
    /// Read at the time of need from the system's resolv.conf files, skipping loopback
    /// addresses (which would be dnsward itself).
    Auto,
}

/// The captive-portal policy.
#[derive(Debug, Clone)]
pub struct CaptivePortal {
    /// Names (lower-cased wire format) that may be resolved in plaintext, with their subdomains.
    names: Vec<Vec<u8>>,
    /// The network's resolvers.
    resolvers: Resolvers,
    /// Per-resolver timeout.
    timeout: Duration,
}

impl CaptivePortal {
    /// A policy for `names` through `resolvers`; `None` if a name is invalid.
    pub fn new(names: &[String], resolvers: Resolvers, timeout: Duration) -> Option<CaptivePortal> {
        let names = names
            .iter()
            .map(|n| wire::name_from_str(n).map(|w| w.to_ascii_lowercase()))
            .collect::<Option<Vec<_>>>()?;
        Some(CaptivePortal {
            names,
            resolvers,
            timeout,
        })
    }

    /// Whether `name` is a connectivity-check name.
    pub fn covers(&self, name: &[u8]) -> bool {
        self.names.iter().any(|n| is_within(name, n))
    }

    /// Resolves `query` in plaintext through the network's resolver, logging that it did.
    pub async fn exchange(&self, query: &[u8], name: &str) -> Result<Bytes, UpstreamError> {
        let servers = match &self.resolvers {
            Resolvers::Fixed(servers) => servers.clone(),
            Resolvers::Auto => RESOLV_CONF_FILES
                .iter()
                .map(|f| nameservers(Path::new(f)))
                .find(|s| !s.is_empty())
                .unwrap_or_default(),
        };
        if servers.is_empty() {
            return Err(UpstreamError::Bootstrap {
                host: name.to_string(),
                reason: "no network resolver known for captive-portal detection".into(),
            });
        }
        warn!(%name, ?servers, "upstreams unreachable: resolving captive-portal check in PLAINTEXT");
        PlainClient::new(servers, self.timeout)
            .exchange(query)
            .await
    }
}

/// Non-loopback `nameserver` addresses in a resolv.conf file (empty if unreadable).
pub fn nameservers(path: &Path) -> Vec<SocketAddr> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next())?
        })
        .filter_map(|addr| parse_addr(addr.split('%').next()?, 53).ok())
        .filter(|addr| !addr.ip().is_loopback() && !addr.ip().is_unspecified())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameservers_skipping_loopback() {
        let path = std::env::temp_dir().join(format!("dnsward-resolv-{}", std::process::id()));
        std::fs::write(
            &path,
            "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.53\noptions edns0\nnameserver fe80::1%eth0\nnameserver ::1\n",
        )
        .unwrap();
        let got = nameservers(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            got,
            [
                "192.0.2.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn covers_listed_names_only() {
        let names: Vec<String> = crate::config::DEFAULT_CAPTIVE_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect();
        let policy = CaptivePortal::new(&names, Resolvers::Auto, Duration::from_secs(1)).unwrap();
        let n = |s: &str| wire::name_from_str(s).unwrap();
        assert!(policy.covers(&n("Captive.Apple.com")));
        assert!(!policy.covers(&n("apple.com")));
        assert!(!policy.covers(&n("example.com")));
    }
}
