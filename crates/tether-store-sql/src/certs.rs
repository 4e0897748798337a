//! The discovery inventory's half of the store ([`tether_store::CertStore`]),
//! written once for both backends like `store_impl.rs`.

pub(crate) const CERT_LAST_SEEN: &str = "SELECT last_seen FROM certs WHERE fingerprint = $1";
/// A certificate seen at `$7`: inserted, or its newest facts kept and its
/// first and last sightings widened.
pub(crate) const UPSERT_CERT: &str = "INSERT INTO certs \
     (fingerprint, id, facts, chain, verdicts, not_after, first_seen, last_seen) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
     ON CONFLICT (fingerprint) DO UPDATE SET \
     facts = CASE WHEN excluded.last_seen >= certs.last_seen THEN excluded.facts ELSE certs.facts END, \
     chain = CASE WHEN excluded.last_seen >= certs.last_seen THEN excluded.chain ELSE certs.chain END, \
     verdicts = CASE WHEN excluded.last_seen >= certs.last_seen THEN excluded.verdicts ELSE certs.verdicts END, \
     not_after = CASE WHEN excluded.last_seen >= certs.last_seen THEN excluded.not_after ELSE certs.not_after END, \
     first_seen = CASE WHEN excluded.first_seen < certs.first_seen THEN excluded.first_seen ELSE certs.first_seen END, \
     last_seen = CASE WHEN excluded.last_seen > certs.last_seen THEN excluded.last_seen ELSE certs.last_seen END";
pub(crate) const CLEAR_VERDICTS: &str = "DELETE FROM cert_verdicts WHERE fingerprint = $1";
pub(crate) const INSERT_VERDICT: &str = "INSERT INTO cert_verdicts (fingerprint, verdict) \
     VALUES ($1, $2) ON CONFLICT DO NOTHING";
/// The newest other certificate seen at a location before `$5`.
pub(crate) const PREVIOUS_AT_LOCATION: &str = "SELECT fingerprint FROM cert_locations \
     WHERE address = $1 AND sni = $2 AND agent_id = $3 AND fingerprint <> $4 AND last_seen <= $5 \
     ORDER BY last_seen DESC, fingerprint LIMIT 1";
/// The other certificates seen at a location before `$5` were replaced by `$4`.
pub(crate) const MARK_CHANGED: &str = "UPDATE cert_locations \
     SET state = 'changed', state_since = $5, replaced_by = $4 \
     WHERE address = $1 AND sni = $2 AND agent_id = $3 AND fingerprint <> $4 \
     AND last_seen <= $5 AND (state <> 'changed' OR replaced_by <> $4)";
/// The sighting being upserted is the newest thing known of its location.
macro_rules! newest {
    () => {
        "(excluded.last_seen >= cert_locations.last_seen \
          AND (cert_locations.state_since IS NULL OR excluded.last_seen > cert_locations.state_since))"
    };
}
/// A certificate seen at a location at `$5`. It is current there again
/// unless something newer was seen there (a later sighting, or a change or
/// silence recorded after `$5`).
pub(crate) const UPSERT_LOCATION: &str = concat!(
    "INSERT INTO cert_locations \
     (fingerprint, address, sni, agent_id, first_seen, last_seen, state, state_since, previous, replaced_by) \
     VALUES ($1, $2, $3, $4, $5, $5, 'current', NULL, $6, NULL) \
     ON CONFLICT (address, sni, agent_id, fingerprint) DO UPDATE SET \
     first_seen = CASE WHEN excluded.first_seen < cert_locations.first_seen \
         THEN excluded.first_seen ELSE cert_locations.first_seen END, \
     state = CASE WHEN ",
    newest!(),
    " THEN 'current' ELSE cert_locations.state END, \
     state_since = CASE WHEN ",
    newest!(),
    " THEN NULL ELSE cert_locations.state_since END, \
     replaced_by = CASE WHEN ",
    newest!(),
    " THEN NULL ELSE cert_locations.replaced_by END, \
     previous = CASE WHEN ",
    newest!(),
    " AND excluded.previous IS NOT NULL \
         THEN excluded.previous ELSE cert_locations.previous END, \
     silent_scans = CASE WHEN ",
    newest!(),
    " THEN 0 ELSE cert_locations.silent_scans END, \
     silent_at = CASE WHEN ",
    newest!(),
    " THEN NULL ELSE cert_locations.silent_at END, \
     last_seen = CASE WHEN excluded.last_seen > cert_locations.last_seen \
         THEN excluded.last_seen ELSE cert_locations.last_seen END"
);
/// An absence a scan observed at `$7` (`$6`: `no_tls` or `silent`), kept
/// until the scan completes, only where a certificate is current: most
/// silent endpoints of a scan never had one, and need no row.
pub(crate) const INSERT_ABSENCE: &str = "INSERT INTO cert_absences \
     (task_id, epoch, address, sni, agent_id, kind, observed_at) \
     SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM cert_locations \
         WHERE address = $3 AND sni = $4 AND agent_id = $5 AND state = 'current') \
     ON CONFLICT (task_id, epoch, address, sni, agent_id) DO NOTHING";
