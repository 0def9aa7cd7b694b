//! `bare-server`: the benchmark's baseline — tonic serving `orders.v1.OrderService` with canned
//! answers and nothing else (no auth, no storage, no logging). Prints
//! `bare-server listening on IP:PORT` once bound; stops on SIGTERM or Ctrl-C.

use clap::Parser;
use order_status_bench::bare::BareOrders;
use orders_proto::v1::order_service_server::OrderServiceServer;
use std::io::Write as _;
use std::net::SocketAddr;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// Serve canned orders.v1 answers as fast as tonic can.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // `serve_with_incoming` ignores the builder's tcp_nodelay: set it on the listener, or small
    // responses wait for Nagle's algorithm.
    let incoming = TcpIncoming::bind(args.addr)?.with_nodelay(Some(true));
    let addr = incoming.local_addr()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "bare-server listening on {addr}")?;
    stdout.flush()?;
    drop(stdout);
    Server::builder()
        .add_service(OrderServiceServer::new(BareOrders::default()))
        .serve_with_incoming_shutdown(incoming, stop_signal())
        .await?;
    Ok(())
}

async fn stop_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                eprintln!("bare-server: cannot listen for SIGTERM: {error}");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = terminate.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
