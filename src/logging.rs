//! Log output: human-readable text by default, one JSON object per line when asked
//! (`--log-format json`, `DNSWARD_LOG_FORMAT=json` or `log-format = "json"` in the file).

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message and fields.
    Json,
}

/// Installs the global subscriber writing to stderr; `DNSWARD_LOG` overrides
/// `default_filter`. Both are lists of `level` and `target=level` directives, e.g.
/// `warn,dnsward=debug` (the `Targets` syntax: no span or field filters, and so no regular
/// expression engine in the binary).
pub fn init(default_filter: &str, format: LogFormat) {
    let filter = std::env::var("DNSWARD_LOG")
        .ok()
        .and_then(|directives| match directives.parse::<Targets>() {
            Ok(filter) => Some(filter),
            Err(e) => {
                eprintln!("dnsward: ignoring DNSWARD_LOG={directives:?}: {e}");
                None
            }
        })
        .unwrap_or_else(|| default_filter.parse().unwrap_or_default());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_ansi(std::io::stderr().is_terminal()))
            .with(filter)
            .init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .with(filter)
            .init(),
    }
}
