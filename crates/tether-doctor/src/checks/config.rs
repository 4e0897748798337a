//! `config`: enrolled or not, the effective settings with their sources, and
//! the classic trap of a shell and a service with different proxy settings.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use tether_transport::ProxySetting;
use tether_wire::ErrorCode;

use super::Ctx;
use crate::engine::TaskOutput;
use crate::report::CheckResult;

/// The variables that choose the proxy for an https:// URL.
const PROXY_VARS: &[&str] = &["HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"];

pub(crate) async fn check(ctx: Arc<Ctx>) -> TaskOutput {
    let input = &ctx.input;
    let trust = &input.transport.trust;
    let proxy_setting = match &input.transport.proxy {
        ProxySetting::Direct => "direct".to_owned(),
        ProxySetting::FromEnv => "from the environment".to_owned(),
        ProxySetting::Explicit(p) => p.redacted(),
        _ => "other".to_owned(),
    };
    let settings: Vec<_> = input
        .config_sources
        .iter()
        .map(|(setting, value, source)| {
            json!({ "setting": setting, "value": redact_url_userinfo(value), "source": source })
        })
        .collect();
    let mut r = CheckResult::pass("config", "Configuration")
        .with("server", ctx.input.server.as_str())
        .with("enrolled", input.enrolled)
        .with("agent_id", input.agent_id.map(|id| id.to_string()))
        .with("credential_present", input.credential.is_some())
        .with("proxy_setting", proxy_setting)
        .with("proxy_for_server", ctx.proxy.as_ref().map(|p| p.redacted()))
        .with(
            "trust",
            json!({
                "pinned_ca": trust.pinned_ca_sha256.map(|p| format!("sha256:{}", hex_lower(&p))),
                "ca_file": trust.ca_pem.is_some(),
                "extra_ca_file": trust.extra_ca_pem.is_some(),
                "system_roots": trust.system_roots,
            }),
        )
        .with("settings", settings)
        .with("shell_proxy_env", json!(redact_env(&input.shell_proxy_env)));
    if let Some(service) = &input.service_proxy_env {
        r.set("service_proxy_env", json!(redact_env(service)));
    }

    if input.server.scheme() != "https" || input.server.host().is_none() {
        return TaskOutput::gated_by_failures(vec![r.fail(
            ErrorCode::ConfigInvalid,
            format!(
                "The server URL {} is not an https:// URL with a host.",
                super::redacted_server(&input.server)
            ),
        )]);
    }
    if let Some(e) = &ctx.transport_error {
        return TaskOutput::gated_by_failures(vec![r.fail(
            ErrorCode::ConfigInvalid,
            format!("The transport settings are invalid: {e}."),
        )]);
    }
    if let Some(service) = &input.service_proxy_env {
        let diffs = differences(&input.shell_proxy_env, service);
        if !diffs.is_empty() {
            r.set("proxy_env_differences", json!(diffs));
            let names: Vec<String> = diffs.iter().map(|d| d.variable.clone()).collect();
            r = r.warn(
                ErrorCode::ProxyEnvMismatch,
                format!(
                    "The shell and the {} service set {} differently, so the CLI and the service take different paths.",
                    ctx.world.service_name,
                    names.join(", ")
                ),
            );
        }
    }
    TaskOutput::gated_by_failures(vec![r])
}

/// One proxy variable that differs between the shell and the service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct EnvDifference {
    /// The variable, upper-cased (`https_proxy` and `HTTPS_PROXY` are one).
    pub(crate) variable: String,
    /// The shell's value, redacted.
    pub(crate) shell: Option<String>,
    /// The service's value, redacted.
    pub(crate) service: Option<String>,
}

/// Compares the proxy variables that matter for https:// URLs. The
/// upper-case name wins when both spellings are set, as in the transport.
pub(crate) fn differences(
    shell: &BTreeMap<String, String>,
    service: &BTreeMap<String, String>,
) -> Vec<EnvDifference> {
    let get = |env: &BTreeMap<String, String>, name: &str| -> Option<String> {
        env.get(name)
            .or_else(|| env.get(&name.to_ascii_lowercase()))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    PROXY_VARS
        .iter()
        .filter_map(|name| {
            let (a, b) = (get(shell, name), get(service, name));
            (a != b).then(|| EnvDifference {
                variable: (*name).to_owned(),
                shell: a.map(|v| redact_url_userinfo(&v)),
                service: b.map(|v| redact_url_userinfo(&v)),
            })
        })
        .collect()
}

fn redact_env(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    env.iter()
        .map(|(k, v)| (k.clone(), redact_url_userinfo(v)))
        .collect()
}

/// Replaces `user:pass@` (or `user@`) in anything URL-like with `***@`.
pub(crate) fn redact_url_userinfo(value: &str) -> String {
    value
        .split(',')
        .map(|part| {
            let (scheme, rest) = match part.find("://") {
                Some(i) => part.split_at(i + 3),
                None => ("", part),
            };
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
                None => part.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn user_info_is_redacted_everywhere() {
        assert_eq!(
            redact_url_userinfo("http://alice:hunter2@proxy:3128"),
            "http://***@proxy:3128"
        );
        assert_eq!(redact_url_userinfo("alice:pw@proxy:3128"), "***@proxy:3128");
        assert_eq!(
            redact_url_userinfo("http://proxy:3128/a@b"),
            "http://proxy:3128/a@b"
        );
        assert_eq!(redact_url_userinfo("localhost,.corp"), "localhost,.corp");
    }

    #[test]
    fn differences_compare_case_insensitively_and_redact() {
        let shell = env(&[
            ("https_proxy", "http://u:pw@proxy:3128"),
            ("NO_PROXY", "localhost"),
        ]);
        let service = env(&[("NO_PROXY", " localhost ")]);
        let d = differences(&shell, &service);
        assert_eq!(
            d,
            vec![EnvDifference {
                variable: "HTTPS_PROXY".into(),
                shell: Some("http://***@proxy:3128".into()),
                service: None,
            }]
        );
        assert!(differences(&shell, &shell).is_empty());
    }
}
