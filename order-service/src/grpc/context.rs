//! What the layers in front of a handler learned about a call, handed over in request
//! extensions: the authenticated principal and the call's deadline.

use crate::domain::Principal;
use std::time::Instant;
use tonic::{Request, Status};

/// When the caller stops waiting: the earlier of its `grpc-timeout` and the server's maximum.
#[derive(Debug, Clone, Copy)]
pub struct CallDeadline(pub tokio::time::Instant);

/// The principal the auth layer authenticated.
pub(crate) fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!("a handler ran without an authenticated principal");
            Status::internal("internal error")
        })
}

/// The call's deadline, if it has one.
pub(crate) fn deadline<T>(request: &Request<T>) -> Option<Instant> {
    request
        .extensions()
        .get::<CallDeadline>()
        .map(|deadline| deadline.0.into_std())
}
