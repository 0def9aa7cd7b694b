//! Showing an error with its causes on one line (`outer: inner: innermost`), for logs: an
//! error's `Display` shows only itself, and most log lines need the cause to be any use
//! (`hyper::Error` says "connection error", its source says which).

use std::fmt;

/// Displays an error and all its sources: `tracing::warn!(error = %DisplayChain(&error), …)`.
pub struct DisplayChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
