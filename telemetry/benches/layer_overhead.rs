//! What the telemetry costs a gRPC call, as ratios against a bare tonic client and server in
//! the same process: the layers with nothing exported, with a live collector, and with a
//! collector that is down (which must cost no more than a live one: export never blocks).
//!
//! Run: `cargo bench -p order-status-telemetry --bench layer_overhead [-- WORD]`; WORD keeps
//! only the scenarios whose description contains it (the baseline always runs).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{OtlpReceiver, TestServer, check, client, config, subscriber};
use order_status_telemetry::Telemetry;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::pb::health_client::HealthClient;

const CALLS: u32 = 3_000;
const WARM_UP: u32 = 300;
const ROUNDS: usize = 5;

#[derive(Clone, Copy)]
enum Scenario {
    Bare,
    LayersOnly,
    NoEndpoint,
    LiveCollector,
    StoppedCollector,
}

impl Scenario {
    fn describe(self) -> &'static str {
        match self {
            Scenario::Bare => "bare tonic (baseline)",
            Scenario::LayersOnly => "layers, no tracing layer",
            Scenario::NoEndpoint => "layers, no endpoint",
            Scenario::LiveCollector => "layers, live collector",
            Scenario::StoppedCollector => "layers, collector down",
        }
    }
}

/// A collector in its own thread and runtime, as a separate process would be.
fn collector_thread() -> (String, std::sync::mpsc::Sender<()>) {
    let (endpoint_tx, endpoint_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let receiver = OtlpReceiver::start().await.unwrap();
            endpoint_tx.send(receiver.endpoint()).unwrap();
            tokio::task::spawn_blocking(move || stop_rx.recv())
                .await
                .unwrap()
                .ok();
            receiver.stop().await;
        });
    });
    (endpoint_rx.recv().unwrap(), stop_tx)
}

async fn bare_calls_per_second() -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Channel::builder(format!("http://{addr}").parse().unwrap())
        .connect_lazy();
    let mut client = HealthClient::new(channel);
    for _ in 0..WARM_UP {
        client.check(check("")).await.unwrap();
    }
    let started = Instant::now();
    for _ in 0..CALLS {
        client.check(check("")).await.unwrap();
    }
    f64::from(CALLS) / started.elapsed().as_secs_f64()
}

async fn layered_calls_per_second(endpoint: Option<String>, traced: bool) -> f64 {
    let telemetry = Telemetry::build(&config(endpoint)).unwrap();
    let _default = traced.then(|| tracing::subscriber::set_default(subscriber(&telemetry)));
    let server = TestServer::start(telemetry.metrics()).await;
    let mut client = client(server.uri(), telemetry.metrics());
    for _ in 0..WARM_UP {
        client.check(check("")).await.unwrap();
    }
    let started = Instant::now();
    for _ in 0..CALLS {
        client.check(check("")).await.unwrap();
    }
    let rate = f64::from(CALLS) / started.elapsed().as_secs_f64();
    // A down collector makes the final flush fail; that is expected here.
    let _ = tokio::time::timeout(Duration::from_secs(30), telemetry.shutdown()).await;
    rate
}

fn run(scenario: Scenario) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match scenario {
        Scenario::Bare => runtime.block_on(bare_calls_per_second()),
        Scenario::LayersOnly => runtime.block_on(layered_calls_per_second(None, false)),
        Scenario::NoEndpoint => runtime.block_on(layered_calls_per_second(None, true)),
        Scenario::LiveCollector => {
            let (endpoint, stop) = collector_thread();
            let rate = runtime.block_on(layered_calls_per_second(Some(endpoint), true));
            let _ = stop.send(());
            rate
        }
        Scenario::StoppedCollector => {
            let (endpoint, stop) = collector_thread();
            let _ = stop.send(());
            // Wait until the port refuses connections, as a stopped collector's would.
            let addr = endpoint.trim_start_matches("http://").to_owned();
            while std::net::TcpStream::connect(&addr).is_ok() {
                std::thread::yield_now();
            }
            runtime.block_on(layered_calls_per_second(Some(endpoint), true))
        }
    }
}

fn main() {
    let scenarios = [
        Scenario::Bare,
        Scenario::LayersOnly,
        Scenario::NoEndpoint,
        Scenario::LiveCollector,
        Scenario::StoppedCollector,
    ];
    let only = std::env::args().skip(1).find(|arg| !arg.starts_with("--"));
    let scenarios: Vec<Scenario> = scenarios
        .into_iter()
        .filter(|scenario| {
            matches!(scenario, Scenario::Bare)
                || only
                    .as_ref()
                    .is_none_or(|word| scenario.describe().contains(word.as_str()))
        })
        .collect();
    // Rounds interleave the scenarios so that load from elsewhere on the machine hits all of
    // them alike; the best round of each is kept.
    let mut best = vec![0.0_f64; scenarios.len()];
    for _ in 0..ROUNDS {
        for (index, scenario) in scenarios.iter().enumerate() {
            best[index] = best[index].max(run(*scenario));
        }
    }
    println!("sequential unary calls, best of {ROUNDS} rounds of {CALLS}:");
    println!("{:<28} {:>10} {:>8}", "scenario", "calls/s", "ratio");
    for (scenario, rate) in scenarios.iter().zip(&best) {
        println!(
            "{:<28} {:>10.0} {:>8.3}",
            scenario.describe(),
            rate,
            rate / best[0]
        );
    }
}
