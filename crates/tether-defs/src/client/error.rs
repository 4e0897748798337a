//! The updater's errors: one variant per cause an admin must tell apart,
//! each with its catalog code.

use std::path::PathBuf;
use std::time::Duration;

use tether_transport::TransportError;
use tether_wire::ErrorCode;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    #[error("no pinned definitions root in {path}: {detail}")]
    NotTrusted { path: PathBuf, detail: String },
    /// DNS, TCP, proxy, TLS (including revocation) and HTTP failures keep
    /// the transport's own codes: the same causes as for check-in.
    #[error("update server {server}: {source}")]
    Transport {
        server: String,
        #[source]
        source: Box<TransportError>,
    },
    #[error(
        "update server {server}: the download of {name} was cut off after {got} of {of} bytes ({detail}); the next attempt resumes"
    )]
    Interrupted {
        server: String,
        name: String,
        got: u64,
        of: u64,
        detail: String,
    },
    #[error("update server {server} through proxy {proxy}: {detail}")]
    ProxyDownload {
        server: String,
        proxy: String,
        detail: String,
    },
    #[error("update server {server} answered {status} for {path}")]
    Status {
        server: String,
        path: String,
        status: u16,
    },
    #[error("update server {server} asked to wait {}s (HTTP {status} with Retry-After)", .wait.as_secs())]
    CoolingDown {
        server: String,
        status: u16,
        wait: Duration,
    },
    #[error(
        "update server {server}: the signed metadata does not verify against the pinned root: {detail}"
    )]
    SignatureInvalid { server: String, detail: String },
    #[error(
        "update server {server}: the {role} metadata expired at {expires} (now {now}): a frozen or stale mirror"
    )]
    Expired {
        server: String,
        role: &'static str,
        expires: String,
        now: String,
    },
    #[error("update server {server}: {detail}; refusing to go back")]
    Rollback { server: String, detail: String },
    #[error("update server {server}: the signed metadata lists no channel {channel:?}")]
    ChannelUnknown { server: String, channel: String },
    #[error(
        "update server {server}: {name} has SHA-256 {actual}, the signed metadata says {expected}"
    )]
    HashMismatch {
        server: String,
        name: String,
        expected: String,
        actual: String,
    },
    #[error("update server {server}: {name} is longer than its signed length of {limit} bytes")]
    TooLarge {
        server: String,
        name: String,
        limit: u64,
    },
    #[error("applying the delta {name} failed: {detail}")]
    DeltaFailed { name: String, detail: String },
    #[error("no space left while writing {path}: {detail}")]
    DiskFull { path: PathBuf, detail: String },
    #[error("{what} {path}: {detail}")]
    Install {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("the definitions bundle {path} is not valid: {detail}")]
    BundleInvalid { path: PathBuf, detail: String },
    #[error("no update server is configured")]
    NoServer,
    /// A channel name (from the policy, an action or the command line) that
    /// is not a valid channel name. Shown escaped and cut, since it is
    /// outside input.
    #[error(
        "{channel} is not a valid channel name (1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit); nothing was written"
    )]
    ChannelInvalid { channel: String },
    /// A copy of another error (one failure reported for several
    /// channels): its code, words and retry class are kept.
    #[error("{message}")]
    Copied {
        code: ErrorCode,
        message: String,
        transient: bool,
        next_server: bool,
    },
}

impl UpdateError {
    /// A refused channel name, escaped and cut to 80 characters.
    pub fn channel_invalid(name: &str) -> UpdateError {
        let cut: String = name.chars().take(80).collect();
        UpdateError::ChannelInvalid {
            channel: format!("{cut:?}"),
        }
    }

    /// The catalog code.
    pub fn code(&self) -> ErrorCode {
        match self {
            UpdateError::NotTrusted { .. } => ErrorCode::DefsNotTrusted,
            UpdateError::Transport { source, .. } => source.code(),
            UpdateError::Interrupted { .. } => ErrorCode::DefsDownloadInterrupted,
            UpdateError::ProxyDownload { .. } => ErrorCode::DefsProxyDownloadFailed,
            UpdateError::Status { .. } => ErrorCode::DefsServerError,
            UpdateError::CoolingDown { .. } => ErrorCode::DefsCoolingDown,
            UpdateError::SignatureInvalid { .. } => ErrorCode::DefsSignatureInvalid,
            UpdateError::Expired { .. } => ErrorCode::DefsMetadataExpired,
            UpdateError::Rollback { .. } => ErrorCode::DefsRollbackRefused,
            UpdateError::ChannelUnknown { .. } => ErrorCode::DefsChannelUnknown,
            UpdateError::HashMismatch { .. } => ErrorCode::DefsHashMismatch,
            UpdateError::TooLarge { .. } => ErrorCode::DefsTooLarge,
            UpdateError::DeltaFailed { .. } => ErrorCode::DefsDeltaFailed,
            UpdateError::DiskFull { .. } => ErrorCode::DefsDiskFull,
            UpdateError::Install { .. } => ErrorCode::DefsInstallFailed,
            UpdateError::BundleInvalid { .. } => ErrorCode::DefsBundleInvalid,
            UpdateError::NoServer => ErrorCode::DefsServerError,
            UpdateError::ChannelInvalid { .. } => ErrorCode::DefsChannelNameRefused,
            UpdateError::Copied { code, .. } => *code,
        }
    }

    /// What to do about it, from the catalog.
    pub fn action(&self) -> &'static str {
        self.code().action()
    }

    /// The cool-down the server asked for, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpdateError::CoolingDown { wait, .. } => Some(*wait),
            _ => None,
        }
    }

    /// Whether another server or a later round may succeed. Verification
    /// failures are retried on the next server too (a mirror may be stale
    /// or a path may corrupt), but never in a tight loop on the same one.
    pub(crate) fn try_next_server(&self) -> bool {
        !matches!(
            self,
            UpdateError::NotTrusted { .. }
                | UpdateError::DiskFull { .. }
                | UpdateError::Install { .. }
                | UpdateError::BundleInvalid { .. }
                | UpdateError::NoServer
                | UpdateError::ChannelInvalid { .. }
                | UpdateError::Copied {
                    next_server: false,
                    ..
                }
        )
    }

    /// Whether waiting and trying again in this cycle may help.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            UpdateError::Transport { source, .. } => source.is_retriable(),
            UpdateError::Interrupted { .. } | UpdateError::ProxyDownload { .. } => true,
            UpdateError::Status { status, .. } => *status >= 500,
            UpdateError::Copied { transient, .. } => *transient,
            _ => false,
        }
    }
}

pub(crate) fn disk_or_install(
    what: &'static str,
    path: PathBuf,
    e: &std::io::Error,
) -> UpdateError {
    if crate::fsutil::is_disk_full(e) {
        UpdateError::DiskFull {
            path,
            detail: e.to_string(),
        }
    } else {
        UpdateError::Install {
            what,
            path,
            detail: e.to_string(),
        }
    }
}

/// A copy of `e` for a second channel or for the state file.
pub(crate) fn copy(e: &UpdateError) -> UpdateError {
    match e {
        UpdateError::CoolingDown {
            server,
            status,
            wait,
        } => UpdateError::CoolingDown {
            server: server.clone(),
            status: *status,
            wait: *wait,
        },
        other => UpdateError::Copied {
            code: other.code(),
            message: other.to_string(),
            transient: other.is_transient(),
            next_server: other.try_next_server(),
        },
    }
}
