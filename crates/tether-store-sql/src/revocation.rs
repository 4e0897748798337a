//! The built-in CA's revocations ([`tether_store::RevocationStore`]),
//! written once for both backends like `store_impl.rs`.
//!
//! Revoking is one portable `INSERT … SELECT … ON CONFLICT DO NOTHING`
//! from `issued_certs`: a certificate the CA never issued inserts nothing,
//! and a second revocation keeps the first (the primary key is the
//! fingerprint).

pub(crate) const REVOKE: &str = "INSERT INTO cert_revocations \
     (fingerprint, serial, reason, revoked_at, revoked_by, not_after) \
     SELECT fingerprint, serial, $2, $3, $4, not_after FROM issued_certs WHERE fingerprint = $1 \
     ON CONFLICT (fingerprint) DO NOTHING";
pub(crate) const REVOCATION: &str = "SELECT fingerprint, serial, reason, revoked_at, revoked_by, \
     not_after FROM cert_revocations WHERE fingerprint = $1";
pub(crate) const ISSUED_BY_SERIAL: &str =
    "SELECT fingerprint, not_after FROM issued_certs WHERE serial = $1";
pub(crate) const UNEXPIRED: &str = "SELECT fingerprint, serial, reason, revoked_at, revoked_by, \
     not_after FROM cert_revocations WHERE not_after > $1 ORDER BY revoked_at, serial";

macro_rules! impl_revocation_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl tether_store::RevocationStore for $store {
            async fn revoke_issued(
                &self,
                fingerprint: &str,
                reason: tether_wire::RevocationReason,
                at: time::OffsetDateTime,
                by: &str,
            ) -> Result<tether_store::Revoked, tether_store::StoreError> {
                let mut tx = self.begin_write().await.map_err($crate::error::db)?;
                let inserted = sqlx::query($crate::revocation::REVOKE)
                    .bind(fingerprint)
                    .bind(reason.as_str())
                    .bind($crate::row::to_ms(at))
                    .bind(by)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::error::db)?
                    .rows_affected();
                let row = sqlx::query($crate::revocation::REVOCATION)
                    .bind(fingerprint)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err($crate::error::db)?;
                tx.commit().await.map_err($crate::error::db)?;
                let Some(row) = row else {
                    return Err(tether_store::StoreError::NotFound);
                };
                let revocation = $crate::row::revocation(&row)?;
                Ok(if inserted > 0 {
                    tether_store::Revoked::Now(revocation)
                } else {
                    tether_store::Revoked::Already(revocation)
                })
            }

            async fn revocation(
                &self,
                fingerprint: &str,
            ) -> Result<Option<tether_wire::Revocation>, tether_store::StoreError> {
                let row = sqlx::query($crate::revocation::REVOCATION)
                    .bind(fingerprint)
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref().map(|r| $crate::row::revocation(r)).transpose()
            }

            async fn serial_status(
                &self,
                serial: &str,
            ) -> Result<Option<tether_store::SerialStatus>, tether_store::StoreError> {
                let row = sqlx::query($crate::revocation::ISSUED_BY_SERIAL)
                    .bind(serial)
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                let Some(row) = row else { return Ok(None) };
                let (fingerprint, not_after) = $crate::row::issued_serial(&row)?;
                let revocation = self.revocation(&fingerprint).await?;
                Ok(Some(tether_store::SerialStatus {
                    fingerprint,
                    not_after,
                    revocation,
                }))
            }

            async fn unexpired_revocations(
                &self,
                now: time::OffsetDateTime,
            ) -> Result<Vec<tether_wire::Revocation>, tether_store::StoreError> {
                let rows = sqlx::query($crate::revocation::UNEXPIRED)
                    .bind($crate::row::to_ms(now))
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter().map(|r| $crate::row::revocation(r)).collect()
            }
        }
    };
}
