//! `doctor`: run the connectivity doctor. `upload` (default true) also
//! collects the escalation bundle and uploads it. `targets` adds `host:port`
//! probes to the policy's; `deadline_secs` and `target_timeout_secs` give a
//! slow site (a WAN LDAP) the time it needs.

use serde_json::{Value, json};

use super::{SpecError, object, only, type_name};

/// The most extra targets one run probes.
pub const MAX_TARGETS: usize = 16;
/// The longest run an admin may ask for.
pub const MAX_DEADLINE_SECS: u64 = 600;

fn secs(map: &serde_json::Map<String, Value>, field: &str) -> Result<Option<u64>, SpecError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if (1..=MAX_DEADLINE_SECS).contains(&v) => Ok(Some(v)),
            _ => Err(SpecError::new(
                field,
                n.to_string(),
                format!("1 to {MAX_DEADLINE_SECS} seconds"),
            )),
        },
        Some(other) => Err(SpecError::new(
            field,
            type_name(other),
            "a number of seconds",
        )),
    }
}

fn target_ok(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    (1..=253).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'))
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

pub(super) fn validate(spec: &Value) -> Result<Value, SpecError> {
    let map = object(spec)?;
    only(
        &map,
        &["upload", "targets", "deadline_secs", "target_timeout_secs"],
    )?;
    let upload = match map.get("upload") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(SpecError::new("upload", type_name(other), "true or false")),
    };
    let targets: Vec<String> = match map.get("targets") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= MAX_TARGETS => items
            .iter()
            .map(|t| match t {
                Value::String(s) if target_ok(s) => Ok(s.clone()),
                other => Err(SpecError::new(
                    "targets",
                    match other {
                        Value::String(s) => format!("{:?}", s.chars().take(64).collect::<String>()),
                        v => type_name(v).to_owned(),
                    },
                    "host:port",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(items)) => {
            return Err(SpecError::new(
                "targets",
                format!("{} targets", items.len()),
                format!("at most {MAX_TARGETS}"),
            ));
        }
        Some(other) => {
            return Err(SpecError::new(
                "targets",
                type_name(other),
                "a list of host:port",
            ));
        }
    };
    let mut out = json!({ "upload": upload });
    if !targets.is_empty() {
        out["targets"] = json!(targets);
    }
    if let Some(d) = secs(&map, "deadline_secs")? {
        out["deadline_secs"] = json!(d);
    }
    if let Some(d) = secs(&map, "target_timeout_secs")? {
        out["target_timeout_secs"] = json!(d);
    }
    Ok(out)
}
