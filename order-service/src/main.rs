//! The `order-service` binary: parse settings, set up telemetry, serve until SIGTERM or Ctrl-C,
//! flush telemetry.

use clap::Parser;
use order_service::config::{Cli, Command, Settings};
use order_service::error_chain::DisplayChain;
use order_service::observability::Observability;
use order_service::startup::{Application, shutdown_signal};
use std::io::Write;
use std::process::ExitCode;

/// Every call allocates a little (messages, strings, log lines) on whichever worker thread runs
/// it; glibc's allocator showed lock contention between the threads in the benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("order-service: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Healthcheck(args)) = cli.command {
        return match runtime.block_on(order_service::healthcheck::check(&args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("order-service healthcheck: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = match cli.serve.into_settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("order-service: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            return ExitCode::from(2);
        }
    };
    runtime.block_on(serve(settings))
}

async fn serve(settings: Settings) -> ExitCode {
    // Inside the runtime: the OTLP exporters live there.
    let telemetry = match order_status_telemetry::init("order-service") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("order-service: {}", DisplayChain(&error));
            return ExitCode::from(2);
        }
    };
    let dev_token = settings.dev_token.clone();
    let served = async {
        let app = Application::build(settings, Observability::of(&telemetry)).await?;
        let signal = shutdown_signal()?;
        let mut stdout = std::io::stdout().lock();
        if let Some(token) = dev_token {
            tracing::warn!("development mode: one generated token, not for production");
            writeln!(stdout, "order-service development token: {token}")?;
        }
        writeln!(stdout, "order-service listening on {}", app.local_addr())?;
        if let Some(metrics) = app.metrics_addr() {
            writeln!(stdout, "order-service metrics on http://{metrics}/metrics")?;
        }
        stdout.flush()?;
        drop(stdout);
        app.run_until(signal).await
    }
    .await;
    let code = match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("order-service: {error:#}");
            ExitCode::FAILURE
        }
    };
    if let Err(error) = telemetry.shutdown().await {
        eprintln!(
            "order-service: flushing telemetry: {}",
            DisplayChain(&error)
        );
    }
    code
}
