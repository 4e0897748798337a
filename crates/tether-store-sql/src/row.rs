//! Decoding stored rows into records, written once for both backends.
//!
//! Each backend's row type implements the tiny [`RawRow`] (three primitive
//! getters); everything above it (timestamps, UUIDs, enums, JSON) is decoded
//! here, and any value that does not decode becomes [`StoreError::Corrupt`]
//! naming the table, the column and the row's key, never a panic.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tether_store::{AgentRecord, Overdue, PolicyRecord, StoreError, TokenRecord, TokenUnavailable};
use tether_wire::{AgentStatus, DefsVersion, Transition};
use time::OffsetDateTime;
use uuid::Uuid;

/// The primitive getters both backends' rows provide. `None` is SQL NULL.
pub(crate) trait RawRow {
    fn int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    fn text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    fn boolean(&self, column: &str) -> Result<Option<bool>, sqlx::Error>;
}

macro_rules! impl_raw_row {
    ($row:ty) => {
        impl RawRow for $row {
            fn int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
                sqlx::Row::try_get::<Option<i64>, _>(self, column)
            }
            fn text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
                sqlx::Row::try_get::<Option<String>, _>(self, column)
            }
            fn boolean(&self, column: &str) -> Result<Option<bool>, sqlx::Error> {
                sqlx::Row::try_get::<Option<bool>, _>(self, column)
            }
        }
    };
}

impl_raw_row!(sqlx::sqlite::SqliteRow);
impl_raw_row!(sqlx::postgres::PgRow);

/// Converts a timestamp to the stored form, unix milliseconds. Every
/// `OffsetDateTime` the `time` crate can represent fits; the saturation is
/// only there so that no input can panic.
pub(crate) fn to_ms(at: OffsetDateTime) -> i64 {
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

/// Serializes a JSON column. The types stored this way (host facts,
/// definitions, last errors) are plain data whose serialization cannot fail;
/// should it ever, the caller gets a `Conflict` naming the column rather than
/// a panic.
pub(crate) fn to_json<T: Serialize>(value: &T, column: &str) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Conflict(format!("cannot encode {column} as JSON: {e}")))
}

/// Reads one row of one table, attaching the table, column and key to every
/// decoding failure.
struct Fields<'r> {
    row: &'r dyn RawRow,
    table: &'static str,
    key: String,
}

impl<'r> Fields<'r> {
    /// Starts reading a row keyed by `key_column`. A key that cannot be read
    /// is itself reported as corruption.
    fn new(
        row: &'r dyn RawRow,
        table: &'static str,
        key_column: &'static str,
    ) -> Result<Self, StoreError> {
        let mut fields = Fields {
            row,
            table,
            key: String::from("(unreadable key)"),
        };
        fields.key = fields.text(key_column)?;
        Ok(fields)
    }

    /// Reads a row whose key the caller already knows (for example the agent
    /// id of its transitions).
    fn keyed(row: &'r dyn RawRow, table: &'static str, key: &str) -> Self {
        Fields {
            row,
            table,
            key: key.to_owned(),
        }
    }

    fn corrupt(&self, column: &str, why: impl Display) -> StoreError {
        StoreError::Corrupt(format!(
            "{}.{column} of row {:?}: {why}",
            self.table, self.key
        ))
    }

    fn required<T>(&self, column: &str, value: Option<T>) -> Result<T, StoreError> {
        value.ok_or_else(|| self.corrupt(column, "unexpected NULL"))
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.row.int(column).map_err(|e| self.corrupt(column, e))
    }

    fn int(&self, column: &str) -> Result<i64, StoreError> {
        let value = self.opt_int(column)?;
        self.required(column, value)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.row.text(column).map_err(|e| self.corrupt(column, e))
    }

    fn text(&self, column: &str) -> Result<String, StoreError> {
        let value = self.opt_text(column)?;
        self.required(column, value)
    }

    fn boolean(&self, column: &str) -> Result<bool, StoreError> {
        let value = self
            .row
            .boolean(column)
            .map_err(|e| self.corrupt(column, e))?;
        self.required(column, value)
    }

    fn uuid(&self, column: &str) -> Result<Uuid, StoreError> {
        let text = self.text(column)?;
        Uuid::parse_str(&text)
            .map_err(|e| self.corrupt(column, format!("{e} (found {:?})", excerpt(&text))))
    }

    fn opt_time(&self, column: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        self.opt_int(column)?
            .map(|ms| self.time_from_ms(column, ms))
            .transpose()
    }

