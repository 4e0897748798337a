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
    #[error("update server {server} asked to wait {}s ({})", .wait.as_secs(), asked_by(*.status))]
    CoolingDown {
        server: String,
        /// The answer that asked; `None` for a wait remembered on disk
        /// from an earlier run, whose answer was not kept.
        status: Option<u16>,
        wait: Duration,
    },
    #[error("update server {server}: no URL can be made for {path}: {detail}")]
    BadUrl {
        server: String,
        path: String,
        detail: String,
    },
    #[error(
        "update server {server}: the signed metadata {specifier} is larger than the {limit}-byte limit for metadata"
    )]
    MetadataTooLarge {
        server: String,
        specifier: String,
        limit: u64,
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
            UpdateError::TooLarge { .. } | UpdateError::MetadataTooLarge { .. } => {
                ErrorCode::DefsTooLarge
            }
            UpdateError::BadUrl { .. } => ErrorCode::DefsServerError,
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

/// Who asked for a cool-down, as the message says it.
fn asked_by(status: Option<u16>) -> String {
    match status {
        Some(status) => format!("HTTP {status} with Retry-After"),
        None => "a Retry-After remembered from an earlier answer".to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// No message carries a made-up value: a wait remembered on disk says
    /// so instead of "HTTP 0", a URL that cannot be made is not "answered
    /// 0", and oversized metadata names tough's real limit, not "0 bytes".
    #[test]
    fn messages_say_what_really_happened() {
        let remembered = UpdateError::CoolingDown {
            server: "https://m.corp/".into(),
            status: None,
            wait: Duration::from_secs(30),
        };
        assert_eq!(
            remembered.to_string(),
            "update server https://m.corp/ asked to wait 30s (a Retry-After remembered from an earlier answer)"
        );
        let answered = UpdateError::CoolingDown {
            server: "https://m.corp/".into(),
            status: Some(503),
            wait: Duration::from_secs(30),
        };
        assert!(
            answered
                .to_string()
                .ends_with("(HTTP 503 with Retry-After)")
        );
        let url = UpdateError::BadUrl {
            server: "https://m.corp/".into(),
            path: "targets/x".into(),
            detail: "invalid port number".into(),
        };
        assert_eq!(
            url.to_string(),
            "update server https://m.corp/: no URL can be made for targets/x: invalid port number"
        );
        assert_eq!(url.code(), ErrorCode::DefsServerError);
        let big = UpdateError::MetadataTooLarge {
            server: "https://m.corp/".into(),
            specifier: "max_timestamp_size argument".into(),
            limit: 1_048_576,
        };
        assert!(big.to_string().contains("1048576-byte limit"), "{big}");
        assert_eq!(big.code(), ErrorCode::DefsTooLarge);
        for e in [remembered, answered, url, big] {
            let text = e.to_string();
            assert!(
                !text.contains(" 0 ") && !text.contains("HTTP 0") && !text.contains("of 0 bytes"),
                "{text}"
            );
        }
    }
}
