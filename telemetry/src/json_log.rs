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

use opentelemetry::trace::{SpanId, TraceId};
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Level, Subscriber};
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
        writer.write_str(match *metadata.level() {
            Level::ERROR => "\",\"level\":\"ERROR\"",
            Level::WARN => "\",\"level\":\"WARN\"",
            Level::INFO => "\",\"level\":\"INFO\"",
            Level::DEBUG => "\",\"level\":\"DEBUG\"",
            Level::TRACE => "\",\"level\":\"TRACE\"",
        })?;

        let mut members = JsonMembers::new(writer.by_ref(), true);
        event.record(&mut members);
        members.result?;

        writer.write_str(",\"target\":\"")?;
        JsonEscaped(&mut writer).write_str(metadata.target())?;

        if let Some(span) = ctx.parent_span() {
            writer.write_str("\",\"span\":{")?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<JsonSpanFields>>()
                && !fields.fields.is_empty()
            {
                writer.write_str(&fields.fields)?;
                writer.write_str(",\"name\":\"")?;
            } else {
                writer.write_str("\"name\":\"")?;
            }
            JsonEscaped(&mut writer).write_str(span.name())?;
            writer.write_str("\"}")?;
        } else {
            writer.write_str("\"")?;
        }
        if let Some((trace_id, span_id)) = event_trace_ids(ctx) {
            let members = trace_members(trace_id, span_id);
            writer.write_str(std::str::from_utf8(&members).map_err(|_| fmt::Error)?)?;
        }
        writer.write_str("}\n")
    }
}

/// `,"trace_id":"<32 hex digits>","span_id":"<16 hex digits>"`, the lower-case hex the W3C
/// trace context uses (as the ids' `Display` writes them), put together without the formatting
/// machinery.
fn trace_members(trace_id: TraceId, span_id: SpanId) -> [u8; 75] {
    let mut members: [u8; 75] =
        *b",\"trace_id\":\"00000000000000000000000000000000\",\"span_id\":\"0000000000000000\"";
    hex_into(&mut members[13..45], &trace_id.to_bytes());
    hex_into(&mut members[58..74], &span_id.to_bytes());
    members
}

/// Writes `bytes` as lower-case hex into `out` (twice as long).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
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

    /// Writes `"name":` (after a comma when needed) and then the value. `opens_string` says
    /// whether the value is a JSON string, whose opening quote is then written with the name
    /// (each write through the writer is a dynamic call and a copy, and a line has many).
    fn member(
        &mut self,
        field: &Field,
        opens_string: bool,
        value: impl FnOnce(&mut Writer<'writer>) -> fmt::Result,
    ) {
        if self.result.is_ok() {
            self.result = self.write_member(field, opens_string, value);
        }
    }

    fn write_member(
        &mut self,
        field: &Field,
        opens_string: bool,
        value: impl FnOnce(&mut Writer<'writer>) -> fmt::Result,
    ) -> fmt::Result {
        let comma = std::mem::replace(&mut self.needs_comma, true);
        self.writer.write_str(if comma { ",\"" } else { "\"" })?;
        // `r#type` is declared as `type`.
        let name = field.name();
        JsonEscaped(&mut self.writer).write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.writer
            .write_str(if opens_string { "\":\"" } else { "\":" })?;
        value(&mut self.writer)
    }
}

/// Writes an integer in decimal, as `Display` does, without the formatting machinery.
fn write_integer(writer: &mut impl fmt::Write, negative: bool, mut magnitude: u64) -> fmt::Result {
    let mut digits = [0u8; 21];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        digits[at] = b'-';
    }
    writer.write_str(std::str::from_utf8(&digits[at..]).map_err(|_| fmt::Error)?)
}

