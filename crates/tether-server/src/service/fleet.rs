//! The fleet diagnosis service: reads agents a page at a time, at most
//! `limit` of them, and hands them to the pure `crate::fleet`.

use std::cmp::Ordering;

use tether_store::AgentFilter;
use tether_wire::FleetDiagnosis;

use super::{Ctx, ServiceError, agents};
use crate::fleet::{AgentView, diagnose};
use crate::status;

/// Agents read when the request names no limit.
pub const DEFAULT_LIMIT: u32 = 20_000;
/// The most agents one request may read.
pub const MAX_LIMIT: u32 = 100_000;

/// The diagnosis of the oldest `limit` agents (`truncated` when there are
/// more).
pub async fn diagnosis(ctx: &Ctx, limit: u32) -> Result<FleetDiagnosis, ServiceError> {
    let limit = limit.clamp(1, MAX_LIMIT) as usize;
    let current = ctx.settings.current_agent_version.clone();
    let mut pages = agents::Pages::new(AgentFilter::default());
    let mut views = Vec::new();
    let mut truncated = false;
    while let Some(page) = pages.next(ctx).await? {
        for a in &page {
            if views.len() == limit {
                truncated = true;
                break;
            }
            let outdated = status::compare_versions(&a.version, &current) == Some(Ordering::Less);
            views.push(AgentView::from_record(a, outdated));
        }
        if truncated {
            break;
        }
    }
    Ok(diagnose(&views, ctx.now(), &current, truncated))
}
