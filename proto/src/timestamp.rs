//! `google.protobuf.Timestamp` with the proto3 JSON mapping as the spec words it: RFC 3339,
//! always `Z`-normalized, with 0, 3, 6 or 9 fractional digits. (pbjson-types writes `+00:00`,
//! which other proto3 JSON parsers may reject.)

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time: seconds and nanoseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Message)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z (0001-01-01 to 9999-12-31).
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second, 0 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    fn to_datetime(self) -> Option<DateTime<Utc>> {
        let nanos = u32::try_from(self.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)?;
        DateTime::from_timestamp(self.seconds, nanos)
            .filter(|t| t.timestamp() >= MIN_SECONDS && t.timestamp() <= MAX_SECONDS)
    }
}

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the range the proto allows.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let time = self.to_datetime().ok_or_else(|| {
            serde::ser::Error::custom(format!(
                "timestamp out of range: {}s {}ns",
                self.seconds, self.nanos
            ))
        })?;
        // AutoSi picks 0, 3, 6 or 9 digits; `true` writes Z instead of +00:00.
        serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let time = DateTime::parse_from_rfc3339(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid timestamp {text:?}: {e}")))?
            .with_timezone(&Utc);
        let stamp = Timestamp {
            seconds: time.timestamp(),
            nanos: time.timestamp_subsec_nanos() as i32,
        };
        stamp
            .to_datetime()
            .map(|_| stamp)
            .ok_or_else(|| serde::de::Error::custom(format!("timestamp out of range: {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    fn json(seconds: i64, nanos: i32) -> String {
        serde_json::to_string(&Timestamp { seconds, nanos }).unwrap()
    }

    #[test]
    fn writes_z_and_0_3_6_or_9_fractional_digits() {
        assert_eq!(json(0, 0), "\"1970-01-01T00:00:00Z\"");
        assert_eq!(
            json(1_700_000_000, 500_000_000),
            "\"2023-11-14T22:13:20.500Z\""
        );
        assert_eq!(
            json(1_700_000_000, 1_000),
            "\"2023-11-14T22:13:20.000001Z\""
        );
        assert_eq!(json(1_700_000_000, 1), "\"2023-11-14T22:13:20.000000001Z\"");
        assert!(
            serde_json::to_string(&Timestamp {
                seconds: 0,
                nanos: -1
            })
            .is_err()
        );
    }

    #[test]
    fn reads_any_offset_and_normalizes_to_utc() {
        let read = |text: &str| serde_json::from_str::<Timestamp>(text).unwrap();
        assert_eq!(
            read("\"1970-01-01T01:00:00+01:00\""),
            Timestamp {
                seconds: 0,
                nanos: 0
            }
        );
        assert_eq!(
            read("\"2023-11-14T22:13:20.5Z\""),
            Timestamp {
                seconds: 1_700_000_000,
                nanos: 500_000_000
            }
        );
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
