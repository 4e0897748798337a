//! The agent's handler of "run the doctor and upload": runs the doctor,
//! builds the escalation bundle, uploads it when asked, and reports the
//! verdict as the action's result.

use std::path::PathBuf;
use std::time::Duration;

use tether_client::ApiClient;
use tether_wire::ActionResult;

use crate::bundle::{CollectOptions, DEFAULT_LOG_LINES};
use crate::run::{ActionHandler, BoxFuture};
use crate::world::World;

/// Runs doctor actions for the agent in `state_dir`.
#[derive(Debug, Clone)]
pub struct DoctorActions {
    pub state_dir: PathBuf,
    pub unit_dir: PathBuf,
    pub deadline: Duration,
    pub world: World,
}

impl ActionHandler for DoctorActions {
    fn doctor(&self, client: ApiClient, upload: bool) -> BoxFuture<ActionResult> {
        let me = self.clone();
        Box::pin(async move {
            let opts = CollectOptions {
                state_dir: me.state_dir.clone(),
                unit_dir: me.unit_dir.clone(),
                log_lines: DEFAULT_LOG_LINES,
                deadline: me.deadline,
                run_commands: true,
            };
            let (bundle, report) = match crate::bundle::collect(&opts, &me.world).await {
                Ok(made) => made,
                Err(e) => {
                    return ActionResult {
                        ok: false,
                        message: format!("could not build the bundle: {e}"),
                        doctor: None,
                    };
                }
            };
            let mut message = match &report {
                Some(r) => format!("doctor verdict {}", r.verdict.status.as_str()),
                None => "the doctor could not run; the bundle says why".to_owned(),
            };
            let mut bundle_id = None;
            let mut ok = true;
            if upload {
                match client.upload_bundle(bundle.bytes.clone()).await {
                    Ok(info) => {
                        bundle_id = Some(info.id);
                        message.push_str(&format!(
                            "; bundle {} uploaded ({} bytes, {} redactions)",
                            info.id,
                            info.size_bytes,
                            bundle.redactions.len()
                        ));
                    }
                    Err(e) => {
                        ok = false;
                        message.push_str(&format!("; the bundle upload failed: {e}"));
                    }
                }
            }
            ActionResult {
                ok,
                message: message.chars().take(1500).collect(),
                doctor: report
                    .as_ref()
                    .map(|r| crate::doctor::summary(r, bundle_id)),
            }
        })
    }
}
