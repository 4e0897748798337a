//! `offline.*`: an offline install bundle (`tether offline-bundle`,
//! unpacked), checked before or after it was installed: every file against
//! its `SHA256SUMS` (the binary's above all), the CA pin it enrolls with
//! against the one this agent uses, its token's activation window against
//! this host's clock, and the age of its signed definitions.
//!
//! Everything in the directory is hostile input: files are read with caps,
//! names in `SHA256SUMS` must be plain relative paths inside it, and what
//! cannot be read is a finding, never a panic.

use std::io::Read;
use std::path::{Component, Path};
use std::sync::Arc;

use serde::Deserialize;
use tether_wire::ErrorCode;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Ctx;
use crate::engine::TaskOutput;
use crate::report::CheckResult;

/// The largest bundle file hashed (the agent binary is the largest).
const MAX_FILE: u64 = 512 * 1024 * 1024;
/// The largest text file read (`SHA256SUMS`, `MANIFEST.json`, `enroll.env`).
const MAX_TEXT: u64 = 1024 * 1024;
/// The largest `timestamp.json` read from a definitions tar.
const MAX_META: u64 = 1024 * 1024;

#[derive(Debug, Deserialize)]
struct Manifest {
    created_at: String,
    ca_fingerprint: String,
    token: TokenWindow,
}

#[derive(Debug, Deserialize)]
struct TokenWindow {
    id: String,
    not_before: String,
    expires_at: String,
}

pub(crate) async fn check(ctx: Arc<Ctx>) -> TaskOutput {
    let Some(dir) = ctx.input.offline_bundle.clone() else {
        return TaskOutput {
            results: Vec::new(),
            blocked_by: None,
        };
    };
    let now = ctx.world.clock.now();
    let pinned = ctx.input.transport.trust.pinned_ca_sha256;
    let results = tokio::task::spawn_blocking(move || run(&dir, now, pinned))
        .await
        .unwrap_or_else(|e| {
            vec![
                CheckResult::pass("offline.files", "Offline bundle files").fail(
                    ErrorCode::OfflineBundleAltered,
                    format!("the check stopped: {e}"),
                ),
            ]
        });
    TaskOutput {
        results,
        blocked_by: None,
    }
}

/// The four findings for the bundle unpacked at `dir`.
pub(crate) fn run(dir: &Path, now: OffsetDateTime, pinned: Option<[u8; 32]>) -> Vec<CheckResult> {
    let manifest: Result<Manifest, String> = read_text(&dir.join("MANIFEST.json"))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("MANIFEST.json: {e}")));
    vec![
        files(dir),
        pin(dir, manifest.as_ref(), pinned),
        token(dir, manifest.as_ref(), now),
        defs(dir, manifest.as_ref(), now),
    ]
}

fn files(dir: &Path) -> CheckResult {
    let r = CheckResult::pass("offline.files", "Offline bundle files")
        .with("dir", dir.display().to_string());
    let sums = match read_text(&dir.join("SHA256SUMS")) {
        Ok(t) => t,
        Err(e) => {
            return r.fail(
                ErrorCode::OfflineBundleAltered,
                format!(
                    "The bundle's SHA256SUMS cannot be read ({e}), so no file of it can be trusted."
                ),
            );
        }
    };
    let mut checked = Vec::new();
    let mut bad = Vec::new();
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let Some((want, name)) = line.split_once("  ") else {
            bad.push(format!("unreadable line {line:?}"));
            continue;
        };
        let path = Path::new(name);
        if path.is_absolute()
            || path
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            bad.push(format!("{name}: not a path inside the bundle"));
            continue;
        }
        match sha256_file(&dir.join(path)) {
            Ok(Some(got)) if got == want => checked.push(name.to_owned()),
            Ok(Some(_)) => bad.push(format!("{name}: altered (its SHA-256 differs)")),
            // The token is deleted once an install has used it.
            Ok(None) if name == "token" => checked.push("token (used and deleted)".to_owned()),
            Ok(None) => bad.push(format!("{name}: missing")),
            Err(e) => bad.push(format!("{name}: {e}")),
        }
    }
    let r = r.with("verified", checked);
    if bad.is_empty() {
        r
    } else {
        r.with("problems", bad.clone()).fail(
            ErrorCode::OfflineBundleAltered,
            format!(
                "The offline bundle does not match its SHA256SUMS: {}.",
                bad.join("; ")
            ),
        )
    }
}

