//! Command-line flags (clap derive). Raw values only; [`crate::config`] validates them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;
use crate::logging::LogFormat;

/// dnsward: plaintext DNS in, encrypted DNS (DoH / DoT) out, with caching and failover.
#[derive(Debug, Parser)]
#[command(name = "dnsward", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Configuration file (TOML).
    #[arg(short, long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format (default: the file's log-format, else text).
    #[arg(long, global = true, value_enum, env = "DNSWARD_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run(RunArgs),
    /// Validate a configuration file and exit (non-zero on error).
    CheckConfig {
        /// The file to check (defaults to --config).
        path: Option<PathBuf>,
    },
    /// Resolve one name over the encrypted path and print the answer dig-style.
    Query(QueryArgs),
    /// Compare the network's plaintext resolver with the trusted encrypted upstreams and
    /// report tampering. Exit status: 0 nothing hijacked, 3 hijacking found, 2 error.
    Audit(AuditArgs),
    /// Ask a running dnsward whether it can answer through an encrypted upstream.
    /// Exit status 0 healthy, 1 unhealthy, 2 no answer from it (for keepalived's vrrp_script).
    Health(HealthArgs),
}

/// `dnsward audit`.
#[derive(Debug, Default, Args)]
pub struct AuditArgs {
    /// The plaintext resolver to audit (default: the first nameserver in /etc/resolv.conf).
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub plain: Option<String>,
    /// Names to check, one per line, optionally followed by types (default: a built-in list).
    #[arg(long, value_name = "FILE")]
    pub names: Option<PathBuf>,
    /// Record types to check for names without their own (A, AAAA, or A,AAAA).
    #[arg(long, default_value = "A,AAAA", value_name = "TYPES")]
    pub types: String,
    /// Write the machine-readable report here (`-` for standard output).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// IP-to-ASN database in MaxMind format (e.g. GeoLite2-ASN.mmdb): an address in the same
    /// network as the trusted answers counts as a benign variation.
    #[arg(long, value_name = "FILE")]
    pub asn_db: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Upstream selection (the trusted side).
    #[command(flatten)]
    pub upstream: UpstreamArgs,
}

/// `dnsward health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The control endpoint (default: [control] listen from --config).
    #[arg(long, value_name = "ADDR:PORT")]
    pub control: Option<String>,
    /// Give up after this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub timeout_ms: u64,
}

/// Flags that choose and trust upstreams.
#[derive(Debug, Default, Args)]
pub struct UpstreamArgs {
    /// Upstream URL: https://NAME[:PORT]/PATH[#ADDR,..] (DoH) or tls://NAME[:PORT][#ADDR,..] (DoT).
    /// Repeatable; replaces the configured list.
    #[arg(long = "upstream", value_name = "URL")]
    pub upstreams: Vec<String>,
    /// Extra CA certificate (PEM) to trust for upstreams. Repeatable.
    #[arg(long = "ca-file", value_name = "PEM")]
    pub ca_files: Vec<PathBuf>,
    /// Plain DNS server used only to resolve upstream names given without addresses. Repeatable.
    #[arg(long = "bootstrap", value_name = "ADDR[:PORT]")]
    pub bootstrap: Vec<String>,
}

/// `dnsward run`.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// Address to listen on, UDP and TCP (default 127.0.0.1:53 and [::1]:53). Repeatable.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    pub listen: Vec<String>,
    /// Upstream selection.
    #[command(flatten)]
    pub upstream: UpstreamArgs,
    /// When started as root: the user to switch to once the listening sockets are bound.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
}

/// `dnsward query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Name to resolve.
    pub name: String,
    /// Record type (A, AAAA, MX, TXT, ... or TYPE65).
    #[arg(default_value = "A")]
    pub qtype: String,
    /// Ask for DNSSEC records (sets the DO bit).
    #[arg(long)]
    pub dnssec: bool,
    /// Upstream selection.
    #[command(flatten)]
    pub upstream: UpstreamArgs,
}

impl UpstreamArgs {
    /// As configuration overrides.
    pub fn overrides(&self, listen: Vec<String>) -> Overrides {
        Overrides {
            listen,
            upstreams: self.upstreams.clone(),
            bootstrap: self.bootstrap.clone(),
            ca_files: self.ca_files.clone(),
            ..Overrides::default()
        }
    }
}
