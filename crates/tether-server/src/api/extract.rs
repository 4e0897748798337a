//! Extractors that never reject: what they cannot read becomes `None`, and
//! the handler decides which error that is. JSON bodies are read by
//! [`json`], which answers every failure with the right code.

use std::net::SocketAddr;

use axum::extract::{FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use tether_wire::ErrorCode;

use super::ApiFailure;
use crate::service::Ctx;

/// The bearer credential of the `Authorization` header, if there is a
/// readable one.
#[derive(Debug, Clone)]
pub struct Bearer(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().to_owned())
            })
            .filter(|t| !t.is_empty());
        Ok(Bearer(token))
    }
}

impl Bearer {
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// The TCP peer of the connection, inserted by [`crate::http`].
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The peer's IP address as text, if known.
#[derive(Debug, Clone)]
pub struct Peer(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<PeerAddr>()
                .map(|p| p.0.ip().to_canonical().to_string()),
        ))
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || (essence.ends_with("+json") && essence.starts_with("application/"))
}

/// How long a client has to send a whole body, so a slow sender cannot hold
/// a request open forever.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a JSON body of type `T`: 415 without a JSON content type, 413 over
/// the configured limit, 400 for anything serde refuses (syntax, types,
/// unknown fields), with serde's message.
pub async fn json<T: DeserializeOwned>(ctx: &Ctx, request: Request) -> Result<T, ApiFailure> {
    let limit = ctx.settings.max_body_bytes;
    let (parts, body) = request.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    match content_type {
        Some(ct) if is_json(ct) => {}
        Some(ct) => {
            return Err(ApiFailure::new(
                ctx,
                ErrorCode::UnsupportedMediaType,
                format!("content type is {ct:?}; expected \"application/json\""),
            ));
        }
        None => {
            return Err(ApiFailure::new(
                ctx,
                ErrorCode::UnsupportedMediaType,
                "no content type; expected \"application/json\"",
            ));
        }
    }
    let too_large = |observed: String| {
        ApiFailure::new(
            ctx,
            ErrorCode::BodyTooLarge,
            format!("body is {observed}; the limit is {limit} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > limit as u64
    {
        return Err(too_large(format!("{n} bytes")));
    }
    let collected =
        tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect()).await;
    let bytes: Bytes = match collected {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(too_large("larger than that".to_owned()));
        }
        Ok(Err(e)) => {
            return Err(ApiFailure::new(
                ctx,
                ErrorCode::MalformedJson,
                format!("could not read the body: {e}"),
            ));
        }
        Err(_) => {
            return Err(ApiFailure::new(
                ctx,
                ErrorCode::MalformedJson,
                format!(
                    "the body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiFailure::new(
            ctx,
            ErrorCode::MalformedJson,
            format!("invalid JSON body: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("+json"));
        assert!(!is_json(""));
    }
}
