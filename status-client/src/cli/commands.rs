//! Runs one subcommand against order-service and turns its outcome into an exit status. Each
//! call command runs inside one root span (`status-client get`), the parent of its gRPC calls.

use std::io;
use std::process::ExitCode;

use futures::StreamExt;
use order_status_telemetry::PrometheusExposition;
use orders_proto::v1::{
    CreateOrderRequest, ListOrdersRequest, UpdateOrderStatusRequest, WatchOrdersRequest,
};
use tracing::Instrument;

use super::args::{CallCommand, Cli, Command, CommonArgs, WebhooksCommand};
use super::exit::{LOCAL_ERROR, USAGE_ERROR, exit_status};
use super::output::{Printer, print_error};
use crate::client::{CallOptions, Client};
use crate::error::ClientError;
use crate::settings::Settings;

/// Runs the command line; returns the process exit status. Must run inside a tokio runtime.
/// `metrics` is what `serve` shows at `/metrics` (`Telemetry::exposition`; `None`: no route).
/// A binary using telemetry flushes it after this returns (the root span has ended by then).
pub async fn run(cli: Cli, metrics: Option<PrometheusExposition>) -> ExitCode {
    let Cli { common, command } = cli;
    let command = match command {
        Command::Serve {
            http_addr,
            limits,
            tls,
        } => {
            return crate::serve::run_from_cli(&common, http_addr, &limits, &tls, metrics).await;
        }
        Command::Webhooks {
            command: WebhooksCommand::Listen(args),
        } => return super::webhooks::listen(&args).await,
        Command::Webhooks { command } => Call::Webhooks(command),
        Command::Call(command) => Call::Orders(command),
    };
    let client = match client_for(&common) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let span = tracing::info_span!(
        "status-client",
        otel.name = %format_args!("status-client {}", command.name()),
        otel.kind = "internal",
        process.exit.code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    let printer = Printer::new(common.output, io::stdout().lock());
    let outcome = match command {
        Call::Orders(command) => {
            run_call(&client, command, printer)
                .instrument(span.clone())
                .await
        }
        Call::Webhooks(command) => {
            super::webhooks::run_call(&client, command, printer)
                .instrument(span.clone())
                .await
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Call(error)) => {
            print_error(&error);
            span.record("process.exit.code", i64::from(exit_status(error.code())));
            span.record(
                "otel.status_description",
                format!("{}: {}", error.code_name(), error.message()),
            );
            ExitCode::from(exit_status(error.code()))
        }
        Err(Failure::Output(error)) if error.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(Failure::Output(error)) => {
            eprintln!("error: cannot write output: {error}");
            span.record("otel.status_description", error.to_string());
            span.record("process.exit.code", i64::from(LOCAL_ERROR));
            ExitCode::from(LOCAL_ERROR)
        }
    }
}

fn client_for(common: &CommonArgs) -> anyhow::Result<Client> {
    let mut settings = settings_for(common)?;
    if let Some(token) = &common.token {
        settings = settings.with_token(token.clone());
    }
    Ok(Client::new(settings)?)
}

/// The client settings of the command line, without the token (which `serve` does not use).
pub(crate) fn settings_for(common: &CommonArgs) -> anyhow::Result<Settings> {
    use anyhow::Context as _;
    let mut settings = Settings::new(common.endpoint.0.clone())
        .with_timeout(common.timeout)
        .with_connect_timeout(common.connect_timeout);
    if let Some(path) = &common.ca_cert {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
        settings = settings.with_ca_certificate(pem);
    }
    if let (Some(cert), Some(key)) = (&common.client_cert, &common.client_key) {
        let read = |what: &str, path: &std::path::Path| {
            std::fs::read(path)
                .with_context(|| format!("cannot read the {what} {}", path.display()))
        };
        settings = settings
            .with_client_identity(read("client certificate", cert)?, read("client key", key)?);
    }
    Ok(settings)
}

/// The commands that make calls and print their results.
enum Call {
    Orders(CallCommand),
    Webhooks(WebhooksCommand),
}

impl Call {
    /// The name as typed, for the root span: `get`, `webhooks create`, …
    fn name(&self) -> String {
        match self {
            Self::Orders(command) => command.name().to_owned(),
            Self::Webhooks(command) => format!("webhooks {}", command.name()),
        }
    }
}

/// Why a call command failed.
pub(super) enum Failure {
    Call(ClientError),
    Output(io::Error),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        Self::Call(error)
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Self::Output(error)
    }
}

async fn run_call(
    client: &Client,
    command: CallCommand,
    mut printer: Printer<impl io::Write>,
) -> Result<(), Failure> {
    match command {
        CallCommand::Get { id } => {
            let order = client.get_order(&id, CallOptions::new()).await?;
            printer.order(&order)?;
        }
        CallCommand::List {
            status,
            customer,
            page_size,
        } => {
            let request = ListOrdersRequest {
                page_size,
                status: status.map_or(0, |s| s as i32),
                customer_id: customer.unwrap_or_default(),
                page_token: String::new(),
            };
            let mut orders = std::pin::pin!(client.list_all_orders(request, CallOptions::new()));
            // The heading goes out with the first order (or at the end of an empty listing),
            // so a call that fails at once prints nothing on stdout.
            let mut headed = false;
            while let Some(order) = orders.next().await {
                let order = order?;
                if !std::mem::replace(&mut headed, true) {
                    printer.order_table_heading()?;
                }
                printer.order_row(&order)?;
            }
            if !headed {
                printer.order_table_heading()?;
            }
        }
        CallCommand::Create {
            customer,
            currency,
            items,
            request_id,
        } => {
            let request = CreateOrderRequest {
                request_id: request_id.unwrap_or_default(),
                customer_id: customer,
                items,
                currency,
            };
            let order = client.create_order(request, CallOptions::new()).await?;
            printer.order(&order)?;
        }
        CallCommand::Update {
            id,
            status,
            expected_version,
            reason,
            request_id,
        } => {
            let request = UpdateOrderStatusRequest {
                order_id: id,
                status: status as i32,
                expected_version: expected_version.unwrap_or(0),
                request_id: request_id.unwrap_or_default(),
                reason: reason.unwrap_or_default(),
            };
            let order = client
                .update_order_status(request, CallOptions::new())
                .await?;
            printer.order(&order)?;
        }
        CallCommand::Watch { id, after } => {
            let request = WatchOrdersRequest {
                order_id: id.unwrap_or_default(),
                after_sequence: after,
            };
            // The first stream is opened within the deadline, so that an unreachable server or a
            // refused watch is an error now; later disconnects are resumed from the stream's
            // resume point (the server's `orders-watch-from` until the first event), so events
            // made while disconnected are not lost, even before the first one.
            let mut events = client.open_watch(request, CallOptions::new()).await?;
            tracing::info!(
                resume_point = events.resume_point(),
                "watching: every event after the resume point follows"
            );
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some(event) => printer.event(&event?)?,
                        None => break,
                    },
                    _ = tokio::signal::ctrl_c() => {
                        tracing::info!(
                            resume_point = events.resume_point(),
                            "stopped; --after with the resume point continues from here"
                        );
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}
