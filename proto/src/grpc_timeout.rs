//! The `grpc-timeout` header value (gRPC over HTTP/2: `TimeoutValue TimeoutUnit`, at most eight
//! digits and one of `H M S m u n`), parsed the same way by order-service and the gateway.

use std::time::Duration;

/// Parses a `grpc-timeout` value such as `500m` or `2S`. Zero is valid and means the deadline has
/// already passed. `None` for anything else: no digits, more than eight, a sign, spaces or an
/// unknown unit.
pub fn parse(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("500m"), Some(Duration::from_millis(500)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
    }

    #[test]
    fn zero_is_an_expired_deadline() {
        assert_eq!(parse("0m"), Some(Duration::ZERO));
        assert_eq!(parse("0S"), Some(Duration::ZERO));
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "5",
            "m",
            "S5",
            "123456789S",
            "5s",
            "-1S",
            "+1S",
            " 1S",
            "1S ",
            "1.5S",
            "1é",
            "é",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