fn pin(dir: &Path, manifest: Result<&Manifest, &String>, pinned: Option<[u8; 32]>) -> CheckResult {
    let r = CheckResult::pass("offline.pin", "Offline bundle CA pin");
    let env = read_text(&dir.join("enroll.env")).unwrap_or_default();
    let env_pin = env
        .lines()
        .find_map(|l| l.strip_prefix("TETHER_CA_FINGERPRINT="))
        .map(str::trim)
        .map(str::to_owned);
    let Some(bundle_pin) = env_pin.or_else(|| manifest.ok().map(|m| m.ca_fingerprint.clone()))
    else {
        return r.fail(
            ErrorCode::OfflineBundleAltered,
            "The bundle names no CA pin (enroll.env has no TETHER_CA_FINGERPRINT).",
        );
    };
    let r = r.with("bundle_pin", bundle_pin.clone());
    let parsed = match tether_transport::parse_fingerprint(&bundle_pin) {
        Ok(p) => p,
        Err(e) => {
            return r.fail(
                ErrorCode::OfflineBundleAltered,
                format!("The bundle's CA pin {bundle_pin:?} is not a SHA-256 fingerprint: {e}."),
            );
        }
    };
    if let Ok(m) = manifest
        && tether_transport::parse_fingerprint(&m.ca_fingerprint).ok() != Some(parsed)
    {
        return r.fail(
            ErrorCode::OfflineBundleAltered,
            format!(
                "enroll.env pins {bundle_pin} but MANIFEST.json says {}: one of them was edited.",
                m.ca_fingerprint
            ),
        );
    }
    match pinned {
        Some(agent) if agent != parsed => r
            .with("agent_pin", format!("sha256:{}", hex(&agent)))
            .fail(
                ErrorCode::OfflineBundlePinMismatch,
                format!(
                    "The bundle pins {bundle_pin}, but this agent pins sha256:{}: the bundle was made for another control plane (or its CA was replaced).",
                    hex(&agent)
                ),
            ),
        Some(_) => r.with("agent_pin", "the same"),
        None => r.with(
            "note",
            "this agent pins no CA yet: the TLS check verifies the server against the bundle's pin",
        ),
    }
}

fn token(dir: &Path, manifest: Result<&Manifest, &String>, now: OffsetDateTime) -> CheckResult {
    let r = CheckResult::pass("offline.token", "Offline bundle token window");
    let m = match manifest {
        Ok(m) => m,
        Err(e) => {
            return r.fail(
                ErrorCode::OfflineBundleAltered,
                format!("MANIFEST.json cannot be read ({e}), so the token's window is unknown."),
            );
        }
    };
    let (Ok(from), Ok(until)) = (
        OffsetDateTime::parse(&m.token.not_before, &Rfc3339),
        OffsetDateTime::parse(&m.token.expires_at, &Rfc3339),
    ) else {
        return r.fail(
            ErrorCode::OfflineBundleAltered,
            "MANIFEST.json's token window is not two RFC 3339 times.",
        );
    };
    let r = r
        .with("token_id", m.token.id.clone())
        .with("not_before", m.token.not_before.clone())
        .with("expires_at", m.token.expires_at.clone())
        .with("host_time", now.format(&Rfc3339).unwrap_or_default());
    if !dir.join("token").exists() {
        return r.with("note", "the token was used by an install and deleted");
    }
    if now < from {
        r.fail(
            ErrorCode::OfflineTokenWindow,
            format!(
                "The bundle's token is valid from {} but this host's clock says {}: it is not valid yet (or this clock is behind).",
                m.token.not_before,
                now.format(&Rfc3339).unwrap_or_default()
            ),
        )
    } else if now >= until {
        r.fail(
            ErrorCode::OfflineTokenWindow,
            format!(
                "The bundle's token expired at {} (this host's clock says {}).",
                m.token.expires_at,
                now.format(&Rfc3339).unwrap_or_default()
            ),
        )
    } else {
        r
    }
}

