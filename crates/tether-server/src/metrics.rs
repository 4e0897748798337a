//! `GET /metrics` (issue #11): the control plane in Prometheus's text
//! exposition format, for an admin token (Prometheus's `authorization`
//! with a `credentials_file`).
//!
//! Server metrics are counted as requests are served: requests by route
//! (the router's pattern, so the label set stays bounded), method and
//! status class, their latency until the reply's head, and the size of each
//! group-committed batch of check-ins the store writes. Fleet gauges
//! (agents by status, the task queue's depth, each definitions channel's
//! newest version, its age and how many subscribed agents are in policy,
//! never installed or cannot download) are read from the store at a scrape
//! when the last reading is older than [`FLEET_MAX_AGE`], so scrapes by
//! several Prometheus servers cost one reading; the channel figures walk
//! every agent (`service::defs::summary`), and how long that took is
//! exported too.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use tokio::sync::Mutex;

use crate::service::{Ctx, ServiceError};

/// How old the fleet gauges may be when a scrape reads them.
pub const FLEET_MAX_AGE: Duration = Duration::from_secs(30);

/// The media type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelAgentLabels {
    channel: String,
    state: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric this server exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    checkin_batch: Histogram,
    agents: Family<StatusLabels, Gauge>,
    tasks: Family<StateLabels, Gauge>,
    defs_newest: Family<ChannelLabels, Gauge>,
    defs_age: Family<ChannelLabels, FloatGauge>,
    defs_agents: Family<ChannelAgentLabels, Gauge>,
    fleet_read_seconds: FloatGauge,
    audit_failures: Counter,
    /// When the fleet gauges were read last; also serializes readings.
    fleet_read_at: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Counts an admin action whose audit entry could not be written.
    pub fn audit_failed(&self) {
        self.audit_failures.inc();
    }

    /// How many audit entries could not be written since the start.
    pub fn audit_failures(&self) -> u64 {
        self.audit_failures.get()
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tether");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by route pattern, method and status class",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms to about 33 s.
            Histogram::new(exponential_buckets(0.0005, 2.0, 17))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its reply's head, by route pattern and method",
            latency.clone(),
        );
        let checkin_batch = Histogram::new(exponential_buckets(1.0, 2.0, 7));
        registry.register(
            "checkin_batch_size",
            "Check-ins written by one group-committed store batch (at most 64)",
            checkin_batch.clone(),
        );
        let agents = Family::<StatusLabels, Gauge>::default();
        registry.register("agents", "Enrolled agents by status", agents.clone());
        let tasks = Family::<StateLabels, Gauge>::default();
        registry.register(
            "tasks",
            "The task queue's depth: tasks waiting (queued) and running (leased)",
            tasks.clone(),
        );
        let defs_newest = Family::<ChannelLabels, Gauge>::default();
        registry.register(
            "defs_newest_version",
            "Each definitions channel's newest published version",
            defs_newest.clone(),
        );
        let defs_age = Family::<ChannelLabels, FloatGauge>::default();
        registry.register(
            "defs_newest_age_seconds",
            "Seconds since each definitions channel's newest version was published",
            defs_age.clone(),
        );
        let defs_agents = Family::<ChannelAgentLabels, Gauge>::default();
        registry.register(
            "defs_agents",
            "Agents per definitions channel: subscribed, in_policy, never_installed, download_problem",
            defs_agents.clone(),
        );
        let fleet_read_seconds = FloatGauge::default();
        registry.register(
            "metrics_fleet_read_seconds",
            "How long the last reading of the fleet gauges took",
            fleet_read_seconds.clone(),
        );
        let audit_failures = Counter::default();
        registry.register(
            "audit_record_failures",
            "Admin actions answered whose audit entry could not be written",
            audit_failures.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            checkin_batch,
            agents,
            tasks,
            defs_newest,
            defs_age,
            defs_agents,
            fleet_read_seconds,
            audit_failures,
            fleet_read_at: Mutex::new(None),
        }
    }

    /// What the store calls with each check-in batch's size.
    pub fn batch_observer(self: &Arc<Self>) -> tether_store::BatchObserver {
        let histogram = self.checkin_batch.clone();
        Arc::new(move |n| histogram.observe(n as f64))
    }

    fn record(&self, route: &str, method: &str, status: u16, took: Duration) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status: class.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                method: method.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The exposition text, reading the fleet first when its gauges are
    /// older than [`FLEET_MAX_AGE`].
    pub async fn render(&self, ctx: &Ctx) -> Result<String, ServiceError> {
        {
            let mut read_at = self.fleet_read_at.lock().await;
            if read_at.is_none_or(|at| at.elapsed() >= FLEET_MAX_AGE) {
                let started = Instant::now();
                self.read_fleet(ctx).await?;
                self.fleet_read_seconds.set(started.elapsed().as_secs_f64());
                *read_at = Some(Instant::now());
            }
        }
        let mut text = String::new();
        // Writing into a String cannot fail; a metric that could not be
        // written would only be missing from this scrape.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "the metrics did not encode whole");
        }
        Ok(text)
    }

    async fn read_fleet(&self, ctx: &Ctx) -> Result<(), ServiceError> {
        for (status, n) in ctx.store.count_by_status().await? {
            self.agents
                .get_or_create(&StatusLabels {
                    status: status.to_string(),
                })
                .set(gauge_value(n));
        }
        for (state, n) in ctx.store.count_open_tasks().await? {
            self.tasks
                .get_or_create(&StateLabels {
                    state: state.as_str().to_owned(),
                })
                .set(gauge_value(n));
        }
        let channels = crate::service::defs::summary(ctx, None).await?;
        // A channel that is gone is no longer exported.
        self.defs_newest.clear();
        self.defs_age.clear();
        self.defs_agents.clear();
        let now = ctx.now();
        for c in channels {
            let label = ChannelLabels {
                channel: c.channel.clone(),
            };
            if let Some(newest) = c.versions.first() {
                self.defs_newest
                    .get_or_create(&label)
                    .set(gauge_value(newest.version));
                self.defs_age
                    .get_or_create(&label)
                    .set((now - newest.published_at).as_seconds_f64().max(0.0));
            }
            for (state, n) in [
                ("subscribed", c.agents_subscribed),
                ("in_policy", c.agents_in_policy),
                ("never_installed", c.agents_never_installed),
                ("download_problem", c.agents_download_problem),
            ] {
                self.defs_agents
                    .get_or_create(&ChannelAgentLabels {
                        channel: c.channel.clone(),
                        state: state.to_owned(),
                    })
                    .set(gauge_value(n));
            }
        }
        Ok(())
    }
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The middleware that counts every request the router serves.
pub async fn track(State(ctx): State<Ctx>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    ctx.metrics.record(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