/// The absences of a completed scan, each once per location.
pub(crate) const SCAN_ABSENCES: &str = "SELECT address, sni, agent_id, kind, observed_at \
     FROM cert_absences WHERE task_id = $1 AND epoch = $2 ORDER BY address, sni, agent_id";
/// One more completed scan found the location silent at `$4` (counted once
/// per scan, in order, and only after the last sighting).
pub(crate) const COUNT_SILENT: &str = "UPDATE cert_locations \
     SET silent_scans = silent_scans + 1, silent_at = $4 \
     WHERE address = $1 AND sni = $2 AND agent_id = $3 AND state = 'current' AND last_seen < $4 \
     AND (silent_at IS NULL OR silent_at < $4)";
/// No TLS at a location at `$4` (or silence in `$5` completed scans in a
/// row): what was seen there before is gone.
pub(crate) const MARK_GONE: &str = "UPDATE cert_locations SET state = 'gone', state_since = $4 \
     WHERE address = $1 AND sni = $2 AND agent_id = $3 AND state = 'current' AND last_seen < $4 \
     AND silent_scans >= $5";
/// A completed scan's absences, and those of the task's earlier attempts.
pub(crate) const FORGET_SCAN: &str = "DELETE FROM cert_absences WHERE task_id = $1 AND epoch <= $2";
pub(crate) const FORGET_TASK: &str = "DELETE FROM cert_absences WHERE task_id = $1";

macro_rules! cert_select {
    () => {
        "SELECT c.fingerprint, c.id, c.facts, c.chain, c.verdicts, c.first_seen, c.last_seen, \
         (SELECT COUNT(*) FROM cert_locations l WHERE l.fingerprint = c.fingerprint) AS locations \
         FROM certs c "
    };
}
/// Optional filters: a NULL parameter matches every row.
pub(crate) const LIST_CERTS: &str = concat!(
    cert_select!(),
    "WHERE (CAST($1 AS BIGINT) IS NULL OR c.not_after <= $1) \
     AND (CAST($2 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM cert_verdicts v \
          WHERE v.fingerprint = c.fingerprint AND v.verdict = $2)) \
     AND (CAST($3 AS BIGINT) IS NULL OR c.first_seen > $3 \
          OR (c.first_seen = $3 AND c.id > CAST($4 AS TEXT))) \
     ORDER BY c.first_seen, c.id LIMIT $5"
);
pub(crate) const CERT: &str = concat!(cert_select!(), "WHERE c.fingerprint = $1");
pub(crate) const CERT_LOCATIONS: &str = "SELECT address, sni, agent_id, first_seen, last_seen, \
     state, state_since, previous, replaced_by FROM cert_locations WHERE fingerprint = $1 \
     ORDER BY last_seen DESC, address, sni, agent_id LIMIT $2";

pub(crate) const INSERT_ISSUED: &str = "INSERT INTO issued_certs \
     (fingerprint, serial, names, not_before, not_after, issued_at, task_id, agent_id, cert_pem, \
     issuer, ari_start, ari_end, ari_checked_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (fingerprint) DO NOTHING";
pub(crate) const ISSUED: &str = "SELECT fingerprint, serial, names, not_before, not_after, \
     issued_at, task_id, agent_id, issuer, ari_start, ari_end, ari_checked_at \
     FROM issued_certs WHERE fingerprint = $1";
pub(crate) const ISSUED_PEM: &str = "SELECT cert_pem FROM issued_certs WHERE fingerprint = $1";
pub(crate) const SET_RENEWAL_WINDOW: &str = "UPDATE issued_certs \
     SET ari_start = $2, ari_end = $3, ari_checked_at = $4 WHERE fingerprint = $1";
pub(crate) const INSERT_DEPLOYMENT: &str = "INSERT INTO cert_deployments \
     (id, task_id, agent_id, fingerprint, old_fingerprint, state, at, report) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING";
pub(crate) const DEPLOYMENTS: &str = "SELECT task_id, agent_id, at, report FROM cert_deployments \
     WHERE fingerprint = $1 OR old_fingerprint = $1 ORDER BY at DESC, id LIMIT $2";

