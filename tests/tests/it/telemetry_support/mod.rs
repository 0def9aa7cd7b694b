//! What the telemetry tests share: the environment that points a process at an OTLP
//! receiver, finding spans in a received trace, and reading `/metrics` with a real
//! Prometheus text parser.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use order_status_tests::otlp_receiver::{OtlpReceiver, ReceivedSpan};
use order_status_tests::status_client_process::{StatusClientCli, http_request};
use prometheus_parse::{LineInfo, Scrape, Value};

/// How long a test waits for spans or metrics that should arrive within a second.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The gRPC service every call goes to.
pub const SERVICE: &str = "orders.v1.OrderService";

/// Environment exporting to `endpoint`, with spans sent every 100 ms instead of every 5 s so
/// that a long-running process's spans arrive while the test waits.
pub fn exporting_to(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
}

/// `exporting_to` as the `(&str, &str)` pairs the process helpers take.
pub fn as_pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect()
}

/// `cli` with every variable of `env` set.
pub fn with_env(mut cli: StatusClientCli, env: &[(&'static str, String)]) -> StatusClientCli {
    for (name, value) in env {
        cli = cli.env(name, value);
    }
    cli
}

/// Panics with the CLI's output unless it exited 0.
/// Creates an order with the CLI and returns its id.
pub async fn create_order(cli: &StatusClientCli, customer: &str) -> String {
    cli.create_order(customer).await["orderId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until the spans of `trace_id` satisfy `done`; returns them.
pub async fn wait_for_trace(
    receiver: &OtlpReceiver,
    trace_id: &str,
    done: impl Fn(&[ReceivedSpan]) -> bool,
) -> Vec<ReceivedSpan> {
    let trace_id = trace_id.to_owned();
    let result = receiver
        .wait_for_spans(PATIENCE, |spans| {
            let trace: Vec<ReceivedSpan> = spans
                .iter()
                .filter(|span| span.trace_id == trace_id)
                .cloned()
                .collect();
            done(&trace)
        })
        .await;
    match result {
        Ok(_) => receiver.spans_in_trace(&trace_id),
        Err(error) => panic!(
            "trace {trace_id} incomplete: {error}\n{}",
            describe(&receiver.spans_in_trace(&trace_id))
        ),
    }
}

/// The one span of `spans` matching `matches`; panics (listing the spans) if there is not
/// exactly one.
pub fn the<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    matches: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|span| matches(span)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {what}, found {}:\n{}",
        found.len(),
        describe(spans)
    );
    found[0]
}

/// The children of `parent` in `spans`.
pub fn children_of<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|span| span.parent_span_id == parent.span_id)
        .collect()
}

/// Whether `span` descends from `ancestor` within `spans`.
pub fn descends_from(spans: &[ReceivedSpan], span: &ReceivedSpan, ancestor: &ReceivedSpan) -> bool {
    let mut parent = span.parent_span_id.clone();
    while !parent.is_empty() {
        if parent == ancestor.span_id {
            return true;
        }
        parent = spans
            .iter()
            .find(|candidate| candidate.span_id == parent)
            .map(|candidate| candidate.parent_span_id.clone())
            .unwrap_or_default();
    }
    false
}

/// A status-client span of the logical call `method` (the one with `rpc.attempts`).
pub fn is_logical_call(span: &ReceivedSpan, method: &str) -> bool {
    span.service_name == "status-client"
        && span.kind == "client"
        && span.name == format!("{SERVICE}/{method}")
        && span.attributes.contains_key("rpc.attempts")
}

/// A status-client span of one attempt of `method` (the one with `rpc.attempt`).
pub fn is_attempt(span: &ReceivedSpan, method: &str) -> bool {
    span.service_name == "status-client"
        && span.kind == "client"
        && span.name == format!("{SERVICE}/{method}")
        && span.attributes.contains_key("rpc.attempt")
}

/// An order-service server span of `method`.
pub fn is_server_call(span: &ReceivedSpan, method: &str) -> bool {
    span.service_name == "order-service"
        && span.kind == "server"
        && span.name == format!("{SERVICE}/{method}")
}

