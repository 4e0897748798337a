//! The story of the discovery inventory: certificates are stored once per
//! fingerprint with every location they were seen at; a location whose
//! certificate changed, or which stopped answering TLS, is marked so;
//! recording the same sightings twice stores them once; listings page by
//! keyset and filter by expiry and verdict.

use std::collections::BTreeSet;

use tether_store::{CertFilter, Cursor, ScanId, ScanSettled, Seen, SeenCert, Sighting};
use tether_wire::{CertFacts, LocationState};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Fixture, t};

fn facts(fingerprint: &str, not_after: OffsetDateTime) -> CertFacts {
    CertFacts {
        subject: "CN=it's \"quoted\" -- ; DROP TABLE certs".into(),
        issuer: "CN=Lab CA".into(),
        serial: "01ab".into(),
        sans: vec!["a.example".into()],
        sans_total: 1,
        key_type: "ec".into(),
        key_bits: 256,
        signature_algorithm: "ecdsa-with-SHA256".into(),
        not_before: t(-86_400),
        not_after,
        fingerprint: fingerprint.into(),
        aia_urls: vec![],
        cdp_urls: vec![],
        is_ca: false,
        verdicts: vec![],
    }
}

fn fp(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn seen(n: u8, not_after: OffsetDateTime, verdicts: &[&str]) -> SeenCert {
    let f = facts(&fp(n), not_after);
    SeenCert {
        fingerprint: fp(n),
        facts: serde_json::to_string(&f).expect("facts encode"),
        chain: serde_json::to_string(&vec![f]).expect("chain encodes"),
        not_after,
        verdicts: verdicts.iter().map(|v| (*v).to_owned()).collect(),
    }
}

/// A sighting; `None` is an endpoint that answered without TLS. Its time is
/// set by [`scan`].
fn at(address: &str, sni: Option<&str>, agent: Uuid, cert: Option<SeenCert>) -> Sighting {
    Sighting {
        address: address.into(),
        sni: sni.map(str::to_owned),
        agent_id: agent,
        at: t(0),
        seen: cert.map_or(Seen::NoTls, Seen::Cert),
    }
}

/// A silent (filtered) endpoint.
fn silent(address: &str, sni: Option<&str>, agent: Uuid) -> Sighting {
    Sighting {
        seen: Seen::Silent,
        ..at(address, sni, agent, None)
    }
}

/// A fresh scan (a task's first attempt).
fn new_scan() -> ScanId {
    ScanId {
        task_id: Uuid::new_v4(),
        epoch: 1,
    }
}

/// `batch` as one completed scan that probed every endpoint at `when`.
async fn scan(f: &Fixture, batch: &[Sighting], when: OffsetDateTime) -> ScanSettled {
    let id = new_scan();
    record(f, id, batch, when).await;
    f.store.complete_scan(id).await.expect("completes")
}

/// One chunk of `id`, every endpoint probed at `when`.
async fn record(f: &Fixture, id: ScanId, batch: &[Sighting], when: OffsetDateTime) {
    let batch: Vec<Sighting> = batch
        .iter()
        .cloned()
        .map(|s| Sighting { at: when, ..s })
        .collect();
    f.store.record_sightings(id, &batch).await.expect("records");
}

async fn state_of(f: &Fixture, n: u8) -> (LocationState, Option<OffsetDateTime>) {
    let l = f.store.cert_locations(&fp(n), 1).await.expect("locations");
    (l[0].state, l[0].state_since)
}

pub async fn certs_are_stored_once_with_their_locations(f: Fixture) {
    let agent = Uuid::new_v4();
    let other = Uuid::new_v4();
    let batch = vec![
        at(
            "10.0.0.1:443",
            Some("a.example"),
            agent,
            Some(seen(1, t(86_400), &["self_signed"])),
        ),
        at(
            "10.0.0.2:443",
            None,
            agent,
            Some(seen(1, t(86_400), &["self_signed"])),
        ),
        at(
            "[2001:db8::1]:8443",
            None,
            other,
            Some(seen(1, t(86_400), &["self_signed"])),
        ),
        at("10.0.0.3:443", None, agent, None),
    ];
    let first = new_scan();
    record(&f, first, &batch, t(10)).await;
    // The same batch delivered again stores nothing new.
    record(&f, first, &batch, t(10)).await;
    f.store.complete_scan(first).await.expect("completes");
    let all = f
        .store
        .list_certs(&CertFilter::default(), None, 100)
        .await
        .expect("lists");
    assert_eq!(all.len(), 1, "one certificate, deduplicated by fingerprint");
    let c = &all[0];
    assert_eq!(c.info.fingerprint, fp(1));
    assert_eq!(c.info.locations, 3);
    assert_eq!(c.info.verdicts, vec!["self_signed".to_owned()]);
    assert_eq!(c.info.first_seen, t(10));
    assert_eq!(c.info.last_seen, t(10));
    assert_eq!(c.info.cert, facts(&fp(1), t(86_400)), "facts round-trip");
    let chain: Vec<CertFacts> = serde_json::from_str(&c.chain).expect("chain decodes");
    assert_eq!(chain.len(), 1);
    let again = f.store.cert(&fp(1)).await.expect("reads").expect("exists");
    assert_eq!(&again, c);
    assert!(f.store.cert(&fp(9)).await.expect("reads").is_none());
    let locs = f
        .store
        .cert_locations(&fp(1), 100)
        .await
        .expect("locations");
    assert_eq!(locs.len(), 3);
    assert!(locs.iter().all(|l| l.state == LocationState::Current));
    let v6 = locs
        .iter()
        .find(|l| l.address == "[2001:db8::1]:8443")
        .expect("the IPv6 location");
    assert_eq!((v6.agent_id, v6.sni.as_deref()), (other, None));
    let named = locs
        .iter()
        .find(|l| l.address == "10.0.0.1:443")
        .expect("the named location");
    assert_eq!(named.sni.as_deref(), Some("a.example"));
    // Seen again later: first seen stays, last seen moves.
    scan(&f, &batch[..1], t(20)).await;
    let c = f.store.cert(&fp(1)).await.expect("reads").expect("exists");
    assert_eq!((c.info.first_seen, c.info.last_seen), (t(10), t(20)));
    let locs = f.store.cert_locations(&fp(1), 1).await.expect("locations");
    assert_eq!(locs.len(), 1, "the limit holds");
    assert_eq!(locs[0].address, "10.0.0.1:443", "newest sighting first");
    assert_eq!((locs[0].first_seen, locs[0].last_seen), (t(10), t(20)));
}

pub async fn changed_and_silent_locations_are_marked(f: Fixture) {
    let agent = Uuid::new_v4();
    let addr = "192.0.2.10:443";
    scan(
        &f,
        &[at(addr, Some("www"), agent, Some(seen(1, t(1000), &[])))],
        t(10),
    )
    .await;
    scan(
        &f,
        &[at(addr, Some("www"), agent, Some(seen(2, t(2000), &[])))],
        t(20),
    )
    .await;
    let old = f.store.cert_locations(&fp(1), 10).await.expect("old");
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].state, LocationState::Changed);
    assert_eq!(old[0].replaced_by.as_deref(), Some(fp(2).as_str()));
    assert_eq!(old[0].state_since, Some(t(20)));
    assert_eq!(old[0].last_seen, t(10));
    let new = f.store.cert_locations(&fp(2), 10).await.expect("new");
    assert_eq!(new[0].state, LocationState::Current);
    assert_eq!(new[0].previous.as_deref(), Some(fp(1).as_str()));
    // Another SNI or another agent at the same address is another location.
    scan(
        &f,
        &[
            at(addr, None, agent, None),
            at(addr, Some("www"), Uuid::new_v4(), None),
        ],
        t(25),
    )
    .await;
    let new = f.store.cert_locations(&fp(2), 10).await.expect("new");
    assert_eq!(new[0].state, LocationState::Current, "{new:?}");
    // A later scan finds no TLS there: gone.
    scan(&f, &[at(addr, Some("www"), agent, None)], t(30)).await;
    let new = f.store.cert_locations(&fp(2), 10).await.expect("new");
    assert_eq!(new[0].state, LocationState::Gone);
    assert_eq!(new[0].state_since, Some(t(30)));
    let old = f.store.cert_locations(&fp(1), 10).await.expect("old");
    assert_eq!(
        old[0].state,
        LocationState::Changed,
        "changed stays changed"
    );
    // An older batch delivered late changes nothing it should not.
    scan(
        &f,
        &[at(addr, Some("www"), agent, Some(seen(1, t(1000), &[])))],
        t(15),
    )
    .await;
    let old = f.store.cert_locations(&fp(1), 10).await.expect("old");
    assert_eq!(old[0].state, LocationState::Changed);
    assert_eq!(old[0].last_seen, t(15));
    let new = f.store.cert_locations(&fp(2), 10).await.expect("new");
    assert_eq!(
        new[0].state,
        LocationState::Gone,
        "a late batch does not revive"
    );
    // It answers again with the first certificate: current again.
    scan(
        &f,
        &[at(addr, Some("www"), agent, Some(seen(1, t(1000), &[])))],
        t(40),
    )
    .await;
    let old = f.store.cert_locations(&fp(1), 10).await.expect("old");
    assert_eq!(old[0].state, LocationState::Current);
    assert_eq!(old[0].replaced_by, None);
    assert_eq!(old[0].previous.as_deref(), Some(fp(2).as_str()));
    assert_eq!(old[0].first_seen, t(10));
}

