//! How channels map onto TUF targets, shared by the publisher and the
//! updater: target names, the `custom` metadata each target carries, and the
//! served tree's paths.
//!
//! Target names are flat (`main.v12.full.zst`, `main.v11-v12.line.delta`):
//! channel names are restricted to `[a-z0-9._-]`, so a name is URL-safe and
//! never a path. With consistent snapshots a target is served at
//! `targets/<sha256>.<name>`, so every object is immutable and a mirror can
//! be copied while it is being served.

use serde::{Deserialize, Serialize};

/// The served tree: metadata lives here…
pub const METADATA_DIR: &str = "metadata";
/// …and the hash-named objects here.
pub const TARGETS_DIR: &str = "targets";

/// The full object of a version: the zstd-compressed content.
pub fn full_name(channel: &str, version: u64) -> String {
    format!("{channel}.v{version}.full.zst")
}

/// A delta from `from` to `to`; `kind` is `"line"` or `"zstd"`.
pub fn delta_name(channel: &str, from: u64, to: u64, kind: &str) -> String {
    format!("{channel}.v{from}-v{to}.{kind}.delta")
}

/// Where a target is served, relative to the tree's root.
pub fn target_path(sha256_hex: &str, name: &str) -> String {
    format!("{TARGETS_DIR}/{sha256_hex}.{name}")
}

/// Whether a target is a full object or a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Full,
    Delta,
}

/// The `custom` member of every Tether target. It is signed with the
/// targets metadata, so the updater can trust every field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetMeta {
    pub channel: String,
    /// The version this target produces.
    pub version: u64,
    pub kind: TargetKind,
    /// For a delta: `"line"` or `"zstd"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_kind: Option<String>,
    /// For a delta: the version it applies to, and that version's SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_sha256: Option<String>,
    /// SHA-256 and length of the content this target produces once
    /// decompressed or applied.
    pub content_sha256: String,
    pub content_length: u64,
    /// `"text"` or `"binary"`.
    pub content: String,
    /// RFC 3339.
    pub published_at: String,
}

impl TargetMeta {
    /// Reads the `custom` map of a TUF target; `None` when it is not a
    /// Tether target.
    pub fn from_custom(
        custom: &std::collections::HashMap<String, serde_json::Value>,
    ) -> Option<Self> {
        let map: serde_json::Map<String, serde_json::Value> =
            custom.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        serde_json::from_value(serde_json::Value::Object(map)).ok()
    }

    /// The `custom` map for a TUF target.
    pub fn to_custom(&self) -> std::collections::HashMap<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map.into_iter().collect(),
            // A struct of strings and integers always serializes to an object.
            _ => std::collections::HashMap::new(),
        }
    }
}

/// RFC 3339, whole seconds: TUF expirations and `published_at`.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Channel names: 1–64 of `[a-z0-9._-]`, starting with a letter or digit.
pub fn valid_channel(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
        && !name.contains("..")
}

/// Whether `name` is one plain file name: no separator, not `.` or `..`,
/// no NUL, at most 255 bytes.
pub fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether a signed target is one the updater may act on: a valid channel,
/// the exact name the publisher gives such a target, and hashes that are
/// SHA-256 hex. Anything else is ignored, however well signed: these values
/// become file names in the agent's state dir.
pub fn target_is_sane(name: &str, meta: &TargetMeta) -> bool {
    if !valid_channel(&meta.channel) || !is_sha256_hex(&meta.content_sha256) {
        return false;
    }
    let expected = match (meta.kind, meta.base_version, meta.delta_kind.as_deref()) {
        (TargetKind::Full, None, None) => full_name(&meta.channel, meta.version),
        (TargetKind::Delta, Some(from), Some(kind @ ("line" | "zstd"))) => {
            if !meta.base_sha256.as_deref().is_some_and(is_sha256_hex) {
                return false;
            }
            delta_name(&meta.channel, from, meta.version, kind)
        }
        _ => return false,
    };
    name == expected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_url_safe_and_never_paths() {
        for ok in ["main", "clamav-daily", "a", "rules_v2", "x.y"] {
            assert!(valid_channel(ok), "{ok}");
        }
        for bad in [
            "",
            "Main",
            "-x",
            ".x",
            "a/b",
            "a..b",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!valid_channel(bad), "{bad}");
        }
    }

    #[test]
    fn custom_metadata_round_trips_and_foreign_targets_are_ignored() {
        let m = TargetMeta {
            channel: "main".into(),
            version: 3,
            kind: TargetKind::Delta,
            delta_kind: Some("line".into()),
            base_version: Some(2),
            base_sha256: Some("ab".into()),
            content_sha256: "cd".into(),
            content_length: 10,
            content: "text".into(),
            published_at: "2026-11-21T00:00:00Z".into(),
        };
        assert_eq!(TargetMeta::from_custom(&m.to_custom()), Some(m));
        assert_eq!(TargetMeta::from_custom(&Default::default()), None);
    }
}
