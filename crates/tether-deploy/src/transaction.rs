//! The deploy transaction on a PEM set or a keystore, and its journal.
//!
//! A keystore target (PKCS#12 file, Java keystore) is a set of one file
//! ([`Role::Keystore`]) that goes through the same steps, journal and
//! rollback; its bytes are made before the backup, with the password read
//! from its secret reference, and the password is kept nowhere else. Its
//! verify step is "no endpoint" when the spec names none.
//!
//! A deploy backs up the set, replaces each file (temporary, fsync,
//! owner and mode, rename, fsync the directory: `tether-fs`), runs the
//! reload command with a timeout, and verifies by a TLS handshake (the
//! scanner's probe) that the endpoint serves the new fingerprint. On any
//! failure it restores the backups, reloads, and verifies the old
//! fingerprint is served again.
//!
//! A PEM set is several files, which no rename replaces at once, so a
//! journal (`STATE_DIR/deploy/<id>/journal.json`, written atomically before
//! each phase's first action) says how far it got:
//!
//! | phase         | targets                     | recovery after a kill     |
//! |---------------|-----------------------------|---------------------------|
//! | `preparing`   | untouched (backups in work) | drop the journal          |
//! | `committing`  | some new, some old          | roll back, reload, verify |
//! | `committed`   | all new, reload may have run| roll back, reload, verify |
//! | `verified`    | all new and served          | finish                    |
//! | `rolling_back`| some old, some new          | roll back again           |
//! | `rolled_back` | all old                     | drop the journal          |
//!
//! A reload runs only in `committed` (every file new) or after every file
//! was restored (every file old), so no reload sees a mixed set; after a
//! restart [`Deployer::recover`] makes the set all old or all new before
//! any new deploy runs.
//!
//! Tests put a crash hook at every step boundary and between file writes:
//! returning `true` stops the transaction there with no cleanup at all,
//! as a kill -9 would.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tether_wire::ErrorCode;
use tokio::time::Instant;
use uuid::Uuid;

use crate::keystore;
use crate::redact::redact;
use crate::remote::{self, RemoteError, Stat};
use crate::spec::{DeploySpec, Role, SshSpec};

