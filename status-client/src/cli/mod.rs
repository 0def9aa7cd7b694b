//! The `status-client` command line: arguments, the subcommands that call order-service, the
//! output formats and the exit status of each outcome.

mod args;
mod commands;
mod exit;
mod output;
mod webhooks;

pub use args::{CallCommand, Cli, Command, CommonArgs, Endpoints, OutputFormat};
pub use args::{ListenArgs, WebhooksCommand};
pub use args::{ServeLimitArgs, ServeTlsArgs};
pub use commands::run;
pub(crate) use commands::settings_for;
pub use exit::{LOCAL_ERROR, USAGE_ERROR, exit_status};
