//! Paged lists: `limit` and `after` in the query, the next page's cursor in
//! the `tether-next-cursor` reply header. A cursor is the last row's sort
//! key (`<unix ms>.<uuid>`): rows added or removed between pages never make
//! a page skip or repeat a row, and no listing stops at a silent cap.

use axum::Json;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tether_store::Cursor;
use tether_wire::{DEFAULT_PAGE, ErrorCode, MAX_PAGE, NEXT_CURSOR_HEADER};
use time::OffsetDateTime;
use uuid::Uuid;

use super::ApiFailure;
use super::error::ApiResult;
use crate::service::Ctx;

/// The text form of a cursor.
pub fn encode(c: &Cursor) -> String {
    let ms = c.at.unix_timestamp_nanos() / 1_000_000;
    format!("{ms}.{}", c.id)
}

/// Parses a cursor this server handed out; anything else is 400
/// `InvalidCursor`.
pub fn decode(ctx: &Ctx, text: &str) -> ApiResult<Cursor> {
    let invalid = || {
        let shown: String = text.chars().take(60).collect();
        ApiFailure::new(
            ctx,
            ErrorCode::InvalidCursor,
            format!("{shown:?} is not a cursor this server hands out (expected <unix ms>.<uuid>)"),
        )
    };
    let (ms, id) = text.split_once('.').ok_or_else(invalid)?;
    let ms: i64 = ms.parse().map_err(|_| invalid())?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| invalid())?;
    let id = Uuid::parse_str(id).map_err(|_| invalid())?;
    Ok(Cursor { at, id })
}

/// `limit` and `after` from a query's pairs.
pub fn page(
    ctx: &Ctx,
    limit: Option<&str>,
    after: Option<&str>,
) -> ApiResult<(u32, Option<Cursor>)> {
    let limit = match limit {
        None => DEFAULT_PAGE,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                let shown: String = text.chars().take(40).collect();
                return Err(ApiFailure::new(
                    ctx,
                    ErrorCode::InvalidField,
                    format!("query limit={shown:?}: expected a whole number from 1 to {MAX_PAGE}"),
                ));
            }
        },
    };
    let after = after.map(|a| decode(ctx, a)).transpose()?;
    Ok((limit, after))
}

/// A JSON array, with the next page's cursor in a header when there is one.
pub fn reply<T: Serialize>(rows: Vec<T>, next: Option<Cursor>) -> Response {
    let mut response = Json(rows).into_response();
    if let Some(next) = next
        && let Ok(value) = HeaderValue::from_str(&encode(&next))
    {
        response
            .headers_mut()
            .insert(HeaderName::from_static(NEXT_CURSOR_HEADER), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_in_milliseconds() {
        let c = Cursor {
            at: time::macros::datetime!(2026-05-17 19:16:00.250 UTC),
            id: Uuid::new_v4(),
        };
        let text = encode(&c);
        assert!(text.starts_with("1779045360250."), "{text}");
        let (ms, id) = text.split_once('.').expect("two parts");
        assert_eq!(ms.parse::<i64>().ok(), Some(1_779_045_360_250));
        assert_eq!(Uuid::parse_str(id).ok(), Some(c.id));
    }
}