/// Called at each crash point with its name; `true` crashes there.
pub type CrashHook = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The transaction stopped at a crash point (tests only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crashed(pub String);

/// The certificate, its chain and its key, ready to write.
pub struct Material {
    pub cert_pem: String,
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

pub use tether_wire::{DeployFailure as Failure, DeployReport as Report, DeployStep as Step};

fn fail(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure {
        code: code.as_str().to_owned(),
        message: message.into().chars().take(1000).collect(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Preparing,
    Committing,
    Committed,
    Verified,
    RollingBack,
    RolledBack,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OldFile {
    mode: u32,
    uid: u32,
    gid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileEntry {
    role: Role,
    path: PathBuf,
    mode: u32,
    owner: Option<(u32, u32)>,
    /// The file as it was, backed up at `backup/<role>`; `None`: it did
    /// not exist and a rollback removes it.
    old: Option<OldFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    version: u32,
    id: Uuid,
    phase: Phase,
    files: Vec<FileEntry>,
    reload: Vec<String>,
    reload_timeout_secs: u64,
    /// `None`: a keystore target without a verify endpoint.
    verify_address: Option<std::net::IpAddr>,
    #[serde(default)]
    verify_port: u16,
    verify_sni: Option<String>,
    verify_timeout_secs: u64,
    new_fingerprint: String,
    old_fingerprint: Option<String>,
    failure: Option<Failure>,
    /// A remote target: its host, reached again by a recovery. The spec
    /// holds secret references only, never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remote: Option<SshSpec>,
}

impl Journal {
    /// A remote transaction's backups: `DIR/.tether-deploy/<id>` beside
    /// its primary file, on the remote host.
    fn remote_backup(&self) -> PathBuf {
        self.remote_work().join(self.id.to_string())
    }

    fn remote_work(&self) -> PathBuf {
        remote::work_dir(self.files.first().map_or(Path::new("/"), |f| &f.path))
    }
}

/// Where the target's files are: this host, or a remote one over SSH.
enum Place {
    Local,
    Remote(remote::Session),
}

fn pair(e: RemoteError) -> (ErrorCode, String) {
    (e.code, e.message)
}

impl Place {
    /// Each file's mode and owner, and what exists now.
    async fn plan_files(&self, spec: &DeploySpec) -> Result<Vec<FileEntry>, (ErrorCode, String)> {
        let s = match self {
            Place::Local => {
                return plan_files(spec).map_err(|e| (ErrorCode::DeploySpecInvalid, e));
            }
            Place::Remote(s) => s,
        };
        let (uid, gid) = s
            .accounts(spec.target.owner(), spec.target.group())
            .await
            .map_err(pair)?;
        let wanted = spec.target.files();
        let paths: Vec<&Path> = wanted.iter().map(|(_, p)| p.as_path()).collect();
        let (stats, euid, egid) = s.stat(&paths).await.map_err(pair)?;
        let mut files = Vec::new();
        for ((role, path), stat) in wanted.into_iter().zip(stats) {
            let old = match stat {
                Stat::Missing => None,
                Stat::NotFile => {
                    return Err((
                        ErrorCode::DeployRemoteCommandFailed,
                        format!(
                            "{}: {} exists and is not a regular file",
                            s.who,
                            path.display()
                        ),
                    ));
                }
                Stat::File { mode, uid, gid } => Some(OldFile { mode, uid, gid }),
            };
            let owner = match (uid, gid, &old) {
                (None, None, None) => None,
                (u, g, Some(o)) => Some((u.unwrap_or(o.uid), g.unwrap_or(o.gid))),
                (u, g, None) => Some((u.unwrap_or(euid), g.unwrap_or(egid))),
            };
            let mode = spec
                .target
                .mode_of(role)
                .map_err(|e| (ErrorCode::DeploySpecInvalid, e.to_string()))?;
            files.push(FileEntry {
                role,
                path,
                mode,
                owner,
                old,
            });
        }
        Ok(files)
    }

    /// The primary file's current bytes (`None`: it does not exist).
    async fn read_old(
        &self,
        spec: &DeploySpec,
        files: &[FileEntry],
    ) -> Result<Option<Vec<u8>>, (ErrorCode, String)> {
        let primary = spec.target.primary();
        match self {
            Place::Local => match std::fs::read(primary) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err((
                    ErrorCode::DeployWriteFailed,
                    format!("{}: {e}", primary.display()),
                )),
            },
            Place::Remote(s) => {
                let exists = files.iter().any(|f| f.path == primary && f.old.is_some());
                if !exists {
                    return Ok(None);
                }
                s.read(primary).await.map(Some).map_err(pair)
            }
        }
    }

    async fn install(&self, f: &FileEntry, bytes: &[u8]) -> Result<(), (ErrorCode, String)> {
        match self {
            Place::Local => tether_fs::write_atomic_owned(&f.path, bytes, f.mode, f.owner)
                .map_err(|e| (ErrorCode::DeployWriteFailed, e.to_string())),
            Place::Remote(s) => s
                .write(&f.path, Some(bytes), None, f.mode, f.owner)
                .await
                .map_err(pair),
        }
    }

    /// Waits for a reload an earlier (killed) agent left running.
    async fn wait_reloads(&self, j: &Journal, root: &Path) -> Result<(), String> {
        let limit = Duration::from_secs(j.reload_timeout_secs + 5);
        match self {
            Place::Local => reload_lock(root, limit).await.map(drop),
            Place::Remote(s) => s
                .wait_reloads(&j.remote_work(), limit)
                .await
                .map_err(|e| e.message),
        }
    }

    /// Puts one file back as it was (or removes it if it did not exist).
    async fn restore(&self, j: &Journal, dir: &Path, f: &FileEntry) -> Result<(), String> {
        match (self, &f.old) {
            (Place::Local, Some(old)) => std::fs::read(dir.join("backup").join(f.role.as_str()))
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    tether_fs::write_atomic_owned(
                        &f.path,
                        &bytes,
                        old.mode,
                        Some((old.uid, old.gid)),
                    )
                    .map_err(|e| e.to_string())
                }),
            (Place::Local, None) => match std::fs::remove_file(&f.path) {
                Ok(()) => tether_fs::sync_dir(f.path.parent().unwrap_or(Path::new("/")))
                    .map_err(|e| e.to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.to_string()),
            },
            (Place::Remote(s), Some(old)) => s
                .write(
                    &f.path,
                    None,
                    Some(&j.remote_backup().join(f.role.as_str())),
                    old.mode,
                    Some((old.uid, old.gid)),
                )
                .await
                .map_err(|e| e.message),
            (Place::Remote(s), None) => s.remove(&f.path).await.map_err(|e| e.message),
        }
    }

    async fn reload(&self, j: &Journal, root: &Path) -> (bool, Step) {
        let s = match self {
            Place::Local => return reload(j, root).await,
            Place::Remote(s) => s,
        };
        let t = Instant::now();
        let limit = Duration::from_secs(j.reload_timeout_secs);
        match s.reload(&j.remote_work(), &j.reload, limit).await {
            Ok(out) => {
                let mut detail = out.describe();
                // `timeout` exits 124 when it had to stop the command.
                if out.status == Some(124) {
                    detail = format!(
                        "the reload did not finish within {} s and was killed on {}\n{detail}",
                        limit.as_secs(),
                        s.who
                    );
                }
                (out.success(), step("reload", out.success(), ms(t), &detail))
            }
            Err(e) => (false, step("reload", false, ms(t), &e.message)),
        }
    }

    /// Removes a remote transaction's backups (the local journal dir is
    /// the caller's).
    async fn cleanup(&self, j: &Journal) {
        if let Place::Remote(s) = self {
            s.cleanup(&j.remote_backup()).await;
        }
    }

    async fn close(&self) {
        if let Place::Remote(s) = self {
            s.close().await;
        }
    }
}

/// Runs deploys under `STATE_DIR/deploy`, one at a time.
#[derive(Clone)]
pub struct Deployer {
    root: PathBuf,
    hook: Option<CrashHook>,
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The `keytool` that writes JKS keystores.
    keytool: PathBuf,
}

type Run<T> = Result<T, Crashed>;

impl Deployer {
    pub fn new(state_dir: &Path) -> Deployer {
        Deployer {
            root: state_dir.join("deploy"),
            hook: None,
            lock: Arc::default(),
            keytool: keystore::default_keytool(),
        }
    }

    /// The `keytool` to write JKS keystores with (default:
    /// `$JAVA_HOME/bin/keytool`, else the one in the PATH).
    pub fn with_keytool(mut self, keytool: &Path) -> Deployer {
        self.keytool = keytool.to_owned();
        self
    }

    /// Tests: crash at the points the hook picks.
    pub fn with_crash_hook(mut self, hook: CrashHook) -> Deployer {
        self.hook = Some(hook);
        self
    }

    fn point(&self, name: &str) -> Run<()> {
        match &self.hook {
            Some(h) if h(name) => Err(Crashed(name.to_owned())),
            _ => Ok(()),
        }
    }

    fn dir(&self, id: Uuid) -> PathBuf {
        self.root.join(id.to_string())
    }

    fn write_journal(&self, j: &Journal) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(j).map_err(|e| e.to_string())?;
        tether_fs::write_atomic(
            &self.dir(j.id).join("journal.json"),
            &bytes,
            tether_fs::PRIVATE,
        )
        .map_err(|e| e.to_string())
    }

    /// Finishes or rolls back every transaction a kill interrupted. Runs
    /// before each deploy and at agent start.
    pub async fn recover(&self) -> Run<Vec<Report>> {
        let _guard = self.lock.lock().await;
        self.recover_locked().await
    }

    async fn recover_locked(&self) -> Run<Vec<Report>> {
        let mut reports = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Ok(reports);
        };
        // One directory per transaction; `reload.lock` sits beside them.
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            let journal = std::fs::read(dir.join("journal.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Journal>(&b).ok());
            let Some(mut j) = journal else {
                // No journal (or a torn first write, which write_atomic
                // prevents): nothing was touched yet.
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            };
            let mut steps = Vec::new();
            // A remote transaction reconnects to its host first.
            let place = match &j.remote {
                None => Place::Local,
                Some(ssh) => {
                    let t = Instant::now();
                    match remote::Session::connect(ssh).await {
                        Ok(s) => {
                            steps.push(step("recover.connect", true, ms(t), &s.who));
                            Place::Remote(s)
                        }
                        Err(e) => {
                            steps.push(step("recover.connect", false, ms(t), &e.message));
                            if matches!(
                                j.phase,
                                Phase::Preparing | Phase::RolledBack | Phase::Verified
                            ) {
                                // The remote set is whole; only the remote
                                // backups stay behind (0700, beside the set).
                                tracing::warn!(id = %j.id, error = %e.message, "cannot reach a remote target to remove a finished deploy's backups");
                                remove_dir(&dir);
                                continue;
                            }
                            // The journal stays: the next recovery tries
                            // again.
                            let report = Report {
                                id: j.id,
                                state: "rollback_failed".to_owned(),
                                failure: Some(fail(
                                    ErrorCode::DeployRollbackFailed,
                                    format!(
                                        "an interrupted remote deploy cannot be rolled back yet: {} ({})",
                                        e.message,
                                        e.code.as_str()
                                    ),
                                )),
                                new_fingerprint: j.new_fingerprint.clone(),
                                old_fingerprint: j.old_fingerprint.clone(),
                                steps,
                                recovered: true,
                                ..Report::default()
                            };
                            reports.push(located(report, &j));
                            continue;
                        }
                    }
                }
            };
            let report = match j.phase {
                Phase::Preparing | Phase::RolledBack => {
                    place.cleanup(&j).await;
                    remove_dir(&dir);
                    if j.phase == Phase::Preparing {
                        steps.push(step(
                            "recover",
                            true,
                            0,
                            "interrupted before any file was replaced; nothing to undo",
                        ));
                    }
                    Report {
                        id: j.id,
                        state: "rolled_back".to_owned(),
                        failure: Some(j.failure.clone().unwrap_or_else(|| {
                            fail(
                                ErrorCode::DeployInterrupted,
                                "the agent stopped before the deploy replaced any file",
                            )
                        })),
                        new_fingerprint: j.new_fingerprint.clone(),
                        old_fingerprint: j.old_fingerprint.clone(),
                        steps,
                        recovered: true,
                        ..Report::default()
                    }
                }
                Phase::Verified => {
                    place.cleanup(&j).await;
                    remove_dir(&dir);
                    steps.push(step(
                        "recover",
                        true,
                        0,
                        "interrupted after verification; the new set stays",
                    ));
                    Report {
                        id: j.id,
                        state: "deployed".to_owned(),
                        failure: None,
                        new_fingerprint: j.new_fingerprint.clone(),
                        old_fingerprint: j.old_fingerprint.clone(),
                        steps,
                        recovered: true,
                        ..Report::default()
                    }
                }
                Phase::Committing | Phase::Committed | Phase::RollingBack => {
                    let failure = j.failure.clone().unwrap_or_else(|| {
                        fail(
                            ErrorCode::DeployInterrupted,
                            format!("the agent stopped while the deploy was {}; the old set was restored", phase_name(j.phase)),
                        )
                    });
                    let mut r = self.rollback(&place, &mut j, failure, &mut steps).await?;
                    r.recovered = true;
                    r
                }
            };
            place.close().await;
            tracing::info!(id = %report.id, state = %report.state, "deploy recovered after a restart");
            reports.push(located(report, &j));
        }
        Ok(reports)
    }

    /// Deploys `material` to the spec's PEM set. Recovers interrupted
    /// transactions first.
    pub async fn deploy(&self, spec: &DeploySpec, material: &Material) -> Run<Report> {
        self.deploy_observed(spec, material).await.map(|(r, _)| r)
    }

    /// Like [`Deployer::deploy`], and also the verifying handshake that saw
    /// the new certificate served (the scanner's endpoint result, which the
    /// control plane records in its inventory), when the deploy succeeded.
    pub async fn deploy_observed(
        &self,
        spec: &DeploySpec,
        material: &Material,
    ) -> Run<(Report, Option<tether_scan::EndpointResult>)> {
        let mut seen = None;
        let mut r = self.deploy_inner(spec, material, &mut seen).await?;
        r.address = spec
            .verify
            .as_ref()
            .map(|v| std::net::SocketAddr::new(v.address, v.port).to_string())
            .unwrap_or_default();
        r.sni = spec.sni();
        r.path = spec.target.primary().display().to_string();
        let seen = if r.is_deployed() { seen } else { None };
        Ok((r, seen))
    }

    async fn deploy_inner(
        &self,
        spec: &DeploySpec,
        material: &Material,
        seen: &mut Option<tether_scan::EndpointResult>,
    ) -> Run<Report> {
        let _guard = self.lock.lock().await;
        self.recover_locked().await?;
        let id = Uuid::new_v4();
        let mut steps = Vec::new();
        let new_fp = match check_material(material) {
            Ok(fp) => fp,
            Err(msg) => {
                return Ok(Report {
                    id,
                    state: "rolled_back".to_owned(),
                    failure: Some(fail(ErrorCode::DeployKeyMismatch, msg)),
                    new_fingerprint: String::new(),
                    old_fingerprint: None,
                    steps: vec![step("check", false, 0, "nothing was written")],
                    recovered: false,
                    ..Report::default()
                });
            }
        };
        let not_started = |code: ErrorCode, msg: String, steps: Vec<Step>| Report {
            id,
            state: "rolled_back".to_owned(),
            failure: Some(fail(code, msg)),
            new_fingerprint: new_fp.clone(),
            old_fingerprint: None,
            steps,
            recovered: false,
            ..Report::default()
        };
        // A remote target: connect (pinned host key, authentication, sudo)
        // before anything else, so a refusal changes nothing anywhere.
        let place = match &spec.ssh {
            None => Place::Local,
            Some(ssh) => {
                let t = Instant::now();
                match remote::Session::connect(ssh).await {
                    Ok(s) => {
                        steps.push(step(
                            "connect",
                            true,
                            ms(t),
                            &format!(
                                "{} (host key {}, {} authentication{})",
                                s.who,
                                s.host_key,
                                if ssh.password.is_some() {
                                    "password"
                                } else {
                                    "key"
                                },
                                if ssh.sudo { ", sudo -n" } else { "" }
                            ),
                        ));
                        Place::Remote(s)
                    }
                    Err(e) => {
                        steps.push(step("connect", false, ms(t), &e.message));
                        return Ok(not_started(e.code, e.message, steps));
                    }
                }
            }
        };
        let files = match place.plan_files(spec).await {
            Ok(v) => v,
            Err((code, msg)) => return Ok(not_started(code, msg, steps)),
        };
        // Each file's new bytes, made before anything is touched.
        let old_primary = place.read_old(spec, &files).await;
        let (payloads, old_fp) = match payloads(spec, material, old_primary, &self.keytool).await {
            Ok(v) => v,
            Err((code, msg)) => {
                steps.push(step("check", false, 0, "nothing was written"));
                return Ok(not_started(code, msg, steps));
            }
        };
        let mut j = Journal {
            version: 1,
            id,
            phase: Phase::Preparing,
            files,
            reload: spec.reload.command.clone(),
            reload_timeout_secs: spec.reload_timeout().as_secs(),
            verify_address: spec.verify.as_ref().map(|v| v.address),
            verify_port: spec.verify.as_ref().map_or(0, |v| v.port),
            verify_sni: spec.sni(),
            verify_timeout_secs: spec.verify_timeout().as_secs(),
            new_fingerprint: new_fp.clone(),
            old_fingerprint: old_fp,
            failure: None,
            remote: spec.ssh.clone(),
        };

        // 1. Back up.
        let t = Instant::now();
        if let Err(e) = self.write_journal(&j) {
            return Ok(not_started(
                ErrorCode::DeployWriteFailed,
                format!("cannot write the journal: {e}"),
                steps,
            ));
        }
        self.point("journal.preparing")?;
        let dir = self.dir(id);
        if let Err((code, e)) = self.backup(&place, &j).await? {
            place.cleanup(&j).await;
            remove_dir(&dir);
            steps.push(step("backup", false, ms(t), &e));
            return Ok(not_started(code, format!("backup failed: {e}"), steps));
        }
        steps.push(step(
            "backup",
            true,
            ms(t),
            &format!(
                "{} of {} files existed",
                j.files.iter().filter(|f| f.old.is_some()).count(),
                j.files.len()
            ),
        ));

        // 2. Write each file: temporary, fsync, owner and mode, rename.
        let t = Instant::now();
        j.phase = Phase::Committing;
        if let Err(e) = self.write_journal(&j) {
            place.cleanup(&j).await;
            remove_dir(&dir);
            return Ok(not_started(
                ErrorCode::DeployWriteFailed,
                format!("cannot write the journal: {e}"),
                steps,
            ));
        }
        self.point("journal.committing")?;
        for (f, bytes) in j.files.clone().iter().zip(&payloads) {
            if let Err((code, e)) = place.install(f, bytes).await {
                steps.push(step("write", false, ms(t), &e));
                let failure = fail(code, format!("{e}; the old set was restored"));
                return self.rollback(&place, &mut j, failure, &mut steps).await;
            }
            self.point(&format!("install.{}", f.role.as_str()))?;
        }
        j.phase = Phase::Committed;
        if let Err(e) = self.write_journal(&j) {
            let failure = fail(
                ErrorCode::DeployWriteFailed,
                format!("cannot write the journal: {e}"),
            );
            return self.rollback(&place, &mut j, failure, &mut steps).await;
        }
        steps.push(step(
            "write",
            true,
            ms(t),
            &format!("{} files replaced", j.files.len()),
        ));
        self.point("journal.committed")?;

        // 3. Reload.
        let (ok, s) = place.reload(&j, &self.root).await;
        steps.push(s.clone());
        self.point("reload")?;
        if !ok {
            let failure = fail(
                ErrorCode::DeployReloadFailed,
                format!("reload failed: {}", s.detail.lines().next().unwrap_or("")),
            );
            return self.rollback(&place, &mut j, failure, &mut steps).await;
        }

        // 4. Verify the new certificate is served.
        let (res, s) = verify(&j, &new_fp).await;
        steps.push(s);
        self.point("verify")?;
        match res {
            Ok(r) => *seen = r,
            Err(failure) => return self.rollback(&place, &mut j, failure, &mut steps).await,
        }
        j.phase = Phase::Verified;
        // Verified is only a shortcut for recovery: if it cannot be
        // written, a restart rolls back a deploy that worked, which is safe.
        let _ = self.write_journal(&j);
        self.point("journal.verified")?;
        place.cleanup(&j).await;
        remove_dir(&dir);
        self.point("finished")?;
        place.close().await;
        Ok(Report {
            id,
            state: "deployed".to_owned(),
            failure: None,
            new_fingerprint: new_fp,
            old_fingerprint: j.old_fingerprint.clone(),
            steps,
            recovered: false,
            ..Report::default()
        })
    }

    /// Backs up every file that exists, with a crash point after each.
    async fn backup(&self, place: &Place, j: &Journal) -> Run<Result<(), (ErrorCode, String)>> {
        match place {
            Place::Local => {
                let dir = self.dir(j.id);
                for f in &j.files {
                    if f.old.is_some() {
                        let to = dir.join("backup").join(f.role.as_str());
                        if let Err(e) = tether_fs::copy_atomic(&f.path, &to, tether_fs::PRIVATE) {
                            return Ok(Err((ErrorCode::DeployWriteFailed, e.to_string())));
                        }
                    }
                    self.point(&format!("backup.{}", f.role.as_str()))?;
                }
            }
            Place::Remote(s) => {
                // One remote command copies the set; the points follow it.
                let existing: Vec<(&str, &Path)> = j
                    .files
                    .iter()
                    .filter(|f| f.old.is_some())
                    .map(|f| (f.role.as_str(), f.path.as_path()))
                    .collect();
                if let Err(e) = s
                    .backup(&j.remote_work(), &j.remote_backup(), &existing)
                    .await
                {
                    return Ok(Err(pair(e)));
                }
                for f in &j.files {
                    self.point(&format!("backup.{}", f.role.as_str()))?;
                }
            }
        }
        Ok(Ok(()))
    }

    /// Restores every file, reloads, verifies the old certificate is
    /// served. Idempotent: a kill during it is finished by `recover`.
    async fn rollback(
        &self,
        place: &Place,
        j: &mut Journal,
        failure: Failure,
        steps: &mut Vec<Step>,
    ) -> Run<Report> {
        let dir = self.dir(j.id);
        j.phase = Phase::RollingBack;
        j.failure = Some(failure.clone());
        let t = Instant::now();
        let mut errors = Vec::new();
        if let Err(e) = self.write_journal(j) {
            errors.push(format!("journal: {e}"));
        }
        self.point("rollback.journal")?;
        // A reload started by an agent that was then killed may still run
        // (nothing kills it with its parent); restoring under it would let
        // it read a mixed set. It holds the reload lock until it exits, so
        // the restore waits for it (bounded).
        if let Err(e) = place.wait_reloads(j, &self.root).await {
            errors.push(e);
        }
        for f in j.files.clone() {
            if let Err(e) = place.restore(j, &dir, &f).await {
                errors.push(format!("{}: {e}", f.path.display()));
            }
            self.point(&format!("restore.{}", f.role.as_str()))?;
        }
        steps.push(step(
            "restore",
            errors.is_empty(),
            ms(t),
            &errors.join("; "),
        ));
        let (reload_ok, s) = place.reload(j, &self.root).await;
        let reload_detail = s.detail.clone();
        steps.push(Step {
            name: "rollback.reload".to_owned(),
            ..s
        });
        self.point("rollback.reload")?;
        let verified = match &j.old_fingerprint {
            Some(old) => {
                let (res, s) = verify(j, &old.clone()).await;
                steps.push(Step {
                    name: "rollback.verify".to_owned(),
                    ..s
                });
                res.is_ok()
            }
            // Nothing was served from these files before; there is no old
            // certificate to see again.
            None => {
                steps.push(step(
                    "rollback.verify",
                    true,
                    0,
                    "no old certificate to verify (the set did not exist)",
                ));
                true
            }
        };
        self.point("rollback.verify")?;
        let state = if errors.is_empty() && verified {
            "rolled_back"
        } else {
            "rollback_failed"
        };
        let failure = if state == "rolled_back" {
            failure
        } else {
            fail(
                ErrorCode::DeployRollbackFailed,
                format!(
                    "{} (first failure: {} {}; restore: {}; reload ok: {reload_ok}: {})",
                    if verified {
                        "the old files could not all be restored"
                    } else {
                        "the old certificate is not served again"
                    },
                    failure.code,
                    failure.message,
                    if errors.is_empty() {
                        "ok".to_owned()
                    } else {
                        errors.join("; ")
                    },
                    reload_detail.lines().next().unwrap_or("")
                ),
            )
        };
        if state == "rolled_back" {
            j.phase = Phase::RolledBack;
            let _ = self.write_journal(j);
            self.point("rollback.done")?;
            place.cleanup(j).await;
            remove_dir(&dir);
        }
        // A failed rollback keeps its journal and backups for the admin
        // (the action of TETHER-E8506 points there); the next recover
        // tries again.
        Ok(Report {
            id: j.id,
            state: state.to_owned(),
            failure: Some(failure),
            new_fingerprint: j.new_fingerprint.clone(),
            old_fingerprint: j.old_fingerprint.clone(),
            steps: std::mem::take(steps),
            recovered: false,
            ..Report::default()
        })
    }
}

/// Where the transaction ran: the verified endpoint and the certificate
/// file.
fn located(mut r: Report, j: &Journal) -> Report {
    r.address = j
        .verify_address
        .map(|a| std::net::SocketAddr::new(a, j.verify_port).to_string())
        .unwrap_or_default();
    r.sni = j.verify_sni.clone();
    r.path = j
        .files
        .iter()
        .find(|f| matches!(f.role, Role::Cert | Role::Keystore))
        .map(|f| f.path.display().to_string())
        .unwrap_or_default();
    r
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Preparing => "preparing",
        Phase::Committing => "replacing the files",
        Phase::Committed => "reloading or verifying",
        Phase::Verified => "finishing",
        Phase::RollingBack => "rolling back",
        Phase::RolledBack => "rolled back",
    }
}

fn ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn step(name: &str, ok: bool, duration_ms: u64, detail: &str) -> Step {
    Step {
        name: name.to_owned(),
        ok,
        duration_ms,
        detail: detail.chars().take(2000).collect(),
    }
}

fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    if let Some(parent) = dir.parent() {
        let _ = tether_fs::sync_dir(parent);
    }
}

