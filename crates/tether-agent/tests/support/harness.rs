//! Shared by the agent's integration tests: a loopback HTTPS server with
//! canned check-in replies, a state directory, and a sleeper that records
//! delays (advancing a manual clock) instead of waiting.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_agent::run::{BoxFuture, RunContext, RunSummary, Sleeper, run_loop};
use tether_agent::state::{AgentState, StateStore};
use tether_client::ApiClient;
use tether_testlab::canned::{CannedReply, RecordedRequest, TestServer};
use tether_transport::Transport;
use tether_wire::{
    Action, AgentStatus, ApiError, CheckinResponse, ErrorCode, HostFacts, ManualClock, Policy,
};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::sync::Notify;
use uuid::Uuid;

pub const T0: OffsetDateTime = datetime!(2026-05-17 12:00 UTC);
pub const AGENT: Uuid = Uuid::from_u128(0xA6E47);

/// Records each requested sleep, advances the clock by it, and signals
/// `stop` once `stop_after` sleeps were requested.
pub struct RecordingSleeper {
    pub clock: ManualClock,
    pub delays: Mutex<Vec<Duration>>,
    pub stop_after: usize,
    pub stop: Arc<Notify>,
}

impl Sleeper for RecordingSleeper {
    fn sleep(&self, d: Duration) -> BoxFuture<()> {
        let mut delays = self.delays.lock().unwrap_or_else(|p| p.into_inner());
        delays.push(d);
        self.clock
            .advance(time::Duration::try_from(d).unwrap_or(time::Duration::MAX));
        if delays.len() >= self.stop_after {
            self.stop.notify_one();
        }
        Box::pin(async {})
    }
}

pub fn policy(interval: u32, jitter: u8) -> Policy {
    Policy {
        defs: Default::default(),
        name: "default".into(),
        revision: 3,
        checkin_interval_secs: interval,
        jitter_percent: jitter,
        targets: Vec::new(),
        max_concurrent_tasks: tether_wire::DEFAULT_MAX_CONCURRENT_TASKS,
    }
}

pub fn ok_reply(interval: u32, actions: Vec<Action>) -> CannedReply {
    CannedReply::json(
        200,
        &CheckinResponse {
            agent_id: AGENT,
            status: AgentStatus::Active,
            policy: policy(interval, 0),
            actions,
            server_time: T0,
            current_agent_version: None,
            upgrade: None,
        },
    )
}

pub fn api_error(status: u16, code: ErrorCode) -> CannedReply {
    CannedReply::json(status, &ApiError::new(code, format!("canned {code}"), T0))
}

/// Answers check-ins from `script` in order (repeating the last) and the
/// shutdown notice with 204.
pub async fn server(script: Vec<CannedReply>) -> TestServer {
    let next = Mutex::new(0usize);
    TestServer::start(move |r: &RecordedRequest| match r.path.as_str() {
        "/v1/agent/checkin" => {
            let mut i = next.lock().unwrap_or_else(|p| p.into_inner());
            let reply = script
                .get(*i)
                .or(script.last())
                .cloned()
                .unwrap_or_else(CannedReply::no_content);
            *i += 1;
            reply
        }
        "/v1/agent/shutdown" => CannedReply::no_content(),
        _ => api_error(404, ErrorCode::NotFound),
    })
    .await
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: StateStore,
    pub clock: ManualClock,
    pub sleeper: Arc<RecordingSleeper>,
}

impl Harness {
    pub fn new(stop_after: usize, interval: u32) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(dir.path());
        store
            .save(&AgentState {
                agent_id: AGENT,
                enrolled_at: T0,
                installed_at: T0,
                server: "https://127.0.0.1/".into(),
                last_successful_contact: None,
                status: Some(AgentStatus::Pending),
                policy: Some(policy(interval, 0)),
                last_errors: BTreeMap::new(),
                debug_until: None,
                contact_version: None,
                later: BTreeMap::new(),
            })
            .expect("state saves");
        let clock = ManualClock::new(T0);
        let sleeper = Arc::new(RecordingSleeper {
            clock: clock.clone(),
            delays: Mutex::new(Vec::new()),
            stop_after,
            stop: Arc::new(Notify::new()),
        });
        Harness {
            dir,
            store,
            clock,
            sleeper,
        }
    }

    pub fn context(
        &self,
        client: ApiClient,
        sample: f64,
        logs: Option<Arc<tether_agent::logs::LogHandle>>,
    ) -> RunContext {
        RunContext {
            client: client
                .with_bearer("agent-cred")
                .with_clock(Arc::new(self.clock.clone())),
            store: self.store.clone(),
            clock: Arc::new(self.clock.clone()),
            sleeper: self.sleeper.clone(),
            jitter: Box::new(move || sample),
            logs,
            facts: Arc::new(|| HostFacts {
                hostname: "test-host".into(),
                ..Default::default()
            }),
            proxy: Some("proxy.corp:3128".into()),
            actions: None,
            actions_doctor: None,
            defs: None,
            task_limit: None,
            upgrades: None,
        }
    }

    pub async fn run(&self, ctx: &mut RunContext) -> RunSummary {
        let stop = self.sleeper.stop.clone();
        tokio::time::timeout(
            Duration::from_secs(30),
            run_loop(ctx, async move { stop.notified().await }),
        )
        .await
        .expect("the loop stops when asked")
    }

    pub fn delays(&self) -> Vec<Duration> {
        self.sleeper
            .delays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub fn client_for(server: &TestServer) -> ApiClient {
    ApiClient::new(
        Transport::new(server.transport_config()).expect("transport builds"),
        server.url(),
    )
}
