//! A stand-alone OTLP/gRPC receiver for the docker-compose suite: listens on `--addr`,
//! appends every received span as one JSON line (see `ReceivedSpan`) to `--output`, and
//! prints `otlp-receiver listening on <addr>` once bound. Stops on SIGTERM or Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use order_status_tests::otlp_receiver::OtlpReceiver;
use tokio::sync::mpsc;

/// Receives OTLP/gRPC traces and metrics and writes spans as JSON lines.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4317")]
    addr: SocketAddr,
    /// File the spans are appended to, one JSON object per line.
    #[arg(long)]
    output: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut output = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.output)
        .with_context(|| format!("cannot open {}", args.output.display()))?;
    let (sink, mut spans) = mpsc::unbounded_channel();
    let receiver = OtlpReceiver::start_on(args.addr, Some(sink))
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    println!("otlp-receiver listening on {}", receiver.addr());
    std::io::stdout().flush()?;

    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            span = spans.recv() => {
                let Some(span) = span else { break };
                let line = serde_json::to_string(&span)?;
                writeln!(output, "{line}")
                    .and_then(|()| output.flush())
                    .with_context(|| format!("cannot write to {}", args.output.display()))?;
            }
        }
    }
    receiver.stop().await;
    Ok(())
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler cannot fail on Unix");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
