//! Deltas between published definitions versions, and the compressed full
//! objects they fall back to.
//!
//! Two delta kinds exist, picked by the publisher from [`content_kind`]:
//!
//! - [`DeltaKind::Line`]: record-level, like ClamAV's cdiff. The target is
//!   rebuilt from `COPY(start_line, count)` runs of the base's lines and
//!   `INSERT(bytes)` of new ones (see [`line`]). Signature databases are one
//!   record per line, so a 0.5 % change costs about 0.5 % of the records.
//! - [`DeltaKind::Zstd`]: `zstd --patch-from` style, for binary content: the
//!   target compressed with the whole base as a reference prefix (see
//!   [`patch`]).
//!
//! Every delta starts with the same self-describing header:
//!
//! ```text
//! offset size
//!      0    4  magic "TDLT"
//!      4    1  format version (1)
//!      5    1  kind (1 = line, 2 = zstd)
//!      6   32  sha256 of the base
//!     38    8  base length, u64 LE
//!     46   32  sha256 of the result
//!     78    8  result length, u64 LE
//!     86    …  payload (kind-specific)
//! ```
//!
//! Everything a delta says is hostile until checked: [`apply_delta`] checks
//! the base's hash before it reads the payload, caps the output at both the
//! header's result length and the caller's `expected_len` (the signed
//! length), bounds every `COPY`, and checks the result's hash last. It never
//! panics and never allocates more than `expected_len` for the output.

mod line;
mod patch;

use std::io::Read;

use sha2::{Digest, Sha256};
use tether_wire::ErrorCode;

/// zstd level of the full objects and of the line-delta op streams.
///
/// Level 9: on this project's 2-core machine a 127 MB signature database
/// compresses in about 3.3 s at level 9, 7.4 s at level 12 and 34 s at level
/// 15, and the higher levels save under 1 % on signature-like content (long
/// hex strings dominate). Level 9 keeps a 100 MB publish well under 10 s.
pub const FULL_LEVEL: i32 = 9;

/// Window log of the full objects and the line op streams (8 MiB).
///
/// Set explicitly, and not left to the level, so the decoder can refuse any
/// larger window: a hostile frame could otherwise ask the decoder to allocate
/// a window of up to 2 GiB before producing one byte.
const STREAM_WINDOW_LOG: u32 = 23;

/// The magic that opens every delta.
const MAGIC: &[u8; 4] = b"TDLT";

/// The delta format version this code writes and reads.
const FORMAT_VERSION: u8 = 1;

/// Length of the header before the payload (public for the fuzz target
/// that keeps a valid header in front of a fuzzed payload).
pub const HEADER_LEN: usize = 4 + 1 + 1 + 32 + 8 + 32 + 8;

/// What a definitions file holds, which decides the delta kind to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ContentKind {
    /// UTF-8 without NUL bytes: one record per line, diffed by lines.
    Text,
    /// Anything else, diffed with zstd patch-from.
    Binary,
}

impl ContentKind {
    /// The stable name used in metadata: `text` or `binary`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentKind::Text => "text",
            ContentKind::Binary => "binary",
        }
    }
}

/// Classifies content: [`ContentKind::Text`] when it is valid UTF-8 and has
/// no NUL byte, [`ContentKind::Binary`] otherwise.
pub fn content_kind(data: &[u8]) -> ContentKind {
    if !data.contains(&0) && std::str::from_utf8(data).is_ok() {
        ContentKind::Text
    } else {
        ContentKind::Binary
    }
}

/// How a delta rebuilds its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeltaKind {
    /// Line (record) copies and inserts over the base.
    Line,
    /// A zstd frame compressed with the base as its reference prefix.
    Zstd,
}

impl DeltaKind {
    /// The stable name used in metadata: `line` or `zstd`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeltaKind::Line => "line",
            DeltaKind::Zstd => "zstd",
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            DeltaKind::Line => 1,
            DeltaKind::Zstd => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(DeltaKind::Line),
            2 => Some(DeltaKind::Zstd),
            _ => None,
        }
    }
}

/// Why a delta or a full object could not be made or applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeltaError {
    /// The delta was made against another base than the one installed.
    #[error("the delta was made for base sha256 {expected}, but the installed base is {actual}")]
    WrongBase { expected: String, actual: String },
    /// The delta or compressed object is malformed.
    #[error("corrupt delta or compressed object: {detail}")]
    Corrupt { detail: String },
    /// The output would exceed the allowed length.
    #[error("the output would exceed its limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The rebuilt result is not what the delta's header promised.
    #[error("the rebuilt result has sha256 {actual}, but the delta promised {expected}")]
    ResultMismatch { expected: String, actual: String },
}

