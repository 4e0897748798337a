//! Escalation bundles: agents upload the tar.gz `tether agent bundle`
//! writes; admins list and download them per agent.
//!
//! Storage decision: the bytes live in the database (a `bundles` table),
//! not under `data_dir/bundles/`. A PostgreSQL-backed control plane may run
//! several servers with no shared data dir, one backup then holds
//! everything, and the row and its bytes can never disagree. Growth is
//! bounded: each agent keeps only its newest [`KEEP_PER_AGENT`] bundles of
//! at most [`MAX_BUNDLE_BYTES`] each.
//!
//! An upload is hostile input: it must be gzip, it is decompressed in full
//! (which checks the CRC) with a cap on the unpacked size, and it must hold
//! a readable tar. The doctor verdict is taken from its `MANIFEST.json`
//! when there is one.

use std::io::Read;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tether_store::{AgentRecord, NewBundle, StoreError};
use tether_wire::{BundleInfo, DoctorSummary};
use tracing::info;
use uuid::Uuid;

use super::{Ctx, ServiceError};

/// The largest bundle accepted, compressed: 16 MiB.
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;
/// The largest bundle accepted once decompressed: 256 MiB.
pub const MAX_UNPACKED_BYTES: u64 = 256 * 1024 * 1024;
/// The largest `MANIFEST.json` read.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// How many bundles each agent keeps.
pub const KEEP_PER_AGENT: u32 = 10;
/// The most bundles one list shows.
pub const MAX_LIST: u32 = 100;

/// The part of `MANIFEST.json` the server reads.
#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    verdict: Option<DoctorSummary>,
}

/// What a valid upload holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Inspected {
    pub unpacked_bytes: u64,
    pub entries: usize,
    pub verdict: Option<DoctorSummary>,
}

/// Validates an upload: gzip, whole, within the unpacked cap, a tar inside,
/// and a well-formed manifest if it has one.
pub fn inspect(data: &[u8]) -> Result<Inspected, ServiceError> {
    if data.len() < 18 || data[0] != 0x1f || data[1] != 0x8b || data[2] != 8 {
        let head: Vec<String> = data.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(ServiceError::BundleInvalid(format!(
            "the body does not start with the gzip signature 1f 8b 08 (got {}, {} bytes in all)",
            if head.is_empty() {
                "nothing".to_owned()
            } else {
                head.join(" ")
            },
            data.len()
        )));
    }
    let capped = flate2::read::GzDecoder::new(data).take(MAX_UNPACKED_BYTES + 1);
    let mut archive = tar::Archive::new(capped);
    let entries = archive
        .entries()
        .map_err(|e| invalid("cannot read the tar inside", &e))?;
    let mut count = 0;
    let mut verdict = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid("cannot read a tar entry", &e))?;
        count += 1;
        let is_manifest = entry
            .path()
            .map(|p| p.as_os_str() == "MANIFEST.json")
            .unwrap_or(false);
        if is_manifest {
            let mut text = Vec::new();
            (&mut entry)
                .take(MAX_MANIFEST_BYTES + 1)
                .read_to_end(&mut text)
                .map_err(|e| invalid("cannot read MANIFEST.json", &e))?;
            if text.len() as u64 > MAX_MANIFEST_BYTES {
                return Err(ServiceError::BundleInvalid(format!(
                    "MANIFEST.json is larger than {MAX_MANIFEST_BYTES} bytes"
                )));
            }
            let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
                ServiceError::BundleInvalid(format!("MANIFEST.json is not valid: {e}"))
            })?;
            if let Some(v) = &manifest.verdict {
                super::actions::summary(v)?;
            }
            verdict = manifest.verdict;
        }
    }
    // Reading to the end checks the gzip trailer (CRC and length).
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink())
        .map_err(|e| invalid("the gzip stream is damaged", &e))?;
    let unpacked = rest.limit();
    let unpacked_bytes = MAX_UNPACKED_BYTES + 1 - unpacked;
    if unpacked == 0 {
        return Err(ServiceError::BundleInvalid(format!(
            "it unpacks to more than {MAX_UNPACKED_BYTES} bytes"
        )));
    }
    if count == 0 {
        return Err(ServiceError::BundleInvalid(
            "the tar inside is empty".to_owned(),
        ));
    }
    Ok(Inspected {
        unpacked_bytes,
        entries: count,
        verdict,
    })
}

fn invalid(what: &str, e: &std::io::Error) -> ServiceError {
    ServiceError::BundleInvalid(format!("{what}: {e}"))
}

/// Whether `agent` may upload at all: only an agent that is served, not
/// one still awaiting an admin's approval.
pub fn may_upload(ctx: &Ctx, agent: &AgentRecord) -> Result<(), ServiceError> {
    if crate::status::on_checkin(agent.into(), ctx.now())
        == crate::status::CheckinVerdict::AwaitingApproval
    {
        return Err(ServiceError::PendingApproval {
            agent_id: agent.id,
            enrolled_at: agent.enrolled_at,
        });
    }
    Ok(())
}

/// Checks that a bundle a doctor summary names is one `agent` uploaded, so
/// an agent cannot make its verdict point at another agent's bundle.
pub async fn check_owned(ctx: &Ctx, agent: &AgentRecord, id: Uuid) -> Result<(), ServiceError> {
    match ctx.store.bundle_info(id).await? {
        Some(b) if b.agent_id == agent.id => Ok(()),
        _ => Err(ServiceError::BundleNotOwned { bundle_id: id }),
    }
}

