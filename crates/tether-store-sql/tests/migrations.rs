//! The rolling-upgrade rule for migration files (docs/deploy-multi-server.md,
//! "Rolling upgrades"), enforced where it is cheap:
//! - a released migration (`migrations/released.txt`) never changes and is
//!   never removed: a server of the previous release checks the checksums
//!   of what it applied;
//! - an unreleased PostgreSQL migration only expands (adds tables, columns,
//!   indexes): one that drops or renames a table or a column must be a
//!   contract migration (`NNNN_contract_….sql`), which older servers refuse
//!   to run against (TETHER-E8770). A contract migration may only remove
//!   what the previous release no longer uses; that part is for review.
//!
//! SQLite is one server on one file, so no older server shares it: only the
//! first rule applies to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// `dialect/file name` → hex SHA-384, from released.txt.
fn released() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(migrations_dir().join("released.txt"))
        .expect("migrations/released.txt exists");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, sum) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("released.txt: `{line}` is not `dialect/file sha384`"));
        assert_eq!(
            sum.len(),
            96,
            "released.txt: `{line}`: not a SHA-384 in hex"
        );
        assert!(
            out.insert(name.to_owned(), sum.to_owned()).is_none(),
            "released.txt lists {name} twice"
        );
    }
    out
}

/// What sqlx stores for each migration of `dialect`: `dialect/file name` →
/// (hex checksum, SQL).
async fn present(dialect: &str) -> BTreeMap<String, (String, String)> {
    let dir = migrations_dir().join(dialect);
    let migrator = sqlx::migrate::Migrator::new(dir.as_path())
        .await
        .expect("the migrations resolve");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("reads the migrations") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        let version: i64 = name
            .split('_')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{dialect}/{name}: not NNNN_name.sql"));
        files.insert(version, name);
    }
    let mut out = BTreeMap::new();
    for m in migrator.iter() {
        let name = files
            .get(&m.version)
            .unwrap_or_else(|| panic!("no file for migration {}", m.version));
        let sum: String = m.checksum.iter().map(|b| format!("{b:02x}")).collect();
        out.insert(format!("{dialect}/{name}"), (sum, m.sql.to_string()));
    }
    out
}

/// The first statement in `sql` (comments removed, case ignored) that an
/// older server cannot live with, if any: it drops or renames a table or a
/// column, changes a column's type, or makes a column NOT NULL without a
/// default (the older server's inserts, which do not name it, would fail).
fn destructive(sql: &str) -> Option<String> {
    let code: String = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase();
    code.split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .find(|s| {
            s.contains("drop table")
                || s.contains("drop column")
                || s.contains(" rename ")
                || s.ends_with(" rename")
                || (s.contains("alter column") && s.contains(" type "))
                || s.contains("set not null")
                || (s.contains("add column") && s.contains("not null") && !s.contains("default"))
        })
}

#[tokio::test]
async fn released_migrations_never_change() {
    let released = released();
    assert!(
        released.keys().any(|k| k.starts_with("postgres/"))
            && released.keys().any(|k| k.starts_with("sqlite/")),
        "released.txt lists both dialects"
    );
    let mut files = present("postgres").await;
    files.extend(present("sqlite").await);
    for (name, sum) in &released {
        let (now, _) = files.get(name).unwrap_or_else(|| {
            panic!(
                "released migration {name} was removed or renamed: released migrations stay forever"
            )
        });
        assert_eq!(
            now, sum,
            "released migration {name} changed: released migrations never change (servers of the \
             previous release refuse the database, TETHER-E8771). Put the change in a new migration."
        );
    }
}

#[tokio::test]
async fn unreleased_postgres_migrations_only_expand() {
    let released = released();
    for (name, (_, sql)) in present("postgres").await {
        if released.contains_key(&name) {
            continue;
        }
        let file = name.trim_start_matches("postgres/");
        let description = file
            .trim_end_matches(".sql")
            .split_once('_')
            .map(|(_, d)| d.replace('_', " "))
            .unwrap_or_default();
        if tether_store_sql::migrations::is_contract(&description) {
            continue;
        }
        if let Some(statement) = destructive(&sql) {
            panic!(
                "{name} drops, renames or tightens (`{statement}`), but servers of the previous release keep \
                 running against the database it migrates. Expand now (add the new table or column, \
                 write both) and contract a release later in a migration named NNNN_contract_….sql \
                 (docs/deploy-multi-server.md, \"Rolling upgrades\")."
            );
        }
    }
}

#[test]
fn destructive_statements_are_recognised() {
    assert!(destructive("ALTER TABLE agents DROP COLUMN facts;").is_some());
    assert!(destructive("drop table  old_things").is_some());
    assert!(destructive("ALTER TABLE a RENAME TO b").is_some());
    assert!(destructive("ALTER TABLE a RENAME COLUMN x TO y").is_some());
    assert!(destructive("ALTER TABLE a ALTER COLUMN x TYPE BIGINT").is_some());
    assert!(destructive("ALTER TABLE a ALTER COLUMN x SET NOT NULL").is_some());
    assert!(destructive("ALTER TABLE a ADD COLUMN x BIGINT NOT NULL").is_some());
    assert!(destructive("ALTER TABLE a ADD COLUMN x BIGINT NOT NULL DEFAULT 0").is_none());
    assert!(
        destructive(
            "-- we never drop table here\nALTER TABLE a ADD COLUMN renamed_at BIGINT;\n\
             CREATE INDEX a_x ON a (x);\nALTER TABLE a ALTER COLUMN x SET DEFAULT 0;"
        )
        .is_none()
    );
}
