//! Opens a number of WatchOrders streams on a running order-service and holds them open, for
//! measuring what an open stream costs the server in memory: run `--between` (e.g. a command
//! reading the server's RSS) once every stream has its response headers, then close them all.

use clap::Parser;
use orders_proto::v1 as pb;
use orders_proto::v1::order_service_client::OrderServiceClient;
use std::process::Command;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;

#[derive(Parser, Debug)]
#[command(about = "Holds WatchOrders streams open (for memory per stream)")]
struct Args {
    /// `http://IP:PORT` of the order-service.
    #[arg(long)]
    url: String,
    /// The bearer token.
    #[arg(long, env = "BENCH_TOKEN")]
    token: String,
    /// Streams to open.
    #[arg(long, default_value_t = 1_000)]
    streams: usize,
    /// Streams per HTTP/2 connection (the server allows 1,024).
    #[arg(long, default_value_t = 1_000)]
    per_connection: usize,
    /// Shell command run while every stream is open.
    #[arg(long)]
    between: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let authorization: MetadataValue<Ascii> = format!("Bearer {}", args.token).parse()?;
    let mut open = Vec::with_capacity(args.streams);
    let mut client = None;
    for stream in 0..args.streams {
        if stream % args.per_connection.max(1) == 0 {
            let channel = Endpoint::from_shared(args.url.clone())?
                .tcp_nodelay(true)
                .connect()
                .await?;
            client = Some(OrderServiceClient::new(channel));
        }
        let Some(client) = client.as_mut() else {
            unreachable!("a client is made for the first stream");
        };
        let mut request = tonic::Request::new(pb::WatchOrdersRequest::default());
        request
            .metadata_mut()
            .insert("authorization", authorization.clone());
        open.push(client.watch_orders(request).await?.into_inner());
    }
    println!("{} streams open", open.len());
    if let Some(command) = &args.between {
        let status = Command::new("sh").arg("-c").arg(command).status()?;
        anyhow::ensure!(status.success(), "`{command}` failed: {status}");
    }
    drop(open);
    Ok(())
}
