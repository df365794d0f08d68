//! What the listeners and the control endpoint talk to: the resolver in force, swapped whole
//! when the configuration is reloaded, and the process-wide [`Metrics`].
//!
//! A query loads the current resolver once and finishes on it, so a reload never drops or
//! splits a query in flight: the old resolver (its router, connections, local answers) lives
//! until the last query holding it is answered. Reloading rebuilds the router (re-reading CA
//! files and forgetting upstream health), the local answers and split-DNS rules; the cache is
//! kept unless its own settings changed. Listening addresses, listener limits, the client
//! access list, the user, the control endpoint and the log format are fixed at start: a
//! reload that changes them says so in the log and leaves them as they are.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cache::Cache;
use crate::clock::Clock;
use crate::config::{ConfigError, Overrides, Settings};
use crate::hijack::inspect::Inspector;
use crate::local::LocalAnswers;
use crate::metrics::{Metrics, Snapshot, TotalsSnapshot};
use crate::resolver::{Begun, Resolver, Transport, Waiting};
use crate::upstream::tls::TlsConfigs;
use crate::{SetupError, build_local, build_router};

/// Where the configuration came from, so that a reload reads it the same way.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The file (`-c`), if any.
    pub path: Option<PathBuf>,
    /// Command-line values, applied over the file again on every reload.
    pub overrides: Overrides,
}

impl ConfigSource {
    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<Settings, ConfigError> {
        Settings::load(self.path.as_deref(), self.overrides.clone())
    }
}

/// Why a reload was refused (the old configuration stays in force).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The settings are valid but cannot be put in place (CA files, static records).
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// What a successful reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Whether the cache was kept (its settings did not change).
    pub kept_cache: bool,
    /// Keys that changed but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// The outcome of a health evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// True if an encrypted upstream answers.
    pub healthy: bool,
    /// Why, in a few words.
    pub reason: String,
}

/// An upstream answer at most this old proves the encrypted path works without probing.
const HEALTH_FRESHNESS: Duration = Duration::from_secs(5);
/// How long a health probe may take; keepalived's script timeout must be longer.
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_millis(2500);
/// How often the hosts file is checked for changes.
const HOSTS_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// A query [`Service::begin`] could not answer at once.
pub struct Resume {
    /// The resolver that began it.
    resolver: Arc<Resolver>,
    /// How far it got.
    waiting: Waiting,
}

/// The running proxy, as listeners and the control endpoint see it.
pub struct Service {
    /// The resolver in force; replaced whole on reload.
    resolver: ArcSwap<Resolver>,
    /// Counters shared by every resolver generation.
    metrics: Arc<Metrics>,
    /// The settings in force, to tell what a reload changes.
    settings: Mutex<Settings>,
    /// Time source for cache freshness, handed to every new resolver.
    clock: Clock,
    /// Background tasks of the resolver in force: (the service's shutdown, this generation's
    /// token). Set once serving starts; a reload cancels the generation and starts another.
    background: Mutex<Option<(CancellationToken, CancellationToken)>>,
    /// One health probe at a time: concurrent checks wait for it and reuse its answer.
    health_probe: tokio::sync::Mutex<()>,
    /// When the service was created.
    started: Instant,
    /// The last reload's outcome, for `/stats`.
    last_reload: Mutex<Option<String>>,
}

impl Service {
    /// Builds the resolver for `settings`, counting into fresh metrics.
    pub fn build(settings: Settings, clock: Clock) -> Result<Arc<Service>, SetupError> {
        let metrics = Arc::new(Metrics::new());
        let resolver = build_resolver(&settings, clock.clone(), &metrics, None)?;
        Ok(Service::new(resolver, settings, metrics, clock))
    }

