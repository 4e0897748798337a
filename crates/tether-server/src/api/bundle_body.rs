//! Reads a bundle upload's body: `Content-Type: application/gzip`, at most
//! [`MAX_BUNDLE_BYTES`], within the body read timeout. Anything else is a
//! 413 or a `BundleInvalid` that says what was seen.

use axum::extract::Request;
use axum::http::header;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tether_wire::ErrorCode;

use super::ApiFailure;
use super::extract::BODY_READ_TIMEOUT;
use crate::service::Ctx;
use crate::service::bundles::MAX_BUNDLE_BYTES;

/// The content types a bundle may be sent with.
const GZIP_TYPES: [&str; 2] = ["application/gzip", "application/x-gzip"];

pub async fn gzip_body(ctx: &Ctx, request: Request) -> Result<Vec<u8>, ApiFailure> {
    let (parts, body) = request.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
    let essence = content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    if !essence.as_deref().is_some_and(|e| GZIP_TYPES.contains(&e)) {
        return Err(ApiFailure::new(
            ctx,
            ErrorCode::BundleInvalid,
            format!(
                "content type is {}; expected \"application/gzip\"",
                content_type.map_or("absent".to_owned(), |c| format!("{c:?}"))
            ),
        ));
    }
    let too_large = |observed: String| {
        ApiFailure::new(
            ctx,
            ErrorCode::BodyTooLarge,
            format!(
                "the bundle is {observed}; the limit is {MAX_BUNDLE_BYTES} bytes ({} MiB)",
                MAX_BUNDLE_BYTES / (1024 * 1024)
            ),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > MAX_BUNDLE_BYTES as u64
    {
        return Err(too_large(format!("{n} bytes")));
    }
    let collected = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(body, MAX_BUNDLE_BYTES).collect(),
    )
    .await;
    match collected {
        Ok(Ok(c)) => Ok(c.to_bytes().to_vec()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(too_large("larger than that".to_owned()))
        }
        Ok(Err(e)) => Err(ApiFailure::new(
            ctx,
            ErrorCode::BundleInvalid,
            format!("could not read the body: {e}"),
        )),
        Err(_) => Err(ApiFailure::new(
            ctx,
            ErrorCode::BundleInvalid,
            format!(
                "the body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
    }
}
