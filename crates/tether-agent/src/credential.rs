//! The agent's credential (`STATE_DIR/credential`) and the server CA saved at
//! enrollment (`STATE_DIR/ca.pem`).
//!
//! The credential file is created with mode 0600 from the start (never
//! written first and chmod-ed later), is refused at load if group or others
//! may read it, and its content never reaches a log: [`Credential`]'s
//! `Debug` prints a placeholder.

use std::path::{Path, PathBuf};

use base64::Engine;
use tether_wire::ErrorCode;

use crate::state::{StateError, write_atomic};

/// The credential's file name inside the state directory.
pub const CREDENTIAL_FILE: &str = "credential";

/// The saved server CA's file name inside the state directory.
pub const CA_FILE: &str = "ca.pem";

/// The agent's secret. It is only ever shown to the transport.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(String);

impl Credential {
    pub fn new(secret: impl Into<String>) -> Self {
        Credential(secret.into())
    }

    /// The secret itself, for the Authorization header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// Why the credential could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    #[error("{path} does not exist: this agent is not enrolled")]
    Missing { path: PathBuf },
    #[error(
        "{path} has mode {observed:o}, expected 600 (no access for group or others). Fix: chmod 600 {path}"
    )]
    Insecure { path: PathBuf, observed: u32 },
    #[error("{path} is empty or not a single line of text. Fix: re-enroll the agent")]
    Malformed { path: PathBuf },
    #[error(transparent)]
    Write(#[from] StateError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CredentialError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CredentialError::Missing { .. } => ErrorCode::NotEnrolled,
            CredentialError::Insecure { .. } => ErrorCode::CredentialFileInsecure,
            CredentialError::Malformed { .. } => ErrorCode::StateCorrupt,
            CredentialError::Write(e) => e.code(),
            CredentialError::Read { .. } => ErrorCode::StateDirUnwritable,
        }
    }
}

pub fn credential_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CREDENTIAL_FILE)
}

/// Writes the credential with mode 0600, atomically.
pub fn save(state_dir: &Path, credential: &Credential) -> Result<(), CredentialError> {
    let mut bytes = credential.expose().as_bytes().to_vec();
    bytes.push(b'\n');
    Ok(write_atomic(&credential_path(state_dir), &bytes, 0o600)?)
}

/// Replaces the saved credential with `credential`, keeping the file's
/// owner: a rotation run as root (`tether-agent capture` from an admin's
/// shell) must leave a file the service's own user can still read.
pub fn replace(state_dir: &Path, credential: &Credential) -> Result<(), CredentialError> {
    let path = credential_path(state_dir);
    let owner = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&path).ok().map(|m| (m.uid(), m.gid()))
    };
    let mut bytes = credential.expose().as_bytes().to_vec();
    bytes.push(b'\n');
    tether_fs::write_atomic_owned(&path, &bytes, 0o600, owner).map_err(|e| {
        CredentialError::from(StateError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        })
    })
}

/// Rotates the agent's credential in place: the control plane issues the
/// next one and keeps the current one working until the next one is first
/// presented (by this agent's next check-in, or the running service's, which
/// re-reads the file), so a crash between the two steps never locks the
/// agent out.
pub async fn rotate(
    state_dir: &Path,
    client: &tether_client::ApiClient,
) -> Result<(), crate::error::Failure> {
    let next = client.rotate_credential().await?;
    replace(state_dir, &Credential::new(next.credential))?;
    Ok(())
}

/// Loads the credential, refusing a file that group or others can access.
pub fn load(state_dir: &Path) -> Result<Credential, CredentialError> {
    let path = credential_path(state_dir);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CredentialError::Missing { path });
        }
        Err(source) => return Err(CredentialError::Read { path, source }),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CredentialError::Insecure {
                path,
                observed: mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    load_ignoring_mode(state_dir)
}

/// Loads the credential without the permission check: used by re-enrollment,
/// which replaces an insecure file anyway.
pub fn load_ignoring_mode(state_dir: &Path) -> Result<Credential, CredentialError> {
    let path = credential_path(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CredentialError::Missing { path });
        }
        Err(source) => return Err(CredentialError::Read { path, source }),
    };
    let secret = text.trim();
    if secret.is_empty() || secret.contains(char::is_whitespace) || secret.len() > 4096 {
        return Err(CredentialError::Malformed { path });
    }
    Ok(Credential::new(secret))
}

/// Encodes DER certificates as PEM.
pub fn der_to_pem(ders: &[&[u8]]) -> String {
    let mut out = String::new();
    for der in ders {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        for chunk in b64.as_bytes().chunks(64) {
            // Base64 output is ASCII, so every chunk is valid UTF-8.
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// Saves the server CA (PEM) to `STATE_DIR/ca.pem`.
pub fn save_ca(state_dir: &Path, pem: &str) -> Result<PathBuf, CredentialError> {
    let path = state_dir.join(CA_FILE);
    write_atomic(&path, pem.as_bytes(), 0o644)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_is_written_private_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        save(dir.path(), &Credential::new("sekrit-123")).expect("saves");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(credential_path(dir.path()))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(load(dir.path()).expect("loads").expose(), "sekrit-123");
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_readable_credential_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        save(dir.path(), &Credential::new("sekrit-123")).expect("saves");
        let path = credential_path(dir.path());
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let err = load(dir.path()).expect_err("insecure");
            assert_eq!(err.code(), ErrorCode::CredentialFileInsecure);
            let text = err.to_string();
            assert!(
                text.contains(&format!("{mode:o}")) && text.contains("chmod 600"),
                "{text}"
            );
            assert!(!text.contains("sekrit"), "{text}");
        }
        // Re-enrollment may still read it, to hand it over as previous_credential.
        assert_eq!(
            load_ignoring_mode(dir.path()).expect("reads").expose(),
            "sekrit-123"
        );
        // Rewriting restores 0600 even though the old file was 0660.
        save(dir.path(), &Credential::new("new")).expect("saves");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn missing_and_malformed_credentials_have_codes() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            load(dir.path()).expect_err("missing").code(),
            ErrorCode::NotEnrolled
        );
        write_atomic(&credential_path(dir.path()), b"two words\n", 0o600).expect("writes");
        assert_eq!(
            load(dir.path()).expect_err("malformed").code(),
            ErrorCode::StateCorrupt
        );
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let c = Credential::new("sekrit-123");
        assert_eq!(format!("{c:?}"), "Credential(<redacted>)");
    }

    #[test]
    fn pem_wraps_base64_at_64_columns() {
        let der = vec![0xABu8; 100];
        let pem = der_to_pem(&[&der]);
        let lines: Vec<_> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(
            *lines.last().expect("non-empty"),
            "-----END CERTIFICATE-----"
        );
        let body: String = lines[1..lines.len() - 1].concat();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .expect("b64"),
            der
        );
    }
}
