//! `discover`: scan targets for TLS endpoints and report their certificates.
//!
//! The spec type and its limits belong to the scanner (the discovery work
//! fills this hook with its own parser: targets, ports, SNI, STARTTLS,
//! concurrency, rate limits, timeouts). Until then the queue accepts any JSON
//! object within the size every kind shares, and refuses everything else.

use serde_json::Value;

use super::{SpecError, object};

pub(super) fn validate(spec: &Value) -> Result<Value, SpecError> {
    let map = object(spec)?;
    Ok(Value::Object(map))
}