impl Visit for JsonMembers<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.member(field, false, |writer| write!(writer, "{value}"));
        } else {
            // JSON has no NaN or infinity.
            self.member(field, true, |writer| write!(writer, "{value}\""));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, false, |writer| {
            write_integer(writer, value < 0, value.unsigned_abs())
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, false, |writer| write_integer(writer, false, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, false, |writer| {
            writer.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, true, |writer| {
            JsonEscaped(&mut *writer).write_str(value)?;
            writer.write_str("\"")
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, true, |writer| {
            write!(JsonEscaped(&mut *writer), "{value:?}")?;
            writer.write_str("\"")
        });
    }
}

#[cfg(test)]
fn write_json_string(writer: &mut impl fmt::Write, value: &str) -> fmt::Result {
    writer.write_char('"')?;
    JsonEscaped(&mut *writer).write_str(value)?;
    writer.write_char('"')
}

/// Escapes what it is given as the inside of a JSON string.
struct JsonEscaped<W>(W);

/// How many leading bytes of `bytes` need no escaping, looked at eight at a time.
///
/// A byte needs escaping when it is `"`, `\` or below 0x20. For each 8-byte word the classic
/// "has a zero byte" test (`(v - 0x01…01) & !v & 0x80…80`) is run on the word XORed with each
/// of the two characters, and the "has a byte below 0x20" test (`(v - 0x20…20) & !v &
/// 0x80…80`) on the word itself. Both tell exactly whether such a byte is in the word (not
/// where), so the first word with one ends the fast scan and the caller goes on byte by byte
/// from its start. The bytes after the last whole word are tested as one word padded with a
/// plain byte.
fn plain_prefix_len(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let special = |word: u64| {
        has_zero(word ^ (ONES * u64::from(b'"')))
            | has_zero(word ^ (ONES * u64::from(b'\\')))
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS)
    };
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    let mut plain = 0;
    for word in words {
        if special(u64::from_le_bytes(word.try_into().unwrap_or([0; 8]))) != 0 {
            return plain;
        }
        plain += 8;
    }
    // The last few bytes, as a word padded with a plain byte.
    let mut last = [b'a'; 8];
    for (slot, byte) in last.iter_mut().zip(tail) {
        *slot = *byte;
    }
    if special(u64::from_le_bytes(last)) == 0 {
        plain += tail.len();
    }
    plain
}

impl<W: fmt::Write> fmt::Write for JsonEscaped<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Every character to escape is ASCII, and no byte of a multi-byte UTF-8 character is
        // below 0x80, so plain runs (almost every value) are found without decoding characters
        // and written with one copy; whole words of plain bytes are skipped first.
        let bytes = text.as_bytes();
        let skipped = plain_prefix_len(bytes);
        if skipped == bytes.len() {
            return self.0.write_str(text);
        }
        let mut plain_from = 0;
        for (index, &byte) in bytes.iter().enumerate().skip(skipped) {
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
    fn every_position_of_every_escaped_byte_is_found() {
        // Each special byte at each offset of the first three words, after plain ASCII or
        // multi-byte characters, with more text after it.
        for special in ["\"", "\\", "\n", "\u{1}", "\u{1f}"] {
            for at in 0..24 {
                let after_ascii = format!("{}{special}{}", "a".repeat(at), "é".repeat(5));
                let after_utf8 = format!("{}{}{special}x", "é".repeat(at / 2), "a".repeat(at % 2));
                for text in [after_ascii, after_utf8] {
                    let out = escaped(&text);
                    let parsed: String = serde_json::from_str(&out).unwrap();
                    assert_eq!(parsed, text, "{out}");
                }
            }
        }
        assert_eq!(plain_prefix_len(b"0123456789abcdef\"x"), 16);
        assert_eq!(plain_prefix_len("ééééé\u{7f}~ ".as_bytes()), 13);
        assert_eq!(plain_prefix_len("ééééé\u{7f}~\t".as_bytes()), 8);
        assert_eq!(plain_prefix_len(b"0123456\n"), 0);
        assert_eq!(plain_prefix_len(b"abc"), 3);
        assert_eq!(plain_prefix_len(b""), 0);
    }

    #[test]
    fn ids_and_integers_are_written_as_display_writes_them() {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span_id = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        assert_eq!(
            std::str::from_utf8(&trace_members(trace_id, span_id)).unwrap(),
            format!(",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"")
        );
        for value in [0, 7, -7, 10, 1_234_567, i64::MIN, i64::MAX] {
            let mut out = String::new();
            write_integer(&mut out, value < 0, value.unsigned_abs()).unwrap();
            assert_eq!(out, value.to_string());
        }
        let mut out = String::new();
        write_integer(&mut out, false, u64::MAX).unwrap();
        assert_eq!(out, u64::MAX.to_string());
    }

    #[test]
    fn plain_strings_are_written_as_they_are() {
        assert_eq!(escaped(""), "\"\"");
        assert_eq!(escaped("orders.v1"), "\"orders.v1\"");
    }
}
