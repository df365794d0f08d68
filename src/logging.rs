//! Log output: human-readable text by default, one JSON object per line when asked
//! (`--log-format json`, `DNSWARD_LOG_FORMAT=json` or `log-format = "json"` in the file).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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

/// Installs the global subscriber writing to stderr; `DNSWARD_LOG` (a tracing filter)
/// overrides `default_filter`.
pub fn init(default_filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("DNSWARD_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}
