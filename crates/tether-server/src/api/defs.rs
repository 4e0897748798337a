//! Definitions routes: the served TUF tree (`GET /defs/{*path}`, no auth:
//! everything in it is signed) and the admin's publish, summary and export.

use std::io::SeekFrom;
use std::path::{Path as FsPath, PathBuf};

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tether_wire::{ChannelSummary, DefsVersion, ErrorCode};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::error::ApiResult;
use super::extract::{Bearer, PeerIp};
use super::{ApiFailure, body};
use crate::service::{Ctx, ServiceError, auth, defs};

pub mod range;

/// How long an admin has to upload a definitions file. Far longer than the
/// JSON body timeout: a large file over a slow link is legitimate here.
pub const PUBLISH_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// The size of each chunk streamed from disk.
const CHUNK: usize = 64 * 1024;
/// Hash-named targets and versioned metadata never change once written.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

async fn admin(ctx: &Ctx, bearer: &Bearer) -> ApiResult<()> {
    auth::admin(ctx, bearer.as_deref())
        .await
        .map_err(|e| ApiFailure::from_service(ctx, e))
}

fn service<T>(ctx: &Ctx, r: Result<T, ServiceError>) -> ApiResult<T> {
    r.map_err(|e| ApiFailure::from_service(ctx, e))
}

fn channel_segment(ctx: &Ctx, path: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    let channel = path
        .map_err(|e| {
            ApiFailure::new(
                ctx,
                ErrorCode::ChannelInvalid,
                format!("unreadable channel: {e}"),
            )
        })?
        .0;
    service(
        ctx,
        tether_defs_publish::repo::validate_channel(&channel).map_err(ServiceError::from),
    )?;
    Ok(channel)
}

/// The value of `name` among the pairs [`query`] read, if given.
pub(crate) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, v)| v.as_str())
}

