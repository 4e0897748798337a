//! `update_defs`: check the definitions channels now, all subscribed ones or
//! the one named.

use serde_json::{Value, json};

use super::{SpecError, object, only, type_name};

/// The channel-name rule of `tether_defs_publish::repo::validate_channel`, repeated
/// here because this crate must not depend on the definitions publisher.
fn channel_ok(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

pub(super) fn validate(spec: &Value) -> Result<Value, SpecError> {
    let map = object(spec)?;
    only(&map, &["channel"])?;
    let channel = match map.get("channel") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if channel_ok(s) => Value::String(s.clone()),
        Some(Value::String(s)) => {
            return Err(SpecError::new(
                "channel",
                format!("{:?}", s.chars().take(64).collect::<String>()),
                "1-64 characters: lowercase letters, digits, '-', '_' and '.', starting with a letter or digit",
            ));
        }
        Some(other) => {
            return Err(SpecError::new(
                "channel",
                type_name(other),
                "a channel name",
            ));
        }
    };
    Ok(json!({ "channel": channel }))
}
