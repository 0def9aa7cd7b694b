//! tonic's codec refuses some requests before the handler runs, with codes and texts that are
//! not what gRPC's status table or our contract say; the gate rewrites those answers (recognised
//! by tonic's messages, as tonic gives no other mark) and passes every other response unchanged:
//!
//! - a message larger than the decoding limit is OUT_OF_RANGE in tonic; gRPC's table says
//!   RESOURCE_EXHAUSTED (reason MESSAGE_TOO_LARGE), and clients retry or report by code;
//! - a body that does not decode as the RPC's message is INTERNAL with the decoder's text
//!   ("… invalid string value: data is not UTF-8 encoded"); but INTERNAL is kept for the
//!   server's own faults (people alert on its rate), so it becomes INVALID_ARGUMENT (reason
//!   MALFORMED_REQUEST) with a plain message, and the decoder's text goes to the log as the cause.

use super::error::status;
use super::wire::{Body, error_response};
use orders_proto::reason;
use tonic::Code;

/// The prefix of tonic's message for a request over the decoding limit.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// The prefixes of tonic's INTERNAL messages for request bodies that do not decode.
const TONIC_UNDECODABLE: [&str; 5] = [
    // prost's DecodeError, through tonic-prost: bad wire type, invalid UTF-8, truncated field…
    "failed to decode Protobuf message: ",
    // A unary call whose body held no message.
    "Missing request message.",
    // The body ended inside a message.
    "Unexpected EOF decoding stream.",
    // The compressed-flag byte is neither 0 nor 1, or set without a grpc-encoding.
    "protocol error: received message with",
    // Compressed bytes that do not decompress.
    "Error decompressing: ",
];

/// What the client is told about a request that does not decode.
const UNDECODABLE_MESSAGE: &str = "the request body is not a valid message of this method's type";

/// Rewrites tonic's own refusals of a request (see the module comment); any other response
/// passes unchanged.
pub(crate) fn translate(response: http::Response<Body>) -> http::Response<Body> {
    // Only a trailers-only answer has grpc-status in its headers; the others pass at once.
    let Some(refused) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    match refused.code() {
        Code::OutOfRange if refused.message().starts_with(TONIC_TOO_LARGE) => {
            error_response(status(
                Code::ResourceExhausted,
                reason::MESSAGE_TOO_LARGE,
                refused.message(),
            ))
        }
        Code::Internal
            if TONIC_UNDECODABLE
                .iter()
                .any(|prefix| refused.message().starts_with(prefix)) =>
        {
            tracing::info!(
                cause = refused.message(),
                "refused a request that does not decode: INVALID_ARGUMENT"
            );
            error_response(status(
                Code::InvalidArgument,
                reason::MALFORMED_REQUEST,
                UNDECODABLE_MESSAGE,
            ))
        }
        _ => response,
    }
}