/// Reads `?key=value` pairs (percent-decoded, `+` as space), refusing any
/// key not in `allowed`.
pub(crate) fn query(
    ctx: &Ctx,
    raw: Option<&str>,
    allowed: &[&str],
) -> ApiResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&key) {
            let shown: String = key.chars().take(40).collect();
            return Err(ApiFailure::new(
                ctx,
                ErrorCode::InvalidField,
                format!(
                    "query parameter {shown:?} is not known; expected only {}",
                    allowed.join(", ")
                ),
            ));
        }
        let value = percent_decode(value).ok_or_else(|| {
            ApiFailure::new(
                ctx,
                ErrorCode::InvalidField,
                format!("query {key}: not valid percent-encoded UTF-8"),
            )
        })?;
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `POST /v1/admin/defs/{channel}/versions[?notes=]`: the raw definitions
/// file as the body (`application/octet-stream`).
pub async fn publish(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> ApiResult<(StatusCode, Json<DefsVersion>)> {
    admin(&ctx, &bearer).await?;
    let channel = channel_segment(&ctx, path)?;
    let notes = query(&ctx, raw.as_deref(), &["notes"])?
        .pop()
        .map(|(_, v)| v);
    let content = octet_body(&ctx, request).await?;
    if content.is_empty() {
        return Err(ApiFailure::new(
            &ctx,
            ErrorCode::DefsEmpty,
            "the body is empty; send the definitions file itself",
        ));
    }
    let version = service(&ctx, defs::publish(&ctx, &channel, content, notes).await)?;
    Ok((StatusCode::CREATED, Json(version)))
}

/// Reads a raw body of at most `defs_max_publish_bytes`.
async fn octet_body(ctx: &Ctx, request: Request) -> ApiResult<Vec<u8>> {
    let rules = body::Rules {
        types: body::Types::IfGiven(&["application/octet-stream"]),
        limit: ctx.settings.defs_max_publish_bytes,
        timeout: PUBLISH_READ_TIMEOUT,
        subject: "the definitions file",
        limit_note: " (defs_max_publish_bytes)".to_owned(),
        wrong_type: ErrorCode::UnsupportedMediaType,
        unreadable: ErrorCode::InvalidField,
    };
    let (_, bytes) = body::read(ctx, request, &rules).await?;
    Ok(Vec::from(bytes))
}

/// `GET /v1/admin/defs/summary[?channel=]`.
pub async fn summary(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<ChannelSummary>>> {
    admin(&ctx, &bearer).await?;
    let channel = query(&ctx, raw.as_deref(), &["channel"])?
        .pop()
        .map(|(_, v)| v);
    Ok(Json(service(
        &ctx,
        defs::summary(&ctx, channel.as_deref()).await,
    )?))
}

/// `GET /v1/admin/defs/{channel}/export`: the offline bundle (tar).
pub async fn export(
    State(ctx): State<Ctx>,
    bearer: Bearer,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    admin(&ctx, &bearer).await?;
    let channel = channel_segment(&ctx, path)?;
    let internal = |what: &str, e: std::io::Error| {
        tracing::warn!(error = %e, "{what} for a definitions export failed");
        ApiFailure::new(
            &ctx,
            ErrorCode::Internal,
            format!("{what} failed; see the server log"),
        )
    };
    let dir = tempfile::tempdir().map_err(|e| internal("creating a temporary directory", e))?;
    let out = dir.path().join("bundle.tar");
    let len = service(&ctx, defs::export(&ctx, &channel, &out).await)?;
    let file = tokio::fs::File::open(&out)
        .await
        .map_err(|e| internal("opening the bundle", e))?;
    // The open file outlives its name: removing the directory now leaves
    // nothing behind, whatever becomes of the response.
    drop(dir);
    let mut response = Response::new(stream(file, len, None, None));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    // The channel is [a-z0-9._-] only (validated above).
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"tether-defs-{channel}.tar\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// A streamed body's deadline: a first minute, plus the time its length
/// takes at the slowest rate allowed. A reader that trickles is cut off
/// then; one that stops reading is cut off sooner, by the connection's
/// write timeout (see [`crate::http`]).
pub fn stream_deadline(len: u64, min_bytes_per_sec: u32) -> std::time::Duration {
    std::time::Duration::from_secs(60 + len / u64::from(min_bytes_per_sec.max(1)))
}

/// Streams `len` bytes of `file` from its current position, in chunks,
/// within `deadline` when one is given. `slot` (a per-address stream slot)
/// is held until the body ends or is dropped, which frees it.
fn stream(
    file: tokio::fs::File,
    len: u64,
    deadline: Option<std::time::Duration>,
    slot: Option<crate::limits::SlotGuard>,
) -> Body {
    let until = deadline.map(|d| tokio::time::Instant::now() + d);
    let state = (file, len, slot);
    let chunks = futures_util::stream::unfold(state, move |(mut file, left, slot)| async move {
        if left == 0 {
            return None;
        }
        if until.is_some_and(|u| tokio::time::Instant::now() >= u) {
            // Ending the body with an error makes hyper close the
            // connection: the client sees a short read, not a complete file.
            return Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client read too slowly",
                )),
                (file, 0, slot),
            ));
        }
        let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        let mut buf = vec![0_u8; want];
        match file.read(&mut buf).await {
            // The file shrank under us: end the body short rather than hang.
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file ended early",
                )),
                (file, 0, slot),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), (file, left - n as u64, slot)))
            }
            Err(e) => Some((Err(e), (file, 0, slot))),
        }
    });
    Body::from_stream(chunks)
}

/// The served path for `raw`, or `None` when it could leave the tree or is
/// not a plain relative path.
pub fn served_path(root: &FsPath, raw: &str) -> Option<PathBuf> {
    if raw.is_empty() || raw.contains(['\\', '\0']) || raw.starts_with('/') {
        return None;
    }
    let mut path = root.to_path_buf();
    for segment in raw.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return None;
        }
        path.push(segment);
    }
    Some(path)
}

/// `timestamp.json` changes every few hours and must be revalidated, and so
/// must the root versions, which `tether defs join` countersigns (the signed
/// content stays, a signature is added); every other file in the tree is
/// named by its hash or version and never changes.
fn cache_control(raw: &str) -> &'static str {
    let name = raw.rsplit('/').next().unwrap_or(raw);
    if name == "timestamp.json" || name.ends_with(".root.json") {
        "no-cache"
    } else {
        IMMUTABLE
    }
}