/// A PEM file's content.
fn content(m: &Material, role: Role) -> String {
    match role {
        Role::Cert => m.cert_pem.clone(),
        Role::Key => m.key_pem.clone(),
        Role::Chain => m.chain_pem.clone(),
        Role::Fullchain => {
            let mut s = m.cert_pem.trim_end().to_owned();
            s.push('\n');
            s.push_str(m.chain_pem.trim_end());
            s.push('\n');
            s
        }
        Role::Keystore => String::new(),
    }
}

/// Each file's new bytes, and the fingerprint served before.
type Payloads = (Vec<Vec<u8>>, Option<String>);

/// The bytes of each file of the target, in `files()` order, and the
/// fingerprint the current certificate file or keystore holds. For a
/// keystore the password is read from its secret reference here, used,
/// and dropped.
async fn payloads(
    spec: &DeploySpec,
    m: &Material,
    old: Result<Option<Vec<u8>>, (ErrorCode, String)>,
    keytool: &Path,
) -> Result<Payloads, (ErrorCode, String)> {
    let Some(k) = spec.target.keystore() else {
        let files = spec.target.files();
        let old_fp = old
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| first_cert_der(&t))
            .map(|d| tether_x509::fingerprint(&d));
        let bytes = files
            .iter()
            .map(|(role, _)| content(m, *role).into_bytes())
            .collect();
        return Ok((bytes, old_fp));
    };
    let password = k.password.resolve().map_err(|e| {
        (
            ErrorCode::DeploySecretUnavailable,
            format!("the keystore password: {e}"),
        )
    })?;
    let jks = spec.target.is_jks();
    let keytool_failed = |e: keystore::JksError| match e {
        keystore::JksError::Keytool(e) => (ErrorCode::DeployKeytoolUnavailable, e),
        keystore::JksError::Unreadable(e) => (
            ErrorCode::DeployKeystoreUnreadable,
            format!("{}: {e}", k.path.display()),
        ),
    };
    // An existing keystore must open with this password: replacing it with
    // one under another password would lock its application out.
    let old_fp = match old? {
        Some(bytes) if jks => keystore::jks_leaf_fingerprint(keytool, &bytes, k.alias(), &password)
            .await
            .map_err(keytool_failed)?,
        Some(bytes) => keystore::leaf_fingerprint(&bytes, &password).map_err(|e| {
            (
                ErrorCode::DeployKeystoreUnreadable,
                format!("{}: {e}", k.path.display()),
            )
        })?,
        None => None,
    };
    let mut bytes =
        keystore::build(m, k.alias(), &password).map_err(|e| (ErrorCode::DeployKeyMismatch, e))?;
    if jks {
        bytes = keystore::to_jks(keytool, &bytes, k.alias(), &password)
            .await
            .map_err(keytool_failed)?;
    }
    Ok((vec![bytes], old_fp))
}

