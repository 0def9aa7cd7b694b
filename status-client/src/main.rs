//! The `status-client` binary: parses the command line, sets up telemetry (logs on stderr,
//! traces and metrics over OTLP when an endpoint is set), runs the library's CLI and flushes
//! the telemetry before exiting.

use std::process::ExitCode;

use clap::Parser;
use order_status_telemetry::{InitError, Telemetry, TelemetryConfig};
use status_client::cli::{Cli, run};

/// The log filter when `RUST_LOG` is unset: a one-shot command keeps stderr for its own
/// errors, so other crates only show warnings; status-client's own `info` lines (e.g. a watch
/// resuming, serve starting) still show, and so do `serve`'s TLS reloads.
const DEFAULT_LOG_FILTER: &str = "warn,status_client=info,order_status_tls=info";

fn main() -> ExitCode {
    let cli = Cli::parse();
    // ring, the workspace's one crypto provider, for every TLS configuration of the process.
    order_status_tls::install_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(status_client::cli::LOCAL_ERROR);
        }
    };
    runtime.block_on(async move {
        // Inside the runtime: the OTLP exporter's channel lives on it.
        let telemetry = match init_telemetry(&cli) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(status_client::cli::USAGE_ERROR);
            }
        };
        let status = run(cli, Some(telemetry.exposition())).await;
        // Every span has ended by now; a collector that cannot be reached loses them but does
        // not change the outcome of the command.
        if let Err(error) = telemetry.shutdown().await {
            tracing::warn!(%error, "telemetry not flushed");
        }
        status
    })
}

/// `order_status_telemetry::init` with the CLI's quieter default log filter, and without
/// export retries for a command that exits when done: its spans are exported as it exits, and
/// retrying an unreachable collector (up to about 1.7 s) would only hold up the exit.
fn init_telemetry(cli: &Cli) -> Result<Telemetry, InitError> {
    let mut config = TelemetryConfig::from_env("status-client")?;
    if std::env::var("RUST_LOG").map_or(true, |value| value.trim().is_empty()) {
        config.log_filter = DEFAULT_LOG_FILTER.to_owned();
    }
    config.retry_exports = !cli.exits_when_done();
    order_status_telemetry::init_with(&config)
}
