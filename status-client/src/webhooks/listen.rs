//! `status-client webhooks listen`: a small HTTP receiver for a developer's machine or a test
//! stack, as `stripe listen` is. Every POST (any path) is verified — signature by one of the
//! secrets, timestamp within the tolerance — and answered 401 with a one-line reason when it
//! fails; a verified delivery is printed on the output as one JSON line (the body's object
//! plus `webhookId`) and answered 2xx; a repeat of a `webhook-id` printed recently (the last
//! `remember_ids`) is answered 2xx and not printed again. Logs go to tracing (stderr).
//!
//! Secrets come from the settings and, optionally, a file (one `whsec_…` per line) that is
//! read again whenever it changes, so a receiver can be started before its endpoint is
//! registered and learn the secret, or a rotated one, without a restart.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use order_status_webhooks::{DEFAULT_TOLERANCE, Secret};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::dedupe::RecentIds;
use super::verify::Verifier;

/// How often the secret file is checked for changes.
const SECRET_FILE_POLL: Duration = Duration::from_secs(1);

/// What the receiver accepts.
#[derive(Debug, Clone)]
pub struct ListenSettings {
    /// Secrets a signature may be made with (several during a rotation).
    pub secrets: Vec<Secret>,
    /// A file of more secrets, one `whsec_…` per line (`#` comments and blank lines ignored),
    /// read again when it changes; it may be missing or empty at first.
    pub secret_file: Option<PathBuf>,
    /// How far a delivery's timestamp may be from this machine's clock, either way.
    pub tolerance: Duration,
    /// How many recent `webhook-id`s are remembered to drop repeats (0: none).
    pub remember_ids: usize,
    /// The largest body accepted; larger is 413.
    pub max_body_bytes: usize,
}

impl ListenSettings {
    /// Accepts signatures by `secrets`, with the defaults: ±5 minutes, 100,000 ids, 1 MiB.
    pub fn new(secrets: Vec<Secret>) -> Self {
        Self {
            secrets,
            secret_file: None,
            tolerance: DEFAULT_TOLERANCE,
            remember_ids: 100_000,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// No secret given and no secret file named.
    #[error("no secret to verify with: give --secret or --secret-file")]
    NoSecrets,
    /// The secret file exists but cannot be read or holds something that is not a secret.
    #[error("secret file {}", path.display())]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: SecretFileError,
    },
    /// Serving failed.
    #[error("webhook receiver failed")]
    Serve(#[source] std::io::Error),
}

/// What is wrong with a secret file.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// It cannot be read.
    #[error("cannot be read")]
    Read(#[source] std::io::Error),
    /// A line is not a secret.
    #[error("line {line}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// Why.
        #[source]
        source: order_status_webhooks::SecretError,
    },
}

/// Everything one receiver shares between its requests.
struct Receiver {
    fixed: Vec<Secret>,
    tolerance: Duration,
    verifier: RwLock<Verifier>,
    printed: Mutex<Printed>,
}

/// The output and the ids printed to it, under one lock: a line is printed whole, and an id
/// counts as seen only once its line is out.
struct Printed {
    recent: RecentIds,
    out: Box<dyn Write + Send>,
}

impl Receiver {
    fn set_file_secrets(&self, from_file: Vec<Secret>) {
        let mut secrets = self.fixed.clone();
        secrets.extend(from_file);
        let verifier = Verifier::new(secrets).with_tolerance(self.tolerance);
        *self
            .verifier
            .write()
            .unwrap_or_else(PoisonError::into_inner) = verifier;
    }

