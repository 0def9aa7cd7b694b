//! The JSON log line: one object per event holding the event's fields, its target, the fields
//! of the span it happened in and that span's OpenTelemetry ids, written straight into the line.
//!
//! tracing-subscriber's own JSON format keeps a span's fields as a JSON object that it parses
//! again every time a field is recorded and every time an event is logged in the span; for the
//! access line of every gRPC call that was most of the cost of logging. Here a span's fields are
//! kept as the members of an object (`"a":1,"b":"x"`), appended to as fields are recorded, and
//! copied into each line as they are.

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::logs::event_trace_ids;

/// Formats a span's fields as JSON object members, for [`JsonLine`] to copy into its lines.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct JsonSpanFields;

thread_local! {
    /// Where a span's members are put together before going into the span's (new, empty)
    /// string in one write, so that string is allocated once at its final size instead of
    /// growing through 8, 16, 32… bytes with a copy each time.
    static MEMBERS: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The scratch string is given back its memory past this size (a span with a huge field).
const MEMBERS_KEPT_BYTES: usize = 16 * 1024;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        MEMBERS.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                scratch.clear();
                let mut members = JsonMembers::new(Writer::new(&mut *scratch), false);
                fields.record(&mut members);
                let written = members.result.and_then(|()| writer.write_str(&scratch));
                if scratch.capacity() > MEMBERS_KEPT_BYTES {
                    *scratch = String::new();
                }
                written
            }
            // A field's value made a span while being formatted: format this one in place.
            Err(_) => {
                let mut members = JsonMembers::new(writer, false);
                fields.record(&mut members);
                members.result
            }
        })
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let continues = !current.fields.is_empty();
        let mut members = JsonMembers::new(current.as_writer(), continues);
        fields.record(&mut members);
        members.result
    }
}

/// One JSON object per event:
/// `{"timestamp":…,"level":…,<event fields>,"target":…,"span":{<span fields>,"name":…},`
/// `"trace_id":…,"span_id":…}`; `span` and the ids only when the event happened in a span.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct JsonLine;

impl<S> FormatEvent<S, JsonSpanFields> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonSpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", metadata.level())?;

        let mut members = JsonMembers::new(writer.by_ref(), true);
        event.record(&mut members);
        members.result?;

        writer.write_str(",\"target\":")?;
        write_json_string(&mut writer, metadata.target())?;

        if let Some(span) = ctx.parent_span() {
            writer.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<JsonSpanFields>>()
                && !fields.fields.is_empty()
            {
                writer.write_str(&fields.fields)?;
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            write_json_string(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        if let Some((trace_id, span_id)) = event_trace_ids(ctx) {
            write!(
                writer,
                ",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\""
            )?;
        }
        writer.write_str("}\n")
    }
}

/// Writes the current time as tracing-subscriber's `SystemTime` does
/// (`2026-12-01T07:12:41.123456Z`, UTC, microseconds), with one write instead of a dozen
/// formatted pieces.
fn write_timestamp(writer: &mut Writer<'_>) -> fmt::Result {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    match since_epoch
        .ok()
        .and_then(|since| rfc3339_micros(since.as_secs(), since.subsec_micros()))
    {
        Some(text) => writer.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?),
        // Before 1970 or after 9999: the general formatter.
        None => SystemTime.format_time(writer),
    }
}

/// `secs.micros` after the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, for years up to 9999.
fn rfc3339_micros(secs: u64, micros: u32) -> Option<[u8; 27]> {
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm), with eras starting on 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let of_era = z % 146_097;
    let year_of_era = (of_era - of_era / 1_460 + of_era / 36_524 - of_era / 146_096) / 365;
    let day_of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    if year > 9_999 {
        return None;
    }
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut digits = |at: usize, width: usize, mut value: u64| {
        for position in (at..at + width).rev() {
            text[position] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    digits(0, 4, year);
    digits(5, 2, month);
    digits(8, 2, day);
    digits(11, 2, of_day / 3_600);
    digits(14, 2, of_day % 3_600 / 60);
    digits(17, 2, of_day % 60);
    digits(20, 6, u64::from(micros));
    Some(text)
}

/// Writes each visited field as a JSON object member, `,` between them (and before the first
/// when the object already has members). The first error is kept in `result`.
struct JsonMembers<'writer> {
    writer: Writer<'writer>,
    needs_comma: bool,
    result: fmt::Result,
}

