//! The services: what the API does, independent of HTTP. Handlers in
//! [`crate::api`] parse and authenticate, then call these; these call the
//! store through [`Ctx`]. Every refusal is a [`ServiceError`] that carries
//! the observed and the expected values and maps to one stable code.

use std::sync::Arc;

use tether_store::{Store, StoreError, TokenUnavailable};
use tether_wire::{AgentKind, ApiError, Clock, ErrorCode};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::status::human;

pub mod acme;
pub mod actions;
pub mod admin_tokens;
pub mod agents;
pub mod auth;
pub mod bundles;
pub mod certs;
pub mod checkin;
pub mod defs;
pub mod enroll;
pub mod fleet;
pub mod health;
pub mod issuance;
pub mod outage;
pub mod policies;
pub mod renewal;
pub mod retention;
pub mod revocation;
pub mod rollouts;
pub mod tasks;
pub mod tokens;
pub mod validate;

/// What every service needs: the store, the clock, the settings and the
/// definitions repository.
#[derive(Clone)]
pub struct Ctx {
    pub store: Arc<dyn Store>,
    /// The TUF repository at `data_dir/defs`.
    pub defs: tether_defs_publish::repo::Repo,
    /// The repository's newest root, kept in memory so that enrollment,
    /// which anyone may call, never waits on the repository's lock or disk.
    pub defs_root: Arc<defs::PinnedRoot>,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<Settings>,
    pub policies: Arc<policies::PolicyCache>,
    /// Every group's rollout, read like policies (see [`rollouts`]).
    pub rollouts: Arc<rollouts::RolloutCache>,
    /// The control plane's own outages (see [`outage`]).
    pub outages: Arc<outage::Tracker>,
    pub limits: Arc<crate::limits::Limits>,
    /// The task polls this server holds (long-poll delivery).
    pub tasks: Arc<tasks::hub::TaskHub>,
    /// The built-in CA's online intermediate, when it is initialized and
    /// its key opened (`issuance::load`).
    pub ca: Option<Arc<tether_pki::IssuingCa>>,
    /// The KEK for ACME accounts and order handles (see [`acme`]).
    pub acme: Arc<acme::Acme>,
    /// The CRL this server signed last (see [`revocation`]).
    pub crl: Arc<revocation::CrlCache>,
    /// The singleton jobs this server runs now (see [`crate::singleton`]).
    pub singletons: Arc<crate::singleton::Singletons>,
    /// What `GET /metrics` exports (see [`crate::metrics`]).
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Ctx {
    /// Builds the context, reading the repository's root once.
    pub async fn new(
        store: Arc<dyn Store>,
        defs: tether_defs_publish::repo::Repo,
        clock: Arc<dyn Clock>,
        settings: Settings,
        limits: crate::limits::LimitSettings,
        instance: &str,
    ) -> Result<Ctx, ServiceError> {
        let defs_root = Arc::new(defs::PinnedRoot::load(&defs).await?);
        let started = clock.now();
        let settings_tasks = settings.tasks.clone();
        let singletons = Arc::new(crate::singleton::Singletons::new(
            instance,
            std::time::Duration::from_secs(u64::from(settings.singleton_lease_secs)),
            &defs.id().await?,
        ));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        store.observe_checkin_batches(metrics.batch_observer());
        Ok(Ctx {
            singletons,
            metrics,
            store,
            defs,
            defs_root,
            clock,
            settings: Arc::new(settings),
            policies: Default::default(),
            rollouts: Default::default(),
            outages: Arc::new(outage::Tracker::new(instance)),
            limits: Arc::new(crate::limits::Limits::new(limits)),
            tasks: tasks::hub(
                settings_tasks.max_pollers,
                settings_tasks.poll_max_wait_secs,
                settings_tasks.lease_grace_secs,
                started,
            ),
            ca: None,
            acme: Arc::new(acme::Acme::default()),
            crl: revocation::cache(),
        })
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("backend", &self.store.backend())
            .field("settings", &self.settings)
            .finish()
    }
}

/// The parts of the configuration the services read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub current_agent_version: String,
    pub inactive_grace_secs: u32,
    pub max_body_bytes: usize,
    /// See [`crate::ServerConfig::defs_grace_secs`].
    pub defs_grace_secs: u32,
    /// See [`crate::ServerConfig::defs_max_publish_bytes`].
    pub defs_max_publish_bytes: u64,
    /// See [`crate::ServerConfig::store_wait_secs`].
    pub store_wait_secs: u32,
    /// See [`crate::ServerConfig::stream_min_bytes_per_sec`].
    pub stream_min_bytes_per_sec: u32,
    /// See [`crate::ServerConfig::transitions_retention_days`].
    pub transitions_retention_days: u32,
    /// See [`crate::ServerConfig::actions_retention_days`].
    pub actions_retention_days: u32,
    /// See [`crate::ServerConfig::audit_retention_days`].
    pub audit_retention_days: u32,
    /// How this server holds task polls.
    pub tasks: TaskSettings,
    /// See [`crate::ServerConfig::singleton_lease_secs`].
    pub singleton_lease_secs: u32,
}

