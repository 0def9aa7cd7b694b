//! gRPC health (`grpc.health.v1`): SERVING while the store can be read and written, NOT_SERVING
//! when it cannot and from the moment shutdown begins, both overall ("") and for
//! `orders.v1.OrderService` and `orders.v1.WebhookService`. The store's check covers writes, not just reads: a full disk, a
//! read-only remount or a frozen filesystem leave reads working while every write fails.

use crate::error_chain::DisplayChain;
use crate::store::OrderStore;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How often the store is checked.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Sets the status of the overall server and of the order service together.
pub(crate) async fn set(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(orders_proto::ORDER_SERVICE_NAME, status)
        .await;
    reporter
        .set_service_status(orders_proto::WEBHOOK_SERVICE_NAME, status)
        .await;
}

/// Checks the store every few seconds until `stop` is cancelled, reporting the result. While
/// writes fail, each check tries a probe write, so health turns SERVING again once they work.
pub(crate) async fn monitor(
    reporter: HealthReporter,
    store: Arc<dyn OrderStore>,
    stop: CancellationToken,
) {
    let mut serving = true;
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let check = tokio::time::timeout(CHECK_INTERVAL, store.ping()).await;
        let healthy = matches!(check, Ok(Ok(())));
        if stop.is_cancelled() {
            return;
        }
        if healthy != serving {
            match &check {
                Ok(Err(error)) => {
                    tracing::warn!(error = %DisplayChain(error), "store check failed: NOT_SERVING");
                }
                Err(_) => tracing::warn!("store check timed out: NOT_SERVING"),
                Ok(Ok(())) => tracing::info!("store answers again: SERVING"),
            }
            serving = healthy;
            let status = if healthy {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set(&reporter, status).await;
        }
    }
}
