//! Order events as Server-Sent Events: `id:` is the event's sequence, so a reconnecting
//! EventSource sends it back as `Last-Event-ID` and the watch resumes right after it.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use orders_proto::v1::WatchOrdersRequest;
use serde::Deserialize;

use super::context::CallContext;
use super::errors::ApiError;
use super::routes::{AppState, optional_number};

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
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    events(state, call, id, &headers, query).await
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
    let after_sequence = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "Last-Event-ID must be an event sequence",
                    "INVALID_LAST_EVENT_ID",
                )
            })?,
        None => optional_number(query.after_sequence.as_deref(), "afterSequence")?.unwrap_or(0),
    };
    let request = WatchOrdersRequest {
        order_id,
        after_sequence,
    };
    // Opened before answering, so that a refused watch gets its HTTP status, not a 200 stream.
    let events = state.client.open_watch(request, call.options).await?;
    Ok(Sse::new(sse_events(events, state.stopping.clone()))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Each order event as `id: SEQ`, `event: order`, `data: <OrderEvent JSON>`; a final failure
/// as one `event: error` with the error body; the stream ends on shutdown.
fn sse_events(
    events: crate::watch::OrderEventStream,
    stopping: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    events.take_until(stopping.cancelled_owned()).map(|item| {
        let event = match item {
            Ok(event) => match serde_json::to_string(&event) {
                Ok(json) => Event::default()
                    .id(event.sequence.to_string())
                    .event("order")
                    .data(json),
                Err(error) => Event::default().event("error").data(
                    ApiError::local(
                        tonic::Code::Internal,
                        format!("cannot encode event: {error}"),
                        "ENCODING_FAILED",
                    )
                    .to_json(),
                ),
            },
            Err(error) => Event::default()
                .event("error")
                .data(ApiError::from(error).to_json()),
        };
        Ok(event)
    })
}
