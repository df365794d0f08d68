//! Starting the real dnsward in-process on 127.0.0.1:0, as the integration tests need it.

use std::net::SocketAddr;
use std::sync::Arc;

use dnsward::clock::Clock;
use dnsward::config::{Overrides, RawConfig, Settings};
use dnsward::control::ControlSettings;
use dnsward::listener::Sockets;
use dnsward::metrics::Metrics;
use dnsward::resolver::Resolver;
use dnsward::service::{self, Service};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::tls::cert_path;

/// A running proxy; dropping it shuts the proxy down.
pub struct Proxy {
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
    /// Its cache clock, frozen until advanced.
    pub clock: Clock,
    /// The pipeline it started with, for inspecting router health.
    pub resolver: Arc<Resolver>,
    /// The settings it runs with.
    pub settings: Settings,
    /// What the listeners call: the resolver in force (reloadable) and the metrics.
    pub service: Arc<Service>,
    /// The control endpoint, if the settings enable it (see [`with_control`]).
    pub control: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Shuts the proxy down and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(std::time::Duration::from_secs(10), task)
                .await
                .expect("proxy shuts down within 10 s")
                .expect("proxy task did not panic");
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Settings for a test proxy: loopback port 0, these upstreams, the test CA trusted.
pub fn test_settings(upstreams: &[String]) -> Settings {
    let overrides = Overrides {
        listen: vec!["127.0.0.1:0".into()],
        upstreams: upstreams.to_vec(),
        bootstrap: Vec::new(),
        ca_files: vec![cert_path("ca.pem")],
        ..Overrides::default()
    };
    let mut settings =
        Settings::from_raw(RawConfig::default(), overrides).expect("valid test settings");
    settings.bootstrap.clear();
    // Tests see only the names they set up, not this machine's /etc/hosts.
    settings.hosts_file = None;
    settings
}

/// Starts dnsward with default settings over `upstreams`.
pub async fn start_proxy(upstreams: &[String]) -> Proxy {
    start_proxy_with(upstreams, |_| {}).await
}

/// Starts dnsward over `upstreams` after `tweak` adjusts the settings.
pub async fn start_proxy_with(upstreams: &[String], tweak: impl FnOnce(&mut Settings)) -> Proxy {
    let mut settings = test_settings(upstreams);
    tweak(&mut settings);
    let clock = Clock::manual();
    let metrics = Arc::new(Metrics::new());
    let resolver =
        service::build_resolver(&settings, clock.clone(), &metrics, None).expect("resolver builds");
    let service = Service::new(resolver.clone(), settings.clone(), metrics, clock.clone());
    let sockets = Sockets::bind(&settings.listen)
        .await
        .expect("bind 127.0.0.1:0");
    let addr = sockets.local_addrs()[0];
    let control_listener = match &settings.control {
        Some(c) => Some(TcpListener::bind(c.listen).await.expect("bind control")),
        None => None,
    };
    let control = control_listener
        .as_ref()
        .map(|l| l.local_addr().expect("control address"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = {
        let service = service.clone();
        tokio::spawn(async move {
            dnsward::serve_service(service, sockets, control_listener, async {
                let _ = stopped.await;
            })
            .await;
        })
    };
    Proxy {
        addr,
        clock,
        resolver,
        settings,
        service,
        control,
        stop: Some(stop),
        task: Some(task),
    }
}

/// Turns the control endpoint on, on a free loopback port.
pub fn with_control(settings: &mut Settings) {
    settings.control = Some(ControlSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
    });
}
