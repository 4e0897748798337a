//! Admin API credentials: named, listed, revoked and rotated. Only their
//! SHA-256 is stored; a secret is shown once, when it is created or rotated.
//!
//! The bootstrap credential is the one a server writes to its data dir's
//! `admin.token` (see [`crate::bootstrap`]). Deleting that file and
//! restarting the server rotates it: the old one stops working.

use tether_store::{AdminCredentialRecord, Cursor, NewAdminCredential, Replaced, StoreError};
use tether_wire::{AdminTokenInfo, CreateAdminTokenRequest, CreatedAdminToken};
use tracing::info;
use uuid::Uuid;

use super::{Ctx, ServiceError, validate};
use crate::secret;

/// The name of every server's bootstrap credential; an admin cannot take it.
pub const BOOTSTRAP_NAME: &str = "bootstrap";

pub fn info(r: &AdminCredentialRecord) -> AdminTokenInfo {
    AdminTokenInfo {
        id: r.id,
        name: r.name.clone(),
        created_at: r.created_at,
        revoked_at: r.revoked_at,
        bootstrap: r.bootstrap_instance.is_some(),
    }
}

/// Every credential, a page at a time, for the few callers that must look
/// at all of them (there are a handful, not thousands).
async fn all(ctx: &Ctx) -> Result<Vec<AdminCredentialRecord>, ServiceError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = ctx
            .store
            .list_admin_credentials(after.as_ref(), super::agents::PAGE)
            .await?;
        let full = page.len() == super::agents::PAGE as usize;
        after = page.last().map(|c| Cursor {
            at: c.created_at,
            id: c.id,
        });
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

pub async fn create(
    ctx: &Ctx,
    req: CreateAdminTokenRequest,
) -> Result<CreatedAdminToken, ServiceError> {
    validate::slug("name", &req.name)?;
    if req.name == BOOTSTRAP_NAME {
        return Err(ServiceError::invalid(
            "name",
            format!("{:?}", req.name),
            "a name other than \"bootstrap\", which each server's admin.token credential has",
        ));
    }
    if all(ctx)
        .await?
        .iter()
        .any(|c| c.revoked_at.is_none() && c.name == req.name)
    {
        return Err(ServiceError::AdminTokenNameTaken(req.name));
    }
    let token = secret::generate(secret::ADMIN_PREFIX);
    let record = ctx
        .store
        .create_admin_credential(&NewAdminCredential {
            id: Uuid::new_v4(),
            hash: secret::hash(&token),
            name: req.name,
            bootstrap_instance: None,
            created_at: ctx.now(),
        })
        .await?;
    info!(admin_token_id = %record.id, name = %record.name, "created an admin credential");
    Ok(CreatedAdminToken {
        token,
        info: info(&record),
    })
}

pub async fn list(
    ctx: &Ctx,
    after: Option<Cursor>,
    limit: u32,
) -> Result<(Vec<AdminTokenInfo>, Option<Cursor>), ServiceError> {
    let rows = ctx
        .store
        .list_admin_credentials(after.as_ref(), limit)
        .await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last())
        .flatten()
        .map(|c| Cursor {
            at: c.created_at,
            id: c.id,
        });
    Ok((rows.iter().map(info).collect(), next))
}

fn not_found(id: Uuid) -> ServiceError {
    ServiceError::NotFound {
        what: "admin credential",
        id: id.to_string(),
    }
}

pub async fn revoke(ctx: &Ctx, id: Uuid) -> Result<AdminTokenInfo, ServiceError> {
    let record = match ctx.store.revoke_admin_credential(id, ctx.now()).await {
        Ok(r) => r,
        Err(StoreError::NotFound) => return Err(not_found(id)),
        Err(StoreError::Conflict(_)) => {
            let name = all(ctx)
                .await?
                .into_iter()
                .find(|c| c.id == id)
                .map(|c| c.name)
                .unwrap_or_default();
            return Err(ServiceError::LastAdminCredential { id, name });
        }
        Err(e) => return Err(e.into()),
    };
    info!(admin_token_id = %id, name = %record.name, "revoked an admin credential");
    Ok(info(&record))
}

/// Replaces a credential by a new one of the same name (and, for a
/// bootstrap credential, of the same server instance); the old one stops
/// working in the same transaction.
pub async fn rotate(ctx: &Ctx, id: Uuid) -> Result<CreatedAdminToken, ServiceError> {
    let old = all(ctx)
        .await?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| not_found(id))?;
    if old.revoked_at.is_some() {
        return Err(ServiceError::Conflict(format!(
            "admin credential {id} ({}) is revoked; create a new one instead",
            old.name
        )));
    }
    let token = secret::generate(secret::ADMIN_PREFIX);
    let (record, _) = ctx
        .store
        .replace_admin_credential(
            &Replaced::Id(id),
            &NewAdminCredential {
                id: Uuid::new_v4(),
                hash: secret::hash(&token),
                name: old.name,
                bootstrap_instance: old.bootstrap_instance,
                created_at: ctx.now(),
            },
            ctx.now(),
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound => not_found(id),
            other => other.into(),
        })?;
    info!(old_id = %id, admin_token_id = %record.id, name = %record.name, "rotated an admin credential");
    Ok(CreatedAdminToken {
        token,
        info: info(&record),
    })
}
