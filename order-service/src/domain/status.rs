//! The order status machine: which status may follow which.

use std::fmt;

/// Where an order is in its life. `ORDER_STATUS_UNSPECIFIED` is not a status an order can have,
/// so it has no variant here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Created, not yet paid.
    Pending,
    /// Paid, not yet shipped.
    Paid,
    /// On its way.
    Shipped,
    /// Arrived; final.
    Delivered,
    /// Called off; final.
    Cancelled,
}

impl OrderStatus {
    /// Every status, in the order of their wire numbers.
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Pending,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
    ];

    /// Whether the status machine allows going from `self` to `next`.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Pending, Paid)
                | (Pending, Cancelled)
                | (Paid, Shipped)
                | (Paid, Cancelled)
                | (Shipped, Delivered)
        )
    }

    /// The wire number (`orders.v1.OrderStatus`), also what the store keeps.
    pub fn number(self) -> i32 {
        match self {
            OrderStatus::Pending => 1,
            OrderStatus::Paid => 2,
            OrderStatus::Shipped => 3,
            OrderStatus::Delivered => 4,
            OrderStatus::Cancelled => 5,
        }
    }

    /// The status with this wire number; `None` for 0 (unspecified) and unknown numbers.
    pub fn from_number(number: i32) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|s| s.number() == number)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            OrderStatus::Pending => "ORDER_STATUS_PENDING",
            OrderStatus::Paid => "ORDER_STATUS_PAID",
            OrderStatus::Shipped => "ORDER_STATUS_SHIPPED",
            OrderStatus::Delivered => "ORDER_STATUS_DELIVERED",
            OrderStatus::Cancelled => "ORDER_STATUS_CANCELLED",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::{self, *};

    #[test]
    fn allows_exactly_the_transitions_of_the_contract() {
        let allowed = [
            (Pending, Paid),
            (Pending, Cancelled),
            (Paid, Shipped),
            (Paid, Cancelled),
            (Shipped, Delivered),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn wire_numbers_round_trip_and_zero_is_no_status() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::from_number(status.number()), Some(status));
        }
        assert_eq!(OrderStatus::from_number(0), None);
        assert_eq!(OrderStatus::from_number(6), None);
    }
}