pub async fn cert_pages_reach_every_cert_and_filter(f: Fixture) {
    let agent = Uuid::new_v4();
    // Ten certificates, two per instant (so pages split ties), every other
    // one expiring soon and self-signed.
    for n in 0..10_u8 {
        let soon = n % 2 == 0;
        let cert = seen(
            n,
            if soon { t(3_600) } else { t(90 * 86_400) },
            if soon {
                &["self_signed", "expired"]
            } else {
                &["unknown_issuer"]
            },
        );
        scan(
            &f,
            &[at(&format!("10.0.1.{n}:443"), None, agent, Some(cert))],
            t(i64::from(n / 2)),
        )
        .await;
    }
    let mut seen_fps = BTreeSet::new();
    let mut after: Option<Cursor> = None;
    for _ in 0..20 {
        let page = f
            .store
            .list_certs(&CertFilter::default(), after.as_ref(), 3)
            .await
            .expect("page");
        for c in &page {
            assert!(seen_fps.insert(c.info.fingerprint.clone()), "no repeats");
        }
        if page.len() < 3 {
            break;
        }
        after = page.last().map(|c| c.cursor());
    }
    assert_eq!(seen_fps.len(), 10, "paging reaches every certificate");
    let expiring = f
        .store
        .list_certs(
            &CertFilter {
                expiring_before: Some(t(86_400)),
                verdict: None,
            },
            None,
            100,
        )
        .await
        .expect("expiring");
    assert_eq!(expiring.len(), 5);
    let self_signed = f
        .store
        .list_certs(
            &CertFilter {
                expiring_before: None,
                verdict: Some("self_signed".into()),
            },
            None,
            100,
        )
        .await
        .expect("by verdict");
    assert_eq!(self_signed.len(), 5);
    assert!(
        self_signed
            .iter()
            .all(|c| c.info.verdicts.contains(&"self_signed".to_owned()))
    );
    let both = f
        .store
        .list_certs(
            &CertFilter {
                expiring_before: Some(t(86_400)),
                verdict: Some("unknown_issuer".into()),
            },
            None,
            100,
        )
        .await
        .expect("both filters");
    assert!(both.is_empty());
    let hostile = f
        .store
        .list_certs(
            &CertFilter {
                expiring_before: None,
                verdict: Some("x' OR '1'='1".into()),
            },
            None,
            100,
        )
        .await
        .expect("a hostile verdict is a plain value");
    assert!(hostile.is_empty());
    // A newer sighting's verdicts replace the old ones.
    scan(
        &f,
        &[at(
            "10.0.1.0:443",
            None,
            agent,
            Some(seen(0, t(3_600), &[])),
        )],
        t(100),
    )
    .await;
    let c = f.store.cert(&fp(0)).await.expect("reads").expect("exists");
    assert!(c.info.verdicts.is_empty());
}

