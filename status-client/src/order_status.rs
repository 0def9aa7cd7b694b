//! The spellings of an order status that people and URLs use: `paid`, `PAID` or
//! `ORDER_STATUS_PAID`, and the short name shown back to them.

use orders_proto::v1::OrderStatus;

/// Parses a status name in any of its spellings; `UNSPECIFIED` is refused.
pub fn parse_order_status(name: &str) -> Result<OrderStatus, String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("ORDER_STATUS_") {
        upper
    } else {
        format!("ORDER_STATUS_{upper}")
    };
    match OrderStatus::from_str_name(&full) {
        Some(OrderStatus::Unspecified) | None => Err(format!(
            "unknown order status {name:?}; expected one of pending, paid, shipped, delivered, cancelled"
        )),
        Some(status) => Ok(status),
    }
}

/// The short name of a status, e.g. `PAID`.
pub fn short_name(status: OrderStatus) -> &'static str {
    let full = status.as_str_name();
    full.strip_prefix("ORDER_STATUS_").unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses() {
        for name in ["paid", "PAID", "ORDER_STATUS_PAID", "order_status_paid"] {
            assert_eq!(parse_order_status(name), Ok(OrderStatus::Paid));
        }
        assert!(parse_order_status("unspecified").is_err());
        assert!(parse_order_status("lost").is_err());
        assert_eq!(short_name(OrderStatus::Cancelled), "CANCELLED");
    }
}
