//! Over-limit messages. tonic refuses a request larger than the decoding limit with OUT_OF_RANGE;
//! gRPC's status code table says RESOURCE_EXHAUSTED, and clients retry or report by code, so the
//! gate rewrites that one answer (recognised by tonic's message) to the right code.

use super::error::status;
use super::wire::{Body, error_response};
use orders_proto::reason;
use tonic::Code;

/// The prefix of tonic's message for a request over the decoding limit.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// Rewrites tonic's OUT_OF_RANGE answer to an over-limit request as RESOURCE_EXHAUSTED; any
/// other response passes unchanged.
pub(crate) fn translate(response: http::Response<Body>) -> http::Response<Body> {
    // Only a trailers-only answer has grpc-status in its headers; the others pass at once.
    match tonic::Status::from_header_map(response.headers()) {
        Some(refused)
            if refused.code() == Code::OutOfRange
                && refused.message().starts_with(TONIC_TOO_LARGE) =>
        {
            error_response(status(
                Code::ResourceExhausted,
                reason::MESSAGE_TOO_LARGE,
                refused.message(),
            ))
        }
        _ => response,
    }
}