impl DeltaError {
    /// The stable catalog code: a delta that cannot be used makes the agent
    /// fall back to the full object, except an oversized output, which is a
    /// refusal in its own right.
    pub fn code(&self) -> ErrorCode {
        match self {
            DeltaError::TooLarge { .. } => ErrorCode::DefsTooLarge,
            DeltaError::WrongBase { .. }
            | DeltaError::Corrupt { .. }
            | DeltaError::ResultMismatch { .. } => ErrorCode::DefsDeltaFailed,
        }
    }

    fn corrupt(detail: impl Into<String>) -> Self {
        DeltaError::Corrupt {
            detail: detail.into(),
        }
    }
}

/// SHA-256 (hex) and length of a file, streamed.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    use sha2::Digest as _;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// The hex SHA-256 of `data`, as recorded in metadata and delta headers.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Compresses a full definitions object: one zstd frame at [`FULL_LEVEL`]
/// (level 9, window 8 MiB), single-threaded.
pub fn compress_full(data: &[u8]) -> Vec<u8> {
    compress_stream(data, FULL_LEVEL)
}

/// Decompresses a full object written by [`compress_full`], refusing to
/// produce more than `expected_len` bytes.
///
/// The frame is stream-decoded into a buffer that grows only as output
/// arrives and never past `expected_len`, so a decompression bomb costs at
/// most `expected_len` bytes of memory before it is refused.
pub fn decompress_full(data: &[u8], expected_len: u64) -> Result<Vec<u8>, DeltaError> {
    if data.is_empty() {
        return Err(DeltaError::corrupt("the compressed object is empty"));
    }
    // A frame that announces its size lets us refuse it at once, and size the
    // buffer exactly when it is honest.
    let declared = zstd::zstd_safe::get_frame_content_size(data)
        .map_err(|_| DeltaError::corrupt("not a zstd frame"))?;
    if let Some(declared) = declared
        && declared > expected_len
    {
        return Err(DeltaError::TooLarge {
            limit: expected_len,
        });
    }
    let mut decoder = zstd::stream::read::Decoder::with_buffer(data)
        .map_err(|e| DeltaError::corrupt(format!("zstd decoder: {e}")))?;
    decoder
        .window_log_max(STREAM_WINDOW_LOG)
        .map_err(|e| DeltaError::corrupt(format!("zstd decoder: {e}")))?;
    let mut out = CappedBuf::new(expected_len, declared)?;
    out.read_all(&mut decoder, expected_len)?;
    Ok(out.into_inner())
}

