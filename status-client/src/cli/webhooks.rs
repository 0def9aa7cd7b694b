//! The `webhooks` subcommands: calls to `orders.v1.WebhookService`, printed like the order
//! commands' results, and `webhooks listen`, the receiver.

use std::io::{self, Write as _};
use std::process::ExitCode;

use futures::StreamExt;
use order_status_telemetry::DisplayChain;
use orders_proto::v1::{
    CreateWebhookEndpointRequest, ListWebhookDeliveriesRequest, ListWebhookEndpointsRequest,
    UpdateWebhookEndpointRequest,
};
use tokio::net::TcpListener;

use super::args::{ListenArgs, WebhooksCommand};
use super::commands::Failure;
use super::exit::{LOCAL_ERROR, USAGE_ERROR};
use super::output::Printer;
use crate::client::{CallOptions, Client};
use crate::webhooks::listen::{ListenError, ListenSettings};

/// Runs one `webhooks` call command (not `listen`) and prints its result.
pub(super) async fn run_call(
    client: &Client,
    command: WebhooksCommand,
    mut printer: Printer<impl io::Write>,
) -> Result<(), Failure> {
    match command {
        WebhooksCommand::Create {
            url,
            event_types,
            description,
            request_id,
        } => {
            let request = CreateWebhookEndpointRequest {
                request_id: request_id.unwrap_or_default(),
                url,
                event_types,
                description,
            };
            let response = client
                .create_webhook_endpoint(request, CallOptions::new())
                .await?;
            printer.created_endpoint(&response)?;
        }
        WebhooksCommand::Get { id } => {
            let endpoint = client.get_webhook_endpoint(&id, CallOptions::new()).await?;
            printer.endpoint(&endpoint)?;
        }
        WebhooksCommand::List { page_size } => {
            let request = ListWebhookEndpointsRequest {
                page_size,
                page_token: String::new(),
            };
            let mut endpoints =
                std::pin::pin!(client.list_all_webhook_endpoints(request, CallOptions::new()));
            // The heading goes out with the first row (or at the end of an empty listing), so
            // a call that fails at once prints nothing on stdout.
            let mut headed = false;
            while let Some(endpoint) = endpoints.next().await {
                let endpoint = endpoint?;
                if !std::mem::replace(&mut headed, true) {
                    printer.endpoint_table_heading()?;
                }
                printer.endpoint_row(&endpoint)?;
            }
            if !headed {
                printer.endpoint_table_heading()?;
            }
        }
        WebhooksCommand::Update {
            id,
            url,
            enable,
            disable,
            event_types,
            description,
        } => {
            let request = UpdateWebhookEndpointRequest {
                endpoint_id: id,
                url: url.unwrap_or_default(),
                enabled: (enable || disable).then_some(enable),
                event_types,
                description: description.unwrap_or_default(),
            };
            let endpoint = client
                .update_webhook_endpoint(request, CallOptions::new())
                .await?;
            printer.endpoint(&endpoint)?;
        }
        WebhooksCommand::Delete { id } => {
            client
                .delete_webhook_endpoint(&id, CallOptions::new())
                .await?;
            printer.deleted_endpoint(&id)?;
        }
        WebhooksCommand::RotateSecret { id } => {
            let response = client
                .rotate_webhook_secret(&id, CallOptions::new())
                .await?;
            printer.rotated_secret(&response)?;
        }
        WebhooksCommand::Deliveries {
            id,
            limit,
            page_size,
        } => {
            let request = ListWebhookDeliveriesRequest {
                endpoint_id: id,
                page_size,
                page_token: String::new(),
            };
            let deliveries = client.list_all_webhook_deliveries(request, CallOptions::new());
            let mut deliveries = std::pin::pin!(deliveries.take(limit.unwrap_or(usize::MAX)));
            let mut headed = false;
            while let Some(delivery) = deliveries.next().await {
                let delivery = delivery?;
                if !std::mem::replace(&mut headed, true) {
                    printer.delivery_table_heading()?;
                }
                printer.delivery_row(&delivery)?;
            }
            if !headed {
                printer.delivery_table_heading()?;
            }
        }
        WebhooksCommand::Replay { id, after } => {
            let endpoint = client
                .replay_webhook_events(&id, after, CallOptions::new())
                .await?;
            printer.endpoint(&endpoint)?;
        }
        WebhooksCommand::Listen(_) => {
            unreachable!("`webhooks listen` is not a call; run() starts the receiver instead")
        }
    }
    Ok(())
}

/// `webhooks listen`: binds, announces the address on stdout, prints verified events there as
/// JSON lines until SIGTERM or Ctrl-C.
pub(super) async fn listen(args: &ListenArgs) -> ExitCode {
    if args.secrets.is_empty() && args.secret_file.is_none() {
        eprintln!("error: {}", ListenError::NoSecrets);
        return ExitCode::from(USAGE_ERROR);
    }
    match run_listen(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %DisplayChain(&*error), "webhook receiver stopped");
            eprintln!("error: {}", DisplayChain(&*error));
            ExitCode::from(LOCAL_ERROR)
        }
    }
}

async fn run_listen(args: &ListenArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Before the announcement: a SIGTERM right after it must already mean "stop cleanly".
    let shutdown = crate::serve::shutdown_signal()?;
    let listener = TcpListener::bind(args.addr).await.map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot listen on {}: {error}", args.addr),
        )
    })?;
    let local = listener.local_addr()?;
    {
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "status-client listening on {local}")?;
        stdout.flush()?;
    }
    tracing::info!(
        addr = %local,
        secrets = args.secrets.len(),
        secret_file = ?args.secret_file,
        tolerance = %humantime::format_duration(args.tolerance),
        "receiving webhooks"
    );
    let settings = ListenSettings {
        secrets: args.secrets.clone(),
        secret_file: args.secret_file.clone(),
        tolerance: args.tolerance,
        remember_ids: args.remember,
        max_body_bytes: args.max_body_bytes,
    };
    crate::webhooks::listen::listen(listener, settings, io::stdout(), shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
