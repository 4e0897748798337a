//! Enrollment: an agent trades a token for an identity and a credential.

use tether_store::{Enrollment, StoreError, TokenRecord};
use tether_wire::{AgentStatus, EnrollRequest, EnrollResponse};
use tracing::{info, warn};
use uuid::Uuid;

use super::{Ctx, ServiceError, policies, validate};
use crate::secret;

/// Checks a token against the clock and the request, in the order an
/// operator would want to hear about problems: revoked, window, uses, kind.
pub fn check_token(
    token: &TokenRecord,
    asked: Option<tether_wire::AgentKind>,
    now: time::OffsetDateTime,
) -> Result<(), ServiceError> {
    if token.revoked_at.is_some() {
        return Err(ServiceError::TokenRevoked {
            revoked_at: token.revoked_at,
            not_before: token.not_before,
            expires_at: token.expires_at,
        });
    }
    if now < token.not_before {
        return Err(ServiceError::TokenNotYetValid {
            not_before: token.not_before,
            expires_at: token.expires_at,
            now,
        });
    }
    if now >= token.expires_at {
        return Err(ServiceError::TokenExpired {
            not_before: token.not_before,
            expires_at: token.expires_at,
            now,
        });
    }
    if let Some(max_uses) = token.max_uses
        && token.uses >= max_uses
    {
        return Err(ServiceError::TokenExhausted {
            uses: token.uses,
            max_uses,
            not_before: token.not_before,
            expires_at: token.expires_at,
        });
    }
    if let Some(asked) = asked
        && asked != token.kind
    {
        return Err(ServiceError::TokenKindNotAllowed {
            asked,
            allowed: token.kind,
        });
    }
    Ok(())
}

/// Enrolls (or re-registers) an agent. `external_ip` is the TCP peer.
pub async fn enroll(
    ctx: &Ctx,
    req: EnrollRequest,
    external_ip: Option<String>,
) -> Result<EnrollResponse, ServiceError> {
    let now = ctx.now();
    // From memory: enrollment, open to anyone, never waits on the
    // repository's lock (a publish holds it for minutes) or its disk.
    let defs_root = ctx.defs_root.get().to_string();
    if !secret::well_formed(&req.token, secret::TOKEN_PREFIX) {
        return Err(ServiceError::TokenUnknown);
    }
    let token = ctx
        .store
        .token_by_hash(&secret::hash(&req.token))
        .await?
        .ok_or(ServiceError::TokenUnknown)?;
    check_token(&token, req.kind, now)?;
    validate::name("name", &req.name)?;
    validate::version(&req.agent_version)?;
    validate::facts(&req.facts)?;

    // A previous credential that matches nothing is ignored: the agent simply
    // enrolls as new (its old identity was removed or belongs elsewhere).
    let mut replaces = None;
    if let Some(previous) = req.previous_credential.as_deref()
        && secret::well_formed(previous, secret::CREDENTIAL_PREFIX)
    {
        replaces = ctx
            .store
            .agent_by_credential(&secret::hash(previous))
            .await?
            .map(|a| a.id);
    }
    let policy = policies::resolve(ctx, &token.policy).await?;
    let credential = secret::generate(secret::CREDENTIAL_PREFIX);
    let verb = if replaces.is_some() {
        "re-registered"
    } else {
        "enrolled"
    };
    let awaiting = if token.require_approval {
        "awaiting approval"
    } else {
        "awaiting first check-in"
    };
    let mut enrollment = Enrollment {
        token_id: token.id,
        agent_id: replaces.unwrap_or_else(Uuid::new_v4),
        replaces,
        name: req.name,
        kind: token.kind,
        group: token.group.clone(),
        policy: policy.name.clone(),
        credential_hash: secret::hash(&credential),
        requires_approval: token.require_approval,
        version: req.agent_version,
        facts: req.facts,
        external_ip,
        at: now,
        status: AgentStatus::Pending,
        reason: format!("{verb} with token {}; {awaiting}", token.id),
    };
    let record = match ctx.store.enroll(&enrollment).await {
        Err(StoreError::NotFound) if enrollment.replaces.is_some() => {
            // The agent being replaced was removed between our lookup and the
            // write: enroll as a new agent instead.
            warn!(agent_id = %enrollment.agent_id, "agent to re-register vanished; enrolling as new");
            enrollment.replaces = None;
            enrollment.agent_id = Uuid::new_v4();
            enrollment.reason = format!("enrolled with token {}; {awaiting}", token.id);
            ctx.store.enroll(&enrollment).await
        }
        other => other,
    }
    .map_err(|e| match e {
        StoreError::TokenUnavailable(why) => ServiceError::from_token_unavailable(why, &token),
        other => other.into(),
    })?;
    // The token's site labels the agent (an admin can change it later).
    if let Some(site) = ctx.store.token_site(token.id).await? {
        ctx.store.set_agent_site(record.id, Some(&site)).await?;
    }
    info!(
        agent_id = %record.id,
        token_id = %token.id,
        kind = %record.kind,
        group = %record.group,
        replaced = enrollment.replaces.is_some(),
        "{verb} an agent"
    );
    Ok(EnrollResponse {
        defs_root: Some(defs_root),
        agent_id: record.id,
        credential,
        status: record.status,
        kind: record.kind,
        group: record.group,
        policy,
        server_time: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_wire::{AgentKind, ErrorCode};
    use time::Duration;
    use time::macros::datetime;

    const NOW: time::OffsetDateTime = datetime!(2026-05-17 12:00 UTC);

    fn token() -> TokenRecord {
        TokenRecord {
            id: Uuid::nil(),
            kind: AgentKind::Connector,
            group: "prod".into(),
            policy: "default".into(),
            not_before: NOW - Duration::hours(1),
            expires_at: NOW + Duration::hours(1),
            max_uses: Some(2),
            uses: 1,
            require_approval: false,
            revoked_at: None,
            created_at: NOW - Duration::hours(1),
        }
    }

    fn code(r: Result<(), ServiceError>) -> Option<ErrorCode> {
        r.err().map(|e| e.code())
    }

    #[test]
    fn each_refusal_has_its_code() {
        assert_eq!(code(check_token(&token(), None, NOW)), None);
        assert_eq!(
            code(check_token(&token(), Some(AgentKind::Connector), NOW)),
            None
        );
        assert_eq!(
            code(check_token(&token(), Some(AgentKind::Discovery), NOW)),
            Some(ErrorCode::TokenKindNotAllowed)
        );
        assert_eq!(
            code(check_token(&token(), None, NOW - Duration::hours(2))),
            Some(ErrorCode::TokenNotYetValid)
        );
        // The window is half-open: valid up to, not at, expires_at.
        assert_eq!(
            code(check_token(&token(), None, NOW + Duration::hours(1))),
            Some(ErrorCode::TokenExpired)
        );
        let t = TokenRecord { uses: 2, ..token() };
        assert_eq!(
            code(check_token(&t, None, NOW)),
            Some(ErrorCode::TokenExhausted)
        );
        let t = TokenRecord {
            revoked_at: Some(NOW),
            uses: 2,
            ..token()
        };
        assert_eq!(
            code(check_token(&t, None, NOW)),
            Some(ErrorCode::TokenRevoked)
        );
    }

    #[test]
    fn kind_refusal_names_both_kinds() {
        let e = check_token(&token(), Some(AgentKind::Discovery), NOW).expect_err("wrong kind");
        assert_eq!(
            e.to_string(),
            "agent asked for kind discovery, but this token allows only connector"
        );
    }
}
