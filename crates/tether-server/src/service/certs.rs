//! The discovery inventory: discover results become certificates,
//! deduplicated by fingerprint, and the locations where each was seen.

use std::collections::BTreeSet;

use serde_json::Value;
use tether_store::{
    AgentRecord, CertFilter, CertRecord, Cursor, ScanId, Seen, SeenCert, Sighting, TaskSnapshot,
};
use tether_wire::{CertDetail, CertFacts, CertInfo, MAX_CERT_LOCATIONS};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::{Ctx, ServiceError};

/// The longest SNI name kept (a DNS name is at most 253 characters).
const MAX_SNI: usize = 253;

/// The verdict names a listing filters on (`tether_scan::Verdict`).
pub const VERDICTS: [&str; 10] = [
    "expired",
    "not_yet_valid",
    "self_signed",
    "unknown_issuer",
    "incomplete_chain",
    "name_mismatch",
    "weak_key",
    "weak_signature",
    "unparsable",
    "unverifiable",
];

/// The furthest an `expiring` filter looks ahead, in days.
pub const MAX_EXPIRING_DAYS: i64 = 36_500;

/// Parses a listing's filters: `expiring` (`30d` or `30`: certificates
/// whose validity ends within that many days, expired ones included) and
/// `verdict` (one of [`VERDICTS`]).
pub fn filter(
    ctx: &Ctx,
    expiring: Option<&str>,
    verdict: Option<&str>,
) -> Result<CertFilter, ServiceError> {
    let expiring_before = expiring
        .map(|text| {
            let days = text.strip_suffix('d').unwrap_or(text);
            match days.parse::<i64>() {
                Ok(n) if (0..=MAX_EXPIRING_DAYS).contains(&n) => {
                    Ok(ctx.now() + time::Duration::days(n))
                }
                _ => {
                    let shown: String = text.chars().take(40).collect();
                    Err(ServiceError::invalid(
                        "expiring",
                        format!("{shown:?}"),
                        format!("a number of days from 0 to {MAX_EXPIRING_DAYS}, like 30d"),
                    ))
                }
            }
        })
        .transpose()?;
    let verdict = verdict
        .map(|v| {
            if VERDICTS.contains(&v) {
                Ok(v.to_owned())
            } else {
                let shown: String = v.chars().take(40).collect();
                Err(ServiceError::invalid(
                    "verdict",
                    format!("{shown:?}"),
                    format!("one of {}", VERDICTS.join(", ")),
                ))
            }
        })
        .transpose()?;
    Ok(CertFilter {
        expiring_before,
        verdict,
    })
}