/// One line per span: enough to see a trace's shape in a failure message.
pub fn describe(spans: &[ReceivedSpan]) -> String {
    spans
        .iter()
        .map(|span| {
            format!(
                "  {} {} [{}] {} span={} parent={} status={} {:?}",
                span.service_name,
                span.kind,
                span.name,
                &span.trace_id,
                span.span_id,
                if span.parent_span_id.is_empty() {
                    "-"
                } else {
                    &span.parent_span_id
                },
                span.status,
                span.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses Prometheus text with `prometheus-parse`, after checking every line against the
/// text format (version 0.0.4) here: that parser skips lines it does not understand instead
/// of failing, so on its own it would accept anything.
///
/// One adjustment: its sample pattern cannot read a `}` inside a label value, which is valid
/// and which route templates have (`http_route="/v1/orders/{id}"`), so braces inside label
/// values are handed to it as `(`/`)`; [`sample`] looks label values up the same way.
pub fn parse_metrics(text: &str) -> Scrape {
    let mut lines = Vec::new();
    for line in text.lines() {
        let checked = check_line(line)
            .unwrap_or_else(|problem| panic!("not Prometheus text ({problem}): {line:?}"));
        assert!(
            !matches!(LineInfo::parse(&checked), LineInfo::Ignored),
            "prometheus-parse cannot read {line:?}"
        );
        lines.push(checked);
    }
    Scrape::parse(lines.into_iter().map(Ok)).expect("parses")
}

/// A label value as [`parse_metrics`] hands it to `prometheus-parse`.
fn parser_safe(value: &str) -> String {
    value.replace('{', "(").replace('}', ")")
}

/// Checks one line of the text format; returns it as `prometheus-parse` should see it.
fn check_line(line: &str) -> Result<String, String> {
    if line.trim().is_empty() {
        return Ok(String::new());
    }
    if let Some(comment) = line.strip_prefix('#') {
        let words: Vec<&str> = comment.split_whitespace().collect();
        match words.as_slice() {
            ["HELP", name, ..] if is_metric_name(name) => {}
            ["TYPE", name, kind]
                if is_metric_name(name)
                    && !["counter", "gauge", "histogram", "summary", "untyped"].contains(kind) =>
            {
                return Err(format!("unknown type {kind}"));
            }
            ["TYPE", name, _] if is_metric_name(name) => {}
            ["HELP" | "TYPE", ..] => return Err("malformed HELP or TYPE".into()),
            _ => {}
        }
        return Ok(line.to_owned());
    }
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut out = name.to_owned();
    let mut rest = &line[name_end..];
    if let Some(labels) = rest.strip_prefix('{') {
        out.push('{');
        rest = labels;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let equals = rest.find('=').ok_or("label without =")?;
            let label = &rest[..equals];
            if !is_label_name(label) {
                return Err(format!("bad label name {label:?}"));
            }
            let value = rest[equals + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let (raw, after) = quoted_value(value)?;
            out.push_str(&format!("{label}=\"{}\"", parser_safe(raw)));
            rest = after;
            if let Some(after) = rest.strip_prefix(',') {
                out.push(',');
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("labels not separated by commas".into());
            }
        }
        out.push('}');
    }
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if !rest.starts_with([' ', '\t']) || fields.is_empty() || fields.len() > 2 {
        return Err("expected a value and an optional timestamp".into());
    }
    if !matches!(fields[0], "+Inf" | "-Inf" | "NaN") && fields[0].parse::<f64>().is_err() {
        return Err(format!("bad value {:?}", fields[0]));
    }
    if let Some(timestamp) = fields.get(1)
        && timestamp.parse::<i64>().is_err()
    {
        return Err(format!("bad timestamp {timestamp:?}"));
    }
    out.push(' ');
    out.push_str(&fields.join(" "));
    Ok(out)
}

/// The content of a quoted label value (escapes `\\`, `\"` and `\n` only) and what follows
/// its closing quote.
fn quoted_value(text: &str) -> Result<(&str, &str), String> {
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((&text[..at], &text[at + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\' | '"' | 'n')) => {}
                other => return Err(format!("bad escape {other:?}")),
            },
            '\n' => return Err("newline in a label value".into()),
            _ => {}
        }
    }
    Err("unterminated label value".into())
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `GET /metrics` of `addr`, parsed. Waits (briefly) for the listener if it is not up yet:
/// a server may bind its metrics port just after announcing its main address.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let response = loop {
        match http_request(addr, "GET", "/metrics", &[], None).await {
            Ok(response) => break response,
            Err(error) if tokio::time::Instant::now() < deadline => {
                let _ = error;
                // No readiness signal exists for the metrics listener: poll.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("GET http://{addr}/metrics failed: {error:#}"),
        }
    };
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        response
            .headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/plain")),
        "content type {:?}",
        response.headers.get("content-type")
    );
    parse_metrics(&response.body)
}

/// The value of the sample `metric` whose labels include all of `labels`, summed over
/// every such sample (a histogram counts its observations: its `+Inf` bucket). 0 when
/// there is none (a counter not yet moved).
pub fn sample(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|sample| {
            sample.metric == metric
                && labels.iter().all(|(name, value)| {
                    sample.labels.get(name) == Some(parser_safe(value).as_str())
                })
        })
        .map(|sample| match &sample.value {
            Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => *value,
            Value::Histogram(buckets) => buckets
                .iter()
                .map(|bucket| bucket.count)
                .fold(0.0, f64::max),
            Value::Summary(_) => panic!("no summaries are made"),
        })
        .sum()
}

/// Whether `scrape` has any sample of `metric`.
pub fn has_metric(scrape: &Scrape, metric: &str) -> bool {
    scrape.samples.iter().any(|sample| sample.metric == metric)
}
