//! Listing: page sizes, the opaque page tokens that carry a cursor between pages (for orders and
//! for every other listing of the service), and validated order list queries.

use super::{CustomerId, Error, Fingerprint, Order, OrderStatus, Violations};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Page size when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page; bigger requests are capped to it.
pub const MAX_PAGE_SIZE: u32 = 1_000;

/// The page size a list request asks for: 0 means [`DEFAULT_PAGE_SIZE`], more than
/// [`MAX_PAGE_SIZE`] is capped to it, a negative one is refused (the text says why).
pub fn page_size(requested: i32) -> Result<u32, String> {
    match u32::try_from(requested) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) => Ok(size.min(MAX_PAGE_SIZE)),
        Err(_) => Err(format!("must not be negative, got {requested}")),
    }
}

/// Why a page token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageTokenError {
    /// Not a token any listing issued.
    NotIssued,
    /// A token of another listing (other filters, another list).
    OtherListing,
}

/// The opaque token of the page after `position` in the listing named by `tag` (a tag holds no
/// `.`; the token is bound to it, so it cannot silently be used with another listing).
pub fn page_token(position: i64, tag: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{position}.{tag}"))
}

/// The position a [`page_token`] of the listing `tag` carries.
pub fn decode_page_token(token: &str, tag: &str) -> Result<i64, PageTokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| PageTokenError::NotIssued)?;
    let text = String::from_utf8(bytes).map_err(|_| PageTokenError::NotIssued)?;
    let (written, written_tag) = text.split_once('.').ok_or(PageTokenError::NotIssued)?;
    let position: i64 = written.parse().map_err(|_| PageTokenError::NotIssued)?;
    // Only the position as `page_token` writes it: `i64`'s parser also takes `+5` and `05`,
    // which would make several tokens of one page, none of them issued here.
    if position < 0 || position.to_string() != written {
        return Err(PageTokenError::NotIssued);
    }
    if written_tag != tag {
        return Err(PageTokenError::OtherListing);
    }
    Ok(position)
}

/// A validated `ListOrders` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// How many orders at most, 1 to [`MAX_PAGE_SIZE`].
    pub page_size: u32,
    /// Position in creation order after which this page starts (0: from the beginning).
    pub after: i64,
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Only orders of this customer.
    pub customer_id: Option<CustomerId>,
}

/// One page of orders, oldest first.
#[derive(Debug, Clone)]
pub struct Page {
    /// The orders of this page.
    pub orders: Vec<Order>,
    /// Where the next page starts; `None` on the last page.
    pub next_after: Option<i64>,
}

impl ListQuery {
    /// Validates the wire fields of a list request, reporting every violation.
    pub fn parse(
        page_size: i32,
        page_token: &str,
        status: i32,
        customer_id: &str,
    ) -> Result<ListQuery, Error> {
        let mut violations = Violations::default();
        let page_size = violations
            .check("page_size", self::page_size(page_size))
            .unwrap_or(DEFAULT_PAGE_SIZE);
        let status = match status {
            0 => None,
            number => {
                let parsed = OrderStatus::from_number(number);
                if parsed.is_none() {
                    violations.add("status", format!("unknown order status {number}"));
                }
                parsed
            }
        };
        let customer_id = if customer_id.is_empty() {
            None
        } else {
            violations.check("customer_id", CustomerId::parse(customer_id))
        };
        let mut query = ListQuery {
            page_size,
            after: 0,
            status,
            customer_id,
        };
        if !page_token.is_empty()
            && let Some(after) = violations.check("page_token", query.decode_token(page_token))
        {
            query.after = after;
        }
        violations.into_result(|| query)
    }

    /// The opaque token of the page that starts after `after`.
    pub fn page_token(&self, after: i64) -> String {
        page_token(after, &self.filter_tag())
    }

    fn decode_token(&self, token: &str) -> Result<i64, String> {
        decode_page_token(token, &self.filter_tag()).map_err(|error| match error {
            PageTokenError::NotIssued => "is not a page token from this listing".to_owned(),
            PageTokenError::OtherListing => "belongs to a listing with other filters".to_owned(),
        })
    }

    /// A short tag of the filters, so a token cannot silently be used with other filters.
    fn filter_tag(&self) -> String {
        let status = self.status.map_or(0, OrderStatus::number).to_be_bytes();
        let customer = self.customer_id.as_ref().map_or("", CustomerId::as_str);
        let Fingerprint(hash) = Fingerprint::of(&[&status, customer.as_bytes()]);
        hex::encode(&hash[..4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(ListQuery::parse(0, "", 0, "").unwrap().page_size, 50);
        assert_eq!(ListQuery::parse(5000, "", 0, "").unwrap().page_size, 1000);
        assert!(ListQuery::parse(-1, "", 0, "").is_err());
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_filters() {
        let query = ListQuery::parse(10, "", 2, "c-1").unwrap();
        let token = query.page_token(42);
        assert_eq!(ListQuery::parse(10, &token, 2, "c-1").unwrap().after, 42);
        assert!(ListQuery::parse(10, &token, 2, "c-2").is_err());
        assert!(ListQuery::parse(10, "garbage!", 2, "c-1").is_err());
    }

    #[test]
    fn only_the_issued_spelling_of_a_position_decodes() {
        let query = ListQuery::parse(10, "", 0, "").unwrap();
        let tag = query.filter_tag();
        for written in ["042", "+42", "-0", "42 ", " 42"] {
            let token = URL_SAFE_NO_PAD.encode(format!("{written}.{tag}"));
            assert!(ListQuery::parse(10, &token, 0, "").is_err(), "{written:?}");
        }
        let token = URL_SAFE_NO_PAD.encode(format!("42.{tag}"));
        assert_eq!(token, query.page_token(42));
        assert_eq!(ListQuery::parse(10, &token, 0, "").unwrap().after, 42);
    }
}