/// The certificate must be PEM, match the key, and the chain must be PEM
/// certificates. Returns the new fingerprint.
fn check_material(m: &Material) -> Result<String, String> {
    let cert = first_cert_der(&m.cert_pem).ok_or("the certificate is not PEM")?;
    let chain = pem::parse_many(&m.chain_pem).map_err(|e| format!("the chain is not PEM: {e}"))?;
    if chain.iter().any(|p| p.tag() != "CERTIFICATE") {
        return Err("the chain holds something other than certificates".to_owned());
    }
    let key = rcgen::KeyPair::from_pem(&m.key_pem)
        .map_err(|_| "the key is not a PEM private key".to_owned())?;
    let spki = key.public_key_der();
    if !cert.windows(spki.len()).any(|w| w == spki.as_slice()) {
        return Err("the certificate is not for the key generated on this host".to_owned());
    }
    Ok(tether_x509::fingerprint(&cert))
}

fn first_cert_der(text: &str) -> Option<Vec<u8>> {
    pem::parse_many(text)
        .ok()?
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
}

fn account(text: &str, user: bool) -> Result<u32, String> {
    if let Ok(n) = text.parse::<u32>() {
        return Ok(n);
    }
    let found = if user {
        nix::unistd::User::from_name(text)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    } else {
        nix::unistd::Group::from_name(text)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    };
    found.ok_or_else(|| {
        format!(
            "no {} named {text:?} on this host",
            if user { "user" } else { "group" }
        )
    })
}