/// Makes a delta that rebuilds `target` from `base`.
///
/// Any content works with either kind; [`content_kind`] says which one pays
/// off. Fails only when zstd itself fails (for example out of memory).
pub fn make_delta(kind: DeltaKind, base: &[u8], target: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let payload = match kind {
        DeltaKind::Line => line::make(base, target)?,
        DeltaKind::Zstd => patch::make(base, target)?,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind.to_byte());
    out.extend_from_slice(&Sha256::digest(base));
    out.extend_from_slice(&(base.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(target));
    out.extend_from_slice(&(target.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Rebuilds the target of `delta` from `base`, refusing an output longer
/// than `expected_len` (the signed length of the target).
///
/// Checks, in order: the header (magic, version, kind) → `Corrupt`; the
/// base's hash → `WrongBase`; the announced result length against
/// `expected_len` → `TooLarge`; the payload (every op in bounds, the output
/// within the announced length) → `Corrupt`; the result's length and hash →
/// `Corrupt` / `ResultMismatch`.
pub fn apply_delta(base: &[u8], delta: &[u8], expected_len: u64) -> Result<Vec<u8>, DeltaError> {
    let header = Header::parse(delta)?;
    let actual_base = Sha256::digest(base);
    if actual_base.as_slice() != header.base_sha256 || base.len() as u64 != header.base_len {
        return Err(DeltaError::WrongBase {
            expected: hex::encode(header.base_sha256),
            actual: hex::encode(actual_base),
        });
    }
    if header.result_len > expected_len {
        return Err(DeltaError::TooLarge {
            limit: expected_len,
        });
    }
    // The header's length is at most the caller's, so it is the tighter cap.
    let result_len = usize::try_from(header.result_len).map_err(|_| DeltaError::TooLarge {
        limit: expected_len,
    })?;
    let payload = &delta[HEADER_LEN..];
    let result = match header.kind {
        DeltaKind::Line => line::apply(base, payload, result_len)?,
        DeltaKind::Zstd => patch::apply(base, payload, result_len)?,
    };
    if result.len() != result_len {
        return Err(DeltaError::corrupt(format!(
            "the payload rebuilt {} bytes, the header announced {result_len}",
            result.len()
        )));
    }
    let actual_result = Sha256::digest(&result);
    if actual_result.as_slice() != header.result_sha256 {
        return Err(DeltaError::ResultMismatch {
            expected: hex::encode(header.result_sha256),
            actual: hex::encode(actual_result),
        });
    }
    Ok(result)
}

/// The parsed fixed-size header of a delta.
struct Header<'a> {
    kind: DeltaKind,
    base_sha256: &'a [u8],
    base_len: u64,
    result_sha256: &'a [u8],
    result_len: u64,
}

impl<'a> Header<'a> {
    fn parse(delta: &'a [u8]) -> Result<Self, DeltaError> {
        let header = delta.get(..HEADER_LEN).ok_or_else(|| {
            DeltaError::corrupt(format!(
                "the delta is {} bytes, shorter than its {HEADER_LEN}-byte header",
                delta.len()
            ))
        })?;
        let (magic, rest) = header.split_at(4);
        if magic != MAGIC {
            return Err(DeltaError::corrupt("bad magic, not a Tether delta"));
        }
        let (version, rest) = rest.split_at(1);
        if version[0] != FORMAT_VERSION {
            return Err(DeltaError::corrupt(format!(
                "delta format version {} is not supported (this agent reads {FORMAT_VERSION})",
                version[0]
            )));
        }
        let (kind, rest) = rest.split_at(1);
        let kind = DeltaKind::from_byte(kind[0])
            .ok_or_else(|| DeltaError::corrupt(format!("unknown delta kind {}", kind[0])))?;
        let (base_sha256, rest) = rest.split_at(32);
        let (base_len, rest) = rest.split_at(8);
        let (result_sha256, result_len) = rest.split_at(32);
        Ok(Header {
            kind,
            base_sha256,
            base_len: le_u64(base_len),
            result_sha256,
            result_len: le_u64(result_len),
        })
    }
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(bytes);
    u64::from_le_bytes(buf)
}

/// One zstd frame at `level` with a window of at most [`STREAM_WINDOW_LOG`].
fn compress_stream(data: &[u8], level: i32) -> Vec<u8> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let mut cctx = CCtx::create();
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    // Neither parameter can be refused: the level is in zstd's range and the
    // window log is within [ZSTD_WINDOWLOG_MIN, ZSTD_WINDOWLOG_MAX]; and a
    // one-shot compression into a buffer of compress_bound() cannot run out
    // of room. So a failure here is a broken zstd build.
    let result = cctx
        .set_parameter(CParameter::CompressionLevel(level))
        .and_then(|_| cctx.set_parameter(CParameter::WindowLog(STREAM_WINDOW_LOG)))
        .and_then(|_| cctx.compress2(&mut out, data));
    if let Err(code) = result {
        panic!(
            "zstd refused a one-shot compression into compress_bound(): {}",
            zstd::zstd_safe::get_error_name(code)
        );
    }
    out
}

/// An output buffer that never grows past its limit.
struct CappedBuf {
    buf: Vec<u8>,
    limit: usize,
}

impl CappedBuf {
    /// A buffer for at most `limit` bytes, sized for `hint` when known.
    fn new(limit: u64, hint: Option<u64>) -> Result<Self, DeltaError> {
        // On a 32-bit host a limit past usize::MAX is unreachable anyway.
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut buf = Vec::new();
        if let Some(hint) = hint {
            let hint = usize::try_from(hint).unwrap_or(usize::MAX).min(limit);
            buf.try_reserve_exact(hint)
                .map_err(|_| DeltaError::TooLarge { limit: hint as u64 })?;
        }
        Ok(CappedBuf { buf, limit })
    }

    /// Reads `reader` to its end; `TooLarge { limit: reported }` if it has
    /// more than the limit.
    fn read_all(&mut self, reader: &mut impl Read, reported: u64) -> Result<(), DeltaError> {
        let mut chunk = vec![0u8; 128 * 1024];
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DeltaError::corrupt(format!("zstd: {e}"))),
            };
            let new_len = self.buf.len() + n;
            if new_len > self.limit {
                return Err(DeltaError::TooLarge { limit: reported });
            }
            if new_len > self.buf.capacity() {
                // Double, as Vec would, but never past the limit.
                let want = self
                    .buf
                    .capacity()
                    .saturating_mul(2)
                    .clamp(new_len, self.limit);
                self.buf
                    .try_reserve_exact(want - self.buf.len())
                    .map_err(|_| DeltaError::TooLarge { limit: reported })?;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KINDS: [DeltaKind; 2] = [DeltaKind::Line, DeltaKind::Zstd];

    fn round_trip(kind: DeltaKind, base: &[u8], target: &[u8]) {
        let delta = make_delta(kind, base, target).expect("make");
        let out = apply_delta(base, &delta, target.len() as u64).expect("apply");
        assert!(out == target, "{} delta did not round-trip", kind.as_str());
    }

    fn records(range: std::ops::Range<u32>, eol: &str) -> Vec<u8> {
        range
            .flat_map(|i| {
                format!(
                    "Win.Trojan.Agent-{i}-0:0:*:{:08x}{:08x}:73{eol}",
                    i.wrapping_mul(2654435761),
                    i
                )
                .into_bytes()
            })
            .collect()
    }

    /// A delta with our header and any payload, for hostile cases.
    fn craft(
        kind: DeltaKind,
        base: &[u8],
        result: &[u8],
        result_len: u64,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.push(kind.to_byte());
        out.extend_from_slice(&Sha256::digest(base));
        out.extend_from_slice(&(base.len() as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(result));
        out.extend_from_slice(&result_len.to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn round_trips() {
        let base = records(0..500, "\n");
        let mut edited = base.clone();
        edited.splice(
            1000..1000,
            b"Inserted.Record-1-0:0:*:00ff:73\n".iter().copied(),
        );
        edited.truncate(edited.len() - 400);
        let no_trailing_newline = &base[..base.len() - 1];
        let binary: Vec<u8> = (0..20_000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        let mut binary_edit = binary.clone();
        binary_edit[4096..8192].fill(0xa5);
        let (crlf_base, crlf_target) = (records(0..300, "\r\n"), records(10..320, "\r\n"));
        let crlf_all = records(0..500, "\r\n");
        let cases: Vec<(&str, &[u8], &[u8])> = vec![
            ("empty base", b"", &base),
            ("empty target", &base, b""),
            ("both empty", b"", b""),
            ("no trailing newline", &base, no_trailing_newline),
            ("no trailing newline in base", no_trailing_newline, &base),
            ("identical", &base, &base),
            ("edited", &base, &edited),
            ("fully different", &base, &binary),
            ("crlf", &crlf_base, &crlf_target),
            ("lf to crlf", &base, &crlf_all),
            ("binary with NULs", &binary, &binary_edit),
            ("only newlines", b"\n\n\n\n", b"\n\n\nx\n\n"),
        ];
        for (name, base, target) in cases {
            for kind in KINDS {
                let delta = make_delta(kind, base, target).expect("make");
                let out = apply_delta(base, &delta, target.len() as u64)
                    .unwrap_or_else(|e| panic!("{name} ({}): {e}", kind.as_str()));
                assert!(
                    out == target,
                    "{name} ({}) did not round-trip",
                    kind.as_str()
                );
            }
        }
    }

    #[test]
    fn small_edits_make_small_line_deltas() {
        let base = records(0..10_000, "\n");
        let mut target = records(0..10_000, "\n");
        // Change one record in the middle: the delta carries that record only.
        let at = target.len() / 2;
        target[at] ^= 0x01;
        let delta = make_delta(DeltaKind::Line, &base, &target).expect("make");
        assert!(
            delta.len() < HEADER_LEN + 120,
            "line delta is {} bytes",
            delta.len()
        );
        round_trip(DeltaKind::Line, &base, &target);
        let delta = make_delta(DeltaKind::Zstd, &base, &target).expect("make");
        assert!(
            delta.len() < HEADER_LEN + 200,
            "zstd delta is {} bytes",
            delta.len()
        );
        round_trip(DeltaKind::Zstd, &base, &target);
    }

    #[test]
    fn content_kinds() {
        assert_eq!(content_kind(b""), ContentKind::Text);
        assert_eq!(
            content_kind("Sig.Ünïcode-1:0:*:ff:73\n".as_bytes()),
            ContentKind::Text
        );
        assert_eq!(content_kind(b"abc\0def"), ContentKind::Binary);
        assert_eq!(content_kind(b"\xff\xfe"), ContentKind::Binary);
        assert_eq!(ContentKind::Text.as_str(), "text");
        assert_eq!(ContentKind::Binary.as_str(), "binary");
        assert_eq!(DeltaKind::Line.as_str(), "line");
        assert_eq!(DeltaKind::Zstd.as_str(), "zstd");
    }

    #[test]
    fn sha256_is_hex_lowercase() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn wrong_base_is_refused_before_the_payload() {
        let base = records(0..100, "\n");
        let target = records(1..101, "\n");
        let other = records(2..102, "\n");
        for kind in KINDS {
            let delta = make_delta(kind, &base, &target).expect("make");
            let err = apply_delta(&other, &delta, target.len() as u64).expect_err("wrong base");
            let DeltaError::WrongBase { expected, actual } = &err else {
                panic!("expected WrongBase, got {err:?}");
            };
            assert_eq!(expected, &sha256_hex(&base));
            assert_eq!(actual, &sha256_hex(&other));
            assert_eq!(err.code(), ErrorCode::DefsDeltaFailed);
        }
    }

    #[test]
    fn truncated_deltas_are_refused_at_every_length() {
        let base = records(0..60, "\n");
        let mut target = records(5..70, "\n");
        target.extend_from_slice(b"Tail.Record-1:0:*:00:73");
        for kind in KINDS {
            let delta = make_delta(kind, &base, &target).expect("make");
            for len in 0..delta.len() {
                let err = apply_delta(&base, &delta[..len], target.len() as u64)
                    .expect_err("a truncated delta must fail");
                assert!(
                    matches!(
                        err,
                        DeltaError::Corrupt { .. } | DeltaError::ResultMismatch { .. }
                    ),
                    "{} cut at {len}: {err:?}",
                    kind.as_str()
                );
            }
        }
    }

    #[test]
    fn flipped_bytes_never_yield_a_wrong_result() {
        let base = records(0..60, "\n");
        let target = records(3..66, "\n");
        for kind in KINDS {
            let delta = make_delta(kind, &base, &target).expect("make");
            for at in 0..delta.len() {
                for mask in [0x01, 0x80, 0xff] {
                    let mut bad = delta.clone();
                    bad[at] ^= mask;
                    // Anything but the right target is refused; the header
                    // hashes make a flip inside them an error too.
                    if let Ok(out) = apply_delta(&base, &bad, target.len() as u64) {
                        assert!(
                            out == target,
                            "{} flip at {at} gave a wrong result",
                            kind.as_str()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bad_header_fields_are_corrupt() {
        let base = records(0..10, "\n");
        let delta = make_delta(DeltaKind::Line, &base, &base).expect("make");
        for (at, value, what) in [
            (0, b'X', "magic"),
            (4, 2, "version"),
            (5, 0, "kind"),
            (5, 3, "kind"),
        ] {
            let mut bad = delta.clone();
            bad[at] = value;
            let err = apply_delta(&base, &bad, base.len() as u64).expect_err(what);
            assert!(matches!(err, DeltaError::Corrupt { .. }), "{what}: {err:?}");
        }
    }

    #[test]
    fn copy_past_the_base_is_corrupt() {
        let base = b"one\ntwo\n";
        let target = b"one\ntwo\ntwo\n";
        // COPY 2 lines from line 1 of a 2-line base.
        let ops = [line_op_copy(1, 2), vec![0x00]].concat();
        let delta = craft(
            DeltaKind::Line,
            base,
            target,
            target.len() as u64,
            &compress_full(&ops),
        );
        let err = apply_delta(base, &delta, target.len() as u64).expect_err("past the base");
        assert!(
            matches!(&err, DeltaError::Corrupt { detail } if detail.contains("outside")),
            "{err:?}"
        );
        // A start before line 0.
        let ops = [vec![0x01, 0x01, 0x01], vec![0x00]].concat();
        let delta = craft(
            DeltaKind::Line,
            base,
            target,
            target.len() as u64,
            &compress_full(&ops),
        );
        let err = apply_delta(base, &delta, target.len() as u64).expect_err("before the base");
        assert!(matches!(err, DeltaError::Corrupt { .. }), "{err:?}");
        // A COPY of zero lines, and an empty INSERT, and an unknown op.
        for ops in [
            vec![0x01, 0x00, 0x00, 0x00],
            vec![0x02, 0x00, 0x00],
            vec![0x07, 0x00],
        ] {
            let delta = craft(
                DeltaKind::Line,
                base,
                target,
                target.len() as u64,
                &compress_full(&ops),
            );
            let err = apply_delta(base, &delta, target.len() as u64).expect_err("bad op");
            assert!(
                matches!(err, DeltaError::Corrupt { .. }),
                "{ops:?}: {err:?}"
            );
        }
        // Ops after END, and no END at all.
        for ops in [
            [line_op_copy(0, 2), vec![0x00, 0x00]].concat(),
            line_op_copy(0, 2),
        ] {
            let delta = craft(
                DeltaKind::Line,
                base,
                b"one\ntwo\n",
                8,
                &compress_full(&ops),
            );
            let err = apply_delta(base, &delta, 8).expect_err("bad end");
            assert!(
                matches!(err, DeltaError::Corrupt { .. }),
                "{ops:?}: {err:?}"
            );
        }
    }

    fn line_op_copy(start: u8, count: u8) -> Vec<u8> {
        // Zigzag of a small non-negative start relative to cursor 0.
        vec![0x01, start * 2, count]
    }

    #[test]
    fn result_longer_than_expected_is_too_large() {
        let base = records(0..50, "\n");
        let target = records(0..80, "\n");
        for kind in KINDS {
            let delta = make_delta(kind, &base, &target).expect("make");
            let limit = target.len() as u64 - 1;
            let err = apply_delta(&base, &delta, limit).expect_err("too large");
            assert!(
                matches!(err, DeltaError::TooLarge { limit: l } if l == limit),
                "{err:?}"
            );
            assert_eq!(err.code(), ErrorCode::DefsTooLarge);
        }
    }

    #[test]
    fn payload_past_its_header_length_is_corrupt() {
        let base = records(0..50, "\n");
        let target = records(0..80, "\n");
        // Honest payloads under a header that announces fewer bytes, while
        // the caller would allow them: the payload is cut off at the header's
        // length, never written past it.
        let short = 100u64;
        let line = make_delta(DeltaKind::Line, &base, &target).expect("make");
        let zstd = make_delta(DeltaKind::Zstd, &base, &target).expect("make");
        for (kind, delta) in [(DeltaKind::Line, line), (DeltaKind::Zstd, zstd)] {
            let bad = craft(kind, &base, &target, short, &delta[HEADER_LEN..]);
            let err = apply_delta(&base, &bad, target.len() as u64).expect_err("overlong payload");
            assert!(
                matches!(err, DeltaError::Corrupt { .. }),
                "{}: {err:?}",
                kind.as_str()
            );
        }
        // An INSERT bigger than the whole result, announced by a varint.
        let ops = [vec![0x02], vec![0xff, 0xff, 0xff, 0xff, 0x0f], vec![0x00]].concat();
        let bad = craft(DeltaKind::Line, &base, &target, 10, &compress_full(&ops));
        let err = apply_delta(&base, &bad, 10).expect_err("huge insert");
        assert!(matches!(err, DeltaError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn zstd_frame_without_size_or_not_zstd_is_corrupt() {
        let base = records(0..10, "\n");
        let target = records(0..12, "\n");
        // A streamed frame does not announce its size.
        let streamed = zstd::stream::encode_all(&target[..], 3).expect("encode");
        for payload in [streamed, b"not zstd at all".to_vec(), Vec::new()] {
            let bad = craft(
                DeltaKind::Zstd,
                &base,
                &target,
                target.len() as u64,
                &payload,
            );
            let err = apply_delta(&base, &bad, target.len() as u64).expect_err("bad frame");
            assert!(matches!(err, DeltaError::Corrupt { .. }), "{err:?}");
        }
    }

    #[test]
    fn full_objects_round_trip() {
        for data in [Vec::new(), b"x".to_vec(), records(0..5_000, "\n")] {
            let packed = compress_full(&data);
            let out = decompress_full(&packed, data.len() as u64).expect("decompress");
            assert!(out == data);
        }
    }

    #[test]
    fn decompression_bombs_are_refused() {
        let zeros = vec![0u8; 64 << 20];
        // With the size in the frame header: refused before decoding.
        let packed = compress_full(&zeros);
        assert!(packed.len() < 64 << 10, "bomb is {} bytes", packed.len());
        let err = decompress_full(&packed, 1 << 20).expect_err("bomb");
        assert!(
            matches!(err, DeltaError::TooLarge { limit } if limit == 1 << 20),
            "{err:?}"
        );
        assert_eq!(err.code(), ErrorCode::DefsTooLarge);
        // Without it (a streamed frame): refused once the cap is reached.
        let streamed = zstd::stream::encode_all(&zeros[..], 3).expect("encode");
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&streamed).ok(),
            Some(None)
        );
        let err = decompress_full(&streamed, 1 << 20).expect_err("bomb");
        assert!(
            matches!(err, DeltaError::TooLarge { limit } if limit == 1 << 20),
            "{err:?}"
        );
        // One byte over the cap is still over.
        let err = decompress_full(&streamed, (64 << 20) - 1).expect_err("bomb");
        assert!(matches!(err, DeltaError::TooLarge { .. }), "{err:?}");
        assert_eq!(
            decompress_full(&streamed, 64 << 20).expect("exact").len(),
            64 << 20
        );
    }

    #[test]
    fn broken_full_objects_are_corrupt() {
        let data = records(0..500, "\n");
        let packed = compress_full(&data);
        for len in 0..packed.len() {
            let err = decompress_full(&packed[..len], data.len() as u64).expect_err("truncated");
            assert!(
                matches!(err, DeltaError::Corrupt { .. }),
                "cut at {len}: {err:?}"
            );
        }
        let err = decompress_full(b"definitely not zstd", 100).expect_err("garbage");
        assert!(matches!(err, DeltaError::Corrupt { .. }), "{err:?}");
        // A window larger than ours is refused, not allocated.
        let mut big_window = Vec::new();
        let mut enc = zstd::stream::write::Encoder::new(&mut big_window, 3).expect("encoder");
        enc.window_log(27).expect("window");
        enc.long_distance_matching(true).expect("ldm");
        std::io::Write::write_all(&mut enc, &data).expect("write");
        enc.finish().expect("finish");
        let err = decompress_full(&big_window, data.len() as u64).expect_err("window");
        assert!(matches!(err, DeltaError::Corrupt { .. }), "{err:?}");
    }

    /// Text made of few distinct lines, so that bases and targets share many.
    fn lines_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b"alpha\n".to_vec()),
                Just(b"beta\r\n".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"gamma".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..12),
            ],
            0..40,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn make_then_apply_round_trips(base in lines_strategy(), target in lines_strategy()) {
            for kind in KINDS {
                let delta = make_delta(kind, &base, &target).expect("make");
                let out = apply_delta(&base, &delta, target.len() as u64).expect("apply");
                prop_assert_eq!(&out, &target);
            }
        }

        #[test]
        fn apply_never_panics_on_arbitrary_bytes(base in lines_strategy(), delta in proptest::collection::vec(any::<u8>(), 0..200), cap in 0u64..1000) {
            let _ = apply_delta(&base, &delta, cap);
            let _ = decompress_full(&delta, cap);
        }

        #[test]
        fn apply_never_panics_on_arbitrary_payloads(base in lines_strategy(), payload in proptest::collection::vec(any::<u8>(), 0..200), len in 0u64..1000) {
            // Behind a valid header the payload parsers are reached.
            for kind in KINDS {
                let delta = craft(kind, &base, b"", len, &payload);
                let _ = apply_delta(&base, &delta, len);
                let delta = craft(kind, &base, b"", len, &compress_full(&payload));
                let _ = apply_delta(&base, &delta, len);
            }
        }

        #[test]
        fn apply_never_panics_on_mutated_deltas(base in lines_strategy(), target in lines_strategy(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
            for kind in KINDS {
                let mut delta = make_delta(kind, &base, &target).expect("make");
                for (at, byte) in &flips {
                    let at = at.index(delta.len());
                    delta[at] = *byte;
                }
                if let Ok(out) = apply_delta(&base, &delta, target.len() as u64) {
                    prop_assert_eq!(&out, &target);
                }
            }
        }
    }
}
