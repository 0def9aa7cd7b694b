//! The HTTP routes: orders as JSON, their events as Server-Sent Events, and the health probes.
//! Handlers only translate: HTTP in, one client call, HTTP out.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{MatchedPath, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use order_status_telemetry::{HttpServerLayer, METRICS_PATH, PrometheusExposition};
use orders_proto::v1::{CreateOrderRequest, ListOrdersRequest, UpdateOrderStatusRequest};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::access_log::log_request;
use super::context::CallContext;
use super::errors::ApiError;
use super::events::{all_events, order_events};
use super::hub::WatchHub;
use super::limits::{code_of, json_errors, limit_headers};
use crate::client::Client;
use crate::order_status::parse_order_status;

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// Unary calls only: its connections never carry a watch stream, so that open event
    /// streams can never make a `GET` wait for a free HTTP/2 stream.
    pub(crate) client: Client,
    /// The upstream watches, shared between event-stream clients, on their own connections.
    pub(crate) hub: Arc<WatchHub>,
    /// The largest request head accepted (see `limits`).
    pub(crate) max_header_bytes: usize,
    pub(crate) request_timeout: Duration,
    /// Cancelled on shutdown, so that event streams end and the server can drain.
    pub(crate) stopping: CancellationToken,
}

/// The application's routes, each request traced and measured, plus `/metrics` when
/// `metrics` is given. Scrapes of `/metrics` stay out of traces, metrics and the access log: a
/// scraper calling every few seconds would otherwise fill all three with itself.
pub(crate) fn router(state: AppState, metrics: Option<PrometheusExposition>) -> Router {
    let traced = HttpServerLayer::new(state.client.metrics().clone()).with_route(|extensions| {
        extensions
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned())
    });
    let app = Router::new()
        .route("/v1/orders", get(list_orders).post(create_order))
        .route("/v1/orders/{id}", get(get_order))
        .route("/v1/orders/{id}/status", post(update_status))
        .route("/v1/orders/{id}/events", get(order_events))
        .route("/v1/events", get(all_events))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(json_errors))
        // Before any handler runs, so that nothing is forwarded that order-service would refuse
        // for its headers; inside the access log, which records the refusal.
        .layer(axum::middleware::from_fn_with_state(
            state.max_header_bytes,
            limit_headers,
        ))
        // Outside the access log, so that its lines carry the request span's trace id.
        .layer(axum::middleware::from_fn(log_request))
        .layer(traced)
        .with_state(state);
    match metrics {
        Some(exposition) => app.route(
            METRICS_PATH,
            get(move || std::future::ready(exposition.http_response())),
        ),
        None => app,
    }
}

async fn get_order(
    State(state): State<AppState>,
    call: CallContext,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let order = state.client.get_order(&id, call.options).await?;
    Ok(Json(order).into_response())
}

/// Query of `GET /v1/orders`, named as in the proto3 JSON mapping.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    customer_id: Option<String>,
    page_size: Option<String>,
    page_token: Option<String>,
}

async fn list_orders(
    State(state): State<AppState>,
    call: CallContext,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text(), "INVALID_QUERY"))?;
    let status = match query.status.as_deref() {
        None | Some("") => 0,
        Some(name) => {
            parse_order_status(name).map_err(|e| ApiError::bad_request(e, "INVALID_QUERY"))? as i32
        }
    };
    let request = ListOrdersRequest {
        page_size: optional_number(query.page_size.as_deref(), "pageSize")?.unwrap_or(0),
        page_token: query.page_token.unwrap_or_default(),
        status,
        customer_id: query.customer_id.unwrap_or_default(),
    };
    let page = state.client.list_orders(request, call.options).await?;
    Ok(Json(page).into_response())
}

async fn create_order(
    State(state): State<AppState>,
    call: CallContext,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = create_request(body, call.idempotency_key)?;
    let order = state.client.create_order(request, call.options).await?;
    let location = format!("/v1/orders/{}", order.order_id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(order),
    )
        .into_response())
}

