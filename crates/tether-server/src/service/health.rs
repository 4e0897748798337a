//! `GET /health`: a real round trip to the store.

use tether_wire::{Health, StoreHealth};
use tracing::warn;

use super::Ctx;

/// The health report; `store.ok` tells the caller which status to answer.
pub async fn check(ctx: &Ctx) -> Health {
    let (ok, error) = match ctx.store.ping().await {
        Ok(()) => (true, None),
        Err(e) => {
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
    }
}
