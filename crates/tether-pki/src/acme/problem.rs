//! An ACME problem document (RFC 8555 §6.7, RFC 7807), kept whole, and the
//! stable code each problem type maps to.

use serde::{Deserialize, Serialize};
use tether_wire::ErrorCode;

/// The prefix of every problem type RFC 8555 defines.
pub const ACME_URN: &str = "urn:ietf:params:acme:error:";

/// What the ACME CA answered, as it answered it: kept in task results and
/// error messages so an operator reads the CA's own words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeProblem {
    /// The problem type, e.g. `urn:ietf:params:acme:error:rateLimited`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The CA's human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The HTTP status the CA answered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Problems per identifier (RFC 8555 §6.7.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subproblems: Vec<AcmeSubproblem>,
}

/// One identifier's problem inside an [`AcmeProblem`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeSubproblem {
    /// The name the subproblem is about (`dns` identifiers), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AcmeProblem {
    /// The short type (`rateLimited`), without RFC 8555's URN prefix; a
    /// non-ACME type is returned whole.
    pub fn short_type(&self) -> Option<&str> {
        self.kind
            .as_deref()
            .map(|k| k.strip_prefix(ACME_URN).unwrap_or(k))
    }

    /// The stable code: from the type, or, for a generic type
    /// (`malformed` with subproblems, RFC 8555 §6.7.1 `compound`), from
    /// the first subproblem whose type is more telling.
    pub fn code(&self) -> ErrorCode {
        let top = code_for_type(self.short_type());
        if matches!(
            top,
            ErrorCode::AcmeRequestRefused | ErrorCode::AcmeServerError
        ) {
            for sub in &self.subproblems {
                let short = sub
                    .kind
                    .as_deref()
                    .map(|k| k.strip_prefix(ACME_URN).unwrap_or(k));
                let code = code_for_type(short);
                if !matches!(
                    code,
                    ErrorCode::AcmeRequestRefused | ErrorCode::AcmeServerError
                ) {
                    return code;
                }
            }
        }
        top
    }

    pub(crate) fn from_lib(p: &instant_acme::Problem) -> AcmeProblem {
        AcmeProblem {
            kind: p.r#type.clone(),
            detail: p.detail.clone(),
            status: p.status,
            subproblems: p
                .subproblems
                .iter()
                .map(|s| AcmeSubproblem {
                    identifier: s.identifier.as_ref().map(identifier_text),
                    kind: s.r#type.clone(),
                    detail: s.detail.clone(),
                })
                .collect(),
        }
    }
}

impl std::fmt::Display for AcmeProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short_type().unwrap_or("(no type)"))?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        for sub in &self.subproblems {
            write!(
                f,
                "; {}: {} {}",
                sub.identifier.as_deref().unwrap_or("(no identifier)"),
                sub.kind
                    .as_deref()
                    .map(|k| k.strip_prefix(ACME_URN).unwrap_or(k))
                    .unwrap_or("(no type)"),
                sub.detail.as_deref().unwrap_or(""),
            )?;
        }
        Ok(())
    }
}

fn identifier_text(id: &instant_acme::Identifier) -> String {
    match id {
        instant_acme::Identifier::Dns(name) => name.clone(),
        instant_acme::Identifier::Ip(ip) => ip.to_string(),
        other => format!("{other:?}"),
    }
}

/// RFC 8555 §6.7's types (and RFC 8657's CAA, RFC 9773's none), by what
/// the operator must do about them.
fn code_for_type(short: Option<&str>) -> ErrorCode {
    match short {
        Some("rateLimited") => ErrorCode::AcmeRateLimited,
        Some("rejectedIdentifier" | "unsupportedIdentifier" | "caa") => {
            ErrorCode::AcmeIdentifierRejected
        }
        Some("unauthorized" | "incorrectResponse" | "connection" | "dns" | "tls") => {
            ErrorCode::AcmeChallengeFailed
        }
        Some(
            "accountDoesNotExist"
            | "externalAccountRequired"
            | "invalidContact"
            | "unsupportedContact",
        ) => ErrorCode::AcmeAccountRefused,
        Some(
            "malformed"
            | "badCSR"
            | "badSignatureAlgorithm"
            | "badPublicKey"
            | "badRevocationReason"
            | "alreadyRevoked"
            | "orderNotReady"
            | "userActionRequired"
            | "badNonce"
            | "compound",
        ) => ErrorCode::AcmeRequestRefused,
        _ => ErrorCode::AcmeServerError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(json: &str) -> AcmeProblem {
        serde_json::from_str(json).expect("problem")
    }

    #[test]
    fn each_rfc_8555_type_has_its_code() {
        for (ty, code) in [
            ("rateLimited", ErrorCode::AcmeRateLimited),
            ("rejectedIdentifier", ErrorCode::AcmeIdentifierRejected),
            ("caa", ErrorCode::AcmeIdentifierRejected),
            ("unauthorized", ErrorCode::AcmeChallengeFailed),
            ("connection", ErrorCode::AcmeChallengeFailed),
            ("dns", ErrorCode::AcmeChallengeFailed),
            ("incorrectResponse", ErrorCode::AcmeChallengeFailed),
            ("externalAccountRequired", ErrorCode::AcmeAccountRefused),
            ("invalidContact", ErrorCode::AcmeAccountRefused),
            ("malformed", ErrorCode::AcmeRequestRefused),
            ("badCSR", ErrorCode::AcmeRequestRefused),
            ("serverInternal", ErrorCode::AcmeServerError),
        ] {
            let p = problem(&format!(r#"{{"type":"{ACME_URN}{ty}"}}"#));
            assert_eq!(p.code(), code, "{ty}");
        }
        assert_eq!(problem("{}").code(), ErrorCode::AcmeServerError);
        assert_eq!(
            problem(r#"{"type":"about:blank"}"#).code(),
            ErrorCode::AcmeServerError
        );
    }

    #[test]
    fn a_compound_problem_is_named_by_its_subproblem() {
        let p = problem(
            r#"{"type":"urn:ietf:params:acme:error:compound","detail":"two",
                "subproblems":[
                  {"type":"urn:ietf:params:acme:error:malformed","identifier":"a.example"},
                  {"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"no","identifier":"b.example"}]}"#,
        );
        assert_eq!(p.code(), ErrorCode::AcmeIdentifierRejected);
        let text = p.to_string();
        assert!(text.contains("compound: two"), "{text}");
        assert!(text.contains("b.example: rejectedIdentifier no"), "{text}");
    }

    #[test]
    fn it_round_trips_as_json_with_the_rfc_field_names() {
        let p = AcmeProblem {
            kind: Some(format!("{ACME_URN}rateLimited")),
            detail: Some("too many".into()),
            status: Some(429),
            subproblems: vec![],
        };
        let json = serde_json::to_value(&p).expect("json");
        assert_eq!(json["type"], "urn:ietf:params:acme:error:rateLimited");
        assert_eq!(json["status"], 429);
        assert_eq!(
            serde_json::from_value::<AcmeProblem>(json).expect("back"),
            p
        );
    }
}
