//! The order domain: validated types, the status machine and the errors a caller can meet.
//! Nothing here knows about tonic or SQL; the transport turns wire input into these types and the
//! store persists them.

mod decide;
mod error;
mod idempotency;
mod order;
mod page;
mod status;
mod time;
mod validation;
mod watch;

pub use decide::{Effect, concurrent_change, decide, replay};
pub use error::{Error, FieldViolation};
pub use idempotency::{Fingerprint, Principal, RequestId};
pub use order::{
    Change, CreateOrder, Currency, CustomerId, LineItem, MAX_ITEMS, MAX_QUANTITY, MAX_REASON_CHARS,
    NewOrder, Order, OrderEvent, OrderId, RawLineItem, Sku, UpdateStatus, Write, WriteOutcome,
};
pub use page::{
    DEFAULT_PAGE_SIZE, ListQuery, MAX_PAGE_SIZE, Page, PageTokenError, decode_page_token,
    page_size, page_token,
};
pub use status::OrderStatus;
pub use time::UnixMicros;
pub use validation::Violations;
pub use watch::WatchStart;