    fn time(&self, column: &str) -> Result<OffsetDateTime, StoreError> {
        let ms = self.int(column)?;
        self.time_from_ms(column, ms)
    }

    fn time_from_ms(&self, column: &str, ms: i64) -> Result<OffsetDateTime, StoreError> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map_err(|e| self.corrupt(column, format!("{e} (found {ms} ms)")))
    }

    fn u32(&self, column: &str) -> Result<u32, StoreError> {
        let value = self.int(column)?;
        u32::try_from(value)
            .map_err(|_| self.corrupt(column, format!("{value} is outside 0..={}", u32::MAX)))
    }

    fn u64(&self, column: &str) -> Result<u64, StoreError> {
        let value = self.int(column)?;
        u64::try_from(value).map_err(|_| self.corrupt(column, format!("negative value {value}")))
    }

    fn opt_u32(&self, column: &str) -> Result<Option<u32>, StoreError> {
        self.opt_int(column)?
            .map(|value| {
                u32::try_from(value).map_err(|_| {
                    self.corrupt(column, format!("{value} is outside 0..={}", u32::MAX))
                })
            })
            .transpose()
    }

    fn parsed<T: FromStr<Err = String>>(&self, column: &str) -> Result<T, StoreError> {
        let text = self.text(column)?;
        self.parse_text(column, &text)
    }

    fn opt_parsed<T: FromStr<Err = String>>(&self, column: &str) -> Result<Option<T>, StoreError> {
        self.opt_text(column)?
            .map(|text| self.parse_text(column, &text))
            .transpose()
    }

    fn parse_text<T: FromStr<Err = String>>(
        &self,
        column: &str,
        text: &str,
    ) -> Result<T, StoreError> {
        // The enums' own messages quote the value, so it is trimmed first.
        text.parse()
            .map_err(|_: String| self.corrupt(column, format!("unknown value {:?}", excerpt(text))))
    }

    fn opt_json<T: DeserializeOwned>(&self, column: &str) -> Result<Option<T>, StoreError> {
        self.opt_text(column)?
            .map(|text| {
                serde_json::from_str(&text)
                    .map_err(|e| self.corrupt(column, format!("invalid JSON: {e}")))
            })
            .transpose()
    }

    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, StoreError> {
        let text = self.text(column)?;
        serde_json::from_str(&text).map_err(|e| self.corrupt(column, format!("invalid JSON: {e}")))
    }
}