/// The built-in CA's issued certificates are kept once per fingerprint, and
/// each deploy report once per transaction; the history of a certificate
/// lists the deploys that installed it and those that replaced it, newest
/// first, with their steps intact (hostile text included).
pub async fn issued_certs_and_deployments_are_kept_once(f: Fixture) {
    let task = Uuid::new_v4();
    let agent = Uuid::new_v4();
    let issued = tether_wire::IssuedCert {
        fingerprint: fp(7),
        serial: "7f01".into(),
        names: vec!["web.example".into(), "10.0.0.7".into()],
        not_before: t(-3600),
        not_after: t(90 * 86_400),
        issued_at: t(0),
        task_id: Some(task),
        agent_id: Some(agent),
        issuer: None,
        renewal_window: None,
    };
    assert!(f.store.issued_cert(&fp(7)).await.expect("reads").is_none());
    f.store
        .record_issued(&issued, "-----BEGIN CERTIFICATE-----")
        .await
        .expect("records");
    let mut again = issued.clone();
    again.names = vec!["other".into()];
    f.store
        .record_issued(&again, "x")
        .await
        .expect("idempotent");
    assert_eq!(
        f.store.issued_cert(&fp(7)).await.expect("reads"),
        Some(issued.clone())
    );
    let none = tether_wire::IssuedCert {
        task_id: None,
        agent_id: None,
        fingerprint: fp(8),
        serial: "08".into(),
        ..issued.clone()
    };
    f.store.record_issued(&none, "p").await.expect("records");
    assert_eq!(
        f.store.issued_cert(&fp(8)).await.expect("reads"),
        Some(none)
    );

    // An ACME CA's certificate keeps its issuer, and its renewal window
    // (RFC 9773) is recorded and replaced as the CA moves it.
    let window = |start: i64, end: i64, at: i64| tether_wire::RenewalWindowSeen {
        start: t(start),
        end: t(end),
        checked_at: t(at),
    };
    let acme = tether_wire::IssuedCert {
        fingerprint: fp(9),
        serial: "09".into(),
        issuer: Some("acme:pebble".into()),
        renewal_window: Some(window(60 * 86_400, 61 * 86_400, 0)),
        ..issued.clone()
    };
    f.store.record_issued(&acme, "p").await.expect("records");
    assert_eq!(
        f.store
            .issued_cert_pem(&fp(9))
            .await
            .expect("reads")
            .as_deref(),
        Some("p")
    );
    assert_eq!(f.store.issued_cert_pem(&fp(98)).await.expect("reads"), None);
    assert_eq!(
        f.store.issued_cert(&fp(9)).await.expect("reads"),
        Some(acme.clone())
    );
    assert!(
        f.store
            .set_renewal_window(&fp(9), &window(10 * 86_400, 11 * 86_400, 3600))
            .await
            .expect("sets")
    );
    assert_eq!(
        f.store
            .issued_cert(&fp(9))
            .await
            .expect("reads")
            .and_then(|c| c.renewal_window),
        Some(window(10 * 86_400, 11 * 86_400, 3600))
    );
    assert!(
        !f.store
            .set_renewal_window(&fp(99), &window(0, 1, 0))
            .await
            .expect("no such certificate")
    );

    let report = |state: &str, new: u8, old: Option<u8>| tether_wire::DeployReport {
        id: Uuid::new_v4(),
        state: state.into(),
        failure: (state != "deployed").then(|| tether_wire::DeployFailure {
            code: "TETHER-E8503".into(),
            message: "nginx: [emerg] \u{1b}[31m'; DROP TABLE cert_deployments; --".into(),
        }),
        new_fingerprint: fp(new),
        old_fingerprint: old.map(fp),
        steps: vec![tether_wire::DeployStep {
            name: "reload".into(),
            ok: false,
            duration_ms: 12,
            detail: "exit 1".into(),
        }],
        recovered: false,
        address: "10.0.0.7:443".into(),
        sni: Some("web.example".into()),
        path: "/etc/ssl/web/cert.pem".into(),
    };
    let first = tether_wire::DeploymentRecord {
        task_id: task,
        agent_id: agent,
        at: t(10),
        report: report("rolled_back", 7, Some(6)),
    };
    let second = tether_wire::DeploymentRecord {
        task_id: task,
        agent_id: agent,
        at: t(20),
        report: report("deployed", 7, Some(6)),
    };
    let later = tether_wire::DeploymentRecord {
        task_id: Uuid::new_v4(),
        agent_id: agent,
        at: t(30),
        report: report("deployed", 9, Some(7)),
    };
    for d in [&first, &second, &second, &later] {
        f.store.record_deployment(d).await.expect("records");
    }
    let h7 = f.store.deployments(&fp(7), 10).await.expect("lists");
    assert_eq!(h7, vec![later.clone(), second.clone(), first.clone()]);
    let h6 = f.store.deployments(&fp(6), 10).await.expect("lists");
    assert_eq!(h6, vec![second.clone(), first]);
    assert_eq!(
        f.store.deployments(&fp(7), 1).await.expect("lists"),
        vec![later]
    );
    assert!(
        f.store
            .deployments(&fp(1), 10)
            .await
            .expect("lists")
            .is_empty()
    );
}