/// Stores an agent's upload.
pub async fn upload(
    ctx: &Ctx,
    agent: &AgentRecord,
    data: Vec<u8>,
) -> Result<BundleInfo, ServiceError> {
    let (data, inspected) = tokio::task::spawn_blocking(move || {
        let r = inspect(&data);
        (data, r)
    })
    .await
    .map_err(|e| ServiceError::Conflict(format!("the bundle check did not finish: {e}")))?;
    let inspected = inspected?;
    if let Some(id) = inspected.verdict.as_ref().and_then(|v| v.bundle_id) {
        check_owned(ctx, agent, id).await?;
    }
    let sha256 = hex::encode(Sha256::digest(&data));
    let bundle = NewBundle {
        id: Uuid::new_v4(),
        agent_id: agent.id,
        data,
        sha256,
        verdict: inspected.verdict,
        at: ctx.now(),
    };
    let info = ctx.store.insert_bundle(&bundle, KEEP_PER_AGENT).await?;
    info!(
        agent_id = %agent.id,
        bundle_id = %info.id,
        bytes = info.size_bytes,
        unpacked_bytes = inspected.unpacked_bytes,
        entries = inspected.entries,
        verdict = info.verdict.as_ref().map_or("-", |v| v.status.as_str()),
        "stored an escalation bundle"
    );
    Ok(info)
}

/// The agent's bundles, newest first.
pub async fn list(ctx: &Ctx, agent_id: Uuid) -> Result<Vec<BundleInfo>, ServiceError> {
    if ctx.store.agent(agent_id).await?.is_none() {
        return Err(ServiceError::NotFound {
            what: "agent",
            id: agent_id.to_string(),
        });
    }
    Ok(ctx.store.list_bundles(agent_id, MAX_LIST).await?)
}

/// One bundle and its bytes.
pub async fn download(ctx: &Ctx, id: Uuid) -> Result<(BundleInfo, Vec<u8>), ServiceError> {
    ctx.store
        .bundle(id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ServiceError::NotFound {
                what: "bundle",
                id: id.to_string(),
            },
            other => other.into(),
        })?
        .ok_or(ServiceError::NotFound {
            what: "bundle",
            id: id.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use tether_wire::ErrorCode;

    fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (name, body) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, *body).expect("appends");
        }
        tar.into_inner().expect("tar").finish().expect("gzip")
    }

    #[test]
    fn a_bundle_with_a_manifest_yields_its_verdict() {
        let manifest = br#"{"schema_version":1,"verdict":{"status":"failed","code":"TETHER-E3101","root_cause":"refused","action":"start it","check":"tcp:127.0.0.1:1","at":"2026-05-17T12:00:00Z"}}"#;
        let data = tar_gz(&[("MANIFEST.json", manifest), ("logs/agent.log", b"hello\n")]);
        let got = inspect(&data).expect("valid");
        assert_eq!(got.entries, 2);
        let v = got.verdict.expect("verdict");
        assert_eq!(v.status, "failed");
        assert_eq!(v.code, Some(ErrorCode::ConnectRefused));
        let without = inspect(&tar_gz(&[("notes.txt", b"x")])).expect("valid");
        assert_eq!(without.verdict, None);
    }

    #[test]
    fn hostile_uploads_are_refused_with_a_reason() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "gzip signature"),
            (b"PK\x03\x04 a zip file, not gzip at all".to_vec(), "gzip signature"),
            (
                {
                    let mut d = tar_gz(&[("a", b"abc")]);
                    let n = d.len();
                    d[n - 6] ^= 0xff; // break the CRC
                    d
                },
                "damaged",
            ),
            (
                {
                    let d = tar_gz(&[("a", &[7u8; 4096])]);
                    d[..d.len() / 2].to_vec()
                },
                "",
            ),
            (
                {
                    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    gz.write_all(b"plain text is not a tar archive, it is just text........................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................").expect("writes");
                    gz.finish().expect("gzip")
                },
                "",
            ),
            (tar_gz(&[("MANIFEST.json", b"{not json")]), "MANIFEST.json"),
            (
                tar_gz(&[(
                    "MANIFEST.json",
                    br#"{"verdict":{"status":"bogus","root_cause":"x","at":"2026-05-17T12:00:00Z"}}"#,
                )]),
                "doctor.status",
            ),
        ];
        for (i, (data, needle)) in cases.into_iter().enumerate() {
            let e = inspect(&data).expect_err("refused");
            assert!(
                matches!(e.code(), ErrorCode::BundleInvalid | ErrorCode::InvalidField),
                "case {i}: {e}"
            );
            assert!(e.to_string().contains(needle), "case {i}: {e}");
        }
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_unpacked_cap() {
        // 300 MiB of zeros compresses to about 300 KiB; it must be refused
        // without ever holding it in memory.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..300 {
            gz.write_all(&zeros).expect("writes");
        }
        let data = gz.finish().expect("gzip");
        assert!(data.len() < MAX_BUNDLE_BYTES);
        let e = inspect(&data).expect_err("refused");
        assert_eq!(e.code(), ErrorCode::BundleInvalid, "{e}");
    }
}