    /// A service over an already built `resolver`.
    pub fn new(
        resolver: Arc<Resolver>,
        settings: Settings,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Arc<Service> {
        Arc::new(Service {
            resolver: ArcSwap::new(resolver),
            metrics,
            settings: Mutex::new(settings),
            clock,
            background: Mutex::new(None),
            health_probe: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            last_reload: Mutex::new(None),
        })
    }

    /// Answers one client message with the resolver in force, and counts it.
    pub async fn handle(&self, message: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let resolver = self.resolver.load_full();
        let answer = resolver.handle(message, transport).await;
        self.metrics.query(transport, answer.as_deref());
        answer
    }

    /// Answers `message` at once if no waiting is needed (see [`Resolver::begin`]), and
    /// counts it; otherwise returns what [`Service::resume`] needs to finish it.
    pub fn begin(&self, message: &[u8], transport: Transport) -> Result<Option<Vec<u8>>, Resume> {
        let resolver = self.resolver.load();
        match resolver.begin(message, transport) {
            Begun::Done(answer) => {
                self.metrics.query(transport, answer.as_deref());
                Ok(answer)
            }
            Begun::Wait(waiting) => Err(Resume {
                resolver: Arc::clone(&resolver),
                waiting,
            }),
        }
    }

    /// Answers (and counts) a query that arrived cut short, of which `prefix` is the start:
    /// see [`dns::too_large`].
    pub fn oversized(&self, prefix: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let answer = crate::dns::too_large(prefix);
        self.metrics.query(transport, answer.as_deref());
        answer
    }

    /// Finishes `message` where [`Service::begin`] left it, with the same resolver (a reload
    /// in between does not change how one query is answered), and counts it.
    pub async fn resume(
        &self,
        message: &[u8],
        transport: Transport,
        resume: Resume,
    ) -> Option<Vec<u8>> {
        let answer = resume
            .resolver
            .resume(message, transport, resume.waiting)
            .await;
        self.metrics.query(transport, answer.as_deref());
        answer
    }

    /// The resolver in force.
    pub fn resolver(&self) -> Arc<Resolver> {
        self.resolver.load_full()
    }

    /// The process-wide counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A copy of the settings in force.
    pub fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    /// Starts the background tasks of the resolver in force (upstream probes, hosts-file
    /// watch), and of every resolver a reload puts in place, until `shutdown` is cancelled.
    pub fn start_background(&self, shutdown: &CancellationToken) {
        let generation = shutdown.child_token();
        spawn_background(&self.resolver(), &generation);
        if let Some((_, old)) = lock(&self.background).replace((shutdown.clone(), generation)) {
            old.cancel();
        }
    }

    /// Reads the configuration again from `source` and puts it in force; on any error the
    /// old configuration stays, and the error is logged and returned.
    pub fn reload_from(&self, source: &ConfigSource) -> Result<ReloadReport, ReloadError> {
        match source.load() {
            Ok(settings) => Ok(self.reload(settings)?),
            Err(e) => {
                self.reload_failed(&e);
                Err(e.into())
            }
        }
    }

    /// Puts validated `settings` in force. Fails, changing nothing, if the router or local
    /// answers cannot be built from them.
    pub fn reload(&self, settings: Settings) -> Result<ReloadReport, SetupError> {
        let old = self.resolver();
        let mut current = lock(&self.settings);
        let kept_cache = same_cache_settings(&current, &settings);
        let cache = kept_cache.then(|| old.cache().clone());
        let resolver = match build_resolver(&settings, self.clock.clone(), &self.metrics, cache) {
            Ok(resolver) => resolver,
            Err(e) => {
                drop(current);
                self.reload_failed(&e);
                return Err(e);
            }
        };
        let report = ReloadReport {
            kept_cache,
            needs_restart: needs_restart(&current, &settings),
        };
        // Only what takes effect is remembered, so the next reload compares with it.
        let mut in_force = settings;
        in_force.listen = current.listen.clone();
        in_force.listen_is_default = current.listen_is_default;
        in_force.udp_max_in_flight = current.udp_max_in_flight;
        in_force.tcp = current.tcp;
        in_force.control = current.control.clone();
        in_force.log_format = current.log_format;
        in_force.clients = current.clients.clone();
        in_force.user = current.user.clone();
        *current = in_force;
        drop(current);
        self.resolver.store(resolver.clone());
        let mut background = lock(&self.background);
        if let Some((shutdown, old_generation)) = background.take() {
            old_generation.cancel();
            let generation = shutdown.child_token();
            spawn_background(&resolver, &generation);
            *background = Some((shutdown, generation));
        }
        drop(background);
        self.metrics.reload(true);
        *lock(&self.last_reload) = Some("ok".into());
        info!(kept_cache, "configuration reloaded");
        for key in &report.needs_restart {
            warn!(
                key,
                "configuration change takes effect only after a restart"
            );
        }
        Ok(report)
    }

    /// Counts and logs a refused reload.
    fn reload_failed(&self, error: &dyn std::fmt::Display) {
        self.metrics.reload(false);
        *lock(&self.last_reload) = Some(format!("error: {error}"));
        error!(error = %error, "configuration reload failed; keeping the old configuration");
    }

    /// Whether dnsward can answer through an encrypted upstream now. Cheap under traffic (an
    /// upstream answered within the last 5 s and has not failed since); otherwise one probe
    /// query (the root NS set) goes through the router, bounded to 2.5 s, and any checked
    /// answer counts. Router health flags alone are not trusted: they are reset to healthy
    /// when every upstream fails at once (see the router's network-change logic).
    pub async fn health(&self) -> Health {
        let _one_at_a_time = self.health_probe.lock().await;
        let resolver = self.resolver();
        let router = resolver.router();
        let health = match router.last_success() {
            Some(at) if at.elapsed() < HEALTH_FRESHNESS => Health {
                healthy: true,
                reason: format!(
                    "an upstream answered {:.1} s ago",
                    at.elapsed().as_secs_f64()
                ),
            },
            _ => {
                let probe = crate::dns::new_query(".", 2, false).expect("root is a valid name");
                match tokio::time::timeout(HEALTH_PROBE_TIMEOUT, router.exchange(&probe)).await {
                    Ok(Ok((_, index))) => Health {
                        healthy: true,
                        reason: format!(
                            "probe answered by {}",
                            router
                                .status()
                                .get(index)
                                .map_or("an upstream", |s| s.url.as_str())
                        ),
                    },
                    Ok(Err(e)) => Health {
                        healthy: false,
                        reason: format!("no encrypted upstream answered: {e}"),
                    },
                    Err(_) => Health {
                        healthy: false,
                        reason: format!(
                            "no encrypted upstream answered within {HEALTH_PROBE_TIMEOUT:?}"
                        ),
                    },
                }
            }
        };
        self.metrics.health_check(health.healthy);
        health
    }

    /// Drops the whole cache (`name` None) or every entry for one name (all types). Returns
    /// the number of entries dropped when one name is flushed. Errors: the name is not valid.
    pub fn flush(&self, name: Option<&str>) -> Result<Option<usize>, String> {
        let resolver = self.resolver();
        match name {
            None => {
                resolver.cache().clear();
                self.metrics.cache_flush("all");
                info!("cache flushed");
                Ok(None)
            }
            Some(name) => {
                let wire = crate::dns::wire::name_from_str(name)
                    .ok_or_else(|| format!("{name:?} is not a domain name"))?;
                let removed = resolver.cache().remove_name(&wire);
                self.metrics.cache_flush("name");
                info!(name, removed, "cache flushed for one name");
                Ok(Some(removed))
            }
        }
    }

    /// State for the gauges of `/metrics`.
    pub fn snapshot(&self) -> Snapshot {
        let resolver = self.resolver();
        Snapshot {
            upstreams: resolver
                .router()
                .status()
                .into_iter()
                .map(|s| (s.url, s.healthy))
                .collect(),
            cache_entries: resolver.cache().len(),
        }
    }

    /// Everything `/stats` shows.
    pub fn stats(&self) -> Stats {
        let resolver = self.resolver();
        let cache = resolver.cache();
        Stats {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            totals: self.metrics.totals(),
            cache: CacheStats {
                entries: cache.len(),
                weight: cache.weight(),
            },
            upstreams: resolver
                .router()
                .status()
                .into_iter()
                .map(|s| UpstreamStats {
                    url: s.url,
                    healthy: s.healthy,
                    srtt_ms: s.srtt.map(|d| d.as_secs_f64() * 1000.0),
                })
                .collect(),
            last_reload: lock(&self.last_reload).clone(),
        }
    }
}

/// `/stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    /// dnsward's version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Query, cache and reload totals.
    pub totals: TotalsSnapshot,
    /// The cache now.
    pub cache: CacheStats,
    /// Upstreams in force, in configuration order.
    pub upstreams: Vec<UpstreamStats>,
    /// "ok" or "error: ..." for the last reload; null if none was tried.
    pub last_reload: Option<String>,
}

