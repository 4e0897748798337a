//! `doctor`: run the connectivity doctor; `upload` (default true) also
//! collects the escalation bundle and uploads it.

use serde_json::{Value, json};

use super::{SpecError, object, only, type_name};

pub(super) fn validate(spec: &Value) -> Result<Value, SpecError> {
    let map = object(spec)?;
    only(&map, &["upload"])?;
    let upload = match map.get("upload") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(SpecError::new("upload", type_name(other), "true or false")),
    };
    Ok(json!({ "upload": upload }))
}
