//! The `dnsward` command: parse flags, set up logging, run a subcommand, print errors once.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use hickory_proto::rr::RecordType;
use tracing_subscriber::EnvFilter;

use dnsward::cli::{AuditArgs, Cli, Command, QueryArgs, RunArgs};
use dnsward::config::{Overrides, Settings};
use dnsward::listener::Sockets;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        // `query` and `audit` report failures themselves; their logs are only for -v.
        (false, 0) if matches!(cli.command, Command::Query(_) | Command::Audit(_)) => "error",
        (false, 0) => "info",
        (false, 1) => "dnsward=debug,info",
        (false, _) => "dnsward=trace,debug",
    };
    init_tracing(level);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dnsward: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(default: &str) {
    let filter = EnvFilter::try_from_env("DNSWARD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { path } => {
            let path = path
                .or(cli.config)
                .context("name a file: dnsward check-config PATH")?;
            let settings = Settings::load(Some(&path), Overrides::default())?;
            dnsward::build_router(&settings)?;
            println!(
                "{}: OK ({} upstreams, listening on {})",
                path.display(),
                settings.upstreams.len(),
                settings
                    .listen
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => runtime()?.block_on(proxy(cli.config, args)),
        Command::Query(args) => runtime()?.block_on(query(cli.config, args)),
        Command::Audit(args) => runtime()?.block_on(audit(cli.config, args)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn proxy(config: Option<std::path::PathBuf>, args: RunArgs) -> Result<ExitCode> {
    let mut overrides = args.upstream.overrides(args.listen);
    overrides.user = args.user;
    let settings = Settings::load(config.as_deref(), overrides)?;
    let sockets = bind(&settings).await?;
    let resolver = dnsward::build_resolver(&settings, dnsward::clock::Clock::System)?;
    // Sockets bound and files read: root is no longer needed.
    dnsward::privilege::drop_privileges(settings.user.as_deref())?;
    let signal = shutdown_signal()?;
    dnsward::notify::ready();
    let shutdown = async {
        signal.await;
        dnsward::notify::stopping();
    };
    dnsward::serve(resolver, &settings, sockets, shutdown).await;
    Ok(ExitCode::SUCCESS)
}

/// Binds every listen address; with the built-in defaults, a missing IPv6 loopback is only a warning.
async fn bind(settings: &Settings) -> Result<Sockets> {
    let mut sockets = Sockets::default();
    for &addr in &settings.listen {
        match Sockets::bind(&[addr]).await {
            Ok(s) => {
                sockets.udp.extend(s.udp);
                sockets.tcp.extend(s.tcp);
            }
            Err(e)
                if settings.listen_is_default && addr.is_ipv6() && e.is_address_unavailable() =>
            {
                tracing::warn!(%addr, "IPv6 loopback unavailable; not listening there");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sockets)
}

/// Completes on SIGTERM or SIGINT. The handlers are installed now, not when first polled, so
/// that a signal arriving as soon as readiness is announced is not fatal.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

async fn query(config: Option<std::path::PathBuf>, args: QueryArgs) -> Result<ExitCode> {
    let settings = Settings::load(config.as_deref(), args.upstream.overrides(Vec::new()))?;
    let qtype = parse_type(&args.qtype)?;
    let Some(wire) = dnsward::dns::new_query(&args.name, qtype, args.dnssec) else {
        bail!("{:?} is not a valid DNS name", args.name);
    };
    let router = dnsward::build_router(&settings)?;
    let started = Instant::now();
    match router.exchange(&wire).await {
        Ok((answer, index)) => {
            let spec = &settings.upstreams[index];
            let server = format!("{spec} ({})", spec.protocol);
            print!(
                "{}",
                dnsward::dig::format(&answer, &server, started.elapsed())
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                ";; no answer for {} {}: {e}",
                args.name,
                args.qtype.to_uppercase()
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn parse_type(s: &str) -> Result<u16> {
    let upper = s.to_ascii_uppercase();
    if let Some(n) = upper.strip_prefix("TYPE") {
        return n.parse().with_context(|| format!("bad record type {s:?}"));
    }
    RecordType::from_str(&upper)
        .map(u16::from)
        .map_err(|_| anyhow::anyhow!("unknown record type {s:?}"))
}

/// Exit status of `audit` when something was judged hijacked.
const EXIT_HIJACKED: u8 = 3;

async fn audit(config: Option<std::path::PathBuf>, args: AuditArgs) -> Result<ExitCode> {
    use dnsward::hijack::audit::{self, AsnDb, Audit};
    use std::io::Write;

    let settings = Settings::load(config.as_deref(), args.upstream.overrides(Vec::new()))?;
    let types = audit::parse_types(&args.types).map_err(|e| anyhow::anyhow!("--types: {e}"))?;
    let plain = match (&args.plain, settings.audit.plain) {
        (Some(p), _) => {
            dnsward::config::parse_addr(p, 53).map_err(|e| anyhow::anyhow!("--plain: {e}"))?
        }
        (None, Some(p)) => p,
        (None, None) => std::fs::read_to_string("/etc/resolv.conf")
            .ok()
            .and_then(|t| audit::resolv_conf_nameserver(&t))
            .ok_or(audit::AuditError::NoPlainResolver)?,
    };
    let names = match &args.names {
        Some(path) => audit::load_names(path, &types)?,
        None => audit::default_names(&types),
    };
    let asn = args.asn_db.as_deref().map(AsnDb::open).transpose()?;
    let auditor = Audit::new(&settings, plain, names, asn)?;
    let json_to_stdout = args.json.as_deref() == Some(std::path::Path::new("-"));
    let show_progress = !args.no_progress && std::io::stderr().is_terminal();
    let progress = move |done: usize, total: usize| {
        if show_progress {
            let width = 30;
            let filled = done * width / total.max(1);
            eprint!(
                "\r[{}{}] {done}/{total}",
                "#".repeat(filled),
                ".".repeat(width - filled)
            );
            if done == total {
                eprintln!();
            }
        }
    };
    let report = auditor.run(&progress).await?;
    let table = audit::report::table(&report);
    if json_to_stdout {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        if json_to_stdout {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{json}")?;
        } else {
            std::fs::write(path, json + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    if let Some(path) = &args.html {
        std::fs::write(path, audit::report::html(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if report.found_hijacking() {
        ExitCode::from(EXIT_HIJACKED)
    } else {
        ExitCode::SUCCESS
    })
}
