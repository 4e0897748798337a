//! The zstd delta payload, `zstd --patch-from` style: one zstd frame of the
//! target, compressed with the whole base as its reference prefix, so every
//! unchanged stretch of the target is a match into the base.
//!
//! The window must reach from the end of the target back to the start of the
//! base, and zstd's regular match finders only index the last few MiB of a
//! large prefix; long distance matching (LDM) indexes all of it. The decoder
//! is the one-shot kind: it writes straight into an output buffer of the
//! header's announced length and keeps no window of its own, so a hostile
//! frame header cannot make it allocate anything.

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DParameter};

use super::DeltaError;

/// zstd level of the patch: the default level. The prefix is indexed by LDM
/// whatever the level, so higher levels mostly make publishing slower.
pub const PATCH_LEVEL: i32 = 3;

/// The largest window zstd accepts on this platform.
#[cfg(target_pointer_width = "64")]
const WINDOW_LOG_MAX: u32 = 31;
#[cfg(not(target_pointer_width = "64"))]
const WINDOW_LOG_MAX: u32 = 30;

/// zstd's smallest window.
const WINDOW_LOG_MIN: u32 = 10;

/// The window log that lets the end of a `target_len` target reach back to
/// the start of a `base_len` base, within zstd's limits.
fn window_log(base_len: usize, target_len: usize) -> u32 {
    let span = (base_len as u64).saturating_add(target_len as u64).max(1);
    // ceil(log2(span)): bits needed for span - 1.
    let log = u64::BITS - (span - 1).leading_zeros();
    log.clamp(WINDOW_LOG_MIN, WINDOW_LOG_MAX)
}

fn zstd_error(what: &str, code: usize) -> DeltaError {
    DeltaError::corrupt(format!("{what}: zstd: {}", zstd_safe::get_error_name(code)))
}

/// Compresses `target` with `base` as the reference prefix.
pub(super) fn make(base: &[u8], target: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let mut cctx =
        CCtx::try_create().ok_or_else(|| DeltaError::corrupt("zstd: cannot create a context"))?;
    cctx.set_parameter(CParameter::CompressionLevel(PATCH_LEVEL))
        .and_then(|_| {
            cctx.set_parameter(CParameter::WindowLog(window_log(base.len(), target.len())))
        })
        .and_then(|_| cctx.set_parameter(CParameter::EnableLongDistanceMatching(true)))
        .and_then(|_| cctx.set_parameter(CParameter::ContentSizeFlag(true)))
        .map_err(|code| zstd_error("patch parameters", code))?;
    cctx.ref_prefix(base)
        .map_err(|code| zstd_error("patch prefix", code))?;
    let mut out = Vec::new();
    out.try_reserve_exact(zstd_safe::compress_bound(target.len()))
        .map_err(|_| DeltaError::TooLarge {
            limit: target.len() as u64,
        })?;
    cctx.compress2(&mut out, target)
        .map_err(|code| zstd_error("patch", code))?;
    Ok(out)
}

/// Decompresses the patch `payload` against `base`, into exactly
/// `result_len` bytes at most.
pub(super) fn apply(base: &[u8], payload: &[u8], result_len: usize) -> Result<Vec<u8>, DeltaError> {
    // Our frames always carry their size; one that does not, or disagrees
    // with the header, is not ours.
    match zstd_safe::get_frame_content_size(payload) {
        Ok(Some(size)) if size == result_len as u64 => {}
        Ok(Some(size)) => {
            return Err(DeltaError::corrupt(format!(
                "the zstd frame holds {size} bytes, the header announced {result_len}"
            )));
        }
        Ok(None) => {
            return Err(DeltaError::corrupt(
                "the zstd frame does not announce its size",
            ));
        }
        Err(_) => return Err(DeltaError::corrupt("the patch is not a zstd frame")),
    }
    let mut dctx =
        DCtx::try_create().ok_or_else(|| DeltaError::corrupt("zstd: cannot create a context"))?;
    dctx.set_parameter(DParameter::WindowLogMax(window_log(base.len(), result_len)))
        .map_err(|code| zstd_error("patch parameters", code))?;
    dctx.ref_prefix(base)
        .map_err(|code| zstd_error("patch prefix", code))?;
    let mut out = Vec::new();
    out.try_reserve_exact(result_len)
        .map_err(|_| DeltaError::TooLarge {
            limit: result_len as u64,
        })?;
    // One-shot: zstd writes at most `out.capacity()` bytes and fails with
    // "destination buffer is too small" past it.
    dctx.decompress(&mut out, payload)
        .map_err(|code| zstd_error("patch", code))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_covers_base_and_target() {
        assert_eq!(window_log(0, 0), WINDOW_LOG_MIN);
        assert_eq!(window_log(512, 512), WINDOW_LOG_MIN);
        assert_eq!(window_log(1024, 1), 11);
        assert_eq!(window_log(100 << 20, 100 << 20), 28);
        assert_eq!(window_log(usize::MAX, usize::MAX), WINDOW_LOG_MAX);
    }
}
