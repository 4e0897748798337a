//! Extractors that never reject: what they cannot read becomes `None`, and
//! the handler decides which error that is. JSON bodies are read by
//! [`json`], which answers every failure with the right code.

use std::net::SocketAddr;

use axum::extract::{FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tether_wire::ErrorCode;

use super::{ApiFailure, body};
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

/// The peer's IP address, if known (for per-address limits).
#[derive(Debug, Clone, Copy)]
pub struct PeerIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerIp(
            parts
                .extensions
                .get::<PeerAddr>()
                .map(|p| p.0.ip().to_canonical()),
        ))
    }
}

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

/// How long a client has to send a whole body, so a slow sender cannot hold
/// a request open forever.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a JSON body of type `T`: 415 without a JSON content type, 413 over
/// the configured limit, 400 for anything serde refuses (syntax, types,
/// unknown fields), with serde's message.
pub async fn json<T: DeserializeOwned>(ctx: &Ctx, request: Request) -> Result<T, ApiFailure> {
    let rules = body::Rules {
        types: body::Types::Json,
        limit: ctx.settings.max_body_bytes as u64,
        timeout: BODY_READ_TIMEOUT,
        subject: "body",
        limit_note: String::new(),
        wrong_type: ErrorCode::UnsupportedMediaType,
        unreadable: ErrorCode::MalformedJson,
    };
    let (_, bytes) = body::read(ctx, request, &rules).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiFailure::new(
            ctx,
            ErrorCode::MalformedJson,
            format!("invalid JSON body: {e}"),
        )
    })
}
