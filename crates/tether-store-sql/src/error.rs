//! How sqlx's errors become [`StoreError`]s.

use tether_store::StoreError;

/// Classifies a driver error: constraint violations are conflicts, decoding
/// failures mean a stored row is corrupt, and everything else (I/O, pool
/// timeouts, a database that refused the query) makes the store unavailable,
/// which callers may retry.
pub(crate) fn db(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::Database(e) if e.is_unique_violation() || e.is_foreign_key_violation() => {
            let constraint = e
                .constraint()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            StoreError::Conflict(format!("{}{constraint}", e.message()))
        }
        // PostgreSQL refuses some values SQLite stores (a NUL character in
        // text, for one) with an SQLSTATE of class 22, "data exception".
        // Retrying the same value cannot help, so it is not `Unavailable`.
        sqlx::Error::Database(e)
            if e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some_and(|pg| pg.code().starts_with("22")) =>
        {
            StoreError::Conflict(format!("the database refused a value: {}", e.message()))
        }
        sqlx::Error::RowNotFound => StoreError::NotFound,
        e @ (sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }) => StoreError::Corrupt(e.to_string()),
        e => StoreError::Unavailable(e.to_string()),
    }
}

/// A migration that cannot be applied leaves the store unusable; the message
/// says which migration and why (for example a database written by a newer
/// Tether).
pub(crate) fn migrate(backend: &str, error: sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Unavailable(format!("could not migrate the {backend} database: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_errors_are_classified() {
        assert!(matches!(db(sqlx::Error::RowNotFound), StoreError::NotFound));
        assert!(matches!(
            db(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(db(sqlx::Error::PoolClosed).is_retriable());
        let decode = db(sqlx::Error::ColumnNotFound("facts".into()));
        match decode {
            StoreError::Corrupt(m) => assert!(m.contains("facts"), "{m}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