/// At most 64 characters of a stored value, for error messages.
fn excerpt(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

pub(crate) fn agent(row: &dyn RawRow) -> Result<AgentRecord, StoreError> {
    let f = Fields::new(row, "agents", "id")?;
    Ok(AgentRecord {
        id: f.uuid("id")?,
        name: f.text("name")?,
        kind: f.parsed("kind")?,
        group: f.text("group_name")?,
        policy: f.text("policy")?,
        status: f.parsed("status")?,
        requires_approval: f.boolean("requires_approval")?,
        approved_at: f.opt_time("approved_at")?,
        enrolled_at: f.time("enrolled_at")?,
        last_seen: f.opt_time("last_seen")?,
        deadline_at: f.opt_time("deadline_at")?,
        stopped_at: f.opt_time("stopped_at")?,
        credential_rejected_at: f.opt_time("credential_rejected_at")?,
        external_ip: f.opt_text("external_ip")?,
        version: f.text("version")?,
        facts: f.json("facts")?,
        definitions: f.json::<BTreeMap<String, String>>("definitions")?,
        defs: f.json("defs")?,
        last_errors: f.json("last_errors")?,
        proxy: f.opt_text("proxy")?,
        checkin_interval_secs: f.u32("checkin_interval_secs")?,
        inactive_after_secs: f.u32("inactive_after_secs")?,
        pending_actions: f.u32("pending_actions")?,
        site: f.opt_text("site")?,
    })
}

pub(crate) fn action(row: &dyn RawRow) -> Result<tether_wire::ActionInfo, StoreError> {
    let f = Fields::new(row, "actions", "id")?;
    Ok(tether_wire::ActionInfo {
        id: f.uuid("id")?,
        agent_id: f.uuid("agent_id")?,
        kind: f.json("kind")?,
        state: f.parsed("state")?,
        created_at: f.time("created_at")?,
        delivered_at: f.opt_time("delivered_at")?,
        completed_at: f.opt_time("completed_at")?,
        result: f.opt_json("result")?,
    })
}

/// The state of one action, read to explain why a completion touched nothing.
pub(crate) fn action_state(
    row: &dyn RawRow,
    id: &str,
) -> Result<tether_wire::ActionState, StoreError> {
    Fields::keyed(row, "actions", id).parsed("state")
}

pub(crate) fn bundle(row: &dyn RawRow) -> Result<tether_wire::BundleInfo, StoreError> {
    let f = Fields::new(row, "bundles", "id")?;
    let size = f.int("size_bytes")?;
    Ok(tether_wire::BundleInfo {
        id: f.uuid("id")?,
        agent_id: f.uuid("agent_id")?,
        size_bytes: u64::try_from(size)
            .map_err(|_| f.corrupt("size_bytes", format!("negative size {size}")))?,
        sha256: f.text("sha256")?,
        created_at: f.time("created_at")?,
        verdict: f.opt_json("verdict")?,
    })
}

pub(crate) fn last_doctor(
    row: &dyn RawRow,
) -> Result<Option<tether_wire::DoctorSummary>, StoreError> {
    Fields::new(row, "agents", "id")?.opt_json("last_doctor")
}

/// The recorded status alone, read before a change that records it as `from`.
pub(crate) fn agent_status(row: &dyn RawRow, id: &str) -> Result<AgentStatus, StoreError> {
    Fields::keyed(row, "agents", id).parsed("status")
}

pub(crate) fn agent_id(row: &dyn RawRow) -> Result<Uuid, StoreError> {
    Fields::new(row, "agents", "id")?.uuid("id")
}

pub(crate) fn token(row: &dyn RawRow) -> Result<TokenRecord, StoreError> {
    let f = Fields::new(row, "tokens", "id")?;
    Ok(TokenRecord {
        id: f.uuid("id")?,
        kind: f.parsed("kind")?,
        group: f.text("group_name")?,
        policy: f.text("policy")?,
        not_before: f.time("not_before")?,
        expires_at: f.time("expires_at")?,
        max_uses: f.opt_u32("max_uses")?,
        uses: f.u32("uses")?,
        require_approval: f.boolean("require_approval")?,
        revoked_at: f.opt_time("revoked_at")?,
        created_at: f.time("created_at")?,
    })
}

/// Why a token whose use could not be consumed is unavailable, from its
/// `revoked_at, max_uses, uses` (or `NotFound` when there is no such token).
pub(crate) fn token_unavailable(row: Option<&dyn RawRow>, id: &str) -> StoreError {
    let Some(row) = row else {
        return StoreError::NotFound;
    };
    let f = Fields::keyed(row, "tokens", id);
    match f.opt_int("revoked_at") {
        Ok(Some(_)) => StoreError::TokenUnavailable(TokenUnavailable::Revoked),
        // Not revoked, so the use limit stopped it.
        Ok(None) => StoreError::TokenUnavailable(TokenUnavailable::Exhausted),
        Err(e) => e,
    }
}

pub(crate) fn admin_credential(
    row: &dyn RawRow,
) -> Result<tether_store::AdminCredentialRecord, StoreError> {
    let f = Fields::new(row, "admin_credentials", "id")?;
    Ok(tether_store::AdminCredentialRecord {
        id: f.uuid("id")?,
        name: f.text("label")?,
        bootstrap_instance: f.opt_text("bootstrap_instance")?,
        created_at: f.time("created_at")?,
        revoked_at: f.opt_time("revoked_at")?,
    })
}

pub(crate) fn outage(row: &dyn RawRow) -> Result<tether_wire::ControlPlaneOutage, StoreError> {
    let f = Fields::new(row, "control_plane_outages", "id")?;
    Ok(tether_wire::ControlPlaneOutage {
        kind: f.parsed("kind")?,
        started_at: f.time("started_at")?,
        ended_at: f.time("ended_at")?,
        agents_given_grace: f.u64("agents_given_grace")?,
    })
}

/// The time a heartbeat row records.
pub(crate) fn alive_at(row: &dyn RawRow, instance: &str) -> Result<OffsetDateTime, StoreError> {
    Fields::keyed(row, "server_heartbeats", instance).time("alive_at")
}

pub(crate) fn transition(row: &dyn RawRow, agent_id: &str) -> Result<Transition, StoreError> {
    let f = Fields::keyed(row, "transitions", agent_id);
    Ok(Transition {
        from: f.opt_parsed("from_status")?,
        to: f.parsed("to_status")?,
        reason: f.text("reason")?,
        at: f.time("at")?,
    })
}

pub(crate) fn overdue(row: &dyn RawRow) -> Result<Overdue, StoreError> {
    let f = Fields::new(row, "agents", "id")?;
    Ok(Overdue {
        id: f.uuid("id")?,
        last_seen: f.opt_time("last_seen")?,
        deadline_at: f.time("deadline_at")?,
        inactive_after_secs: f.u32("inactive_after_secs")?,
    })
}

/// One `status, n` row of the count query.
pub(crate) fn status_count(row: &dyn RawRow) -> Result<(AgentStatus, u64), StoreError> {
    let f = Fields::new(row, "agents", "status")?;
    let status = f.parsed("status")?;
    let n = f.int("n")?;
    let n = u64::try_from(n).map_err(|_| f.corrupt("n", format!("negative count {n}")))?;
    Ok((status, n))
}

pub(crate) fn policy(row: &dyn RawRow) -> Result<PolicyRecord, StoreError> {
    let f = Fields::new(row, "policies", "name")?;
    let jitter = f.int("jitter_percent")?;
    Ok(PolicyRecord {
        name: f.text("name")?,
        revision: f.int("revision")?,
        checkin_interval_secs: f.u32("checkin_interval_secs")?,
        jitter_percent: u8::try_from(jitter)
            .map_err(|_| f.corrupt("jitter_percent", format!("{jitter} is outside 0..=255")))?,
        targets: f.json("targets")?,
        defs: f.json("defs")?,
        max_concurrent_tasks: f.u32("max_concurrent_tasks")?,
        updated_at: f.time("updated_at")?,
    })
}

pub(crate) fn defs_version(row: &dyn RawRow) -> Result<DefsVersion, StoreError> {
    let mut f = Fields::new(row, "defs_versions", "channel")?;
    // The key is the channel and the version, so a message names one row.
    if let Ok(Some(version)) = f.opt_int("version") {
        f.key = format!("{} v{version}", f.key);
    }
    Ok(DefsVersion {
        channel: f.text("channel")?,
        version: f.u64("version")?,
        sha256: f.text("sha256")?,
        length: f.u64("length")?,
        content: f.text("content")?,
        published_at: f.time("published_at")?,
        notes: f.opt_text("notes")?,
        full_size: f.u64("full_size")?,
        deltas: f.json("deltas")?,
        // Not stored: the summary counts agents from their reported state.
        agents: 0,
    })
}

/// Converts a count or version to the stored signed form. Values above
/// `i64::MAX` cannot be stored; the caller gets a `Conflict` naming the column.
pub(crate) fn to_i64(value: u64, column: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        StoreError::Conflict(format!(
            "{column} {value} is larger than the store can hold ({})",
            i64::MAX
        ))
    })
}

