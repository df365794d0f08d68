//! The `dnsward` command: parse flags, set up logging, run a subcommand, print errors once.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use hickory_proto::rr::RecordType;

use dnsward::cli::{AuditArgs, Cli, Command, HealthArgs, QueryArgs, RunArgs};
use dnsward::clock::Clock;
use dnsward::config::{Overrides, RawConfig, Settings, parse_addr};
use dnsward::control::client::{self, HealthAnswer};
use dnsward::listener::Sockets;
use dnsward::logging::{self, LogFormat};
use dnsward::service::{ConfigSource, Service};

#[global_allocator]
static ALLOCATOR: dnsward::allocator::MiMalloc = dnsward::allocator::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        // `query`, `audit` and `health` report what matters themselves; their logs are only for -v.
        (false, 0)
            if matches!(
                cli.command,
                Command::Query(_) | Command::Audit(_) | Command::Health(_)
            ) =>
        {
            "error"
        }
        (false, 0) => "info",
        (false, 1) => "dnsward=debug,info",
        (false, _) => "dnsward=trace,debug",
    };
    logging::init(level, log_format(&cli));
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dnsward: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `--log-format` / DNSWARD_LOG_FORMAT, else the file's `log-format`, else text. A file that
/// cannot be read is reported later, by the command that loads it.
fn log_format(cli: &Cli) -> LogFormat {
    cli.log_format
        .or_else(|| {
            let path = cli.config.as_deref()?;
            RawConfig::load(path).ok()?.log_format
        })
        .unwrap_or_default()
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
        Command::Health(args) => runtime()?.block_on(health(cli.config, args)),
    }
}

/// The async runtime: one thread when the process may use one CPU (a pinned proxy, a
/// single-core router), where a work-stealing pool would only add cross-thread wake-ups;
/// otherwise one worker per CPU.
fn runtime() -> Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn proxy(config: Option<std::path::PathBuf>, args: RunArgs) -> Result<ExitCode> {
    let mut overrides = args.upstream.overrides(args.listen);
    overrides.user = args.user;
    let source = ConfigSource {
        path: config,
        overrides,
    };
    let settings = source.load()?;
    // Watched before anything listens, so a SIGHUP never meets the default action (exit).
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    let sockets = bind(&settings).await?;
    let control = match &settings.control {
        Some(c) => Some(
            tokio::net::TcpListener::bind(c.listen)
                .await
                .with_context(|| format!("cannot listen on {} (control.listen)", c.listen))?,
        ),
        None => None,
    };
    let user = settings.user.clone();
    let service = Service::build(settings, Clock::System)?;
    // Sockets bound and files read: root is no longer needed.
    dnsward::privilege::drop_privileges(user.as_deref())?;
    let signal = shutdown_signal()?;
    dnsward::notify::ready();
    let shutdown = async {
        signal.await;
        dnsward::notify::stopping();
    };
    tokio::spawn(reload_on_sighup(hangups, service.clone(), source));
    dnsward::serve_service(service, sockets, control, shutdown).await;
    Ok(ExitCode::SUCCESS)
}

/// Reads the configuration again on every SIGHUP; a bad one is logged and the old one kept.
async fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    service: Arc<Service>,
    source: ConfigSource,
) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        let service = service.clone();
        let source = source.clone();
        // Reading files (configuration, CA certificates, hosts) blocks.
        let _ = tokio::task::spawn_blocking(move || service.reload_from(&source)).await;
    }
}

/// `dnsward health`: one line, exit 0 healthy, 1 unhealthy, 2 (an error) no answer.
async fn health(config: Option<std::path::PathBuf>, args: HealthArgs) -> Result<ExitCode> {
    let addr = match &args.control {
        Some(s) => parse_addr(s, 8053).map_err(|m| anyhow::anyhow!("--control: {m}"))?,
        None => {
            let settings = Settings::load(config.as_deref(), Overrides::default())?;
            settings
                .control
                .context("no control endpoint: pass --control ADDR:PORT or set [control] listen in the file given with -c")?
                .listen
        }
    };
    let addr = client::connect_addr(addr);
    match client::check(addr, Duration::from_millis(args.timeout_ms)).await? {
        HealthAnswer::Healthy => {
            println!("healthy");
            Ok(ExitCode::SUCCESS)
        }
        HealthAnswer::Unhealthy(reason) => {
            println!("unhealthy: {reason}");
            Ok(ExitCode::from(1))
        }
    }
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
