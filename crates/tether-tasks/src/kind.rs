//! What each kind of task accepts and who may run it.
//!
//! Each kind has one file under `kind/` with its spec check. The check takes
//! the spec as JSON and returns it normalized (defaults filled), or a
//! [`SpecError`] naming the field, what was seen and what is accepted. A kind
//! whose spec type lives elsewhere (discovery's, in the scanner's wire types)
//! fills its hook in its own file; nothing else changes.

use serde_json::Value;
use tether_wire::{AgentKind, TaskKind};

mod deploy;
mod discover;
mod doctor;
mod update_defs;

/// The largest spec accepted for any kind, in bytes of JSON.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;

/// A spec that its kind refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec field {field}: got {observed}; expected {expected}")]
pub struct SpecError {
    pub field: String,
    pub observed: String,
    pub expected: String,
}

impl SpecError {
    pub fn new(
        field: impl Into<String>,
        observed: impl Into<String>,
        expected: impl Into<String>,
    ) -> SpecError {
        SpecError {
            field: field.into(),
            observed: observed.into(),
            expected: expected.into(),
        }
    }
}

/// The rules of one kind.
#[derive(Debug)]
pub struct KindRules {
    pub kind: TaskKind,
    /// The visibility timeout when the task does not set one.
    pub default_lease_secs: u32,
    /// Attempts before dead-lettering when the task does not set a number.
    pub default_max_attempts: u32,
    /// Agent kinds that may run it.
    pub agent_kinds: &'static [AgentKind],
    /// Checks and normalizes the spec.
    pub validate: fn(&Value) -> Result<Value, SpecError>,
}

/// The longest visibility timeout a task may ask for (a heartbeat must come
/// at least this often).
pub const MAX_LEASE_SECS: u32 = 3600;
/// The shortest: below this a heartbeat could not keep up over a slow path.
pub const MIN_LEASE_SECS: u32 = 10;
/// The most attempts a task may ask for.
pub const MAX_ATTEMPTS: u32 = 20;

static RULES: [KindRules; 4] = [
    KindRules {
        kind: TaskKind::Discover,
        default_lease_secs: 120,
        default_max_attempts: 3,
        agent_kinds: &[AgentKind::Discovery],
        validate: discover::validate,
    },
    // Admin actions: short work with a short lease.
    KindRules {
        kind: TaskKind::Doctor,
        default_lease_secs: 60,
        default_max_attempts: 2,
        agent_kinds: &[
            AgentKind::Discovery,
            AgentKind::Provisioning,
            AgentKind::Connector,
        ],
        validate: doctor::validate,
    },
    KindRules {
        kind: TaskKind::UpdateDefs,
        default_lease_secs: 60,
        default_max_attempts: 2,
        agent_kinds: &[
            AgentKind::Discovery,
            AgentKind::Provisioning,
            AgentKind::Connector,
        ],
        validate: update_defs::validate,
    },
    // Issue from the built-in CA, then deploy: a reload and a verification
    // fit well inside the lease, which heartbeats renew.
    KindRules {
        kind: TaskKind::Deploy,
        default_lease_secs: 300,
        default_max_attempts: 3,
        agent_kinds: &[AgentKind::Provisioning],
        validate: deploy::validate,
    },
];

/// The rules of a kind; `None` for a kind this build cannot create.
pub fn rules(kind: TaskKind) -> Option<&'static KindRules> {
    RULES.iter().find(|r| r.kind == kind)
}

/// Checks a spec against its kind, after the limits every kind shares.
pub fn validate(kind: TaskKind, spec: &Value) -> Result<Value, SpecError> {
    let Some(rules) = rules(kind) else {
        return Err(SpecError::new(
            "kind",
            kind.as_str(),
            "discover, doctor, update_defs or deploy",
        ));
    };
    let size = serde_json::to_vec(spec).map_or(usize::MAX, |v| v.len());
    if size > MAX_SPEC_BYTES {
        return Err(SpecError::new(
            "spec",
            format!("{size} bytes"),
            format!("at most {MAX_SPEC_BYTES} bytes"),
        ));
    }
    (rules.validate)(spec)
}

/// The spec as an object, or the error saying it must be one. `null` is an
/// empty object.
pub(crate) fn object(spec: &Value) -> Result<serde_json::Map<String, Value>, SpecError> {
    match spec {
        Value::Null => Ok(serde_json::Map::new()),
        Value::Object(m) => Ok(m.clone()),
        other => Err(SpecError::new("spec", type_name(other), "a JSON object")),
    }
}

/// Refuses fields the kind does not know, so a typo fails loudly.
pub(crate) fn only(map: &serde_json::Map<String, Value>, known: &[&str]) -> Result<(), SpecError> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(SpecError::new(
            k.chars().take(64).collect::<String>(),
            "an unknown field",
            if known.is_empty() {
                "no fields".to_owned()
            } else {
                format!("one of {}", known.join(", "))
            },
        )),
        None => Ok(()),
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_creatable_kind_has_rules() {
        for k in TaskKind::ALL {
            let r = rules(k).expect("rules");
            assert!(
                r.default_lease_secs >= MIN_LEASE_SECS && r.default_lease_secs <= MAX_LEASE_SECS
            );
            assert!(r.default_max_attempts >= 1 && r.default_max_attempts <= MAX_ATTEMPTS);
        }
        assert!(rules(TaskKind::Unknown).is_none());
    }

    #[test]
    fn oversized_and_unknown_specs_are_refused() {
        let big = json!({"upload": true, "pad": "x".repeat(MAX_SPEC_BYTES)});
        let e = validate(TaskKind::Doctor, &big).expect_err("too big");
        assert!(e.to_string().contains("at most"), "{e}");
        let e = validate(TaskKind::Unknown, &json!({})).expect_err("unknown kind");
        assert_eq!(e.field, "kind");
        let e = validate(TaskKind::Doctor, &json!({"uplaod": true})).expect_err("typo");
        assert_eq!(e.field, "uplaod");
        let e = validate(TaskKind::Doctor, &json!([1])).expect_err("not an object");
        assert_eq!(e.observed, "an array");
    }

    #[test]
    fn action_specs_are_normalized() {
        assert_eq!(
            validate(TaskKind::Doctor, &Value::Null).expect("ok"),
            json!({"upload": true})
        );
        assert_eq!(
            validate(TaskKind::UpdateDefs, &json!({})).expect("ok"),
            json!({"channel": null})
        );
        assert!(validate(TaskKind::UpdateDefs, &json!({"channel": "../x"})).is_err());
        assert!(validate(TaskKind::UpdateDefs, &json!({"channel": "sigs"})).is_ok());
    }
}
