//! Enrollment tokens: create, list, revoke.

use tether_store::{NewToken, TokenRecord};
use tether_wire::{CreateTokenRequest, CreatedToken, TokenInfo};
use time::Duration;
use tracing::info;
use uuid::Uuid;

use super::{Ctx, ServiceError, rfc, validate};
use crate::secret;

/// The policy a token names when the request names none.
pub const DEFAULT_POLICY: &str = "default";

pub fn info(t: &TokenRecord) -> TokenInfo {
    TokenInfo {
        id: t.id,
        kind: t.kind,
        group: t.group.clone(),
        policy: t.policy.clone(),
        not_before: t.not_before,
        expires_at: t.expires_at,
        max_uses: t.max_uses,
        uses: t.uses,
        require_approval: t.require_approval,
        revoked_at: t.revoked_at,
        created_at: t.created_at,
    }
}

pub async fn create(ctx: &Ctx, req: CreateTokenRequest) -> Result<CreatedToken, ServiceError> {
    let now = ctx.now();
    validate::slug("group", &req.group)?;
    validate::valid_for(req.valid_for_secs)?;
    validate::max_uses(req.max_uses)?;
    let policy = req.policy.unwrap_or_else(|| DEFAULT_POLICY.to_owned());
    validate::slug("policy", &policy)?;
    if ctx.store.policy(&policy).await?.is_none() {
        let known: Vec<String> = ctx
            .store
            .list_policies()
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect();
        return Err(ServiceError::invalid(
            "policy",
            format!("{policy:?}"),
            format!("an existing policy: {}", known.join(", ")),
        ));
    }
    let not_before = req.not_before.unwrap_or(now);
    let ahead = not_before - now;
    if ahead > Duration::seconds(validate::MAX_NOT_BEFORE_AHEAD_SECS) || ahead < -Duration::days(1)
    {
        return Err(ServiceError::invalid(
            "not_before",
            rfc(not_before),
            format!(
                "a time between one day before and 365 days after the server time {}",
                rfc(now)
            ),
        ));
    }
    // valid_for is bounded above and not_before lies within a year of now, so
    // this cannot overflow; checked anyway because the inputs came from outside.
    let expires_at = i64::try_from(req.valid_for_secs)
        .ok()
        .and_then(|s| not_before.checked_add(Duration::seconds(s)))
        .ok_or_else(|| {
            ServiceError::invalid(
                "valid_for_secs",
                req.valid_for_secs,
                "a window ending before year 9999",
            )
        })?;
    if let Some(site) = &req.site
        && !ctx
            .store
            .list_sites()
            .await?
            .iter()
            .any(|s| &s.name == site)
    {
        return Err(ServiceError::SiteInvalid(format!(
            "site {:?} is not defined; create it with `tether sites set NAME --tz ZONE`",
            site.chars().take(64).collect::<String>()
        )));
    }
    let secret = secret::generate(secret::TOKEN_PREFIX);
    let token = NewToken {
        id: Uuid::new_v4(),
        hash: secret::hash(&secret),
        kind: req.kind,
        group: req.group,
        policy,
        not_before,
        expires_at,
        max_uses: req.max_uses,
        require_approval: req.require_approval,
        created_at: now,
    };
    ctx.store.insert_token(&token).await?;
    if let Some(site) = &req.site {
        ctx.store.set_token_site(token.id, Some(site)).await?;
    }
    info!(token_id = %token.id, kind = %token.kind, group = %token.group, "created an enrollment token");
    let record = ctx
        .store
        .token(token.id)
        .await?
        .ok_or_else(|| ServiceError::NotFound {
            what: "token",
            id: token.id.to_string(),
        })?;
    Ok(CreatedToken {
        token: secret,
        info: info(&record),
    })
}

/// One page of tokens, oldest first, and where the next page starts.
pub async fn list(
    ctx: &Ctx,
    after: Option<tether_store::Cursor>,
    limit: u32,
) -> Result<(Vec<TokenInfo>, Option<tether_store::Cursor>), ServiceError> {
    let rows = ctx.store.list_tokens_page(after.as_ref(), limit).await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last())
        .flatten()
        .map(|t| tether_store::Cursor {
            at: t.created_at,
            id: t.id,
        });
    Ok((rows.iter().map(info).collect(), next))
}

pub async fn revoke(ctx: &Ctx, id: Uuid) -> Result<TokenInfo, ServiceError> {
    let record = ctx
        .store
        .revoke_token(id, ctx.now())
        .await
        .map_err(|e| match e {
            tether_store::StoreError::NotFound => ServiceError::NotFound {
                what: "token",
                id: id.to_string(),
            },
            other => other.into(),
        })?;
    info!(token_id = %id, "revoked an enrollment token");
    Ok(info(&record))
}
