//! The one I/O error every room reports: what was being done, to which path, and the operating
//! system's reason (`writing cache/tmp/…/crops.parquet: No space left on device`). Each room's
//! error enum carries it as its `Io` variant, so the text reads the same wherever it comes from.

use std::borrow::Cow;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", .path.display())]
pub struct IoError {
    /// What was being done: `reading`, `creating temp folder`, …
    pub what: Cow<'static, str>,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    pub fn new(
        what: impl Into<Cow<'static, str>>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        IoError {
            what: what.into(),
            path: path.into(),
            source,
        }
    }

    /// For `map_err`: an I/O error while `what`-ing `path` (`?` turns it into the room's error).
    pub fn at(
        what: impl Into<Cow<'static, str>>,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> IoError {
        let (what, path) = (what.into(), path.into());
        move |source| IoError { what, path, source }
    }
}
