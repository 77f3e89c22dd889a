//! The crate's error type.

use commlink::RefusalCode;
use std::path::PathBuf;

/// Why a stager operation failed. Each variant knows what a commlink peer should be told
/// ([`StagerError::code`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StagerError {
    /// An I/O error, with the path and the operation.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No such product, release, file or area.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is malformed or names something invalid.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The release exists already, or was yanked and cannot be staged.
    #[error("refused: {0}")]
    Refused(String),
    /// A repository object failed an integrity check (its size no longer matches its
    /// manifest, or it is not a regular file): refused rather than served.
    #[error("damaged: {0}")]
    Damaged(String),
    /// A manifest or state file could not be parsed.
    #[error("corrupt {path}: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// Misconfiguration found at start-up.
    #[error("configuration: {0}")]
    Config(String),
    /// TLS set-up failed.
    #[error("tls ([stager] tls_cert, tls_key): {0}")]
    Tls(#[from] commlink::tls::TlsError),
}

impl StagerError {
    /// Wraps an io::Error with context.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StagerError::Io { op, path, source }
    }

    /// The commlink error code for this error.
    pub fn code(&self) -> RefusalCode {
        match self {
            StagerError::NotFound(_) => RefusalCode::NotFound,
            StagerError::Invalid(_) => RefusalCode::BadRequest,
            StagerError::Refused(_) => RefusalCode::Denied,
            StagerError::Damaged(_) => RefusalCode::Damaged,
            _ => RefusalCode::Internal,
        }
    }
}

/// Result with [`StagerError`].
pub type Result<T, E = StagerError> = std::result::Result<T, E>;