pub(crate) mod acme;
pub(crate) mod certs;
pub(crate) mod leases;
pub(crate) mod renewals;
pub(crate) mod tasks;
pub(crate) use certs::{cert, cert_location, deployment, issued, issued_pem};
pub(crate) use leases::job_lease;
pub(crate) mod audit;
pub(crate) mod rollouts;
pub(crate) mod upgrades;
pub(crate) use audit::audit_entry;
pub(crate) use renewals::{renewal, renewal_candidate, renewal_location};
pub(crate) use rollouts::{progress as rollout_progress, rollout};
pub(crate) use upgrades::agent_upgrade;
pub(crate) mod revocation;
pub(crate) use revocation::{issued_serial, revocation};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_and_never_panic() {
        let at = time::macros::datetime!(2026-05-17 19:16:01.234 UTC);
        assert_eq!(to_ms(at), 1_779_045_361_234);
        let back = OffsetDateTime::from_unix_timestamp_nanos(i128::from(to_ms(at)) * 1_000_000)
            .expect("in range");
        assert_eq!(back, at);
        // The extremes of `time` fit in i64 milliseconds without saturating.
        assert!(
            to_ms(OffsetDateTime::new_utc(
                time::Date::MIN,
                time::Time::MIDNIGHT
            )) > i64::MIN
        );
        assert!(to_ms(OffsetDateTime::new_utc(time::Date::MAX, time::Time::MAX)) < i64::MAX);
    }

    #[test]
    fn excerpts_are_bounded_on_char_boundaries() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(100);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), 65);
        assert!(cut.ends_with('…'));
    }
}