macro_rules! impl_cert_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl tether_store::CertStore for $store {
            async fn record_sightings(
                &self,
                scan: tether_store::ScanId,
                sightings: &[tether_store::Sighting],
            ) -> Result<(), tether_store::StoreError> {
                use $crate::row::{to_json, to_ms};
                let task = scan.task_id.to_string();
                let epoch = $crate::row::to_i64(scan.epoch, "epoch")?;
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                for s in sightings {
                    let agent = s.agent_id.to_string();
                    let sni = s.sni.clone().unwrap_or_default();
                    let at = to_ms(s.at);
                    let cert = match &s.seen {
                        tether_store::Seen::Cert(cert) => cert,
                        absent => {
                            let kind = if *absent == tether_store::Seen::Silent {
                                "silent"
                            } else {
                                "no_tls"
                            };
                            sqlx::query($crate::certs::INSERT_ABSENCE)
                                .bind(&task)
                                .bind(epoch)
                                .bind(&s.address)
                                .bind(&sni)
                                .bind(&agent)
                                .bind(kind)
                                .bind(at)
                                .execute(&mut *tx)
                                .await
                                .map_err($crate::error::db)?;
                            continue;
                        }
                    };
                    let last: Option<i64> = sqlx::query_scalar($crate::certs::CERT_LAST_SEEN)
                        .bind(&cert.fingerprint)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                    sqlx::query($crate::certs::UPSERT_CERT)
                        .bind(&cert.fingerprint)
                        .bind(uuid::Uuid::new_v4().to_string())
                        .bind(&cert.facts)
                        .bind(&cert.chain)
                        .bind(to_json(&cert.verdicts, "verdicts")?)
                        .bind(to_ms(cert.not_after))
                        .bind(at)
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                    if last.is_none_or(|l| at >= l) {
                        sqlx::query($crate::certs::CLEAR_VERDICTS)
                            .bind(&cert.fingerprint)
                            .execute(&mut *tx)
                            .await
                            .map_err($crate::error::db)?;
                        for v in &cert.verdicts {
                            sqlx::query($crate::certs::INSERT_VERDICT)
                                .bind(&cert.fingerprint)
                                .bind(v)
                                .execute(&mut *tx)
                                .await
                                .map_err($crate::error::db)?;
                        }
                    }
                    let previous: Option<String> =
                        sqlx::query_scalar($crate::certs::PREVIOUS_AT_LOCATION)
                            .bind(&s.address)
                            .bind(&sni)
                            .bind(&agent)
                            .bind(&cert.fingerprint)
                            .bind(at)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err($crate::error::db)?;
                    sqlx::query($crate::certs::MARK_CHANGED)
                        .bind(&s.address)
                        .bind(&sni)
                        .bind(&agent)
                        .bind(&cert.fingerprint)
                        .bind(at)
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                    sqlx::query($crate::certs::UPSERT_LOCATION)
                        .bind(&cert.fingerprint)
                        .bind(&s.address)
                        .bind(&sni)
                        .bind(&agent)
                        .bind(at)
                        .bind(previous)
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?;
                }
                tx.commit().await.map_err($crate::error::db)?;
                Ok(())
            }

            async fn complete_scan(
                &self,
                scan: tether_store::ScanId,
            ) -> Result<tether_store::ScanSettled, tether_store::StoreError> {
                use sqlx::Row;
                let task = scan.task_id.to_string();
                let epoch = $crate::row::to_i64(scan.epoch, "epoch")?;
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let rows = sqlx::query($crate::certs::SCAN_ABSENCES)
                    .bind(&task)
                    .bind(epoch)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                let mut settled = tether_store::ScanSettled::default();
                for r in &rows {
                    let address: String = r.try_get("address").map_err($crate::error::db)?;
                    let sni: String = r.try_get("sni").map_err($crate::error::db)?;
                    let agent: String = r.try_get("agent_id").map_err($crate::error::db)?;
                    let kind: String = r.try_get("kind").map_err($crate::error::db)?;
                    let at: i64 = r.try_get("observed_at").map_err($crate::error::db)?;
                    let needed = if kind == "silent" {
                        sqlx::query($crate::certs::COUNT_SILENT)
                            .bind(&address)
                            .bind(&sni)
                            .bind(&agent)
                            .bind(at)
                            .execute(&mut *tx)
                            .await
                            .map_err($crate::error::db)?;
                        tether_store::SILENT_SCANS_TO_GONE
                    } else {
                        0
                    };
                    let gone = sqlx::query($crate::certs::MARK_GONE)
                        .bind(&address)
                        .bind(&sni)
                        .bind(&agent)
                        .bind(at)
                        .bind(needed)
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::error::db)?
                        .rows_affected();
                    if gone > 0 {
                        settled.gone += gone;
                    } else if kind == "silent" {
                        settled.silent += 1;
                    }
                }
                sqlx::query($crate::certs::FORGET_SCAN)
                    .bind(&task)
                    .bind(epoch)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                tx.commit().await.map_err($crate::error::db)?;
                Ok(settled)
            }

            async fn abandon_scan(
                &self,
                task_id: uuid::Uuid,
            ) -> Result<(), tether_store::StoreError> {
                sqlx::query($crate::certs::FORGET_TASK)
                    .bind(task_id.to_string())
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(())
            }

            async fn list_certs(
                &self,
                filter: &tether_store::CertFilter,
                after: Option<&tether_store::Cursor>,
                limit: u32,
            ) -> Result<Vec<tether_store::CertRecord>, tether_store::StoreError> {
                use $crate::row::to_ms;
                let rows = sqlx::query($crate::certs::LIST_CERTS)
                    .bind(filter.expiring_before.map(to_ms))
                    .bind(filter.verdict.clone())
                    .bind(after.map(|c| to_ms(c.at)))
                    .bind(after.map(|c| c.id.to_string()))
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::cert(r)).collect()
            }

            async fn cert(
                &self,
                fingerprint: &str,
            ) -> Result<Option<tether_store::CertRecord>, tether_store::StoreError> {
                let row = sqlx::query($crate::certs::CERT)
                    .bind(fingerprint)
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref().map(|r| $crate::row::cert(r)).transpose()
            }

            async fn record_issued(
                &self,
                cert: &tether_wire::IssuedCert,
                pem: &str,
            ) -> Result<(), tether_store::StoreError> {
                use $crate::row::{to_json, to_ms};
                sqlx::query($crate::certs::INSERT_ISSUED)
                    .bind(&cert.fingerprint)
                    .bind(&cert.serial)
                    .bind(to_json(&cert.names, "names")?)
                    .bind(to_ms(cert.not_before))
                    .bind(to_ms(cert.not_after))
                    .bind(to_ms(cert.issued_at))
                    .bind(cert.task_id.map(|u| u.to_string()))
                    .bind(cert.agent_id.map(|u| u.to_string()))
                    .bind(pem)
                    .bind(cert.issuer.clone())
                    .bind(cert.renewal_window.map(|w| to_ms(w.start)))
                    .bind(cert.renewal_window.map(|w| to_ms(w.end)))
                    .bind(cert.renewal_window.map(|w| to_ms(w.checked_at)))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(())
            }

            async fn issued_cert(
                &self,
                fingerprint: &str,
            ) -> Result<Option<tether_wire::IssuedCert>, tether_store::StoreError> {
                let row = sqlx::query($crate::certs::ISSUED)
                    .bind(fingerprint)
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref().map(|r| $crate::row::issued(r)).transpose()
            }

            async fn issued_cert_pem(
                &self,
                fingerprint: &str,
            ) -> Result<Option<String>, tether_store::StoreError> {
                let row = sqlx::query($crate::certs::ISSUED_PEM)
                    .bind(fingerprint)
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref()
                    .map(|r| $crate::row::issued_pem(r, fingerprint))
                    .transpose()
            }

            async fn set_renewal_window(
                &self,
                fingerprint: &str,
                window: &tether_wire::RenewalWindowSeen,
            ) -> Result<bool, tether_store::StoreError> {
                use $crate::row::to_ms;
                let done = sqlx::query($crate::certs::SET_RENEWAL_WINDOW)
                    .bind(fingerprint)
                    .bind(to_ms(window.start))
                    .bind(to_ms(window.end))
                    .bind(to_ms(window.checked_at))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(done.rows_affected() > 0)
            }

            async fn record_deployment(
                &self,
                d: &tether_wire::DeploymentRecord,
            ) -> Result<(), tether_store::StoreError> {
                use $crate::row::{to_json, to_ms};
                sqlx::query($crate::certs::INSERT_DEPLOYMENT)
                    .bind(d.report.id.to_string())
                    .bind(d.task_id.to_string())
                    .bind(d.agent_id.to_string())
                    .bind(&d.report.new_fingerprint)
                    .bind(d.report.old_fingerprint.clone().unwrap_or_default())
                    .bind(&d.report.state)
                    .bind(to_ms(d.at))
                    .bind(to_json(&d.report, "report")?)
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(())
            }

            async fn deployments(
                &self,
                fingerprint: &str,
                limit: u32,
            ) -> Result<Vec<tether_wire::DeploymentRecord>, tether_store::StoreError> {
                let rows = sqlx::query($crate::certs::DEPLOYMENTS)
                    .bind(fingerprint)
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter()
                    .map(|r| $crate::row::deployment(r, fingerprint))
                    .collect()
            }

            async fn cert_locations(
                &self,
                fingerprint: &str,
                limit: u32,
            ) -> Result<Vec<tether_wire::CertLocation>, tether_store::StoreError> {
                let rows = sqlx::query($crate::certs::CERT_LOCATIONS)
                    .bind(fingerprint)
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter()
                    .map(|r| $crate::row::cert_location(r, fingerprint))
                    .collect()
            }
        }
    };
}
