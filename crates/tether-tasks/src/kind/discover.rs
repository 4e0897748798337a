//! `discover`: scan targets for TLS endpoints and report their certificates.
//!
//! The spec type and its limits belong to the scanner
//! (`tether_scan::DiscoverSpec`: targets, ports, SNI, STARTTLS, concurrency,
//! rate limits, timeouts, allowed hours). tether-scan depends on this crate
//! (for allowed hours), so its parser cannot be called here: the server
//! runs it when a discover task is created (TETHER-E8101 to E8103), and
//! this hook only insists on a JSON object.

use serde_json::Value;

use super::{SpecError, object};

pub(super) fn validate(spec: &Value) -> Result<Value, SpecError> {
    let map = object(spec)?;
    Ok(Value::Object(map))
}