/// See [`crate::ServerConfig::task_poll_max_wait_secs`],
/// [`crate::ServerConfig::max_task_pollers`] and
/// [`crate::ServerConfig::task_lease_grace_secs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSettings {
    pub max_pollers: usize,
    pub poll_max_wait_secs: u32,
    pub lease_grace_secs: u32,
}

impl Settings {
    /// The services' part of the configuration.
    pub fn from_config(config: &crate::ServerConfig) -> Settings {
        Settings {
            current_agent_version: config.effective_agent_version(),
            inactive_grace_secs: config.inactive_grace_secs,
            max_body_bytes: config.max_body_bytes,
            defs_grace_secs: config.defs_grace_secs,
            defs_max_publish_bytes: config.defs_max_publish_bytes,
            store_wait_secs: config.store_wait_secs,
            stream_min_bytes_per_sec: config.stream_min_bytes_per_sec,
            transitions_retention_days: config.transitions_retention_days,
            actions_retention_days: config.actions_retention_days,
            audit_retention_days: config.audit_retention_days,
            tasks: TaskSettings {
                max_pollers: config.effective_task_pollers(),
                poll_max_wait_secs: config.task_poll_max_wait_secs,
                lease_grace_secs: config.task_lease_grace_secs,
            },
            singleton_lease_secs: config.singleton_lease_secs,
        }
    }
}

impl crate::limits::LimitSettings {
    pub fn from_config(config: &crate::ServerConfig) -> Self {
        crate::limits::LimitSettings {
            enroll_failures_per_minute: config.enroll_failures_per_minute,
            defs_streams_per_address: config.defs_streams_per_address,
            bundle_uploads_concurrent: config.bundle_uploads_concurrent,
            bundle_uploads_per_agent_per_hour: config.bundle_uploads_per_agent_per_hour,
        }
    }
}

/// Runs a store-bound step of an agent's request within
/// [`Settings::store_wait_secs`]: a store that hangs is answered 503 with
/// Retry-After instead of holding the agent (and a task) forever.
pub async fn within_store_wait<T>(
    ctx: &Ctx,
    step: impl std::future::Future<Output = Result<T, ServiceError>>,
) -> Result<T, ServiceError> {
    let secs = ctx.settings.store_wait_secs;
    tokio::time::timeout(std::time::Duration::from_secs(u64::from(secs)), step)
        .await
        .unwrap_or(Err(ServiceError::StoreTimeout { secs }))
}

impl Ctx {
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}