pub async fn gone_is_decided_per_completed_scan(f: Fixture) {
    let agent = Uuid::new_v4();
    let addr = "192.0.2.20:443";
    scan(
        &f,
        &[at(addr, None, agent, Some(seen(1, t(1000), &[])))],
        t(10),
    )
    .await;
    // A scan's chunk finds it refused: nothing changes until that scan
    // completes.
    let a = new_scan();
    record(&f, a, &[at(addr, None, agent, None)], t(20)).await;
    assert_eq!(state_of(&f, 1).await, (LocationState::Current, None));
    // That attempt failed: its absence is forgotten.
    f.store.abandon_scan(a.task_id).await.expect("abandons");
    assert_eq!(
        f.store.complete_scan(a).await.expect("completes"),
        ScanSettled::default(),
        "nothing left to settle"
    );
    assert_eq!(state_of(&f, 1).await, (LocationState::Current, None));
    // A lease that expired (epoch 1) and a retry that completed (epoch 2):
    // the retry's absence counts, at its own observation time.
    let b = new_scan();
    record(&f, b, &[at(addr, None, agent, None)], t(25)).await;
    let retry = ScanId { epoch: 2, ..b };
    record(&f, retry, &[at(addr, None, agent, None)], t(30)).await;
    assert_eq!(state_of(&f, 1).await, (LocationState::Current, None));
    let settled = f.store.complete_scan(retry).await.expect("completes");
    assert_eq!(settled, ScanSettled { gone: 1, silent: 0 });
    assert_eq!(state_of(&f, 1).await, (LocationState::Gone, Some(t(30))));
    // Completing it again, or the expired epoch, changes nothing.
    assert_eq!(
        f.store.complete_scan(retry).await.expect("again"),
        ScanSettled::default()
    );
    assert_eq!(
        f.store.complete_scan(b).await.expect("the old epoch"),
        ScanSettled::default(),
        "the earlier attempt's absences went with the completed one"
    );
    // Absences where nothing was ever seen keep no row and settle nothing.
    let c = new_scan();
    record(
        &f,
        c,
        &[
            at("192.0.2.99:443", None, agent, None),
            silent("192.0.2.98:443", None, agent),
        ],
        t(40),
    )
    .await;
    assert_eq!(
        f.store.complete_scan(c).await.expect("completes"),
        ScanSettled::default()
    );
    // A scan that sees the certificate before it completes keeps it current,
    // whatever the order of its chunks.
    scan(
        &f,
        &[at(addr, None, agent, Some(seen(1, t(1000), &[])))],
        t(50),
    )
    .await;
    let d = new_scan();
    record(&f, d, &[at(addr, None, agent, None)], t(55)).await;
    record(
        &f,
        d,
        &[at(addr, None, agent, Some(seen(1, t(1000), &[])))],
        t(60),
    )
    .await;
    f.store.complete_scan(d).await.expect("completes");
    assert_eq!(
        state_of(&f, 1).await,
        (LocationState::Current, None),
        "an absence older than the last sighting marks nothing"
    );
}