/// The cache in `/stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheStats {
    /// Answers held.
    pub entries: u64,
    /// Their weight in 512-byte units (what `cache.size` bounds).
    pub weight: u64,
}

/// One upstream in `/stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpstreamStats {
    /// Its URL.
    pub url: String,
    /// Whether the router considers it healthy.
    pub healthy: bool,
    /// Smoothed round-trip time, once measured.
    pub srtt_ms: Option<f64>,
}

/// Builds the query pipeline for `settings`, counting into `metrics`; with `cache`, keeps
/// that cache instead of starting an empty one.
pub fn build_resolver(
    settings: &Settings,
    clock: Clock,
    metrics: &Arc<Metrics>,
    cache: Option<Cache>,
) -> Result<Arc<Resolver>, SetupError> {
    let router = Arc::new(build_router(settings)?.with_metrics(metrics.clone()));
    let cache = cache
        .unwrap_or_else(|| Cache::with_stale(settings.cache_size, settings.ttl, settings.stale));
    let local = build_local(settings)?;
    let mut resolver =
        Resolver::new(cache, router, local, clock, settings.resolver).with_metrics(metrics.clone());
    if settings.hijack.enabled {
        let tls = TlsConfigs::new(&settings.ca_files)?;
        let counter = metrics.clone();
        let inspector =
            Inspector::new(&settings.hijack, tls.dot).on_finding(Box::new(move |verdict| {
                counter.hijack_finding(verdict.as_str())
            }));
        resolver = resolver.with_inspector(Arc::new(inspector));
    }
    Ok(Arc::new(resolver))
}

