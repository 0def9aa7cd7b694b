//! What the layers share about gRPC over HTTP/2: the response body type, and answering a call
//! with an error without calling the service.

use tonic::Status;

/// The response body type of every service here.
pub type Body = tonic::body::Body;

/// A trailers-only response that ends the call with `status`, for layers that answer without
/// calling the service.
pub fn error_response(status: Status) -> http::Response<Body> {
    status.into_http()
}