    fn verifier(&self) -> Verifier {
        self.verifier
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Serves the receiver on `listener`, printing verified events to `out`, until `shutdown`
/// completes (then it finishes the requests in flight).
///
/// # Errors
/// No secrets at all, an unreadable or malformed secret file at the start (later changes that
/// are malformed are logged and leave the secrets as they were), or the server failing.
pub async fn listen(
    listener: TcpListener,
    settings: ListenSettings,
    out: impl Write + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ListenError> {
    if settings.secrets.is_empty() && settings.secret_file.is_none() {
        return Err(ListenError::NoSecrets);
    }
    let receiver = Arc::new(Receiver {
        fixed: settings.secrets.clone(),
        tolerance: settings.tolerance,
        verifier: RwLock::new(
            Verifier::new(settings.secrets.clone()).with_tolerance(settings.tolerance),
        ),
        printed: Mutex::new(Printed {
            recent: RecentIds::new(settings.remember_ids),
            out: Box::new(out),
        }),
    });
    let stop_polling = CancellationToken::new();
    if let Some(path) = settings.secret_file.clone() {
        let current = read_secret_file(&path).map_err(|source| ListenError::SecretFile {
            path: path.clone(),
            source,
        })?;
        log_loaded(&path, current.as_ref());
        receiver.set_file_secrets(current.clone().unwrap_or_default());
        tokio::spawn(watch_secret_file(
            path,
            current,
            Arc::clone(&receiver),
            stop_polling.clone(),
        ));
    }
    let _stop_polling = stop_polling.drop_guard();
    let app = Router::new()
        .fallback(receive)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .with_state(receiver);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ListenError::Serve)
}

/// One delivery: verify, parse, drop a repeat, print, answer.
async fn receive(
    State(receiver): State<Arc<Receiver>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "webhooks are POSTed\n").into_response();
    }
    let delivery = match receiver.verifier().verify(&headers, &body) {
        Ok(delivery) => delivery,
        Err(why) => {
            tracing::warn!(reason = %why, webhook_id = ?headers.get("webhook-id"), "delivery refused");
            return (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response();
        }
    };
    let id = delivery.webhook_id;
    // Authentic but not JSON: the sender is broken; a 4xx other than 410 lets it retry and
    // shows the attempt in its delivery log.
    let mut event = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(event)) => event,
        Ok(_) => {
            tracing::warn!(webhook_id = %id, "delivery body is not a JSON object");
            return (StatusCode::BAD_REQUEST, "body is not a JSON object\n").into_response();
        }
        Err(error) => {
            tracing::warn!(webhook_id = %id, %error, "delivery body is not JSON");
            return (
                StatusCode::BAD_REQUEST,
                format!("body is not JSON: {error}\n"),
            )
                .into_response();
        }
    };
    let event_type = event
        .get("type")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    // A uint64, so a string in the proto3 JSON mapping.
    let sequence = match event.get("data").and_then(|data| data.get("sequence")) {
        Some(serde_json::Value::String(sequence)) => sequence.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    event.insert(
        "webhookId".to_owned(),
        serde_json::Value::String(id.clone()),
    );
    let line = serde_json::Value::Object(event).to_string();
    let mut printed = receiver
        .printed
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if printed.recent.contains(&id) {
        tracing::info!(webhook_id = %id, r#type = %event_type, sequence = %sequence, "duplicate dropped");
        return (StatusCode::OK, "duplicate, already received\n").into_response();
    }
    let written = writeln!(printed.out, "{line}").and_then(|()| printed.out.flush());
    if let Err(error) = written {
        // Not acknowledged, so the sender tries again.
        tracing::error!(webhook_id = %id, %error, "cannot print the event");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot print the event: {error}\n"),
        )
            .into_response();
    }
    printed.recent.insert(&id);
    drop(printed);
    tracing::info!(webhook_id = %id, r#type = %event_type, sequence = %sequence, "delivery verified");
    StatusCode::NO_CONTENT.into_response()
}

/// The secrets in `path`; `None` when it does not exist (yet).
fn read_secret_file(path: &Path) -> Result<Option<Vec<Secret>>, SecretFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(SecretFileError::Read(error)),
    };
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(line, text)| {
            text.parse()
                .map_err(|source| SecretFileError::Parse { line, source })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn log_loaded(path: &Path, secrets: Option<&Vec<Secret>>) {
    match secrets {
        Some(secrets) => {
            tracing::info!(file = %path.display(), secrets = secrets.len(), "secrets loaded");
        }
        None => tracing::warn!(
            file = %path.display(),
            "secret file does not exist yet: deliveries are refused until it does"
        ),
    }
}

/// Reads `path` again every second and swaps the secrets when they change; a malformed
/// version is logged and ignored (the secrets stay as they were).
async fn watch_secret_file(
    path: PathBuf,
    mut current: Option<Vec<Secret>>,
    receiver: Arc<Receiver>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(SECRET_FILE_POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || read_secret_file(&path)).await
        };
        match read {
            Ok(Ok(secrets)) if secrets != current => {
                log_loaded(&path, secrets.as_ref());
                receiver.set_file_secrets(secrets.clone().unwrap_or_default());
                current = secrets;
            }
            Ok(Ok(_unchanged)) => {}
            Ok(Err(error)) => tracing::error!(
                file = %path.display(),
                error = %order_status_telemetry::DisplayChain(&error),
                "secret file not reloaded; the previous secrets stay"
            ),
            Err(error) => tracing::error!(%error, "secret file check failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_skip_comments_and_name_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets");
        assert!(read_secret_file(&path).unwrap().is_none());
        let a = Secret::generate();
        std::fs::write(&path, format!("# endpoint 1\n\n  {a}  \nwhsec_short\n")).unwrap();
        let error = read_secret_file(&path).unwrap_err();
        assert!(
            matches!(error, SecretFileError::Parse { line: 4, .. }),
            "{error:?}"
        );
        std::fs::write(&path, format!("# endpoint 1\n\n  {a}  \n")).unwrap();
        assert_eq!(read_secret_file(&path).unwrap(), Some(vec![a]));
    }
}