/// Normalizes a fingerprint given by an admin: `sha256:` then 64 hex digits
/// (the prefix, case and `:` separators between bytes are optional).
pub fn fingerprint(text: &str) -> Result<String, ServiceError> {
    let invalid = || {
        let shown: String = text.chars().take(80).collect();
        ServiceError::invalid(
            "fingerprint",
            format!("{shown:?}"),
            "sha256:<64 hex digits>, as `tether certs list` shows it",
        )
    };
    let hex = text
        .strip_prefix("sha256:")
        .or_else(|| text.strip_prefix("SHA256:"))
        .unwrap_or(text);
    let hex: String = hex.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// Whether a fingerprint an agent reported has the scanner's exact form.
fn well_formed(fp: &str) -> bool {
    fp.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The window an agent's observation times are kept within: not before
/// the task existed, not after the result arrived. An agent's clock that is
/// off (or lies) moves its sightings at most to these edges.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub earliest: OffsetDateTime,
    pub latest: OffsetDateTime,
}

impl Window {
    /// The observation time of a result: the agent's time of the probe,
    /// kept in the window; the arrival time for an agent that predates it.
    fn at(&self, observed: Option<OffsetDateTime>) -> OffsetDateTime {
        observed.map_or(self.latest, |t| t.clamp(self.earliest, self.latest))
    }
}

/// The sightings in one chunk of discover results (a JSON array of
/// `tether_scan::EndpointResult`; the summary chunk is an object and holds
/// none). Items that do not read as results, or whose certificate is not
/// well formed, are skipped and counted.
pub fn sightings(agent_id: uuid::Uuid, items: &Value, window: Window) -> (Vec<Sighting>, usize) {
    let Some(list) = items.as_array() else {
        return (Vec::new(), 0);
    };
    let mut out = Vec::with_capacity(list.len());
    let mut skipped = 0;
    for item in list {
        match sighting(agent_id, item, window) {
            Some(Some(s)) => out.push(s),
            Some(None) => {}
            None => skipped += 1,
        }
    }
    (out, skipped)
}

/// `None`: unreadable; `Some(None)`: an outcome that says nothing about the
/// location (unresolved, not scanned, a chain that could not be read).
fn sighting(agent_id: uuid::Uuid, item: &Value, window: Window) -> Option<Option<Sighting>> {
    use tether_scan::Outcome;
    let r: tether_scan::EndpointResult = serde_json::from_value(item.clone()).ok()?;
    let sni = match r.endpoint.sni {
        Some(s) if s.len() > MAX_SNI || s.chars().any(char::is_control) => return None,
        other => other,
    };
    let address = std::net::SocketAddr::new(r.endpoint.ip, r.endpoint.port).to_string();
    let seen = match &r.outcome {
        Outcome::Filtered { .. } => Seen::Silent,
        Outcome::Refused | Outcome::NotTls { .. } => Seen::NoTls,
        Outcome::TlsFailed { chain: None, .. } => Seen::NoTls,
        Outcome::Unresolved { .. } | Outcome::NotScanned { .. } => return Some(None),
        other => {
            let Some(chain) = other.chain() else {
                return Some(None);
            };
            let Some(leaf) = chain.certs.first() else {
                return Some(None);
            };
            if !well_formed(&leaf.fingerprint) {
                return None;
            }
            let verdicts: BTreeSet<&str> = leaf
                .verdicts
                .iter()
                .chain(&chain.verdicts)
                .map(|v| v.as_str())
                .collect();
            Seen::Cert(SeenCert {
                fingerprint: leaf.fingerprint.clone(),
                facts: serde_json::to_string(leaf).ok()?,
                chain: serde_json::to_string(&chain.certs).ok()?,
                not_after: leaf.not_after,
                verdicts: verdicts.into_iter().map(str::to_owned).collect(),
            })
        }
    };
    Some(Some(Sighting {
        address,
        sni,
        agent_id,
        at: window.at(r.observed_at),
        seen,
    }))
}

/// Records the sightings of one chunk of a discover task's results. Run for
/// every delivery the task accepts, before the chunk is stored: recording
/// is idempotent (a chunk delivered twice changes only last-seen times), so
/// a server that fails between the two writes loses nothing. Certificates
/// are recorded at once; absences wait for the scan to complete
/// ([`complete`]).
pub async fn ingest(
    ctx: &Ctx,
    agent: &AgentRecord,
    task: &TaskSnapshot,
    epoch: u64,
    items: &Value,
) -> Result<(), ServiceError> {
    let window = Window {
        earliest: task.created_at,
        latest: ctx.now(),
    };
    let (found, skipped) = sightings(agent.id, items, window);
    if skipped > 0 {
        warn!(agent_id = %agent.id, skipped, "discover results the inventory could not read");
    }
    if found.is_empty() {
        return Ok(());
    }
    let scan = ScanId {
        task_id: task.id,
        epoch,
    };
    ctx.store.record_sightings(scan, &found).await?;
    Ok(())
}

/// The attempt `epoch` of a discover task ended. "Gone" is decided per
/// completed scan, never per chunk: when the scan completed (outcome ok),
/// a location it found refused or without TLS is gone, and one it found
/// silent is gone if the previous completed scan found it silent too; an
/// attempt that failed or was cancelled marks nothing gone.
pub async fn complete(
    ctx: &Ctx,
    task: &TaskSnapshot,
    epoch: u64,
    completed: bool,
) -> Result<(), ServiceError> {
    if !completed {
        ctx.store.abandon_scan(task.id).await?;
        return Ok(());
    }
    let settled = ctx
        .store
        .complete_scan(ScanId {
            task_id: task.id,
            epoch,
        })
        .await?;
    if settled.gone > 0 || settled.silent > 0 {
        info!(task_id = %task.id, epoch, gone = settled.gone, silent = settled.silent, "a completed scan settled its absences");
    }
    Ok(())
}

/// One page of the inventory, and where the next page starts.
pub async fn list(
    ctx: &Ctx,
    filter: &CertFilter,
    after: Option<Cursor>,
    limit: u32,
) -> Result<(Vec<CertInfo>, Option<Cursor>), ServiceError> {
    let rows = ctx.store.list_certs(filter, after.as_ref(), limit).await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(CertRecord::cursor))
        .flatten();
    Ok((rows.into_iter().map(|r| r.info).collect(), next))
}