/// Why a service refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error("enrollment token is not known to this server")]
    TokenUnknown,
    #[error("token is valid from {}; server time is {} (in {})", rfc(*not_before), rfc(*now), human(*not_before - *now))]
    TokenNotYetValid {
        not_before: OffsetDateTime,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    },
    #[error("token expired at {}; server time is {} ({} ago)", rfc(*expires_at), rfc(*now), human(*now - *expires_at))]
    TokenExpired {
        not_before: OffsetDateTime,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    },
    #[error("token was revoked{}", revoked_at.map(|t| format!(" at {}", rfc(t))).unwrap_or_default())]
    TokenRevoked {
        revoked_at: Option<OffsetDateTime>,
        not_before: OffsetDateTime,
        expires_at: OffsetDateTime,
    },
    #[error("token has been used {uses} times; its limit is {max_uses}")]
    TokenExhausted {
        uses: u32,
        max_uses: u32,
        not_before: OffsetDateTime,
        expires_at: OffsetDateTime,
    },
    #[error("agent asked for kind {asked}, but this token allows only {allowed}")]
    TokenKindNotAllowed {
        asked: AgentKind,
        allowed: AgentKind,
    },
    #[error("{0}")]
    CredentialRejected(&'static str),
    #[error("agent {agent_id} is enrolled but not approved yet (enrolled at {})", rfc(*enrolled_at))]
    PendingApproval {
        agent_id: uuid::Uuid,
        enrolled_at: OffsetDateTime,
    },
    #[error("{0}")]
    AdminRejected(&'static str),
    #[error("field {field}: got {observed}; expected {expected}")]
    InvalidField {
        field: &'static str,
        observed: String,
        expected: String,
    },
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid bundle: {0}")]
    BundleInvalid(String),
    #[error("the store failed: {0}")]
    Store(#[source] StoreError),
    #[error("the server's database did not answer within {secs} s")]
    StoreTimeout { secs: u32 },
    #[error("{what}; retry in {retry_after} s")]
    Throttled { what: String, retry_after: u32 },
    #[error("bundle {bundle_id} was not uploaded by this agent")]
    BundleNotOwned { bundle_id: uuid::Uuid },
    #[error("admin credential {name:?} ({id}) is the last one not revoked")]
    LastAdminCredential { id: uuid::Uuid, name: String },
    #[error("the admin credential {name:?} was revoked at {}", rfc(*revoked_at))]
    AdminCredentialRevoked {
        name: String,
        revoked_at: OffsetDateTime,
    },
    #[error("an admin credential named {0:?} exists and is not revoked")]
    AdminTokenNameTaken(String),
    #[error("definitions: {0}")]
    Defs(#[source] tether_defs_publish::repo::RepoError),
    #[error("task spec: {0}")]
    TaskSpec(#[source] tether_tasks::SpecError),
    #[error("discovery spec: {0}")]
    ScanSpec(#[source] tether_scan::SpecError),
    #[error("task {id}: {refusal}")]
    TaskRefused {
        id: uuid::Uuid,
        refusal: tether_tasks::Refusal,
    },
    #[error("task target: {0}")]
    TaskTarget(String),
    #[error("rejection reason: {0}")]
    RejectReason(String),
    #[error("require_approval: a {0} task cannot wait for an approval; only deploy tasks do")]
    ApprovalNotApplicable(tether_wire::TaskKind),
    #[error("task schedule: {0}")]
    TaskSchedule(#[source] tether_tasks::schedule::ScheduleError),
    #[error(
        "this server holds {held} task polls, its limit (max_task_pollers = {max}); poll again later"
    )]
    PollersFull { held: usize, max: usize },
    #[error("site: {0}")]
    SiteInvalid(String),
    #[error("deploy spec: {0}")]
    DeploySpec(#[source] tether_deploy::SpecError),
    #[error("certificate signing request: {0}")]
    Csr(#[source] tether_pki::CsrError),
    #[error("the built-in CA cannot issue: {0}")]
    CaUnavailable(String),
    /// A renewal's refusal or reason, with its own code (86xx).
    #[error("renewal: {1}")]
    Renewal(ErrorCode, String),
    /// ACME issuance, with its own code (842x–843x).
    #[error("ACME: {1}")]
    Acme(ErrorCode, String),
    /// Agent releases and rollouts, with their own code (880x–881x).
    #[error("rollout: {1}")]
    Rollout(ErrorCode, String),
    #[error("{0} was not issued by this control plane's built-in CA")]
    RevokeUnknownCert(String),
    #[error(
        "revocation reason {0:?} is not one of unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn"
    )]
    RevokeReason(String),
    #[error("the built-in CA cannot publish revocation: {0}")]
    RevocationUnavailable(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Store(e)
    }
}

/// RFC 3339 for messages; falls back to the debug form, which cannot fail.
pub fn rfc(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| format!("{t:?}"))
}

impl ServiceError {
    /// A shorthand for [`ServiceError::InvalidField`].
    pub fn invalid(
        field: &'static str,
        observed: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        ServiceError::InvalidField {
            field,
            observed: observed.to_string(),
            expected: expected.into(),
        }
    }

    /// Maps a store refusal of an enrollment to the token error it means.
    pub fn from_token_unavailable(
        why: TokenUnavailable,
        token: &tether_store::TokenRecord,
    ) -> Self {
        match why {
            TokenUnavailable::Revoked => ServiceError::TokenRevoked {
                revoked_at: token.revoked_at,
                not_before: token.not_before,
                expires_at: token.expires_at,
            },
            TokenUnavailable::Exhausted => {
                let max_uses = token.max_uses.unwrap_or(token.uses);
                ServiceError::TokenExhausted {
                    uses: max_uses,
                    max_uses,
                    not_before: token.not_before,
                    expires_at: token.expires_at,
                }
            }
        }
    }

    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::TokenUnknown => ErrorCode::TokenUnknown,
            ServiceError::TokenNotYetValid { .. } => ErrorCode::TokenNotYetValid,
            ServiceError::TokenExpired { .. } => ErrorCode::TokenExpired,
            ServiceError::TokenRevoked { .. } => ErrorCode::TokenRevoked,
            ServiceError::TokenExhausted { .. } => ErrorCode::TokenExhausted,
            ServiceError::TokenKindNotAllowed { .. } => ErrorCode::TokenKindNotAllowed,
            ServiceError::CredentialRejected(_) => ErrorCode::AgentCredentialRejected,
            ServiceError::PendingApproval { .. } => ErrorCode::AgentPendingApproval,
            ServiceError::AdminRejected(_) => ErrorCode::AdminCredentialRejected,
            ServiceError::InvalidField { .. } => ErrorCode::InvalidField,
            ServiceError::NotFound { .. } => ErrorCode::NotFound,
            ServiceError::Conflict(_) => ErrorCode::Conflict,
            ServiceError::BundleInvalid(_) => ErrorCode::BundleInvalid,
            ServiceError::Store(StoreError::NotFound) => ErrorCode::NotFound,
            ServiceError::Store(StoreError::Conflict(_)) => ErrorCode::Conflict,
            ServiceError::Store(StoreError::Corrupt(_)) => ErrorCode::Internal,
            ServiceError::Store(_) => ErrorCode::StoreUnavailable,
            // The code agents already know: a 503 with Retry-After.
            ServiceError::StoreTimeout { .. } => ErrorCode::StoreUnavailable,
            ServiceError::Throttled { .. } => ErrorCode::RateLimited,
            ServiceError::BundleNotOwned { .. } => ErrorCode::BundleNotOwned,
            ServiceError::LastAdminCredential { .. } => ErrorCode::LastAdminCredential,
            ServiceError::AdminCredentialRevoked { .. } => ErrorCode::AdminCredentialRevoked,
            ServiceError::AdminTokenNameTaken(_) => ErrorCode::AdminTokenNameTaken,
            ServiceError::Defs(e) => e.code(),
            ServiceError::TaskSpec(_) => ErrorCode::TaskSpecInvalid,
            ServiceError::ScanSpec(e) => e.code,
            ServiceError::TaskRefused { refusal, .. } => match refusal {
                tether_tasks::Refusal::StaleEpoch { .. } => ErrorCode::TaskStaleEpoch,
                tether_tasks::Refusal::NotLeased { .. } => ErrorCode::TaskNotLeased,
                tether_tasks::Refusal::Final { .. } => ErrorCode::TaskFinal,
                tether_tasks::Refusal::NotRetriable { .. } => ErrorCode::TaskNotRetriable,
                tether_tasks::Refusal::ApprovalNotApplicable { .. } => {
                    ErrorCode::ApprovalNotApplicable
                }
                tether_tasks::Refusal::NotHeld { .. } => ErrorCode::TaskNotHeld,
                tether_tasks::Refusal::AlreadyApproved { .. } => ErrorCode::TaskAlreadyApproved,
            },
            ServiceError::RejectReason(_) => ErrorCode::RejectReasonInvalid,
            ServiceError::ApprovalNotApplicable(_) => ErrorCode::ApprovalNotApplicable,
            ServiceError::TaskTarget(_) => ErrorCode::TaskTargetInvalid,
            ServiceError::TaskSchedule(_) => ErrorCode::TaskScheduleInvalid,
            ServiceError::PollersFull { .. } => ErrorCode::TaskPollersFull,
            ServiceError::SiteInvalid(_) => ErrorCode::SiteInvalid,
            ServiceError::DeploySpec(_) => ErrorCode::DeploySpecInvalid,
            ServiceError::Csr(e) => e.code(),
            ServiceError::CaUnavailable(_) => ErrorCode::CaNotInitialized,
            ServiceError::Renewal(code, _) => *code,
            ServiceError::Acme(code, _) => *code,
            ServiceError::Rollout(code, _) => *code,
            ServiceError::RevokeUnknownCert(_) => ErrorCode::RevokeUnknownCert,
            ServiceError::RevokeReason(_) => ErrorCode::RevokeReasonInvalid,
            ServiceError::RevocationUnavailable(_) => ErrorCode::RevocationUnavailable,
        }
    }

    /// The JSON body the API answers with.
    pub fn to_api_error(&self, now: OffsetDateTime) -> ApiError {
        let mut e = ApiError::new(self.code(), self.to_string(), now);
        match self {
            ServiceError::TokenNotYetValid {
                not_before,
                expires_at,
                ..
            }
            | ServiceError::TokenExpired {
                not_before,
                expires_at,
                ..
            }
            | ServiceError::TokenRevoked {
                not_before,
                expires_at,
                ..
            }
            | ServiceError::TokenExhausted {
                not_before,
                expires_at,
                ..
            } => {
                e.not_before = Some(*not_before);
                e.expires_at = Some(*expires_at);
            }
            // Store details can name tables or hosts; the log has them, the
            // client gets the catalog's sentence.
            ServiceError::Store(_) => e.message = self.code().problem().to_owned(),
            // Repository failures name paths on the server; the log has them.
            ServiceError::Defs(_) if self.code() == ErrorCode::Internal => {
                e.message = format!(
                    "the definitions repository failed at {}; see the server log",
                    rfc(now)
                )
            }
            _ => {}
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    #[test]
    fn window_refusals_say_observed_and_expected_times() {
        let now = datetime!(2026-05-17 12:00 UTC);
        let e = ServiceError::TokenNotYetValid {
            not_before: now + Duration::minutes(4),
            expires_at: now + Duration::hours(1),
            now,
        };
        assert_eq!(
            e.to_string(),
            "token is valid from 2026-05-17T12:04:00Z; server time is 2026-05-17T12:00:00Z (in 4 min)"
        );
        let api = e.to_api_error(now);
        assert_eq!(api.code, ErrorCode::TokenNotYetValid);
        assert_eq!(api.not_before, Some(now + Duration::minutes(4)));
        assert_eq!(api.server_time, now);
        let e = ServiceError::TokenExpired {
            not_before: now - Duration::hours(2),
            expires_at: now - Duration::hours(1),
            now,
        };
        assert_eq!(
            e.to_string(),
            "token expired at 2026-05-17T11:00:00Z; server time is 2026-05-17T12:00:00Z (60 min ago)"
        );
    }

    #[test]
    fn store_failures_hide_details_from_clients() {
        let e = ServiceError::Store(StoreError::Unavailable(
            "connection to db.internal:5432 refused".into(),
        ));
        let api = e.to_api_error(datetime!(2026-05-17 12:00 UTC));
        assert_eq!(api.code, ErrorCode::StoreUnavailable);
        assert!(!api.message.contains("db.internal"));
    }
}
