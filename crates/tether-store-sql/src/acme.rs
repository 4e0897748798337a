//! The ACME issuers' registry ([`tether_store::AcmeIssuerStore`]), written
//! once for both backends like `store_impl.rs`.

pub(crate) const INSERT_ACME_ISSUER: &str = "INSERT INTO acme_issuers \
     (name, directory, ca_pem, contact, sealed_account, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const ACME_ISSUER: &str = "SELECT name, directory, ca_pem, contact, \
     sealed_account, created_at FROM acme_issuers WHERE name = $1";
pub(crate) const ACME_ISSUERS: &str = "SELECT name, directory, ca_pem, contact, \
     sealed_account, created_at FROM acme_issuers ORDER BY name";
pub(crate) const REMOVE_ACME_ISSUER: &str = "DELETE FROM acme_issuers WHERE name = $1";

macro_rules! impl_acme_issuer_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl tether_store::AcmeIssuerStore for $store {
            async fn insert_acme_issuer(
                &self,
                issuer: &tether_store::AcmeIssuer,
            ) -> Result<(), tether_store::StoreError> {
                sqlx::query($crate::acme::INSERT_ACME_ISSUER)
                    .bind(&issuer.name)
                    .bind(&issuer.directory)
                    .bind(issuer.ca_pem.as_deref())
                    .bind(issuer.contact.as_deref())
                    .bind($crate::row::acme::to_hex(&issuer.sealed_account))
                    .bind($crate::row::to_ms(issuer.created_at))
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(())
            }

            async fn acme_issuer(
                &self,
                name: &str,
            ) -> Result<Option<tether_store::AcmeIssuer>, tether_store::StoreError> {
                let row = sqlx::query($crate::acme::ACME_ISSUER)
                    .bind(name)
                    .fetch_optional(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                row.as_ref()
                    .map(|r| $crate::row::acme::acme_issuer(r))
                    .transpose()
            }

            async fn acme_issuers(
                &self,
            ) -> Result<Vec<tether_store::AcmeIssuer>, tether_store::StoreError> {
                let rows = sqlx::query($crate::acme::ACME_ISSUERS)
                    .fetch_all(self.reader())
                    .await
                    .map_err($crate::error::db)?;
                rows.iter()
                    .map(|r| $crate::row::acme::acme_issuer(r))
                    .collect()
            }

            async fn remove_acme_issuer(
                &self,
                name: &str,
            ) -> Result<bool, tether_store::StoreError> {
                let done = sqlx::query($crate::acme::REMOVE_ACME_ISSUER)
                    .bind(name)
                    .execute(self.writer())
                    .await
                    .map_err($crate::error::db)?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}
