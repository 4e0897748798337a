//! The scan: walks a [`Plan`], runs at most `concurrency` probes at once,
//! paces new connections per host, and streams one [`EndpointResult`] per
//! endpoint into a bounded channel (so a slow consumer slows the scan
//! instead of growing memory). The [`Summary`] counts every outcome.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tether_tasks::window::WindowState;
use tether_transport::{Dial, Resolve, SystemResolver, TcpDialer};
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::facts::Roots;
use crate::probe::{EndpointResult, Outcome, Prober};
use crate::rtt::RttTracker;
use crate::spec::{Endpoint, MAX_ADDRS_PER_NAME, Plan};

/// Counts of every outcome; `total` is their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub total: u64,
    /// Outcome name → count, every outcome listed (zeros included).
    pub outcomes: BTreeMap<String, u64>,
    /// Endpoints that presented a chain.
    pub chains: u64,
    /// Chains with at least one verdict.
    pub chains_with_problems: u64,
}

impl Summary {
    fn new() -> Summary {
        let outcomes = [
            "filtered",
            "refused",
            "not_tls",
            "tls_failed",
            "tls_accepted",
            "client_cert_required",
            "legacy_only",
            "unresolved",
            "not_scanned",
        ]
        .into_iter()
        .map(|n| (n.to_owned(), 0))
        .collect();
        Summary {
            outcomes,
            ..Summary::default()
        }
    }

    fn count(&mut self, outcome: &Outcome) {
        self.total += 1;
        *self.outcomes.entry(outcome.name().to_owned()).or_default() += 1;
        if let Some(c) = outcome.chain()
            && !c.certs.is_empty()
        {
            self.chains += 1;
            if !c.verdicts.is_empty() {
                self.chains_with_problems += 1;
            }
        }
    }
}

/// Live counters for a progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

/// The world a scan runs in; tests inject their own.
pub struct Scanner {
    pub dialer: Arc<dyn Dial>,
    pub resolver: Arc<dyn Resolve>,
    pub roots: Arc<Roots>,
    /// Wall clock for allowed hours (tests move it).
    pub now: fn() -> OffsetDateTime,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            dialer: Arc::new(TcpDialer),
            resolver: Arc::new(SystemResolver::new()),
            roots: Arc::new(Roots::system_and(&[])),
            now: OffsetDateTime::now_utc,
        }
    }
}

/// Per-host pacing: each host's next free slot.
struct Pacer {
    gap: Duration,
    next: Mutex<HashMap<IpAddr, Instant>>,
}

