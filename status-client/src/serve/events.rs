//! Order events as Server-Sent Events: `id:` is the event's sequence, so a reconnecting
//! EventSource sends it back as `Last-Event-ID` and the watch resumes right after it.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;

use super::context::CallContext;
use super::errors::ApiError;
use super::hub::{Delivery, Subscription};
use super::routes::{AppState, optional_number, path_id};

/// Query of the event routes: where to start when there is no `Last-Event-ID`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EventsQuery {
    after_sequence: Option<String>,
}

/// `GET /v1/orders/{id}/events`.
pub(crate) async fn order_events(
    State(state): State<AppState>,
    call: CallContext,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    events(state, call, path_id(id)?, &headers, query).await
}

/// `GET /v1/events`: every order's events.
pub(crate) async fn all_events(
    State(state): State<AppState>,
    call: CallContext,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    events(state, call, String::new(), &headers, query).await
}

async fn events(
    state: AppState,
    call: CallContext,
    order_id: String,
    headers: &HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text(), "INVALID_QUERY"))?;
    let after_sequence = start_after(headers, query.after_sequence.as_deref())?;
    // Subscribed before answering, so that a refused watch gets its HTTP status, not a 200
    // stream.
    let subscription = state
        .hub
        .subscribe(call.authorization, order_id, after_sequence, call.timeout)
        .await?;
    Ok(Sse::new(sse_events(subscription, state.stopping.clone()))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The sequence a watch resumes after: a reconnecting EventSource's `Last-Event-ID`, else the
/// `afterSequence` query parameter, else 0 (from now on).
pub(crate) fn start_after(
    headers: &HeaderMap,
    after_sequence: Option<&str>,
) -> Result<u64, ApiError> {
    match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "Last-Event-ID must be an event sequence",
                    "INVALID_LAST_EVENT_ID",
                )
            }),
        None => Ok(optional_number(after_sequence, "afterSequence")?.unwrap_or(0)),
    }
}

/// First, for a stream "from now", an event-less `id:` with the position it starts from (an
/// EventSource takes the id of every dispatched block as its `lastEventId`, data or not, so a
/// browser that reconnects before the first event resumes from there and misses nothing);
/// then each order event as `id: SEQ`, `event: order`, `data: <OrderEvent JSON>`; a final
/// failure as one `event: error` with the error body. The stream ends on shutdown.
fn sse_events(
    subscription: Subscription,
    stopping: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let first = subscription
        .first_position()
        .map(|position| Ok(Event::default().id(position.to_string())));
    let deliveries = futures::stream::unfold(subscription, |mut subscription| async move {
        let delivery = subscription.next().await?;
        let event = match delivery {
            Delivery::Event { sequence, json } => Event::default()
                .id(sequence.to_string())
                .event("order")
                .data(&*json),
            Delivery::Failed(error) => Event::default().event("error").data(error.to_json()),
        };
        Some((Ok(event), subscription))
    });
    futures::stream::iter(first)
        .chain(deliveries)
        .take_until(stopping.cancelled_owned())
}
