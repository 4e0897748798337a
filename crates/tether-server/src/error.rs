//! Why the server could not start or run.

use std::net::SocketAddr;
use std::path::PathBuf;

use tether_store::StoreError;
use tether_wire::ErrorCode;

use crate::config::ConfigError;
use crate::pki::PkiError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot create the data directory {path}: {error}")]
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("TLS identity: {0}")]
    Pki(#[from] PkiError),
    #[error("cannot open the store at {url}: {error}")]
    StoreOpen { url: String, error: StoreError },
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("admin token file {path} {problem}")]
    AdminToken { path: PathBuf, problem: String },
    #[error("cannot open the definitions repository at {path}: {error}")]
    DefsOpen {
        path: PathBuf,
        error: tether_defs_publish::repo::RepoError,
    },
    #[error("cannot record the published definitions in the store: {0}")]
    DefsReconcile(String),
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

impl ServerError {
    /// The catalog code an operator looks up.
    pub fn code(&self) -> ErrorCode {
        match self {
            ServerError::StoreOpen {
                error: StoreError::Tls(_),
                ..
            } => ErrorCode::StoreTls,
            ServerError::StoreOpen {
                error: StoreError::SchemaTooNew(_),
                ..
            } => ErrorCode::SchemaTooNew,
            ServerError::StoreOpen {
                error: StoreError::MigrationAltered(_),
                ..
            } => ErrorCode::MigrationAltered,
            ServerError::Store(_) | ServerError::StoreOpen { .. } => ErrorCode::StoreUnavailable,
            ServerError::Bind { .. } | ServerError::DefsOpen { .. } => ErrorCode::Internal,
            ServerError::DefsReconcile(_) => ErrorCode::StoreUnavailable,
            _ => ErrorCode::ConfigInvalid,
        }
    }
}
