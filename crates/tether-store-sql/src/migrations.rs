//! Which databases this build runs against: the rolling-upgrade rule
//! (docs/deploy-multi-server.md, "Rolling upgrades").
//!
//! Migrations expand first and contract a release later. A server one
//! release older therefore keeps running, and may restart, against a
//! database a newer build migrated: the migrations it does not know only
//! added what it ignores. It refuses only what is truly unsafe:
//! - an unknown applied migration whose name starts with `contract`
//!   (`0021_contract_drop_old_column.sql`): a newer build removed or renamed
//!   something, which an older build may still use ([`StoreError::SchemaTooNew`]);
//! - a migration it knows, applied with other content (checksum): a released
//!   migration file was changed ([`StoreError::MigrationAltered`]).
//!
//! `crates/tether-store-sql/tests/migrations.rs` enforces the other half:
//! released migration files never change (`migrations/released.txt`), and
//! an unreleased migration that drops or renames must be a `contract` one.

use sqlx::migrate::{Migration, Migrator};
use tether_store::StoreError;

/// The word that starts the description of a contract migration (sqlx
/// turns `0021_contract_drop_x.sql` into `contract drop x`).
pub const CONTRACT: &str = "contract";

/// One row of `_sqlx_migrations`.
#[derive(Debug, Clone)]
pub(crate) struct Applied {
    pub version: i64,
    pub description: String,
    pub checksum: Vec<u8>,
}

/// Reads `_sqlx_migrations` (both backends spell it alike).
pub(crate) const APPLIED: &str =
    "SELECT version, description, checksum FROM _sqlx_migrations ORDER BY version";

/// The rows [`APPLIED`] returns.
pub(crate) fn applied_rows(rows: Vec<(i64, String, Vec<u8>)>) -> Vec<Applied> {
    rows.into_iter()
        .map(|(version, description, checksum)| Applied {
            version,
            description,
            checksum,
        })
        .collect()
}

/// Whether a migration's description marks it as a contract migration.
pub fn is_contract(description: &str) -> bool {
    description
        .split([' ', '_'])
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case(CONTRACT))
}

/// Checks what the database already applied against what this build knows.
/// Returns the applied migrations this build does not know (from a newer
/// build, expand-only), for the caller to log.
pub(crate) fn check(known: &[Migration], applied: &[Applied]) -> Result<Vec<Applied>, StoreError> {
    let mut unknown = Vec::new();
    for row in applied {
        match known.iter().find(|m| m.version == row.version) {
            Some(m) if *m.checksum != *row.checksum => {
                return Err(StoreError::MigrationAltered(format!(
                    "migration {} ({}) was applied with other content than this build's",
                    row.version, m.description
                )));
            }
            Some(_) => {}
            None if is_contract(&row.description) => {
                return Err(StoreError::SchemaTooNew(format!(
                    "migration {} ({}) of a newer Tether is applied",
                    row.version, row.description
                )));
            }
            None => unknown.push(row.clone()),
        }
    }
    Ok(unknown)
}

/// `migrator`, told to leave applied migrations it does not know alone
/// (after [`check`] said they are expand-only).
pub(crate) fn tolerant(migrator: &'static Migrator) -> Migrator {
    Migrator {
        migrations: std::borrow::Cow::Borrowed(&migrator.migrations[..]),
        ignore_missing: true,
        locking: migrator.locking,
        no_tx: migrator.no_tx,
    }
}

/// Logs that this build runs against a newer schema.
pub(crate) fn log_unknown(backend: &str, unknown: &[Applied]) {
    if let Some(newest) = unknown.last() {
        tracing::warn!(
            backend,
            count = unknown.len(),
            newest = newest.version,
            newest_description = %newest.description,
            "the database has migrations of a newer Tether (expand-only): running against it; upgrade this server"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use sqlx::migrate::MigrationType;

    use super::*;

    fn migration(version: i64, description: &str, sql: &'static str) -> Migration {
        Migration::new(
            version,
            Cow::Owned(description.to_owned()),
            MigrationType::Simple,
            Cow::Borrowed(sql),
            false,
        )
    }

    fn applied(m: &Migration) -> Applied {
        Applied {
            version: m.version,
            description: m.description.to_string(),
            checksum: m.checksum.to_vec(),
        }
    }

    #[test]
    fn contract_migrations_are_named_so() {
        assert!(is_contract("contract drop old column"));
        assert!(is_contract("Contract_drop"));
        assert!(!is_contract("contracts table"));
        assert!(!is_contract("add contract column"));
        assert!(!is_contract(""));
    }

    #[test]
    fn newer_expand_migrations_are_tolerated_and_reported() {
        let one = migration(1, "init", "CREATE TABLE a (x INT)");
        let two = migration(2, "add y", "ALTER TABLE a ADD COLUMN y INT");
        let known = [one.clone()];
        let unknown = check(&known, &[applied(&one), applied(&two)]).expect("tolerated");
        assert_eq!(unknown.len(), 1);
        assert_eq!(unknown[0].version, 2);
        // Nothing applied yet, or exactly this build's: nothing unknown.
        assert!(check(&known, &[]).expect("fresh").is_empty());
        assert!(check(&known, &[applied(&one)]).expect("same").is_empty());
    }

    #[test]
    fn a_newer_contract_migration_is_refused() {
        let one = migration(1, "init", "CREATE TABLE a (x INT, y INT)");
        let two = migration(2, "add z", "ALTER TABLE a ADD COLUMN z INT");
        let three = migration(3, "contract drop y", "ALTER TABLE a DROP COLUMN y");
        let e = check(
            std::slice::from_ref(&one),
            &[applied(&one), applied(&two), applied(&three)],
        )
        .expect_err("refused");
        match e {
            StoreError::SchemaTooNew(m) => assert!(m.contains("migration 3"), "{m}"),
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
        assert!(!StoreError::SchemaTooNew(String::new()).is_retriable());
    }

    #[test]
    fn a_changed_released_migration_is_refused() {
        let one = migration(1, "init", "CREATE TABLE a (x INT)");
        let edited = migration(1, "init", "CREATE TABLE a (x BIGINT)");
        let e = check(&[one], &[applied(&edited)]).expect_err("refused");
        match e {
            StoreError::MigrationAltered(m) => assert!(m.contains("migration 1 (init)"), "{m}"),
            other => panic!("expected MigrationAltered, got {other:?}"),
        }
    }
}
