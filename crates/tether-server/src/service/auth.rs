//! Who is calling: the admin (by admin token) or an agent (by credential).

use tether_store::AgentRecord;
use tracing::info;

use super::{Ctx, ServiceError};
use crate::secret;

/// Checks an admin bearer token. `None` means no usable `Authorization` header.
pub async fn admin(ctx: &Ctx, bearer: Option<&str>) -> Result<(), ServiceError> {
    let Some(token) = bearer else {
        return Err(ServiceError::AdminRejected(
            "missing admin credential: expected `Authorization: Bearer tta_…`",
        ));
    };
    if !secret::well_formed(token, secret::ADMIN_PREFIX) {
        return Err(ServiceError::AdminRejected(
            "malformed admin credential: expected a `tta_…` token",
        ));
    }
    let hash = secret::hash(token);
    if ctx.store.admin_credential_valid(&hash).await? {
        return Ok(());
    }
    // Only on a refusal: tell a revoked credential from an unknown one, so
    // an admin with an old copy learns why.
    match ctx.store.admin_credential_by_hash(&hash).await? {
        Some(c) => Err(ServiceError::AdminCredentialRevoked {
            name: c.name,
            revoked_at: c.revoked_at.unwrap_or_else(|| ctx.now()),
        }),
        None => Err(ServiceError::AdminRejected(
            "admin credential not recognised by this server",
        )),
    }
}

/// Finds the agent a credential belongs to. A credential that was replaced
/// at re-registration flags its agent ("credential rejected") before being
/// refused, so the admin sees that an old copy is still running somewhere.
pub async fn agent(ctx: &Ctx, bearer: Option<&str>) -> Result<AgentRecord, ServiceError> {
    let Some(credential) = bearer else {
        return Err(ServiceError::CredentialRejected(
            "missing agent credential: expected `Authorization: Bearer tac_…`",
        ));
    };
    if !secret::well_formed(credential, secret::CREDENTIAL_PREFIX) {
        return Err(ServiceError::CredentialRejected(
            "malformed agent credential: expected a `tac_…` credential",
        ));
    }
    let hash = secret::hash(credential);
    if let Some(agent) = ctx.store.agent_by_credential(&hash).await? {
        return Ok(agent);
    }
    // A rotated credential, presented for the first time: from now on it is
    // the credential, and the old one is refused.
    if let Some(agent) = ctx.store.promote_pending_credential(&hash).await? {
        info!(agent_id = %agent.id, "the agent presented its rotated credential; the old one no longer works");
        return Ok(agent);
    }
    if let Some(id) = ctx.store.agent_by_previous_credential(&hash).await? {
        info!(agent_id = %id, "refused a replaced credential; flagging the agent");
        ctx.store.flag_credential_rejected(id, ctx.now()).await?;
        return Err(ServiceError::CredentialRejected(
            "credential was replaced (the agent re-registered or rotated its credential); this copy must re-enroll",
        ));
    }
    Err(ServiceError::CredentialRejected(
        "credential not recognised: the agent was removed or never enrolled here",
    ))
}

/// A rotation's first step for `agent` (authenticated by its current
/// credential): a new credential, kept pending until the agent presents it.
pub async fn rotate_agent_credential(
    ctx: &Ctx,
    agent: &AgentRecord,
) -> Result<tether_wire::RotatedCredential, ServiceError> {
    let credential = secret::generate(secret::CREDENTIAL_PREFIX);
    ctx.store
        .set_pending_credential(agent.id, &secret::hash(&credential))
        .await?;
    info!(agent_id = %agent.id, "issued a rotated agent credential; the current one works until it is presented");
    Ok(tether_wire::RotatedCredential { credential })
}
