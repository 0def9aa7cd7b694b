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

/// The mimalloc option that says how long freed memory stays mapped before it is given back.
const PURGE_DELAY_VARIABLE: &str = "MIMALLOC_PURGE_DELAY";
/// mimalloc 3 keeps freed pages 1 s before giving them back to the OS, and gives them back only
/// when a later page is freed after that: an idle server kept the hundreds of MiB a closed
/// connection had made it hold. Any delay above zero has the same flaw (10 ms still left all of
/// it held in one run of five, when nothing was freed after the delay passed); 0 returns the
/// pages as they are freed. Its cost (an madvise per page that falls empty) did not show in
/// `bench`: GetOrder's server CPU was 2.15× bare tonic's with 0 and with 10 ms (4 runs each).
const PURGE_DELAY_MS: &str = "0";
/// The mimalloc option that says whether an arena's memory is committed when it is reserved.
const ARENA_EAGER_COMMIT_VARIABLE: &str = "MIMALLOC_ARENA_EAGER_COMMIT";
/// By default mimalloc commits its whole first arena up front on Linux; the kernel then backs
/// what the allocator touches with transparent huge pages, so an idle service held 18 MiB of
/// anonymous memory (32 MB RSS) for about 2 MiB of live allocations. Committing as needed
/// leaves it at 2.6 MiB (15 MB RSS).
const ARENA_EAGER_COMMIT: &str = "0";

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.is_none() {
        // Before any thread starts: the process may execute itself again.
        give_freed_memory_back_promptly();
    }
    let runtime = match order_service::runtime::build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("order-service: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Before any TLS configuration is built, by us or a library (the health check's too).
    order_status_tls::install_crypto_provider();
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

/// Sets mimalloc's purge delay ([`PURGE_DELAY_MS`]) unless the environment already chose one,
/// and with it the arena commit mode ([`ARENA_EAGER_COMMIT`]) unless that was chosen too.
/// mimalloc reads its options from the environment before `main` runs, and its C API would need
/// `unsafe` (forbidden here), so the process executes itself again, once, with the variable set:
/// same pid, arguments, descriptors and limits. If that fails, it runs on with mimalloc's default.
fn give_freed_memory_back_promptly() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(PURGE_DELAY_VARIABLE).is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_else(|| "order-service".into());
    // The resolved path rather than /proc/self/exe itself: the kernel names the process after
    // the file it executes, and `ps`, `pgrep -x order-service` and `pkill` should see
    // "order-service", not "exe".
    let executable = match std::env::current_exe() {
        Ok(path) => path,
        Err(error) => {
            eprintln!(
                "order-service: cannot find its own executable to restart with \
                 {PURGE_DELAY_VARIABLE}={PURGE_DELAY_MS} ({error}); freed memory is given back \
                 to the OS later"
            );
            return;
        }
    };
    let error = std::process::Command::new(executable)
        .arg0(program)
        .args(args)
        .env(PURGE_DELAY_VARIABLE, PURGE_DELAY_MS)
        .env(
            ARENA_EAGER_COMMIT_VARIABLE,
            std::env::var_os(ARENA_EAGER_COMMIT_VARIABLE).unwrap_or(ARENA_EAGER_COMMIT.into()),
        )
        .exec();
    eprintln!(
        "order-service: could not restart with {PURGE_DELAY_VARIABLE}={PURGE_DELAY_MS} ({error}); \
         freed memory is given back to the OS later"
    );
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
    if !order_service::runtime::LIFO_SLOT_DISABLED {
        tracing::warn!(
            "built without --cfg tokio_unstable: the runtime's LIFO slot stays on, and watch \
             streams write to their sockets once per event instead of once per batch"
        );
    }
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
