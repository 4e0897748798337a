//! Backup and restore (docs/backup.md): a live server's backup restored onto
//! a fresh data dir (and, on PostgreSQL, a fresh database) is the same
//! control plane to its agents: the agent that enrolled before the backup
//! keeps checking in and verifies newly published definitions against the
//! restored server, with the credential and trust root it already had.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use tether_wire::AgentStatus;

use crate::both_backends;
use crate::defs::support::{eventually, publish_to, subscribe, update_expect};
use crate::lab::{Agent, Backend, PgDatabase, Scratch, Server, tether_bin, text};

both_backends!(restored_server_keeps_its_agents_and_definitions);

async fn tether(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(tether_bin())
        .args(args)
        .env_remove("TETHER_CA_KEY")
        .env_remove("TETHER_DATABASE_URL")
        .env_remove("TETHER_DATA_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("tether runs")
}

async fn restored_server_keeps_its_agents_and_definitions(backend: Backend) {
    let old = Server::start_restartable(backend, &[]).await;
    let mut old = old;
    let files = Scratch::new("backup-files");
    subscribe(&old, &[]).await;
    publish_to(&old, files.path(), b"rule one\nrule two\n").await;

    let token = old.token(&[]).await;
    let mut agent = Agent::new();
    let id = agent.enroll_ok(&old, &token.token, &[]).await;
    let credential = agent.credential();
    let t = update_expect(agent.state.path(), &[], 0).await;
    assert!(t.contains("installed version 1"), "{t}");
    agent.run(&[]);
    old.wait_status(id, AgentStatus::Active, Duration::from_secs(30))
        .await;

    // A built-in CA: its keys sealed under the KEK in `ca.kek`.
    old.admin_ok(&["certs", "ca", "init"]).await;

    // The backup of the live server.
    let file = files.path().join("tether.backup");
    let file_s = file.to_str().expect("utf-8 path");
    let data_dir = old.dir.path().to_str().expect("utf-8 path").to_owned();
    let mut args = vec!["backup", "--out", file_s, "--data-dir", &data_dir];
    if let Some(url) = &old.database_url {
        args.extend(["--database-url", url]);
    }
    // The PostgreSQL story seals its backup with a passphrase.
    let pass = files.path().join("passphrase");
    std::fs::write(&pass, "correct horse battery staple\n").expect("passphrase file");
    let pass_s = pass.to_str().expect("utf-8 path");
    let sealed = matches!(backend, Backend::Postgres);
    if sealed {
        args.extend(["--passphrase-file", pass_s]);
    }
    let out = tether(&args).await;
    assert!(out.status.success(), "backup: {}", text(&out));
    assert_eq!(
        text(&out).contains("not encrypted"),
        !sealed,
        "whether the backup is encrypted is said: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("the KEK (ca.kek) is in this backup"),
        "{}",
        text(&out)
    );
    let mode = std::fs::metadata(&file)
        .expect("backup file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the backup is private");

    let fingerprint = old.endpoint.ca_fingerprint.clone();
    let listen = old.listen_addr().to_owned();
    old.stop().await;
    let stopped_at = time::OffsetDateTime::now_utc();

    // A fresh machine: an empty data dir and, for PostgreSQL, a new database.
    let fresh = Scratch::new("restored");
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(PgDatabase::create()),
    };
    let db_url = db.as_ref().map(PgDatabase::url);
    let target = fresh.path().to_str().expect("utf-8 path").to_owned();
    let mut args = vec!["restore", file_s, "--data-dir", &target];
    if let Some(url) = &db_url {
        args.extend(["--database-url", url]);
    }
    if sealed {
        let out = tether(&args).await;
        assert!(text(&out).contains("TETHER-E8712"), "{}", text(&out));
        args.extend(["--passphrase-file", pass_s]);
    }
    let out = tether(&args).await;
    assert!(out.status.success(), "restore: {}", text(&out));

    // A second restore onto the same target is refused, naming the code.
    let again = tether(&args).await;
    assert!(!again.status.success());
    assert!(text(&again).contains("TETHER-E8708"), "{}", text(&again));
    // The backend is the backup's: the other one is refused.
    let other = Scratch::new("restored-other");
    let wrong = match backend {
        Backend::Sqlite => {
            let url = std::env::var("TETHER_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
            tether(&[
                "restore",
                file_s,
                "--data-dir",
                other.path().to_str().expect("utf-8"),
                "--database-url",
                &url,
            ])
            .await
        }
        Backend::Postgres => {
            tether(&[
                "restore",
                file_s,
                "--data-dir",
                other.path().to_str().expect("utf-8"),
                "--passphrase-file",
                pass_s,
            ])
            .await
        }
    };
    assert!(!wrong.status.success());
    assert!(text(&wrong).contains("TETHER-E8707"), "{}", text(&wrong));
    assert_eq!(
        std::fs::read_dir(other.path()).expect("dir").count(),
        0,
        "a refused restore writes nothing"
    );

    let new = Server::start_restored(fresh, &listen, db).await;
    assert_eq!(
        new.endpoint.ca_fingerprint, fingerprint,
        "the restored server serves the CA the agents pinned"
    );

    // The built-in CA opens with the restored KEK.
    assert!(
        new.log().contains("the built-in CA's intermediate is open"),
        "{}",
        new.log()
    );

    // The running agent checks in with its old credential.
    let seen = eventually(
        Duration::from_secs(60),
        "the agent checks in with the restored server",
        || async {
            let a = new.agents().await.into_iter().find(|a| a.id == id)?;
            (a.status == AgentStatus::Active && a.last_seen.is_some_and(|t| t > stopped_at))
                .then_some(a)
        },
    )
    .await;
    assert_eq!(seen.id, id);
    assert_eq!(agent.credential(), credential, "no re-enrollment");
    assert_eq!(new.agents().await.len(), 1, "the same fleet, no new agent");

    // Definitions published after the restore verify against the trust root
    // the agent got at enrollment: the signing keys came back.
    publish_to(&new, files.path(), b"rule one\nrule two\nrule three\n").await;
    let t = update_expect(agent.state.path(), &[], 0).await;
    assert!(t.contains("installed version 2"), "{t}");
    agent.terminate().await;
}
