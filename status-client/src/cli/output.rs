//! Printing results: readable text for a terminal, or one proto3-JSON object per line.

use std::io::{self, Write};

use orders_proto::v1::{Order, OrderEvent, OrderStatus};
use serde::Serialize;

use super::args::OutputFormat;
use crate::error::ClientError;
use crate::order_status::short_name;

/// Writes results in one format to one sink.
pub(crate) struct Printer<W> {
    format: OutputFormat,
    out: W,
}

impl<W: Write> Printer<W> {
    pub(crate) fn new(format: OutputFormat, out: W) -> Self {
        Self { format, out }
    }

    /// One order in detail.
    pub(crate) fn order(&mut self, order: &Order) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(order),
            OutputFormat::Text => {
                let out = &mut self.out;
                writeln!(out, "order     {}", order.order_id)?;
                writeln!(
                    out,
                    "status    {} (version {})",
                    short_name(order.status()),
                    order.version
                )?;
                writeln!(out, "customer  {}", order.customer_id)?;
                for (i, item) in order.items.iter().enumerate() {
                    let label = if i == 0 { "items" } else { "" };
                    writeln!(
                        out,
                        "{label:<9} {} x {} @ {}",
                        item.quantity,
                        item.sku,
                        money(item.unit_price_cents)
                    )?;
                }
                writeln!(
                    out,
                    "total     {} {}",
                    money(order.total_cents),
                    order.currency
                )?;
                writeln!(out, "created   {}", timestamp(order.create_time.as_ref()))?;
                writeln!(out, "updated   {}", timestamp(order.update_time.as_ref()))?;
                out.flush()
            }
        }
    }

    /// The heading of an order table (text only).
    pub(crate) fn order_table_heading(&mut self) -> io::Result<()> {
        if self.format == OutputFormat::Text {
            writeln!(
                self.out,
                "{:<36}  {:<9}  {:>7}  {:>14}  CUSTOMER",
                "ORDER", "STATUS", "VERSION", "TOTAL"
            )?;
        }
        Ok(())
    }

    /// One order as a table row.
    pub(crate) fn order_row(&mut self, order: &Order) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(order),
            OutputFormat::Text => {
                writeln!(
                    self.out,
                    "{:<36}  {:<9}  {:>7}  {:>14}  {}",
                    order.order_id,
                    short_name(order.status()),
                    order.version,
                    format!("{} {}", money(order.total_cents), order.currency),
                    order.customer_id
                )?;
                self.out.flush()
            }
        }
    }

    /// One event as it arrives.
    pub(crate) fn event(&mut self, event: &OrderEvent) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(event),
            OutputFormat::Text => {
                let default = Order::default();
                let order = event.order.as_ref().unwrap_or(&default);
                let change = match event.previous_status() {
                    OrderStatus::Unspecified => format!("created {}", short_name(order.status())),
                    previous => {
                        format!("{} -> {}", short_name(previous), short_name(order.status()))
                    }
                };
                writeln!(
                    self.out,
                    "#{}  {}  {}  {}  (version {})",
                    event.sequence,
                    timestamp(event.event_time.as_ref()),
                    order.order_id,
                    change,
                    order.version
                )?;
                self.out.flush()
            }
        }
    }

    fn json(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        writeln!(self.out)?;
        self.out.flush()
    }
}

/// Describes a failed call on stderr: the code name and message, the reason, the bad fields.
pub(crate) fn print_error(error: &ClientError) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "error: {error}");
    for violation in error.field_violations() {
        let _ = writeln!(err, "  {}: {}", violation.field, violation.description);
    }
}

fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

fn timestamp(ts: Option<&orders_proto::wkt::Timestamp>) -> String {
    let Some(ts) = ts else {
        return "-".to_owned();
    };
    let Ok(seconds) = u64::try_from(ts.seconds) else {
        return format!("{}s before 1970", -ts.seconds);
    };
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use orders_proto::v1::LineItem;

    fn order() -> Order {
        Order {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            items: vec![LineItem {
                sku: "BOOK".into(),
                quantity: 2,
                unit_price_cents: 1250,
            }],
            currency: "EUR".into(),
            total_cents: 2500,
            status: OrderStatus::Paid as i32,
            version: 2,
            create_time: Some(orders_proto::wkt::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            update_time: None,
        }
    }

    fn printed(format: OutputFormat, f: impl FnOnce(&mut Printer<&mut Vec<u8>>)) -> String {
        let mut buf = Vec::new();
        f(&mut Printer::new(format, &mut buf));
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn json_is_the_proto3_mapping_one_object_per_line() {
        let text = printed(OutputFormat::Json, |p| p.order(&order()).unwrap());
        assert_eq!(text.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["orderId"], "o-1");
        assert_eq!(value["status"], "ORDER_STATUS_PAID");
        assert_eq!(value["totalCents"], "2500");
        // pbjson writes the UTC offset as "+00:00" where the mapping generates "Z"; both are
        // RFC 3339.
        let created = value["createTime"].as_str().unwrap();
        assert!(created.starts_with("1970-01-01T00:00:00"), "{created}");
    }

    #[test]
    fn text_is_readable() {
        let text = printed(OutputFormat::Text, |p| p.order(&order()).unwrap());
        assert!(text.contains("status    PAID (version 2)"), "{text}");
        assert!(text.contains("2 x BOOK @ 12.50"), "{text}");
        assert!(text.contains("total     25.00 EUR"), "{text}");
        assert!(text.contains("created   1970-01-01T00:00:00Z"), "{text}");
        assert_eq!(money(-5), "-0.05");
    }
}