/// `GET /defs/{*path}`: a file of the served TUF tree, with ETag,
/// Last-Modified and single byte ranges.
pub async fn serve(
    State(ctx): State<Ctx>,
    PeerIp(peer): PeerIp,
    path: Result<Path<String>, PathRejection>,
    request_headers: HeaderMap,
) -> ApiResult<Response> {
    let raw = path.map(|p| p.0).unwrap_or_default();
    let shown: String = raw.chars().take(80).collect();
    let not_found = || {
        ApiFailure::new(
            &ctx,
            ErrorCode::NotFound,
            format!("no definitions file {shown:?}"),
        )
    };
    let root = ctx.defs.serve_dir();
    let file_path = served_path(&root, &raw).ok_or_else(not_found)?;
    // A symlink planted in the tree must not lead out of it either.
    let (Ok(real), Ok(real_root)) = (
        tokio::fs::canonicalize(&file_path).await,
        tokio::fs::canonicalize(&root).await,
    ) else {
        return Err(not_found());
    };
    if !real.starts_with(&real_root) {
        return Err(not_found());
    }
    let mut file = tokio::fs::File::open(&real)
        .await
        .map_err(|_| not_found())?;
    let meta = file.metadata().await.map_err(|_| not_found())?;
    if !meta.is_file() {
        return Err(not_found());
    }
    let len = meta.len();
    let modified = meta.modified().ok().map(OffsetDateTime::from);
    let etag = range::etag(len, modified);
    let last_modified = modified.map(range::http_date);

    let mut headers = HeaderMap::new();
    let content_type = if raw.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control(&raw)),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    if let Some(v) = last_modified
        .as_deref()
        .and_then(|d| HeaderValue::from_str(d).ok())
    {
        headers.insert(header::LAST_MODIFIED, v);
    }

    let text = |name: header::HeaderName| {
        request_headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if text(header::IF_NONE_MATCH).is_some_and(|v| range::none_match(&v, &etag)) {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    let wanted = match text(header::RANGE) {
        Some(r)
            if text(header::IF_RANGE)
                .is_none_or(|v| range::if_range_matches(&v, &etag, modified)) =>
        {
            range::parse(&r, len)
        }
        _ => range::Wanted::Full,
    };
    let (status, start, count) = match wanted {
        range::Wanted::Full => (StatusCode::OK, 0, len),
        range::Wanted::Part { start, end } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        range::Wanted::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            let mut failure = ApiFailure::new(
                &ctx,
                ErrorCode::InvalidField,
                format!("the range is outside the file ({len} bytes)"),
            )
            .into_response();
            *failure.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            failure.headers_mut().extend(
                headers
                    .into_iter()
                    .filter_map(|(k, v)| k.filter(|k| k != header::CONTENT_TYPE).map(|k| (k, v))),
            );
            return Ok(failure);
        }
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|_| not_found())?;
    }
    // Only a body that is streamed takes a slot; a 304 or a 416 does not.
    let slot = ctx.limits.defs_stream(peer).map_err(|t| {
        ApiFailure::throttled(
            &ctx,
            t,
            &format!(
                "this address already streams {} definitions files at once (defs_streams_per_address)",
                ctx.limits.settings().defs_streams_per_address
            ),
        )
    })?;
    let deadline = stream_deadline(count, ctx.settings.stream_min_bytes_per_sec);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    Ok((status, headers, stream(file, count, Some(deadline), slot)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_served() {
        let root = FsPath::new("/srv/defs/repo");
        assert_eq!(
            served_path(root, "metadata/1.root.json"),
            Some(root.join("metadata").join("1.root.json"))
        );
        for bad in [
            "",
            "..",
            "../keys/root.pem",
            "metadata/../../keys/root.pem",
            "/etc/passwd",
            "metadata//x",
            "./metadata/timestamp.json",
            "metadata\\..\\x",
            "metadata/x\0.json",
            "metadata/",
        ] {
            assert_eq!(served_path(root, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_streamed_body_gets_a_minute_plus_its_size_at_the_slowest_rate() {
        use std::time::Duration;
        assert_eq!(stream_deadline(0, 1024), Duration::from_secs(60));
        assert_eq!(
            stream_deadline(100 * 1024 * 1024, 1024),
            Duration::from_secs(60 + 100 * 1024)
        );
        assert_eq!(
            stream_deadline(10, 0),
            Duration::from_secs(70),
            "a rate of 0 is read as 1 byte/s, never a division by zero"
        );
    }

    #[test]
    fn only_the_timestamp_is_revalidated() {
        assert_eq!(cache_control("metadata/timestamp.json"), "no-cache");
        assert_eq!(cache_control("metadata/2.root.json"), "no-cache");
        assert_eq!(cache_control("metadata/3.snapshot.json"), IMMUTABLE);
        assert_eq!(cache_control("targets/ab12.sig.full"), IMMUTABLE);
    }

    #[test]
    fn queries_are_percent_decoded() {
        assert_eq!(
            percent_decode("fix%20%2312+%26%20more%2Fless").as_deref(),
            Some("fix #12 & more/less")
        );
        assert_eq!(percent_decode("%E6%9D%B1").as_deref(), Some("東"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
    }
}
