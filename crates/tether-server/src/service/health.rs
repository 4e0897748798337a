//! `GET /health`: a real round trip to the store.

use tether_wire::{Health, StoreHealth};
use tracing::warn;

use super::Ctx;

/// The health report; `store.ok` tells the caller which status to answer.
pub async fn check(ctx: &Ctx) -> Health {
    let wait = std::time::Duration::from_secs(u64::from(ctx.settings.store_wait_secs));
    // A store that stops answering makes the health check say so in time,
    // rather than hang the caller (a load balancer's probe, say).
    let ping = tokio::time::timeout(wait, ctx.store.ping())
        .await
        .unwrap_or_else(|_| {
            Err(tether_store::StoreError::Unavailable(format!(
                "no answer to a ping within {} s",
                wait.as_secs()
            )))
        });
    let (ok, error) = match ping {
        Ok(()) => (true, None),
        Err(e) => {
            super::outage::observe(ctx, &e);
            warn!(error = %e, "health check: the store failed its ping");
            (
                false,
                Some(
                    tether_wire::ErrorCode::StoreUnavailable
                        .problem()
                        .to_owned(),
                ),
            )
        }
    };
    Health {
        service: "tether".to_owned(),
        status: if ok { "ok" } else { "degraded" }.to_owned(),
        version: tether_wire::VERSION.to_owned(),
        store: StoreHealth {
            backend: ctx.store.backend().to_owned(),
            ok,
            error,
        },
        server_time: ctx.now(),
        jobs: ctx.singletons.held_jobs(),
    }
}
