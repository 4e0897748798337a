//! The agent's logs: `install.log` (enrollment and service installation,
//! target `tether::install`), `agent.log` (everything at the current level)
//! and `error.log` (WARN and above), each rotated by size, plus stderr.
//!
//! Debug mode is a reloadable filter: [`LogHandle::set_debug`] switches it
//! without restarting, and the run loop turns it off when `debug_until`
//! passes. No secret is ever logged at any level: credentials are wrapped
//! in types whose `Debug` is redacted, and proxies are logged as host:port.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use tether_wire::ErrorCode;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry, reload};

/// The target of enrollment and service-installation events.
pub const INSTALL_TARGET: &str = "tether::install";

pub const INSTALL_LOG: &str = "install.log";
pub const AGENT_LOG: &str = "agent.log";
pub const ERROR_LOG: &str = "error.log";

/// Debug mode lasts at most this long.
pub const MAX_DEBUG: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Chatty dependencies stay at info even in debug mode.
const NORMAL_FILTER: &str = "info";
const DEBUG_FILTER: &str =
    "debug,rustls=info,hyper=info,hyper_util=info,hickory_proto=info,hickory_resolver=info";

/// Where and how to log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The log directory; `None` logs to stderr only.
    pub dir: Option<PathBuf>,
    /// Rotate a file when it reaches this size.
    pub max_bytes: u64,
    /// Keep this many rotated files per log.
    pub keep: usize,
    /// Start in debug mode.
    pub debug: bool,
    /// Also log to stderr, at most at this level (the debug switch still
    /// applies on top).
    pub stderr: Option<LevelFilter>,
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error(
        "the log directory {path} is not writable ({source}). Fix: run as the user that owns it, or set log_dir"
    )]
    Unwritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

impl LogError {
    pub fn code(&self) -> ErrorCode {
        match self {
            LogError::Unwritable { .. } => ErrorCode::StateDirUnwritable,
            LogError::AlreadyInstalled => ErrorCode::Internal,
        }
    }
}

/// Switches debug mode on a running subscriber.
pub struct LogHandle {
    reload: reload::Handle<EnvFilter, Registry>,
    debug: AtomicBool,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("debug", &self.is_debug())
            .finish()
    }
}

impl LogHandle {
    /// Turns debug logging on or off; a no-op if it already is.
    pub fn set_debug(&self, on: bool) {
        if self.debug.swap(on, Ordering::SeqCst) == on {
            return;
        }
        let filter = EnvFilter::new(if on { DEBUG_FILTER } else { NORMAL_FILTER });
        if let Err(error) = self.reload.reload(filter) {
            // Only possible if the subscriber was dropped; logging is gone anyway.
            eprintln!("could not switch the log level: {error}");
        }
        tracing::info!(debug = on, "log level changed");
    }

    pub fn is_debug(&self) -> bool {
        self.debug.load(Ordering::SeqCst)
    }
}

fn rotating(
    dir: &Path,
    name: &str,
    opts: &LogOptions,
) -> Result<Mutex<FileRotate<AppendCount>>, LogError> {
    let path = dir.join(name);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    // Checked here because FileRotate panics on an unwritable directory.
    options
        .open(&path)
        .and_then(|mut f| f.flush())
        .map_err(|source| LogError::Unwritable {
            path: path.clone(),
            source,
        })?;
    // Clamp to at least 1: FileRotate asserts a positive limit.
    let max = usize::try_from(opts.max_bytes).unwrap_or(usize::MAX).max(1);
    Ok(Mutex::new(FileRotate::new(
        path,
        AppendCount::new(opts.keep.max(1)),
        ContentLimit::BytesSurpassed(max),
        Compression::None,
        Some(options),
    )))
}

/// Builds the subscriber and its debug handle without installing it, so
/// tests can scope it with `tracing::subscriber::with_default`.
pub fn build(
    opts: &LogOptions,
) -> Result<(impl tracing::Subscriber + Send + Sync + use<>, LogHandle), LogError> {
    let (filter, reload) = reload::Layer::new(EnvFilter::new(if opts.debug {
        DEBUG_FILTER
    } else {
        NORMAL_FILTER
    }));
    let stderr = opts.stderr.map(|level| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .with_filter(level)
    });
    let files = match &opts.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| LogError::Unwritable {
                path: dir.clone(),
                source,
            })?;
            let file_layer = |w| {
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(w)
            };
            let install = file_layer(rotating(dir, INSTALL_LOG, opts)?)
                .with_filter(filter_fn(|m| m.target().starts_with(INSTALL_TARGET)));
            let agent = file_layer(rotating(dir, AGENT_LOG, opts)?);
            let error = file_layer(rotating(dir, ERROR_LOG, opts)?).with_filter(LevelFilter::WARN);
            Some(install.and_then(agent).and_then(error))
        }
        None => None,
    };
    let subscriber = Registry::default().with(filter).with(stderr).with(files);
    Ok((
        subscriber,
        LogHandle {
            reload,
            debug: AtomicBool::new(opts.debug),
        },
    ))
}

/// Builds the subscriber and installs it for the whole process.
pub fn init(opts: &LogOptions) -> Result<LogHandle, LogError> {
    let (subscriber, handle) = build(opts)?;
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LogError::AlreadyInstalled)?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> LogOptions {
        LogOptions {
            dir: Some(dir.to_owned()),
            max_bytes: 4096,
            keep: 2,
            debug: false,
            stderr: None,
        }
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap_or_default()
    }

    #[test]
    fn events_go_to_the_right_files_and_debug_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (subscriber, handle) = build(&opts(dir.path())).expect("builds");
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "tether::install", agent_id = "a1", "enrolled");
            tracing::info!("checked in");
            tracing::warn!(code = "TETHER-E3405", "check-in failed");
            tracing::debug!("hidden at info");
            handle.set_debug(true);
            tracing::debug!("visible in debug");
            handle.set_debug(false);
            tracing::debug!("hidden again");
        });
        let install = read(dir.path(), INSTALL_LOG);
        let agent = read(dir.path(), AGENT_LOG);
        let error = read(dir.path(), ERROR_LOG);
        assert!(
            install.contains("enrolled") && install.contains("agent_id=\"a1\""),
            "{install}"
        );
        assert!(!install.contains("checked in"), "{install}");
        assert!(
            agent.contains("enrolled")
                && agent.contains("checked in")
                && agent.contains("check-in failed")
        );
        assert!(agent.contains("visible in debug"), "{agent}");
        assert!(!agent.contains("hidden"), "{agent}");
        assert!(
            error.contains("check-in failed") && !error.contains("checked in"),
            "{error}"
        );
        assert!(!handle.is_debug());
    }

    #[test]
    fn files_rotate_by_size_and_keep_a_bounded_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (subscriber, _handle) = build(&opts(dir.path())).expect("builds");
        let line = "x".repeat(500);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..100 {
                tracing::info!(i, "{line}");
            }
        });
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("lists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(AGENT_LOG))
            .collect();
        names.sort();
        assert_eq!(names, vec!["agent.log", "agent.log.1", "agent.log.2"]);
        for n in &names {
            let len = std::fs::metadata(dir.path().join(n)).expect("meta").len();
            assert!(len < 4096 + 1024, "{n} is {len} bytes");
        }
    }

    #[cfg(unix)]
    #[test]
    fn unwritable_log_dir_is_a_coded_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").expect("writes");
        let err = build(&opts(&file.join("logs"))).err().expect("fails");
        assert_eq!(err.code(), ErrorCode::StateDirUnwritable);
    }
}