/// Each file's target mode and owner, and what exists now.
fn plan_files(spec: &DeploySpec) -> Result<Vec<FileEntry>, String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let uid = spec.target.owner().map(|o| account(o, true)).transpose()?;
    let gid = spec.target.group().map(|g| account(g, false)).transpose()?;
    let mut files = Vec::new();
    for (role, path) in spec.target.files() {
        let old = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => Some(OldFile {
                mode: m.permissions().mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            }),
            Ok(_) => {
                return Err(format!(
                    "{} exists and is not a regular file",
                    path.display()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let owner = match (uid, gid, &old) {
            (None, None, None) => None,
            (u, g, Some(o)) => Some((u.unwrap_or(o.uid), g.unwrap_or(o.gid))),
            (u, g, None) => Some((
                u.unwrap_or_else(|| nix::unistd::geteuid().as_raw()),
                g.unwrap_or_else(|| nix::unistd::getegid().as_raw()),
            )),
        };
        let mode = spec.target.mode_of(role).map_err(|e| e.to_string())?;
        files.push(FileEntry {
            role,
            path,
            mode,
            owner,
            old,
        });
    }
    Ok(files)
}

/// Takes the reload lock (`STATE_DIR/deploy/reload.lock`, flock), waiting
/// at most `limit` for a reload that holds it. The lock travels with the
/// reload command as its stdin, so a reload orphaned by a kill -9 of the
/// agent holds it until it exits.
async fn reload_lock(
    root: &Path,
    limit: Duration,
) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    use nix::fcntl::{Flock, FlockArg};
    std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let path = root.join("reload.lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let deadline = Instant::now() + limit;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => return Ok(locked),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = f;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err((_, e)) => {
                return Err(format!(
                    "an earlier reload still holds {} after {} s: {e}",
                    path.display(),
                    limit.as_secs()
                ));
            }
        }
    }
}