pub async fn a_silent_location_is_gone_after_two_completed_scans(f: Fixture) {
    let agent = Uuid::new_v4();
    let addr = "192.0.2.30:443";
    let cert = || at(addr, Some("www"), agent, Some(seen(3, t(1000), &[])));
    let quiet = || silent(addr, Some("www"), agent);
    scan(&f, &[cert()], t(10)).await;
    // One completed scan finds it silent: a passing fault, still current.
    let settled = scan(&f, &[quiet()], t(20)).await;
    assert_eq!(settled, ScanSettled { gone: 0, silent: 1 });
    assert_eq!(state_of(&f, 3).await, (LocationState::Current, None));
    // It answers again: the count starts over.
    scan(&f, &[cert()], t(30)).await;
    scan(&f, &[quiet()], t(40)).await;
    assert_eq!(
        state_of(&f, 3).await,
        (LocationState::Current, None),
        "one silent scan since the last answer"
    );
    // A late completion of an older scan that found it silent counts for
    // nothing: it is not after the last sighting.
    scan(&f, &[quiet()], t(25)).await;
    assert_eq!(state_of(&f, 3).await, (LocationState::Current, None));
    // The second completed scan in a row to find it silent: gone, since then.
    let settled = scan(&f, &[quiet()], t(50)).await;
    assert_eq!(settled, ScanSettled { gone: 1, silent: 0 });
    assert_eq!(state_of(&f, 3).await, (LocationState::Gone, Some(t(50))));
    // It answers again: current, and a single silent scan is again not enough.
    scan(&f, &[cert()], t(60)).await;
    assert_eq!(state_of(&f, 3).await, (LocationState::Current, None));
    scan(&f, &[quiet()], t(70)).await;
    assert_eq!(state_of(&f, 3).await, (LocationState::Current, None));
    // Refused once is enough: the host answered, without TLS.
    scan(&f, &[at(addr, Some("www"), agent, None)], t(80)).await;
    assert_eq!(state_of(&f, 3).await, (LocationState::Gone, Some(t(80))));
}

pub async fn first_and_last_seen_are_the_probes_times(f: Fixture) {
    let agent = Uuid::new_v4();
    let id = new_scan();
    // One chunk, its endpoints probed at different times; it arrives later
    // than either, and the arrival time is not the store's business.
    let mut early = at("10.0.2.1:443", None, agent, Some(seen(4, t(1000), &[])));
    early.at = t(5);
    let mut late = at("10.0.2.2:443", None, agent, Some(seen(4, t(1000), &[])));
    late.at = t(7);
    f.store
        .record_sightings(id, &[late, early])
        .await
        .expect("records");
    let c = f.store.cert(&fp(4)).await.expect("reads").expect("exists");
    assert_eq!((c.info.first_seen, c.info.last_seen), (t(5), t(7)));
    let locs = f.store.cert_locations(&fp(4), 10).await.expect("locations");
    let times: Vec<(String, OffsetDateTime, OffsetDateTime)> = locs
        .iter()
        .map(|l| (l.address.clone(), l.first_seen, l.last_seen))
        .collect();
    assert_eq!(
        times,
        vec![
            ("10.0.2.2:443".to_owned(), t(7), t(7)),
            ("10.0.2.1:443".to_owned(), t(5), t(5)),
        ]
    );
}