/// One certificate with its chain and locations.
pub async fn show(ctx: &Ctx, text: &str) -> Result<CertDetail, ServiceError> {
    let fp = fingerprint(text)?;
    let record = ctx
        .store
        .cert(&fp)
        .await?
        .ok_or_else(|| ServiceError::NotFound {
            what: "certificate",
            id: fp.clone(),
        })?;
    let chain: Vec<CertFacts> = serde_json::from_str(&record.chain).map_err(|e| {
        ServiceError::Store(tether_store::StoreError::Corrupt(format!(
            "certs.chain of row {fp:?}: {e}"
        )))
    })?;
    let seen_at = ctx.store.cert_locations(&fp, MAX_CERT_LOCATIONS).await?;
    Ok(CertDetail {
        info: record.info,
        chain,
        seen_at,
    })
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn fingerprints_are_normalized_or_refused() {
        let hex = "AB".repeat(32);
        let want = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            fingerprint(&format!("sha256:{hex}")).ok(),
            Some(want.clone())
        );
        assert_eq!(fingerprint(&hex).ok(), Some(want.clone()));
        let colons: Vec<String> = (0..32).map(|_| "ab".to_owned()).collect();
        assert_eq!(fingerprint(&colons.join(":")).ok(), Some(want));
        let short = "a".repeat(63);
        let long = "a".repeat(65);
        for bad in [
            "",
            "sha256:",
            "sha256:zz",
            short.as_str(),
            long.as_str(),
            "sha1:00",
        ] {
            assert!(fingerprint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hostile_items_are_skipped_not_fatal() {
        let agent = uuid::Uuid::new_v4();
        let items = serde_json::json!([
            {"ip": "10.0.0.1", "port": 443, "sni": null, "outcome": "refused", "elapsed_ms": 3},
            {"ip": "not an ip", "port": 443, "outcome": "refused", "elapsed_ms": 3},
            {"ip": "10.0.0.2", "port": 443, "sni": "a\u{7}b", "outcome": "refused", "elapsed_ms": 3},
            {"ip": "10.0.0.3", "port": 443, "sni": null, "outcome": "not_scanned", "reason": "cancelled", "elapsed_ms": 0},
            42
        ]);
        let (found, skipped) = sightings(agent, &items, window());
        assert_eq!(skipped, 3);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].address, "10.0.0.1:443");
        assert_eq!(found[0].seen, Seen::NoTls);
        let (none, skipped) = sightings(agent, &serde_json::json!({"summary": {}}), window());
        assert!(none.is_empty() && skipped == 0);
    }

    fn window() -> Window {
        Window {
            earliest: datetime!(2026-05-17 10:00 UTC),
            latest: datetime!(2026-05-17 12:00 UTC),
        }
    }

    #[test]
    fn the_observation_time_is_the_agents_kept_in_the_window() {
        let agent = uuid::Uuid::new_v4();
        let item = |at: Option<&str>| {
            let mut v = serde_json::json!(
                {"ip": "10.0.0.1", "port": 443, "sni": null, "outcome": "filtered", "detail": "timed out", "elapsed_ms": 3}
            );
            if let Some(at) = at {
                v["observed_at"] = serde_json::json!(at);
            }
            serde_json::json!([v])
        };
        let at = |text: Option<&str>| {
            let (found, skipped) = sightings(agent, &item(text), window());
            assert_eq!((found.len(), skipped), (1, 0), "{text:?}");
            assert_eq!(found[0].seen, Seen::Silent);
            found[0].at
        };
        assert_eq!(
            at(Some("2026-05-17T11:15:30Z")),
            datetime!(2026-05-17 11:15:30 UTC),
            "the probe's time, not the arrival"
        );
        assert_eq!(
            at(None),
            window().latest,
            "an older agent: the arrival time"
        );
        assert_eq!(
            at(Some("2099-01-01T00:00:00Z")),
            window().latest,
            "never in the future"
        );
        assert_eq!(
            at(Some("1970-01-01T00:00:00Z")),
            window().earliest,
            "never before the task"
        );
        let (found, skipped) = sightings(agent, &item(Some("yesterday")), window());
        assert_eq!(
            (found.len(), skipped),
            (0, 1),
            "an unreadable time is skipped"
        );
    }
}
