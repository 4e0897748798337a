//! The bootstrap admin credential. On first start the server creates a
//! random admin token, keeps only its SHA-256 in the store and writes the
//! token to `data_dir/admin.token` (0600) for the operator. Later starts
//! reuse it. The token itself is never logged.
//!
//! Each data dir is one server instance (`data_dir/instance.id`), with its
//! own bootstrap credential. When `admin.token` is missing at start, a new
//! one is issued and, in the same transaction, the instance's previous
//! bootstrap credentials (and those written before credentials were tied to
//! an instance) are revoked: deleting the file and restarting is how an
//! operator rotates a leaked bootstrap credential. A file that holds a
//! revoked credential is left alone, never registered again.

use std::path::Path;

use tether_store::{NewAdminCredential, Replaced, Store};
use time::OffsetDateTime;
use tracing::{info, warn};
use uuid::Uuid;

use crate::ServerError;
use crate::pki::write_private;
use crate::secret;
use crate::service::admin_tokens::BOOTSTRAP_NAME;

/// The bootstrap instance of credentials written before they were tied to
/// an instance (see migration 0005).
pub const LEGACY_INSTANCE: &str = "legacy";

/// This data dir's server instance id, created on first use.
pub fn instance_id(data_dir: &Path) -> Result<String, ServerError> {
    let path = data_dir.join("instance.id");
    let err = |problem: String| ServerError::AdminToken {
        path: path.clone(),
        problem,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            Uuid::parse_str(id).map(|u| u.to_string()).map_err(|_| {
                err("does not hold a UUID; remove it to have a new one created".into())
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Uuid::new_v4().to_string();
            write_private(&path, format!("{id}\n").as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(err(format!("cannot be read: {e}"))),
    }
}

fn bootstrap(hash: [u8; 32], instance: &str, now: OffsetDateTime) -> NewAdminCredential {
    NewAdminCredential {
        id: Uuid::new_v4(),
        hash,
        name: BOOTSTRAP_NAME.to_owned(),
        bootstrap_instance: Some(instance.to_owned()),
        created_at: now,
    }
}

/// Makes sure `path` holds an admin token the store accepts (unless an
/// admin revoked it). Returns whether a new token was created.
pub async fn ensure_admin_token(
    store: &dyn Store,
    path: &Path,
    instance: &str,
    now: OffsetDateTime,
) -> Result<bool, ServerError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim();
            if !secret::well_formed(token, secret::ADMIN_PREFIX) {
                return Err(ServerError::AdminToken {
                    path: path.to_owned(),
                    problem: "does not hold a `tta_…` token; remove it to have a new one created"
                        .to_owned(),
                });
            }
            let hash = secret::hash(token);
            match store.admin_credential_by_hash(&hash).await? {
                None => {
                    // A fresh database with an existing data dir (for
                    // example a new PostgreSQL URL): the operator's token
                    // keeps working.
                    store
                        .create_admin_credential(&bootstrap(hash, instance, now))
                        .await?;
                    info!(path = %path.display(), "registered the existing admin token with the store");
                }
                Some(c) if c.revoked_at.is_some() => warn!(
                    path = %path.display(),
                    "admin.token holds a revoked credential; delete the file and restart to have a new one issued"
                ),
                Some(_) => {}
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = secret::generate(secret::ADMIN_PREFIX);
            // The store first: should writing the file fail, the next start
            // finds no file and issues another, revoking this one.
            let (_, revoked) = store
                .replace_admin_credential(
                    &Replaced::BootstrapOf(vec![instance.to_owned(), LEGACY_INSTANCE.to_owned()]),
                    &bootstrap(secret::hash(&token), instance, now),
                    now,
                )
                .await?;
            write_private(path, format!("{token}\n").as_bytes())?;
            if revoked > 0 {
                warn!(path = %path.display(), revoked, "created a new admin token; the previous bootstrap credential no longer works");
            } else {
                info!(path = %path.display(), "created the admin token");
            }
            Ok(true)
        }
        Err(error) => Err(ServerError::AdminToken {
            path: path.to_owned(),
            problem: format!("cannot be read: {error}"),
        }),
    }
}
