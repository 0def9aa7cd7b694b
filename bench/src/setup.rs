//! What each benchmark binary prepares before it starts servers: the binaries to run (given, or
//! built next to it), and a scratch directory holding a tokens file.

use crate::tokens;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// `chosen`, or the binary `name` next to the running one (cargo builds them side by side).
pub fn sibling_binary(chosen: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = chosen {
        return Ok(path.to_owned());
    }
    Ok(std::env::current_exe()?
        .parent()
        .context("this binary has no parent directory")?
        .join(name))
}

/// A scratch directory for one run and the tokens file in it.
pub struct Scratch {
    /// The directory, deleted when dropped (unless kept with [`TempDir::keep`]).
    pub dir: TempDir,
    /// `tokens.toml` in it, admitting the run's token with read and write scopes.
    pub tokens_file: PathBuf,
}

impl Scratch {
    /// Makes `<prefix>…` in `work_dir` (default: the system's temporary directory) with a
    /// tokens file admitting `token`.
    pub fn new(prefix: &str, work_dir: Option<&Path>, token: &str) -> anyhow::Result<Scratch> {
        let work_dir = work_dir.map_or_else(std::env::temp_dir, Path::to_owned);
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&work_dir)
            .with_context(|| format!("making a temporary directory in {}", work_dir.display()))?;
        let tokens_file = dir.path().join("tokens.toml");
        tokens::write_tokens_file(&tokens_file, token).context("writing the tokens file")?;
        Ok(Scratch { dir, tokens_file })
    }
}