/// The cache can be kept across a reload only if nothing about it changed (moka's capacity
/// and expiry are fixed when it is built).
fn same_cache_settings(old: &Settings, new: &Settings) -> bool {
    old.cache_size == new.cache_size && old.ttl == new.ttl && old.stale == new.stale
}

/// Keys whose change needs a restart: sockets and listener limits are set up once.
fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.listen != new.listen {
        keys.push("listen");
    }
    if old.udp_max_in_flight != new.udp_max_in_flight {
        keys.push("udp-max-in-flight");
    }
    if format!("{:?}", old.tcp) != format!("{:?}", new.tcp) {
        keys.push("tcp");
    }
    if old.control != new.control {
        keys.push("control");
    }
    if old.log_format != new.log_format {
        keys.push("log-format");
    }
    if format!("{:?}", old.clients) != format!("{:?}", new.clients) {
        keys.push("clients");
    }
    if old.user != new.user {
        keys.push("user");
    }
    keys
}

/// Starts `resolver`'s background tasks until `generation` is cancelled.
fn spawn_background(resolver: &Arc<Resolver>, generation: &CancellationToken) {
    tokio::spawn(
        resolver
            .router()
            .clone()
            .probe_unhealthy(generation.clone().cancelled_owned()),
    );
    tokio::spawn(reload_hosts(resolver.local().clone(), generation.clone()));
}

/// Re-reads the hosts file when it changes, until `shutdown`.
async fn reload_hosts(local: Arc<LocalAnswers>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(HOSTS_CHECK_INTERVAL) => {}
        }
        let local = local.clone();
        // A stat (and a read when it changed): blocking file I/O off the async workers.
        if let Ok(true) = tokio::task::spawn_blocking(move || local.reload_if_changed()).await {
            info!("hosts file changed; reloaded");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
