//! `deploy`: make a key and CSR on the host, have the control plane's
//! built-in CA sign it, and deploy the certificate to a PEM set, a PKCS#12
//! file or a Java keystore.
//!
//! The spec type and its checks belong to the endpoint's deploy crate
//! (`tether_deploy::DeploySpec`: names, the target's paths, modes and
//! owner, a keystore's password reference, the reload command, the verify endpoint). The server runs that
//! parser when a deploy task is created (TETHER-E8501), and the agent runs
//! it again before it touches a file; this hook only insists on a JSON
//! object, as `discover`'s does.

use serde_json::Value;

use super::{SpecError, object};

pub(super) fn validate(spec: &Value) -> Result<Value, SpecError> {
    let map = object(spec)?;
    Ok(Value::Object(map))
}