async fn reload(j: &Journal, root: &Path) -> (bool, Step) {
    let t = Instant::now();
    let limit = Duration::from_secs(j.reload_timeout_secs);
    let lock = match reload_lock(root, limit + Duration::from_secs(5)).await {
        Ok(l) => l,
        Err(e) => return (false, step("reload", false, ms(t), &e)),
    };
    // The child's stdin is the locked file: the lock lives as long as the
    // reload does, even if this process is killed. Dropping `lock` after
    // the reload ended releases it.
    let stdin = match lock.try_clone() {
        Ok(f) => std::process::Stdio::from(f),
        Err(e) => {
            return (
                false,
                step("reload", false, ms(t), &format!("reload lock: {e}")),
            );
        }
    };
    let mut cmd = tokio::process::Command::new(&j.reload[0]);
    cmd.args(&j.reload[1..])
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return (
                false,
                step(
                    "reload",
                    false,
                    ms(t),
                    &format!("cannot start {:?}: {e}", j.reload[0]),
                ),
            );
        }
    };
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let text = format!(
                "exit {}\n{}{}",
                out.status
                    .code()
                    .map_or_else(|| "by a signal".to_owned(), |c| c.to_string()),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (
                out.status.success(),
                step("reload", out.status.success(), ms(t), &redact(&text)),
            )
        }
        Ok(Err(e)) => (
            false,
            step(
                "reload",
                false,
                ms(t),
                &format!("waiting for the reload failed: {e}"),
            ),
        ),
        Err(_) => (
            false,
            step(
                "reload",
                false,
                ms(t),
                &format!(
                    "the reload did not finish within {} s and was killed",
                    limit.as_secs()
                ),
            ),
        ),
    }
}