impl Pacer {
    async fn wait(&self, ip: IpAddr) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let slot = next.get(&ip).copied().filter(|t| *t > now).unwrap_or(now);
            next.insert(ip, slot + self.gap);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

impl Scanner {
    /// Runs the plan; results go to `out` as they finish. Setting `stop`
    /// ends the scan early: endpoints not yet started are reported as not
    /// scanned, so the summary still accounts for every one.
    pub async fn run(
        &self,
        plan: &Plan,
        out: mpsc::Sender<EndpointResult>,
        progress: Arc<Progress>,
        stop: Arc<AtomicBool>,
    ) -> Summary {
        progress
            .total
            .store(plan.estimated_endpoints(), Ordering::Relaxed);
        let prober = Arc::new(Prober::new(
            self.dialer.clone(),
            self.roots.clone(),
            Arc::new(RttTracker::new(
                plan.connect_timeout,
                plan.adaptive_connect_timeout,
            )),
            plan.handshake_timeout,
        ));
        let pacer = Arc::new(Pacer {
            gap: Duration::from_secs(1) / plan.rate_per_host.max(1),
            next: Mutex::new(HashMap::new()),
        });
        let mut summary = Summary::new();
        let semaphore = Arc::new(Semaphore::new(plan.concurrency));
        let mut set: JoinSet<EndpointResult> = JoinSet::new();
        let mut closed_reason: Option<String> = None;

        // Host names first: resolve each, then probe its addresses.
        let mut named: Vec<Endpoint> = Vec::new();
        for name in plan.names() {
            match self.resolver.resolve(name).await {
                Ok(addrs) if !addrs.is_empty() => {
                    for ip in addrs.into_iter().take(MAX_ADDRS_PER_NAME) {
                        for &port in plan.ports() {
                            named.extend(plan.address_endpoints(ip, port, Some(name)));
                        }
                    }
                }
                other => {
                    let detail = match other {
                        Err(e) => e.to_string(),
                        Ok(_) => "no address".to_owned(),
                    };
                    for &port in plan.ports() {
                        let r = EndpointResult {
                            endpoint: Endpoint {
                                ip: IpAddr::from([0, 0, 0, 0]),
                                port,
                                sni: None,
                                name: Some(name.clone()),
                                starttls: plan.starttls(port),
                                reverse_dns: false,
                            },
                            outcome: Outcome::Unresolved {
                                detail: detail.clone(),
                            },
                            elapsed_ms: 0,
                            observed_at: Some((self.now)()),
                        };
                        summary.count(&r.outcome);
                        progress.done.fetch_add(1, Ordering::Relaxed);
                        if out.send(r).await.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        }

        for ep in named.into_iter().chain(plan.endpoints()) {
            if closed_reason.is_none() {
                if stop.load(Ordering::Relaxed) {
                    closed_reason = Some("the scan was stopped".to_owned());
                } else if let Some(w) = &plan.window
                    && let WindowState::Closed { opens_at } = w.state((self.now)())
                {
                    closed_reason = Some(format!(
                        "outside the allowed hours {} (they open at {opens_at})",
                        w.describe()
                    ));
                }
            }
            if let Some(reason) = &closed_reason {
                let r = EndpointResult {
                    endpoint: ep,
                    outcome: Outcome::NotScanned {
                        reason: reason.clone(),
                    },
                    elapsed_ms: 0,
                    observed_at: Some((self.now)()),
                };
                summary.count(&r.outcome);
                progress.done.fetch_add(1, Ordering::Relaxed);
                let _ = out.send(r).await;
                continue;
            }
            let Ok(permit) = semaphore.clone().acquire_owned().await else {
                break;
            };
            while let Some(done) = set.try_join_next() {
                if let Ok(r) = done {
                    summary.count(&r.outcome);
                    if out.send(r).await.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
            let prober = prober.clone();
            let pacer = pacer.clone();
            let progress = progress.clone();
            let resolver = self.resolver.clone();
            let clock = self.now;
            set.spawn(async move {
                let started = Instant::now();
                let mut ep = ep;
                // Reverse DNS through the scanner's own resolver (invariant
                // 5): the first PTR name if it is a valid server name, else
                // no SNI. A lookup that fails or hangs costs at most the
                // handshake timeout and never the probe.
                if ep.reverse_dns
                    && ep.sni.is_none()
                    && let Ok(Ok(names)) =
                        tokio::time::timeout(prober.handshake_timeout, resolver.reverse(ep.ip))
                            .await
                {
                    ep.sni = names
                        .into_iter()
                        .next()
                        .filter(|n| rustls_pki_types::ServerName::try_from(n.clone()).is_ok());
                }
                pacer.wait(ep.ip).await;
                let observed_at = clock();
                let outcome = prober.probe(&ep).await;
                drop(permit);
                progress.done.fetch_add(1, Ordering::Relaxed);
                EndpointResult {
                    endpoint: ep,
                    outcome,
                    elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    observed_at: Some(observed_at),
                }
            });
        }
        while let Some(done) = set.join_next().await {
            match done {
                Ok(r) => {
                    summary.count(&r.outcome);
                    let _ = out.send(r).await;
                }
                Err(e) => {
                    // A probe that panicked is still an outcome, not a hole
                    // in the summary.
                    tracing::error!(error = %e, "a probe task failed");
                    summary.count(&Outcome::TlsFailed {
                        reason: format!("the probe failed: {e}"),
                        chain: None,
                    });
                }
            }
        }
        summary
    }
}
