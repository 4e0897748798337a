//! `DATA_DIR/endpoint.json`: where the local server listens and how to trust
//! it. `tether server` writes it at start; admin commands on the same host
//! read it, so `tether agents list` works with no flags next to a server.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "endpoint.json";
pub const DEFAULT_DATA_DIR: &str = "tether-data";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The server's URL, e.g. https://127.0.0.1:8443.
    pub url: String,
    /// sha256 fingerprint of the server's CA, for `--ca-fingerprint`.
    pub ca_fingerprint: String,
    /// The CA certificate (PEM) to trust.
    pub ca_pem_path: PathBuf,
    /// The admin credential file (0600).
    pub admin_token_path: PathBuf,
}

impl Endpoint {
    pub fn write(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = data_dir.join(FILE_NAME);
        let body = serde_json::to_vec_pretty(self)?;
        tether_fs::write_atomic(&path, &body, tether_fs::PUBLIC)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// `Ok(None)` when there is no local server record.
    pub fn read(data_dir: &Path) -> anyhow::Result<Option<Endpoint>> {
        let path = data_dir.join(FILE_NAME);
        let body = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let endpoint = serde_json::from_slice(&body).with_context(|| {
            format!(
                "{}: {} is not a valid endpoint record; remove it and restart `tether server` to rewrite it",
                tether_wire::ErrorCode::ConfigInvalid,
                path.display()
            )
        })?;
        Ok(Some(endpoint))
    }
}