/// Handshakes until `expect` is served or the verify timeout passes.
/// `Ok(None)`: the spec names no endpoint (a keystore target), so there is
/// nothing to handshake with.
async fn verify(
    j: &Journal,
    expect: &str,
) -> (Result<Option<tether_scan::EndpointResult>, Failure>, Step) {
    let t = Instant::now();
    let Some(ip) = j.verify_address else {
        return (
            Ok(None),
            step(
                "verify",
                true,
                0,
                "no endpoint named; the written keystore was not verified on the wire",
            ),
        );
    };
    let deadline = t + Duration::from_secs(j.verify_timeout_secs);
    let ep = tether_scan::Endpoint {
        ip,
        port: j.verify_port,
        sni: j.verify_sni.clone(),
        name: None,
        starttls: None,
        reverse_dns: false,
    };
    let mut last;
    loop {
        let tried = Instant::now();
        let outcome =
            tether_scan::probe_once(&ep, Duration::from_secs(3), Duration::from_secs(5)).await;
        let seen = outcome
            .chain()
            .and_then(|c| c.certs.first())
            .map(|c| c.fingerprint.clone());
        match seen {
            Some(fp) if fp == expect => {
                let s = step(
                    "verify",
                    true,
                    ms(t),
                    &format!("{}:{} serves {fp}", ep.ip, ep.port),
                );
                let seen = tether_scan::EndpointResult {
                    endpoint: ep,
                    outcome,
                    elapsed_ms: ms(tried),
                    // The transaction has no clock of its own: the server
                    // records the verifying handshake at its arrival, which
                    // follows it within the task's result delivery.
                    observed_at: None,
                };
                return (Ok(Some(seen)), s);
            }
            Some(fp) => {
                last = fail(
                    ErrorCode::DeployVerifyMismatch,
                    format!("{}:{} serves {fp}, expected {expect}", ep.ip, ep.port),
                );
            }
            None => {
                last = fail(
                    ErrorCode::DeployVerifyUnreachable,
                    format!(
                        "{}:{} gave no certificate: {}",
                        ep.ip,
                        ep.port,
                        outcome.name()
                    ),
                );
            }
        }
        if Instant::now() + Duration::from_millis(200) >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let detail = last.message.clone();
    (Err(last), step("verify", false, ms(t), &detail))
}