async fn update_status(
    State(state): State<AppState>,
    call: CallContext,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = update_request(path_id(id)?, body, call.idempotency_key)?;
    let order = state
        .client
        .update_order_status(request, call.options)
        .await?;
    Ok(Json(order).into_response())
}

/// The `CreateOrderRequest` of a `POST /v1/orders` body and `Idempotency-Key` header.
pub(crate) fn create_request(
    body: Result<Bytes, BytesRejection>,
    idempotency_key_header: Option<String>,
) -> Result<CreateOrderRequest, ApiError> {
    let mut request: CreateOrderRequest = parse_body(body)?;
    request.request_id = idempotency_key(idempotency_key_header, request.request_id)?;
    Ok(request)
}

/// The `UpdateOrderStatusRequest` of a `POST /v1/orders/{id}/status` to the order `id`, from
/// its body and `Idempotency-Key` header.
pub(crate) fn update_request(
    id: String,
    body: Result<Bytes, BytesRejection>,
    idempotency_key_header: Option<String>,
) -> Result<UpdateOrderStatusRequest, ApiError> {
    let mut request: UpdateOrderStatusRequest = parse_body(body)?;
    if !request.order_id.is_empty() && request.order_id != id {
        return Err(ApiError::bad_request(
            "orderId in the body differs from the order in the path",
            "ORDER_ID_MISMATCH",
        ));
    }
    request.order_id = id;
    request.request_id = idempotency_key(idempotency_key_header, request.request_id)?;
    Ok(request)
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "alive" })).into_response()
}

/// Ready when some order-service replica answers its health check with SERVING.
async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let timeout = state.request_timeout.min(Duration::from_secs(2));
    state.client.check_serving(timeout).await.map_err(|e| {
        ApiError::local(
            Code::Unavailable,
            format!("order-service is not serving: {e}"),
            "ORDER_SERVICE_NOT_READY",
        )
    })?;
    Ok(Json(serde_json::json!({ "status": "ready" })).into_response())
}

async fn no_route() -> ApiError {
    ApiError::local(Code::NotFound, "no such route", "NO_ROUTE")
}

async fn method_not_allowed() -> ApiError {
    ApiError::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        Code::Unimplemented,
        "this route does not take that method",
        "METHOD_NOT_ALLOWED",
    )
}

/// The `{id}` of the path, or why it is not one (e.g. not UTF-8 once percent-decoded).
pub(crate) fn path_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    id.map(|Path(id)| id).map_err(|rejection| {
        let status = rejection.status();
        ApiError::with_status(
            status,
            code_of(status),
            rejection.body_text(),
            "INVALID_PATH",
        )
    })
}

/// A number from the query string; absent and empty (`?pageSize=`) both mean "not given".
pub(crate) fn optional_number<T: std::str::FromStr>(
    value: Option<&str>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            ApiError::bad_request(
                format!("{name} must be a whole number, got {text:?}"),
                "INVALID_QUERY",
            )
        }),
    }
}

/// A body in the proto3 JSON mapping (pbjson: camelCase or the proto names, enums by name).
fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
            orders_proto::reason::MESSAGE_TOO_LARGE
        } else {
            "INVALID_BODY"
        };
        ApiError::with_status(status, code_of(status), rejection.body_text(), reason)
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}"), "INVALID_JSON"))
}

/// The key from the `Idempotency-Key` header or the body's `requestId`; both is fine only if
/// they agree. Empty means "make one".
fn idempotency_key(header: Option<String>, in_body: String) -> Result<String, ApiError> {
    match header {
        Some(key) if !in_body.is_empty() && key != in_body => Err(ApiError::bad_request(
            "Idempotency-Key header and requestId in the body differ",
            "IDEMPOTENCY_KEY_MISMATCH",
        )),
        Some(key) => Ok(key),
        None => Ok(in_body),
    }
}
