//! Idempotency keys: one `request_id` per logical CreateOrder/UpdateOrderStatus call, made once
//! and sent unchanged on every retry, so that a retry after a lost response is recognised by the
//! server as the same request and never makes a second order.

/// A new key: a UUIDv7 (time-ordered, so keys in server logs and tables sort by creation),
/// 36 characters of `[0-9a-f-]`, inside the contract's `[A-Za-z0-9_-]{1,128}`.
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_valid_and_distinct() {
        let a = new_request_id();
        let b = new_request_id();
        for key in [&a, &b] {
            assert_eq!(key.len(), 36);
            assert!(key.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-'));
        }
        assert_ne!(a, b);
    }
}
