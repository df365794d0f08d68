//! dnsward: an encrypted DNS stub resolver proxy.
//!
//! Plaintext DNS comes in on the [`listener`]s (UDP and TCP). Each query goes through the
//! [`resolver`] pipeline: it is validated, answered from the [`cache`] when possible, and
//! otherwise sent by the [`router`] to one of the encrypted [`upstream`]s (DNS-over-HTTPS or
//! DNS-over-TLS), failing over between them when one is slow or down. Answers are checked
//! against the question, cached per their TTLs, and rendered for each client.
//!
//! [`config`] turns the TOML file and command-line flags into one validated
//! [`config::Settings`]; [`cli`] and `main.rs` are the command-line front end; [`dns`] holds
//! the wire-format helpers everything else shares. [`run`] takes its sockets and a shutdown
//! future as arguments, so tests bind port 0 and run the real proxy in-process.
//!
//! The listeners hand queries to a [`service::Service`], which holds the resolver in force
//! (swapped whole when SIGHUP reloads the configuration) and the process-wide [`metrics`];
//! the optional [`control`] endpoint serves health, metrics, stats and cache flushes from it.

pub mod allocator;
pub mod cache;
pub mod captive;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod config;
pub mod control;
pub mod dig;
pub mod dns;
pub mod hijack;
pub mod listener;
pub mod local;
pub mod logging;
pub mod metrics;
pub mod nets;
pub mod notify;
pub mod privilege;
pub mod resolver;
pub mod router;
pub mod service;
pub mod split;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use captive::CaptivePortal;
use clock::Clock;
use config::Settings;
use listener::Sockets;
use local::{LocalAnswers, LocalConfig, LocalError};
use metrics::Metrics;
use resolver::{LocalParts, Resolver};
use router::Router;
use service::Service;
use upstream::Upstream;
use upstream::bootstrap::Bootstrap;
use upstream::plain::PlainClient;
use upstream::tls::{TlsConfigs, TlsSetupError};

/// Why the proxy could not be set up.
#[derive(Debug, Error)]
pub enum SetupError {
    /// TLS configuration (CA files, server names).
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// Static records that cannot be served.
    #[error(transparent)]
    Local(#[from] LocalError),
}

/// How long a bootstrap resolver may take to answer.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds the router over the configured upstreams (nothing is connected yet).
pub fn build_router(settings: &Settings) -> Result<Router, SetupError> {
    Ok(Router::new(build_upstreams(settings)?, settings.router))
}

/// Builds the configured upstreams (nothing is connected yet).
pub fn build_upstreams(settings: &Settings) -> Result<Vec<Upstream>, SetupError> {
    let tls = TlsConfigs::new(&settings.ca_files)?;
    let bootstrap = (!settings.bootstrap.is_empty()).then(|| {
        Arc::new(Bootstrap::new(
            settings.bootstrap.clone(),
            BOOTSTRAP_TIMEOUT,
        ))
    });
    let upstreams = settings
        .upstreams
        .iter()
        .map(|spec| {
            Upstream::new(
                spec.clone(),
                &tls,
                bootstrap.clone(),
                settings.connect.clone(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(upstreams)
}

/// Builds the query pipeline for `settings`, measuring cache age with `clock`.
pub fn build_resolver(settings: &Settings, clock: Clock) -> Result<Arc<Resolver>, SetupError> {
    service::build_resolver(settings, clock, &Arc::new(Metrics::new()), None)
}

/// How long a plain (split-DNS or captive-portal) resolver may take to answer.
const PLAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds what is answered without the encrypted upstreams.
pub fn build_local(settings: &Settings) -> Result<LocalParts, SetupError> {
    let answers = LocalAnswers::new(&LocalConfig {
        hosts_file: settings.hosts_file.clone(),
        records: settings.records.clone(),
        hosts_ttl: settings.hosts_ttl,
    })?;
    let rules = settings
        .forward
        .iter()
        .map(|rule| {
            let client = Arc::new(PlainClient::new(rule.servers.clone(), PLAIN_TIMEOUT));
            split::Rule::new(&rule.domains, client).expect("config validated the domains")
        })
        .collect();
    let captive = settings.captive.as_ref().map(|c| {
        let resolvers = if c.resolvers.is_empty() {
            captive::Resolvers::Auto
        } else {
            captive::Resolvers::Fixed(c.resolvers.clone())
        };
        CaptivePortal::new(&c.names, resolvers, PLAIN_TIMEOUT).expect("config validated the names")
    });
    Ok(LocalParts {
        answers: Arc::new(answers),
        split: split::SplitDns::new(rules),
        captive,
    })
}

/// Serves `sockets` with `resolver` until `shutdown` completes.
pub async fn serve(
    resolver: Arc<Resolver>,
    settings: &Settings,
    sockets: Sockets,
    shutdown: impl Future<Output = ()>,
) {
    let service = Service::new(
        resolver,
        settings.clone(),
        Arc::new(Metrics::new()),
        Clock::System,
    );
    serve_service(service, sockets, None, shutdown).await;
}

/// Serves `sockets`, and the control endpoint on `control` if given, with `service` until
/// `shutdown` completes.
pub async fn serve_service(
    service: Arc<Service>,
    sockets: Sockets,
    control: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) {
    let settings = &service.settings();
    let resolver = service.clone();
    let token = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for addr in sockets.local_addrs() {
        info!(%addr, "listening (UDP and TCP)");
    }
    let clients = Arc::new(clients::ClientPolicy::new(&settings.clients));
    for socket in sockets.udp {
        tasks.spawn(listener::udp::serve(
            socket,
            resolver.clone(),
            settings.udp_max_in_flight,
            clients.clone(),
            token.clone(),
        ));
    }
    for tcp in sockets.tcp {
        tasks.spawn(listener::tcp::serve(
            tcp,
            resolver.clone(),
            settings.tcp,
            clients.clone(),
            token.clone(),
        ));
    }
    if let Some(listener) = control {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "control endpoint listening (HTTP)");
        }
        tasks.spawn(control::serve(listener, service.clone(), token.clone()));
    }
    service.start_background(&token);
    shutdown.await;
    info!("shutting down");
    token.cancel();
    while tasks.join_next().await.is_some() {}
}

/// Runs the proxy on `sockets` until `shutdown` completes.
pub async fn run(
    settings: Settings,
    sockets: Sockets,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SetupError> {
    let service = Service::build(settings, Clock::System)?;
    serve_service(service, sockets, None, shutdown).await;
    Ok(())
}
