//! The first admin credential. On first start the server creates a random
//! admin token, keeps only its SHA-256 in the store and writes the token to
//! `data_dir/admin.token` (0600) for the operator. Later starts reuse it.
//! The token itself is never logged.

use std::path::Path;

use tether_store::Store;
use time::OffsetDateTime;
use tracing::info;

use crate::ServerError;
use crate::pki::write_private;
use crate::secret;

/// The label stored with the bootstrap credential.
pub const LABEL: &str = "bootstrap (admin.token)";

/// Makes sure `path` holds an admin token the store accepts. Returns whether
/// a new token was created.
pub async fn ensure_admin_token(
    store: &dyn Store,
    path: &Path,
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
            if !store.admin_credential_valid(&hash).await? {
                // A fresh database with an existing data dir (for example a
                // new PostgreSQL URL): the operator's token keeps working.
                store.insert_admin_credential(&hash, LABEL, now).await?;
                info!(path = %path.display(), "registered the existing admin token with the store");
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = secret::generate(secret::ADMIN_PREFIX);
            store
                .insert_admin_credential(&secret::hash(&token), LABEL, now)
                .await?;
            write_private(path, format!("{token}\n").as_bytes())?;
            info!(path = %path.display(), "created the admin token");
            Ok(true)
        }
        Err(error) => Err(ServerError::AdminToken {
            path: path.to_owned(),
            problem: format!("cannot be read: {error}"),
        }),
    }
}