impl<'writer> JsonMembers<'writer> {
    fn new(writer: Writer<'writer>, needs_comma: bool) -> Self {
        Self {
            writer,
            needs_comma,
            result: Ok(()),
        }
    }

    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'writer>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.write_member(field, value);
        }
    }

    fn write_member(
        &mut self,
        field: &Field,
        value: impl FnOnce(&mut Writer<'writer>) -> fmt::Result,
    ) -> fmt::Result {
        if std::mem::replace(&mut self.needs_comma, true) {
            self.writer.write_char(',')?;
        }
        // `r#type` is declared as `type`.
        let name = field.name();
        write_json_string(&mut self.writer, name.strip_prefix("r#").unwrap_or(name))?;
        self.writer.write_char(':')?;
        value(&mut self.writer)
    }
}

impl Visit for JsonMembers<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.member(field, |writer| write!(writer, "{value}"));
        } else {
            // JSON has no NaN or infinity.
            self.member(field, |writer| write!(writer, "\"{value}\""));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |writer| write!(writer, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |writer| write!(writer, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |writer| write!(writer, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |writer| write_json_string(writer, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |writer| {
            writer.write_char('"')?;
            write!(JsonEscaped(&mut *writer), "{value:?}")?;
            writer.write_char('"')
        });
    }
}

fn write_json_string(writer: &mut impl fmt::Write, value: &str) -> fmt::Result {
    writer.write_char('"')?;
    JsonEscaped(&mut *writer).write_str(value)?;
    writer.write_char('"')
}

/// Escapes what it is given as the inside of a JSON string.
struct JsonEscaped<W>(W);

impl<W: fmt::Write> fmt::Write for JsonEscaped<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Byte by byte: every character to escape is ASCII, and no byte of a multi-byte UTF-8
        // character is below 0x80, so plain runs (almost every value) are found without
        // decoding characters and written with one copy.
        let bytes = text.as_bytes();
        let mut plain_from = 0;
        for (index, &byte) in bytes.iter().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                control if control < 0x20 => "",
                _ => continue,
            };
            // `index` is at an ASCII byte, so both slices end on character boundaries.
            self.0.write_str(&text[plain_from..index])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain_from = index + 1;
        }
        self.0.write_str(&text[plain_from..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        write_json_string(&mut out, text).unwrap();
        out
    }

    #[test]
    fn strings_are_escaped_as_json_requires() {
        let text = "quote \" backslash \\ newline \n tab \t bell \u{7} é ✓";
        let out = escaped(text);
        assert_eq!(
            out,
            "\"quote \\\" backslash \\\\ newline \\n tab \\t bell \\u0007 é ✓\""
        );
        let parsed: String = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, text);
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let text = |secs, micros| {
            String::from_utf8(rfc3339_micros(secs, micros).unwrap().to_vec()).unwrap()
        };
        assert_eq!(text(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(text(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
        assert_eq!(text(1_764_573_161, 123_456), "2025-12-01T07:12:41.123456Z");
        assert_eq!(text(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
        assert_eq!(text(253_402_300_799, 0), "9999-12-31T23:59:59.000000Z");
        assert!(rfc3339_micros(253_402_300_800, 0).is_none());
    }

    #[test]
    fn plain_strings_are_written_as_they_are() {
        assert_eq!(escaped(""), "\"\"");
        assert_eq!(escaped("orders.v1"), "\"orders.v1\"");
    }
}
