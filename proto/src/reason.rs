//! The `google.rpc.ErrorInfo` vocabulary of `orders.v1`: the domain and every reason either side
//! of the API sends or acts on. Server and clients name them from here, so a reason cannot drift
//! between the one that sends it and the one that reacts to it.

/// The `ErrorInfo` domain of every error order-service returns.
pub const DOMAIN: &str = "orders.v1";

/// `INVALID_ARGUMENT`: the request broke validation rules; a `BadRequest` lists every field.
pub const VALIDATION_FAILED: &str = "VALIDATION_FAILED";
/// `INVALID_ARGUMENT`: the request's bytes do not decode as the RPC's message.
pub const MALFORMED_REQUEST: &str = "MALFORMED_REQUEST";
/// `NOT_FOUND`: no order has this id.
pub const ORDER_NOT_FOUND: &str = "ORDER_NOT_FOUND";
/// No webhook endpoint has the id given (NOT_FOUND).
pub const WEBHOOK_ENDPOINT_NOT_FOUND: &str = "WEBHOOK_ENDPOINT_NOT_FOUND";
/// `FAILED_PRECONDITION`: the status machine does not allow this change.
pub const INVALID_TRANSITION: &str = "INVALID_TRANSITION";
/// `ABORTED`: `expected_version` is not the order's current version.
pub const VERSION_MISMATCH: &str = "VERSION_MISMATCH";
/// `INVALID_ARGUMENT`: this `request_id` was used before for a different request.
pub const IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
/// `ABORTED`: a duplicate of this idempotent request is running; a retry resolves it.
pub const REQUEST_IN_PROGRESS: &str = "REQUEST_IN_PROGRESS";
/// `DEADLINE_EXCEEDED`: the call's deadline (or the server's maximum) passed.
pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
/// `OUT_OF_RANGE`: a watch's resume point is older than the events retained.
pub const EVENTS_EXPIRED: &str = "EVENTS_EXPIRED";
/// `OUT_OF_RANGE`: a watch's resume point is ahead of the newest event.
pub const SEQUENCE_AHEAD: &str = "SEQUENCE_AHEAD";
/// `UNAVAILABLE`: the order store cannot be reached or written; retry later.
pub const STORE_UNAVAILABLE: &str = "STORE_UNAVAILABLE";
/// `INTERNAL`: the server's own fault; the cause is in its log, never in the answer.
pub const INTERNAL: &str = "INTERNAL";
/// `UNAUTHENTICATED`: no `authorization` header (and no mapped client certificate).
pub const MISSING_CREDENTIALS: &str = "MISSING_CREDENTIALS";
/// `UNAUTHENTICATED`: the `authorization` header is not `Bearer <token>`.
pub const MALFORMED_CREDENTIALS: &str = "MALFORMED_CREDENTIALS";
/// `UNAUTHENTICATED`: the token is not in the tokens file.
pub const UNKNOWN_TOKEN: &str = "UNKNOWN_TOKEN";
/// `PERMISSION_DENIED`: the principal lacks the RPC's scope.
pub const MISSING_SCOPE: &str = "MISSING_SCOPE";
/// `RESOURCE_EXHAUSTED`: the request message is larger than the server accepts.
pub const MESSAGE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";
/// `RESOURCE_EXHAUSTED`: the server is shedding load; another attempt later helps.
pub const OVERLOADED: &str = "OVERLOADED";
/// `RESOURCE_EXHAUSTED`: the server has as many watch streams open as it allows.
pub const TOO_MANY_WATCHERS: &str = "TOO_MANY_WATCHERS";
/// `RESOURCE_EXHAUSTED`: a watch stream fell too far behind; resume from its last sequence.
pub const WATCHER_TOO_SLOW: &str = "WATCHER_TOO_SLOW";
/// `UNAVAILABLE`: the server is shutting down; resume on another replica or after the restart.
pub const SHUTTING_DOWN: &str = "SHUTTING_DOWN";
/// `RESOURCE_EXHAUSTED`: the caller's principal is over its rate limit; a `RetryInfo` says when
/// a call would be allowed and a `QuotaFailure` names the principal and its limit.
pub const RATE_LIMITED: &str = "RATE_LIMITED";
/// `UNAUTHENTICATED`: no token, and the client certificate is not mapped to a principal.
pub const UNKNOWN_CLIENT_CERTIFICATE: &str = "UNKNOWN_CLIENT_CERTIFICATE";