fn defs(dir: &Path, manifest: Result<&Manifest, &String>, now: OffsetDateTime) -> CheckResult {
    let r = CheckResult::pass("offline.defs", "Offline bundle definitions");
    let r = match manifest
        .ok()
        .and_then(|m| OffsetDateTime::parse(&m.created_at, &Rfc3339).ok())
    {
        Some(made) => r.with(
            "bundle_age_hours",
            ((now - made).whole_minutes() as f64 / 6.0).round() / 10.0,
        ),
        None => r,
    };
    let Ok(entries) = std::fs::read_dir(dir.join("defs")) else {
        return r.with("note", "the bundle holds no definitions");
    };
    let mut seen = Vec::new();
    let mut expired = Vec::new();
    let mut unreadable = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        match timestamp_expiry(&path) {
            Ok(expires) => {
                seen.push(serde_json::json!({
                    "file": name,
                    "expires": expires.format(&Rfc3339).unwrap_or_default(),
                }));
                if expires <= now {
                    expired.push(format!(
                        "{name} (signed metadata expired {})",
                        expires.format(&Rfc3339).unwrap_or_default()
                    ));
                }
            }
            Err(e) => unreadable.push(format!("{name}: {e}")),
        }
    }
    let r = r.with("channels", seen);
    if !unreadable.is_empty() {
        r.fail(
            ErrorCode::OfflineBundleAltered,
            format!(
                "A definitions file of the bundle cannot be read: {}.",
                unreadable.join("; ")
            ),
        )
    } else if !expired.is_empty() {
        r.fail(
            ErrorCode::OfflineDefsStale,
            format!(
                "The bundle's definitions are too old to install: {}.",
                expired.join("; ")
            ),
        )
    } else {
        r
    }
}

/// When the signed timestamp metadata in a `tether defs export` tar expires.
fn timestamp_expiry(path: &Path) -> Result<OffsetDateTime, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(file.take(MAX_FILE));
    for entry in archive.entries().map_err(|e| format!("not a tar: {e}"))? {
        let entry = entry.map_err(|e| format!("not a tar: {e}"))?;
        let is_timestamp = entry
            .path()
            .ok()
            .and_then(|p| p.file_name().map(|n| n == "timestamp.json"))
            .unwrap_or(false);
        if !is_timestamp {
            continue;
        }
        let mut text = String::new();
        entry
            .take(MAX_META)
            .read_to_string(&mut text)
            .map_err(|e| format!("timestamp.json: {e}"))?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("timestamp.json: {e}"))?;
        let expires = doc["signed"]["expires"]
            .as_str()
            .ok_or("timestamp.json names no expiry")?;
        return OffsetDateTime::parse(expires, &Rfc3339)
            .map_err(|e| format!("timestamp.json's expiry {expires:?}: {e}"));
    }
    Err("no signed timestamp metadata in it".to_owned())
}

fn read_text(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_TEXT)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text)
}

