//! How the agent reaches its server: the transport configuration (trust
//! anchors and proxy) derived from [`AgentConfig`] and the state directory.

use std::path::Path;

use tether_transport::{ProxyConfig, ProxySetting, Transport, TransportConfig, TrustConfig};
use tether_wire::ErrorCode;

use crate::config::AgentConfig;
use crate::credential::CA_FILE;
use crate::error::Failure;

/// The User-Agent of the agent.
pub fn user_agent() -> String {
    format!("tether-agent/{}", crate::version())
}

/// The proxy the agent uses, if any: the explicit one, else (when allowed)
/// the one from `HTTPS_PROXY`/`ALL_PROXY` with `NO_PROXY`.
pub fn proxy(
    config: &AgentConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ProxyConfig>, Failure> {
    if let Some(p) = &config.proxy {
        let mut proxy = ProxyConfig::parse(p).map_err(Failure::from)?;
        proxy.no_proxy = config.no_proxy.clone();
        return Ok(Some(proxy));
    }
    if config.proxy_from_env {
        return ProxyConfig::from_env_with(env).map_err(Failure::from);
    }
    Ok(None)
}

/// The proxy in use as `host:port`, never with credentials; `None` when the
/// server is reached directly (also when NO_PROXY exempts it).
pub fn proxy_in_use(config: &AgentConfig, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let proxy = proxy(config, env).ok().flatten()?;
    let host = config.server.host_str().unwrap_or_default();
    (!proxy.bypasses(host)).then(|| proxy.redacted())
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| {
        Failure::new(
            ErrorCode::ConfigInvalid,
            format!("cannot read the {what} {}: {e}", path.display()),
        )
    })
}

/// The trust anchors: the pin, the operator CA file or else the CA saved at
/// enrollment, the extra (TLS-inspection) CA, and the system roots if asked.
/// Refuses a configuration with no anchor at all rather than trusting
/// whatever the first server presents.
pub fn trust(config: &AgentConfig, state_dir: Option<&Path>) -> Result<TrustConfig, Failure> {
    let pinned_ca_sha256 = config
        .ca_fingerprint
        .as_deref()
        .map(tether_transport::parse_fingerprint)
        .transpose()
        .map_err(Failure::from)?;
    let ca_pem = match (&config.ca_file, state_dir.map(|d| d.join(CA_FILE))) {
        (Some(file), _) => Some(read_pem(file, "CA file")?),
        (None, Some(saved)) if saved.exists() => Some(read_pem(&saved, "saved server CA")?),
        _ => None,
    };
    let extra_ca_pem = config
        .extra_ca_file
        .as_deref()
        .map(|f| read_pem(f, "extra CA file"))
        .transpose()?;
    if pinned_ca_sha256.is_none()
        && ca_pem.is_none()
        && extra_ca_pem.is_none()
        && !config.system_roots
    {
        return Err(Failure::new(
            ErrorCode::ConfigInvalid,
            "no trust anchor is configured: set ca_fingerprint, ca_file or system_roots = true in agent.toml",
        ));
    }
    Ok(TrustConfig {
        pinned_ca_sha256,
        ca_pem,
        extra_ca_pem,
        system_roots: config.system_roots,
    })
}

/// The full transport configuration. `state_dir` is `None` at enrollment,
/// where only the anchors given on the command line count.
pub fn transport_config(
    config: &AgentConfig,
    state_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<TransportConfig, Failure> {
    Ok(TransportConfig {
        proxy: proxy(config, env)?.map_or(ProxySetting::Direct, ProxySetting::Explicit),
        trust: trust(config, state_dir)?,
        user_agent: user_agent(),
        ..TransportConfig::default()
    })
}

/// Builds the transport.
pub fn transport(
    config: &AgentConfig,
    state_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Transport, Failure> {
    Transport::new(transport_config(config, state_dir, env)?).map_err(Failure::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigLayer, resolve};

    fn config(toml: &str) -> AgentConfig {
        let layer = crate::config::parse_file(Path::new("agent.toml"), toml).expect("parses");
        resolve(
            &[
                (layer, Some("agent.toml".into())),
                (ConfigLayer::default(), None),
            ],
            &|| "h".into(),
        )
        .expect("resolves")
        .config
    }

    #[test]
    fn no_anchor_is_refused() {
        let err = trust(&config("server = \"https://s\"\n"), None).expect_err("no anchor");
        assert_eq!(err.code, ErrorCode::ConfigInvalid);
        assert!(
            trust(
                &config("server = \"https://s\"\nsystem_roots = true\n"),
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn saved_ca_is_used_after_enrollment_but_not_during() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CA_FILE), b"PEM").expect("writes");
        let c = config(
            "server = \"https://s\"\nca_fingerprint = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n",
        );
        assert_eq!(
            trust(&c, Some(dir.path())).expect("ok").ca_pem,
            Some(b"PEM".to_vec())
        );
        assert_eq!(trust(&c, None).expect("ok").ca_pem, None);
        assert_eq!(trust(&c, None).expect("ok").pinned_ca_sha256, Some([0; 32]));
    }

    #[test]
    fn proxy_comes_from_config_then_env_and_is_redacted() {
        let env = |k: &str| (k == "HTTPS_PROXY").then(|| "http://bob:pw@envproxy:8080".to_owned());
        let explicit = config(
            "server = \"https://s.corp\"\nsystem_roots = true\nproxy = \"http://alice:s3cret@p.corp:3128\"\n",
        );
        assert_eq!(
            proxy_in_use(&explicit, &env).as_deref(),
            Some("p.corp:3128")
        );
        let from_env = config("server = \"https://s.corp\"\nsystem_roots = true\n");
        assert_eq!(
            proxy_in_use(&from_env, &env).as_deref(),
            Some("envproxy:8080")
        );
        let off =
            config("server = \"https://s.corp\"\nsystem_roots = true\nproxy_from_env = false\n");
        assert_eq!(proxy_in_use(&off, &env), None);
        let bypass =
            config("server = \"https://s.corp\"\nproxy = \"http://p:1\"\nno_proxy = [\".corp\"]\n");
        assert_eq!(proxy_in_use(&bypass, &env), None);
    }
}
