//! Open-loop CreateOrder pacing: one create per tick of a fixed-rate timer, sent whether or not
//! earlier ones have been answered. Every create is numbered, and its customer id carries the
//! number, so a watcher can tell which create an event came from before the create is answered.

use super::codec::customer_id;
use crate::canned;
use crate::load::{Failure, Target};
use orders_proto::v1 as pb;
use orders_proto::v1::order_service_client::OrderServiceClient;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// One create and its outcome.
#[derive(Debug, Clone)]
pub struct CreateRecord {
    /// Its number (in its customer id).
    pub number: u32,
    /// When it was sent.
    pub sent: Instant,
    /// When its answer (or failure) came.
    pub answered: Instant,
    /// The order it made, or why it failed.
    pub outcome: Result<(), Failure>,
}

/// The pace and length of one run of creates.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Creates sent per second.
    pub per_second: f64,
    /// Creates sent before the measured window.
    pub warmup: Duration,
    /// The measured window.
    pub measure: Duration,
    /// The deadline sent with every create.
    pub deadline: Duration,
}

/// Creates made by [`paced`], with the measured window's bounds.
#[derive(Debug)]
pub struct PacedCreates {
    /// Every create, warm-up included, in number order.
    pub records: Vec<CreateRecord>,
    /// Start of the measured window.
    pub start: Instant,
    /// End of the measured window (no create is sent after it).
    pub end: Instant,
}

impl PacedCreates {
    /// Creates that failed, warm-up included.
    pub fn failures(&self) -> impl Iterator<Item = &CreateRecord> {
        self.records.iter().filter(|record| record.outcome.is_err())
    }
}

/// Sends creates to `target` over `channel` at `pace`, numbered from `first_number`, with the
/// window starting at `start` (the warm-up before it); returns once every create is answered.
pub async fn paced(
    target: &Target,
    channel: &Channel,
    pace: Pace,
    first_number: u32,
    key_prefix: &str,
    start: Instant,
) -> PacedCreates {
    let end = start + pace.measure;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / pace.per_second));
    let mut calls = JoinSet::new();
    for number in first_number.. {
        ticker.tick().await;
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let client = OrderServiceClient::new(channel.clone());
        let mut request = tonic::Request::new(pb::CreateOrderRequest {
            customer_id: customer_id(number),
            ..canned::create_request(format!("{key_prefix}-{number}"))
        });
        request.set_timeout(pace.deadline);
        request
            .metadata_mut()
            .insert("authorization", target.authorization.clone());
        calls.spawn(create(client, request, number, sent));
    }
    let mut records = Vec::new();
    while let Some(joined) = calls.join_next().await {
        match joined {
            Ok(record) => records.push(record),
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    records.sort_unstable_by_key(|record| record.number);
    PacedCreates {
        records,
        start,
        end,
    }
}

async fn create(
    mut client: OrderServiceClient<Channel>,
    request: tonic::Request<pb::CreateOrderRequest>,
    number: u32,
    sent: Instant,
) -> CreateRecord {
    let expected_customer = request.get_ref().customer_id.clone();
    let outcome = match client.create_order(request).await {
        Ok(response) => {
            let order = response.into_inner();
            if order.order_id.is_empty() || order.customer_id != expected_customer {
                Err((
                    "WrongResponse".to_owned(),
                    format!("not the order asked for: {order:?}"),
                ))
            } else {
                Ok(())
            }
        }
        Err(status) => Err((format!("{:?}", status.code()), status.message().to_owned())),
    };
    CreateRecord {
        number,
        sent,
        answered: Instant::now(),
        outcome,
    }
}