/// The file's SHA-256 (hex), `None` when it does not exist.
fn sha256_file(path: &Path) -> Result<Option<String>, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut reader = file.take(MAX_FILE);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(Some(hex(ctx.finish().as_ref())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    const PIN: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &Rfc3339).expect("time")
    }

    fn defs_tar(expires: &str) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let doc = format!(r#"{{"signed":{{"_type":"timestamp","expires":"{expires}"}}}}"#);
        let mut header = tar::Header::new_gnu();
        header.set_size(doc.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "metadata/timestamp.json", doc.as_bytes())
            .expect("append");
        tar.into_inner().expect("tar")
    }

    /// A bundle as `tether offline-bundle` lays it out.
    fn bundle(defs_expires: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("dir");
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("tether-agent", b"\x7fELF the agent".to_vec()),
            ("token", b"tok_secret\n".to_vec()),
            (
                "enroll.env",
                format!("TETHER_SERVER=https://cp.example:8443/\nTETHER_CA_FINGERPRINT={PIN}\n")
                    .into_bytes(),
            ),
            ("install.sh", b"#!/bin/sh\n".to_vec()),
            ("defs/main.tar", defs_tar(defs_expires)),
        ];
        std::fs::create_dir_all(dir.path().join("defs")).expect("defs dir");
        let mut sums = String::new();
        for (name, data) in &files {
            std::fs::write(dir.path().join(name), data).expect("write");
            sums.push_str(&format!(
                "{}  {name}\n",
                hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
            ));
        }
        std::fs::write(dir.path().join("SHA256SUMS"), sums).expect("sums");
        let manifest = serde_json::json!({
            "manifest_version": 1,
            "created_at": "2026-12-01T00:00:00Z",
            "ca_fingerprint": PIN,
            "token": {"id": "t1", "not_before": "2026-12-01T00:00:00Z", "expires_at": "2026-12-08T00:00:00Z"},
        });
        std::fs::write(dir.path().join("MANIFEST.json"), manifest.to_string()).expect("manifest");
        dir
    }

    fn by_id<'a>(results: &'a [CheckResult], id: &str) -> &'a CheckResult {
        results.iter().find(|r| r.id == id).expect("result")
    }

    fn pin_bytes(fill: u8) -> [u8; 32] {
        [fill; 32]
    }

    #[test]
    fn a_whole_bundle_in_its_window_passes_every_check() {
        let b = bundle("2026-12-31T00:00:00Z");
        let results = run(b.path(), at("2026-12-03T00:00:00Z"), Some(pin_bytes(0x11)));
        for r in &results {
            assert_eq!(r.status, Status::Pass, "{r:?}");
        }
        assert_eq!(
            by_id(&results, "offline.defs").evidence["bundle_age_hours"],
            serde_json::json!(48.0)
        );
    }

    #[test]
    fn an_altered_or_missing_file_and_a_hostile_name_are_named() {
        let b = bundle("2026-12-31T00:00:00Z");
        std::fs::write(b.path().join("tether-agent"), b"\x7fELF another binary").expect("alter");
        std::fs::remove_file(b.path().join("install.sh")).expect("remove");
        let mut sums = std::fs::read_to_string(b.path().join("SHA256SUMS")).expect("sums");
        sums.push_str(&format!("{}  ../../etc/shadow\n", "0".repeat(64)));
        std::fs::write(b.path().join("SHA256SUMS"), sums).expect("sums");
        let results = run(b.path(), at("2026-12-03T00:00:00Z"), None);
        let files = by_id(&results, "offline.files");
        assert_eq!(files.code, Some(ErrorCode::OfflineBundleAltered));
        let problem = files.problem.clone().unwrap_or_default();
        for expected in [
            "tether-agent: altered",
            "install.sh: missing",
            "../../etc/shadow: not a path inside the bundle",
        ] {
            assert!(problem.contains(expected), "{expected}: {problem}");
        }
        // A used (deleted) token is not a missing file.
        std::fs::remove_file(b.path().join("token")).expect("remove");
        let results = run(b.path(), at("2026-12-03T00:00:00Z"), None);
        assert!(
            !by_id(&results, "offline.files")
                .problem
                .clone()
                .unwrap_or_default()
                .contains("token"),
        );
        assert_eq!(by_id(&results, "offline.token").status, Status::Pass);
    }

    #[test]
    fn the_token_window_is_judged_by_this_hosts_clock() {
        let b = bundle("2026-12-31T00:00:00Z");
        for (now, says) in [
            ("2026-11-30T23:00:00Z", "not valid yet"),
            ("2026-12-08T00:00:00Z", "expired at 2026-12-08T00:00:00Z"),
        ] {
            let results = run(b.path(), at(now), None);
            let token = by_id(&results, "offline.token");
            assert_eq!(token.code, Some(ErrorCode::OfflineTokenWindow), "{now}");
            assert!(
                token.problem.clone().unwrap_or_default().contains(says),
                "{token:?}"
            );
        }
    }

    #[test]
    fn another_pin_and_expired_definitions_are_named() {
        let b = bundle("2026-12-02T00:00:00Z");
        let results = run(b.path(), at("2026-12-03T00:00:00Z"), Some(pin_bytes(0x22)));
        assert_eq!(
            by_id(&results, "offline.pin").code,
            Some(ErrorCode::OfflineBundlePinMismatch)
        );
        let defs = by_id(&results, "offline.defs");
        assert_eq!(defs.code, Some(ErrorCode::OfflineDefsStale));
        assert!(
            defs.problem
                .clone()
                .unwrap_or_default()
                .contains("main.tar")
        );

        // enroll.env edited to another pin than the manifest's.
        let other = PIN.replace('1', "3");
        std::fs::write(
            b.path().join("enroll.env"),
            format!("TETHER_CA_FINGERPRINT={other}\n"),
        )
        .expect("edit");
        let results = run(b.path(), at("2026-12-03T00:00:00Z"), None);
        assert_eq!(
            by_id(&results, "offline.pin").code,
            Some(ErrorCode::OfflineBundleAltered)
        );
    }

    #[test]
    fn an_empty_or_garbage_directory_is_findings_not_a_panic() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("MANIFEST.json"), b"\xff\xfe not json").expect("w");
        std::fs::create_dir_all(dir.path().join("defs")).expect("defs");
        std::fs::write(dir.path().join("defs/x.tar"), b"garbage").expect("w");
        let results = run(dir.path(), at("2026-12-03T00:00:00Z"), None);
        assert_eq!(results.len(), 4);
        for r in &results {
            assert_eq!(r.status, Status::Fail, "{r:?}");
            assert_eq!(r.code, Some(ErrorCode::OfflineBundleAltered), "{r:?}");
        }
    }
}
