//! Printing results: readable text for a terminal, or one proto3-JSON object per line.

use std::io::{self, Write};

use orders_proto::v1::{
    CreateWebhookEndpointResponse, Order, OrderEvent, OrderStatus, RotateWebhookSecretResponse,
    WebhookDelivery, WebhookEndpoint,
};
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

    /// A newly created endpoint with its secret (JSON: the whole response, secret included).
    pub(crate) fn created_endpoint(
        &mut self,
        response: &CreateWebhookEndpointResponse,
    ) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(response),
            OutputFormat::Text => {
                self.endpoint(&response.endpoint.clone().unwrap_or_default())?;
                self.secret_text(&response.secret)
            }
        }
    }

    /// A rotated secret (JSON: `{"secret": "whsec_…"}`).
    pub(crate) fn rotated_secret(
        &mut self,
        response: &RotateWebhookSecretResponse,
    ) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(response),
            OutputFormat::Text => self.secret_text(&response.secret),
        }
    }

    fn secret_text(&mut self, secret: &str) -> io::Result<()> {
        writeln!(self.out, "secret      {secret}")?;
        writeln!(
            self.out,
            "            (shown only now: give it to the receiver, e.g. `webhooks listen --secret`)"
        )?;
        self.out.flush()
    }

    /// One endpoint in detail.
    pub(crate) fn endpoint(&mut self, endpoint: &WebhookEndpoint) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(endpoint),
            OutputFormat::Text => {
                let out = &mut self.out;
                writeln!(out, "endpoint    {}", endpoint.endpoint_id)?;
                writeln!(out, "url         {}", endpoint.url)?;
                let state = match (endpoint.enabled, endpoint.disabled_reason.as_str()) {
                    (true, _) => "enabled".to_owned(),
                    (false, "") => "disabled".to_owned(),
                    (false, reason) => format!("disabled: {reason}"),
                };
                writeln!(out, "state       {state}")?;
                writeln!(out, "events      {}", event_types(&endpoint.event_types))?;
                if !endpoint.description.is_empty() {
                    writeln!(out, "description {}", endpoint.description)?;
                }
                writeln!(
                    out,
                    "delivered   through sequence {}",
                    endpoint.delivered_through_sequence
                )?;
                writeln!(
                    out,
                    "created     {}",
                    timestamp(endpoint.create_time.as_ref())
                )?;
                writeln!(
                    out,
                    "updated     {}",
                    timestamp(endpoint.update_time.as_ref())
                )?;
                out.flush()
            }
        }
    }

    /// The heading of an endpoint table (text only).
    pub(crate) fn endpoint_table_heading(&mut self) -> io::Result<()> {
        if self.format == OutputFormat::Text {
            writeln!(
                self.out,
                "{:<36}  {:<8}  {:>9}  {:<30}  URL",
                "ENDPOINT", "STATE", "DELIVERED", "EVENTS"
            )?;
        }
        Ok(())
    }

    /// One endpoint as a table row.
    pub(crate) fn endpoint_row(&mut self, endpoint: &WebhookEndpoint) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(endpoint),
            OutputFormat::Text => {
                writeln!(
                    self.out,
                    "{:<36}  {:<8}  {:>9}  {:<30}  {}",
                    endpoint.endpoint_id,
                    if endpoint.enabled {
                        "enabled"
                    } else {
                        "disabled"
                    },
                    endpoint.delivered_through_sequence,
                    event_types(&endpoint.event_types),
                    endpoint.url
                )?;
                self.out.flush()
            }
        }
    }

    /// A deleted endpoint (JSON: `{"endpointId": …, "deleted": true}`).
    pub(crate) fn deleted_endpoint(&mut self, endpoint_id: &str) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(&serde_json::json!({
                "endpointId": endpoint_id,
                "deleted": true,
            })),
            OutputFormat::Text => {
                writeln!(self.out, "deleted endpoint {endpoint_id}")?;
                self.out.flush()
            }
        }
    }

    /// The heading of a delivery log (text only).
    pub(crate) fn delivery_table_heading(&mut self) -> io::Result<()> {
        if self.format == OutputFormat::Text {
            writeln!(
                self.out,
                "{:<20}  {:>8}  {:>7}  {:<36}  {:>9}  OUTCOME",
                "ATTEMPT TIME", "SEQUENCE", "ATTEMPT", "WEBHOOK ID", "LATENCY"
            )?;
        }
        Ok(())
    }

    /// One delivery attempt as a table row.
    pub(crate) fn delivery_row(&mut self, delivery: &WebhookDelivery) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(delivery),
            OutputFormat::Text => {
                let mut outcome = match (delivery.delivered, delivery.http_status) {
                    (true, status) => format!("delivered ({status})"),
                    (false, 0) => "failed".to_owned(),
                    (false, status) => format!("HTTP {status}"),
                };
                if !delivery.error.is_empty() {
                    outcome.push_str(": ");
                    outcome.push_str(&delivery.error);
                }
                if let Some(next) = delivery.next_attempt_time.as_ref() {
                    outcome.push_str("; next attempt ");
                    outcome.push_str(&timestamp(Some(next)));
                }
                let latency = delivery.latency.as_ref().map_or_else(
                    || "-".to_owned(),
                    |d| {
                        let millis =
                            d.seconds.saturating_mul(1000) + i64::from(d.nanos / 1_000_000);
                        format!("{millis} ms")
                    },
                );
                writeln!(
                    self.out,
                    "{:<20}  {:>8}  {:>7}  {:<36}  {:>9}  {}",
                    timestamp(delivery.attempt_time.as_ref()),
                    delivery.sequence,
                    delivery.attempt,
                    delivery.webhook_id,
                    latency,
                    outcome
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

fn event_types(types: &[String]) -> String {
    if types.is_empty() {
        "all".to_owned()
    } else {
        types.join(",")
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
