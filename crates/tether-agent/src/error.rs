//! The one error shape the agent's commands report: a stable code, the
//! specific problem (with observed and expected values) and the action.
//! Module errors keep their own typed variants and convert into this at the
//! command boundary.

use tether_wire::ErrorCode;

/// A failure of an agent command, as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message} Action: {action}")]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
    pub action: String,
}

impl Failure {
    /// A failure with the catalog's action for `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if !message.ends_with(['.', '?', '!']) {
            message.push('.');
        }
        Failure {
            code,
            message,
            action: code.action().to_owned(),
        }
    }
}

macro_rules! from_coded {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Failure {
                Failure::new(e.code(), e.to_string())
            }
        }
    )*};
}

from_coded!(
    crate::config::ConfigError,
    crate::state::StateError,
    crate::credential::CredentialError,
    crate::logs::LogError,
    crate::service::ServiceError,
    tether_transport::TransportError
);

impl From<tether_client::ClientError> for Failure {
    fn from(e: tether_client::ClientError) -> Failure {
        match e {
            // The server's own message and action are the most specific.
            tether_client::ClientError::Api { error, status, .. } => {
                let mut message = format!("{} (HTTP {status})", error.message);
                if let Some(t) = error.not_before {
                    message.push_str(&format!("; valid from {}", rfc3339(t)));
                }
                if let Some(t) = error.expires_at {
                    message.push_str(&format!("; expires at {}", rfc3339(t)));
                }
                message.push_str(&format!("; server time {}", rfc3339(error.server_time)));
                Failure {
                    code: error.code,
                    message,
                    action: error.action,
                }
            }
            // The client's own Display repeats the code and action; the
            // failure carries them separately.
            tether_client::ClientError::Transport(e) => Failure::new(e.code(), e.to_string()),
            tether_client::ClientError::NotTether {
                status,
                content_type,
                snippet,
            } => Failure::new(
                ErrorCode::HttpNotTether,
                format!(
                    "something other than a Tether server answered: HTTP {status}, content type {}, body {snippet:?}",
                    content_type.as_deref().unwrap_or("(none)")
                ),
            ),
            tether_client::ClientError::Decode { detail } => Failure::new(
                ErrorCode::HttpProtocol,
                format!("the server's reply does not match the API schema: {detail}"),
            ),
            other => Failure::new(other.code(), other.to_string()),
        }
    }
}

/// Times in messages read like the API's: RFC 3339, UTC.
fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_code_message_and_action() {
        let f = Failure::new(ErrorCode::StateCorrupt, "state.json is corrupt");
        assert_eq!(
            f.to_string(),
            format!(
                "TETHER-E1002: state.json is corrupt. Action: {}",
                ErrorCode::StateCorrupt.action()
            )
        );
    }

    #[test]
    fn client_errors_name_their_code_once() {
        let f = Failure::from(tether_client::ClientError::NotTether {
            status: 200,
            content_type: Some("text/html".into()),
            snippet: "<html>".into(),
        });
        assert_eq!(f.code, ErrorCode::HttpNotTether);
        assert_eq!(f.to_string().matches("TETHER-E3404").count(), 1, "{f}");
        assert_eq!(f.to_string().matches("Action:").count(), 1, "{f}");
    }

    #[test]
    fn api_errors_keep_the_server_message_and_window() {
        let t = time::macros::datetime!(2026-05-17 19:16 UTC);
        let mut error = tether_wire::ApiError::new(ErrorCode::TokenNotYetValid, "not valid yet", t);
        error.not_before = Some(time::macros::datetime!(2027-01-01 0:00 UTC));
        let f = Failure::from(tether_client::ClientError::Api {
            status: 403,
            error,
            retry_after: None,
        });
        assert_eq!(f.code, ErrorCode::TokenNotYetValid);
        let text = f.to_string();
        assert!(
            text.contains("TETHER-E2102") && text.contains("2027") && text.contains("HTTP 403"),
            "{text}"
        );
    }
}
