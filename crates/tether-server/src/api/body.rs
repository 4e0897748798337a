//! The one bounded body reader: every request body the server reads (JSON,
//! a bundle's gzip, a definitions file) goes through [`read`], which checks
//! the content type, refuses a declared length over the limit before reading
//! a byte, stops reading at the limit, and gives the sender a deadline. Each
//! caller only says what it accepts ([`Rules`]) and which codes its
//! failures carry.

use std::time::Duration;

use axum::extract::Request;
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tether_wire::ErrorCode;

use super::ApiFailure;
use crate::service::Ctx;

/// Which content types a body may have.
#[derive(Debug, Clone, Copy)]
pub enum Types {
    /// `application/json` or `application/…+json`; required.
    Json,
    /// One of these (lowercase essences); required.
    Required(&'static [&'static str]),
    /// One of these when a type is given; a body without one is accepted.
    IfGiven(&'static [&'static str]),
}

/// What a caller accepts, and how its refusals read.
#[derive(Debug, Clone)]
pub struct Rules {
    pub types: Types,
    /// The most bytes read.
    pub limit: u64,
    /// The sender's deadline for the whole body.
    pub timeout: Duration,
    /// How a message names the body: "body", "the bundle"…
    pub subject: &'static str,
    /// Said after the limit, e.g. " (defs_max_publish_bytes)".
    pub limit_note: String,
    /// The code for a body of the wrong type.
    pub wrong_type: ErrorCode,
    /// The code for a body that could not be read, or came too late.
    pub unreadable: ErrorCode,
}

fn is_json(essence: &str) -> bool {
    essence == "application/json"
        || (essence.ends_with("+json") && essence.starts_with("application/"))
}

fn check_type(ctx: &Ctx, parts: &Parts, rules: &Rules) -> Result<(), ApiFailure> {
    let given = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let essence = given.map(|g| {
        g.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let (ok, expected) = match (rules.types, essence.as_deref()) {
        (Types::Json, Some(e)) => (is_json(e), "application/json"),
        (Types::Json, None) => (false, "application/json"),
        (Types::Required(list), e) => (e.is_some_and(|e| list.contains(&e)), list[0]),
        (Types::IfGiven(_), None) => (true, ""),
        (Types::IfGiven(list), Some(e)) => (list.contains(&e), list[0]),
    };
    if ok {
        return Ok(());
    }
    let message = match given {
        Some(g) => format!("content type is {g:?}; expected {expected:?}"),
        None => format!("no content type; expected {expected:?}"),
    };
    Err(ApiFailure::new(ctx, rules.wrong_type, message))
}

/// Reads the body under `rules`; returns the request's head with it.
pub async fn read(
    ctx: &Ctx,
    request: Request,
    rules: &Rules,
) -> Result<(Parts, Bytes), ApiFailure> {
    let (parts, body) = request.into_parts();
    check_type(ctx, &parts, rules)?;
    let too_large = |observed: String| {
        ApiFailure::new(
            ctx,
            ErrorCode::BodyTooLarge,
            format!(
                "{} is {observed}; the limit is {} bytes{}",
                rules.subject, rules.limit, rules.limit_note
            ),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > rules.limit
    {
        return Err(too_large(format!("{n} bytes")));
    }
    let cap = usize::try_from(rules.limit).unwrap_or(usize::MAX);
    let collected = tokio::time::timeout(rules.timeout, Limited::new(body, cap).collect()).await;
    let bytes = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(too_large("larger than that".to_owned()));
        }
        Ok(Err(e)) => {
            return Err(ApiFailure::new(
                ctx,
                rules.unreadable,
                format!("could not read the body: {e}"),
            ));
        }
        Err(_) => {
            return Err(ApiFailure::new(
                ctx,
                rules.unreadable,
                format!(
                    "the body did not arrive within {} s",
                    rules.timeout.as_secs()
                ),
            ));
        }
    };
    Ok((parts, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("+json"));
        assert!(!is_json(""));
    }
}
