//! The bodies of Tether's fuzz targets: one function per parser of outside
//! input, each calling the production function itself (never a copy).
//!
//! Two drivers run them: the cargo-fuzz project in `fuzz/` (nightly,
//! libFuzzer, `scripts/fuzz.sh`), and this crate's stable smoke test
//! (`tests/smoke.rs`), which runs every body over the checked-in seed
//! corpus in `fuzz/corpus/<target>/` plus deterministic mutations of it, so
//! `cargo nextest run --workspace` covers them without nightly.
//!
//! A body returns for every input whether the production code accepted it
//! all the way (so a test can check that the seeds reach the deep end); a
//! panic (or an abort, a hang,
//! an out-of-memory) is the finding. Where the production code promises
//! more than "no panic", the body asserts it (a delta made by
//! `make_delta` applies back to its target, a parsed reply has a
//! three-digit status).

use std::io::Write as _;

use time::OffsetDateTime;

/// A target's body: whether the input was accepted all the way.
pub type Body = fn(&[u8]) -> bool;

/// Every target, by the name cargo-fuzz and the corpus folders use.
pub const TARGETS: &[(&str, Body)] = &[
    ("x509_chain", x509_chain),
    ("proxy_reply", proxy_reply),
    ("proxy_header", proxy_header),
    ("delta_apply", delta_apply),
    ("bundle_import", bundle_import),
    ("defs_bundle_import", defs_bundle_import),
    ("api_bodies", api_bodies),
    ("ocsp_request", ocsp_request),
    ("csr_check", csr_check),
    ("deploy_spec", deploy_spec),
];

/// Splits `data` into length-prefixed chunks (a little-endian `u16`
/// length, then that many bytes; a short last chunk takes what is left).
fn chunks(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let n = n.min(rest.len());
        out.push(&rest[..n]);
        data = &rest[n..];
    }
    out
}

/// The certificate facts and the chain classifier.
///
/// Input: a flags byte, four bytes of clock (seconds after 2000-01-01),
/// then length-prefixed chunks: the server name when flag bit 0 is set,
/// then the chain's DER certificates, end-entity first. With flag bit 1,
/// the last certificate is also the trust anchor.
pub fn x509_chain(data: &[u8]) -> bool {
    if data.len() < 5 {
        return false;
    }
    let flags = data[0];
    let secs = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
    // 2000-01-01T00:00:00Z plus up to ~136 years: always a valid time.
    let now = OffsetDateTime::from_unix_timestamp(946_684_800 + i64::from(secs))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut parts = chunks(&data[5..]);
    let name = if flags & 1 == 1 && !parts.is_empty() {
        Some(String::from_utf8_lossy(parts.remove(0)).into_owned())
    } else {
        None
    };
    let chain: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
    let facts: Vec<tether_x509::CertFacts> = chain
        .iter()
        .filter_map(|der| tether_x509::CertFacts::from_der(der))
        .collect();
    for f in &facts {
        let _ = f.names();
        let _ = f.has_weak_signature();
        if let Some(host) = &name {
            let _ = f.matches_name(host);
        }
    }
    let _ = tether_x509::shape(&facts);
    let anchors: Vec<tether_x509::CertFacts> = if flags & 2 == 2 {
        facts.last().cloned().into_iter().collect()
    } else {
        Vec::new()
    };
    let _ = tether_x509::classify(&chain, name.as_deref(), now, &anchors);
    !chain.is_empty() && facts.len() == chain.len()
}

/// A proxy's reply to CONNECT: the head parser, then who answered (from
/// the status, the headers and the body's start, which is what follows
/// the head).
pub fn proxy_reply(data: &[u8]) -> bool {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(data.len(), |i| i + 4);
    let (head, body) = data.split_at(end);
    if let Ok(reply) = tether_transport::parse_proxy_reply(head) {
        assert!(
            reply.status <= 999,
            "a status code has three digits, got {}",
            reply.status
        );
        let _ = tether_transport::who_answered(reply.status, &reply.headers, body);
        return true;
    }
    false
}

/// The server's PROXY protocol reader (v1 and v2), as a trusted balancer's
/// connection would feed it.
///
/// Input: a flags byte (bit 0: a header is required), then the bytes the
/// connection sends. Whatever it says, the reader never takes more than
/// [`tether_server::proxy_protocol::MAX_HEADER`] bytes as header, and the
/// bytes it hands to TLS are exactly the ones that followed the header.
pub fn proxy_header(data: &[u8]) -> bool {
    use tether_server::proxy_protocol::{Cidr, MAX_HEADER, Policy, accept};
    let Some((&flags, stream)) = data.split_first() else {
        return false;
    };
    let policy = Policy {
        // A literal network: it always parses.
        trusted: Cidr::parse("10.0.0.0/8").into_iter().collect(),
        required: flags & 1 == 1,
    };
    let peer = std::net::SocketAddr::from(([10, 0, 0, 1], 40000));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build();
    let Ok(runtime) = runtime else {
        return false;
    };
    runtime.block_on(async {
        let mut unread = stream;
        let Ok(accepted) = accept(&mut unread, peer, &policy).await else {
            return false;
        };
        let taken = stream.len() - unread.len();
        let header = taken - accepted.rest.len();
        assert!(header <= MAX_HEADER, "a {header}-byte header was taken");
        assert_eq!(
            accepted.rest,
            stream[header..taken],
            "the bytes after the header reach TLS unchanged"
        );
        true
    })
}

/// The cap every delta body passes as the signed target length.
const DELTA_CAP: u64 = 1 << 20;

/// Definitions delta apply.
///
/// Input: a mode byte, then length-prefixed base and target (or delta)
/// chunks. Mode 0 applies the raw bytes as a delta to the base; mode 1
/// keeps a valid header (made by `make_delta` for the base and target) and
/// fuzzes the payload behind it, so the line and zstd decoders are reached
/// past the hash check; mode 2 checks that `make_delta` then `apply_delta`
/// rebuilds the target; mode 3 decompresses a full file.
pub fn delta_apply(data: &[u8]) -> bool {
    use tether_defs::delta::{DeltaKind, HEADER_LEN, apply_delta, decompress_full, make_delta};

    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    let kind = if mode & 0x80 == 0 {
        DeltaKind::Line
    } else {
        DeltaKind::Zstd
    };
    let parts = chunks(rest);
    let base = parts.first().copied().unwrap_or(&[]);
    let second = parts.get(1).copied().unwrap_or(&[]);
    match mode & 0x7f {
        0 => apply_delta(base, second, DELTA_CAP).is_ok(),
        1 => {
            let target = parts.get(2).copied().unwrap_or(&[]);
            let Ok(made) = make_delta(kind, base, target) else {
                return false;
            };
            let mut delta = made[..HEADER_LEN.min(made.len())].to_vec();
            delta.extend_from_slice(second);
            apply_delta(base, &delta, DELTA_CAP).is_ok()
        }
        2 => {
            let Ok(made) = make_delta(kind, base, second) else {
                return false;
            };
            let rebuilt = apply_delta(base, &made, second.len() as u64);
            assert_eq!(
                rebuilt.as_deref().ok(),
                Some(second),
                "a delta made by make_delta must rebuild its target: {rebuilt:?}"
            );
            true
        }
        _ => decompress_full(rest, DELTA_CAP).is_ok(),
    }
}

/// Escalation bundle upload (gzip, then tar, then `MANIFEST.json`).
///
/// Input: a mode byte; mode 0 passes the rest as the uploaded body, any
/// other mode gzips the rest first so the fuzzer works on the tar and the
/// manifest directly.
pub fn bundle_import(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    let body = if mode == 0 {
        rest.to_vec()
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if gz.write_all(rest).is_err() {
            return false;
        }
        match gz.finish() {
            Ok(body) => body,
            Err(_) => return false,
        }
    };
    match tether_server::service::bundles::inspect(&body) {
        Ok(inspected) => {
            assert!(inspected.entries > 0, "an accepted bundle has entries");
            true
        }
        Err(_) => false,
    }
}

/// Offline definitions bundle import (`tether defs import`): the tar is
/// unpacked into a scratch directory before any signature is checked.
///
/// Input: the tar itself. Asserts that an accepted bundle put nothing
/// anywhere but `metadata/<name>` and `targets/<name>` of that directory.
pub fn defs_bundle_import(data: &[u8]) -> bool {
    let Ok(scratch) = tempfile::tempdir() else {
        return false;
    };
    let bundle = scratch.path().join("bundle.tar");
    let into = scratch.path().join("unpacked");
    if std::fs::write(&bundle, data).is_err() || std::fs::create_dir(&into).is_err() {
        return false;
    }
    let accepted = tether_defs::client::unpack_bundle(&bundle, &into).is_ok();
    // Whatever the verdict, nothing was written outside the two folders.
    for top in std::fs::read_dir(&into).into_iter().flatten().flatten() {
        let name = top.file_name();
        assert!(
            name == "metadata" || name == "targets",
            "unpack_bundle wrote {name:?} at the top of its directory"
        );
        for file in std::fs::read_dir(top.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            assert!(
                file.file_type().is_ok_and(|t| t.is_file()),
                "unpack_bundle made {:?}, which is not a plain file",
                file.path()
            );
        }
    }
    let escaped: Vec<_> = std::fs::read_dir(scratch.path())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "bundle.tar" && n != "unpacked")
        .collect();
    assert!(
        escaped.is_empty(),
        "unpack_bundle wrote {escaped:?} outside its directory"
    );
    accepted
}

/// The JSON API bodies the server accepts, parsed as the server parses them
/// (`serde_json::from_slice` into the wire type), then checked by the same
/// validators the services run before they touch the store.
///
/// Input: a selector byte, then the JSON body.
pub fn api_bodies(data: &[u8]) -> bool {
    use tether_server::service::{actions, validate};
    use tether_wire::{
        ActionResult, CheckinRequest, CreateAdminTokenRequest, CreateTokenRequest, EnrollRequest,
        PolicyUpdate,
    };

    let Some((&selector, body)) = data.split_first() else {
        return false;
    };
    match selector % 6 {
        0 => serde_json::from_slice::<CheckinRequest>(body).is_ok_and(|req| {
            validate::version(&req.agent_version)
                .and_then(|()| validate::facts(&req.facts))
                .and_then(|()| validate::definitions(&req.definitions))
                .and_then(|()| validate::last_errors(&req.last_errors))
                .and_then(|()| validate::proxy(req.proxy.as_deref()))
                .and_then(|_| validate::defs_state(req.defs))
                .is_ok()
        }),
        1 => serde_json::from_slice::<EnrollRequest>(body).is_ok_and(|req| {
            validate::name("name", &req.name)
                .and_then(|()| validate::version(&req.agent_version))
                .and_then(|()| validate::facts(&req.facts))
                .is_ok()
        }),
        2 => serde_json::from_slice::<PolicyUpdate>(body).is_ok_and(|req| {
            validate::interval(req.checkin_interval_secs)
                .and_then(|()| validate::jitter(req.jitter_percent))
                .and_then(|()| validate::targets(&req.targets))
                .and_then(|()| validate::defs_policy(&req.defs))
                .is_ok()
        }),
        3 => serde_json::from_slice::<CreateTokenRequest>(body).is_ok_and(|req| {
            validate::slug("group", &req.group)
                .and_then(|()| validate::valid_for(req.valid_for_secs))
                .and_then(|()| validate::max_uses(req.max_uses))
                .is_ok()
        }),
        4 => serde_json::from_slice::<CreateAdminTokenRequest>(body)
            .is_ok_and(|req| validate::slug("name", &req.name).is_ok()),
        _ => serde_json::from_slice::<ActionResult>(body).is_ok_and(|req| {
            req.doctor
                .as_ref()
                .is_none_or(|d| actions::summary(d).is_ok())
        }),
    }
}

/// The built-in CA's OCSP responder's request reader
/// (`tether_pki::revoke::read_request`), with the issuer hashes it matches
/// CertIDs against.
///
/// Input: length-prefixed chunks: the issuer's DER certificate, then the
/// DER OCSP request. Whatever the request says, at most
/// `MAX_OCSP_CERTS` certificates come out, each with the request's own
/// CertID; accepted all the way when one of them names the issuer.
pub fn ocsp_request(data: &[u8]) -> bool {
    use tether_pki::revoke::{IssuerHashes, MAX_OCSP_CERTS, read_request};
    let parts = chunks(data);
    let (Some(issuer), Some(request)) = (parts.first(), parts.get(1)) else {
        return false;
    };
    let Some(hashes) = IssuerHashes::from_cert_der(issuer) else {
        return false;
    };
    match read_request(request, &hashes) {
        Ok(query) => {
            assert!(
                !query.certs.is_empty() && query.certs.len() <= MAX_OCSP_CERTS,
                "{} certificates came out of one request",
                query.certs.len()
            );
            query.certs.iter().any(|c| c.serial.is_some())
        }
        Err(_) => false,
    }
}

/// The built-in CA's CSR checker (`tether_pki::csr::check`), with the names
/// the task allows.
///
/// Input: length-prefixed chunks: the allowed names (one per line), then the
/// CSR (PEM or DER). What it accepts asks for 1 to `MAX_NAMES` names, each
/// one the task allows, and its DER is the input's (or the PEM's content).
pub fn csr_check(data: &[u8]) -> bool {
    use tether_pki::csr::{MAX_CSR_BYTES, MAX_NAMES, check};
    let parts = chunks(data);
    let (Some(names), Some(csr)) = (parts.first(), parts.get(1)) else {
        return false;
    };
    let allowed: Vec<String> = String::from_utf8_lossy(names)
        .lines()
        .map(str::to_owned)
        .collect();
    match check(csr, &allowed) {
        Ok(req) => {
            assert!(
                csr.len() <= MAX_CSR_BYTES,
                "a {} byte CSR passed",
                csr.len()
            );
            assert!(
                !req.names.is_empty() && req.names.len() <= MAX_NAMES,
                "{} names came out",
                req.names.len()
            );
            let allowed_norm: Vec<String> = allowed
                .iter()
                .map(|a| a.trim_end_matches('.').to_ascii_lowercase())
                .collect();
            for n in &req.names {
                let plain = n.trim_end_matches('.').to_ascii_lowercase();
                let ip = n.parse::<std::net::IpAddr>().ok();
                assert!(
                    allowed_norm.contains(&plain)
                        || ip.is_some_and(|ip| allowed
                            .iter()
                            .any(|a| a.parse::<std::net::IpAddr>().ok() == Some(ip))),
                    "{n:?} passed, allowed {allowed:?}"
                );
            }
            assert!(
                req.der.first() == Some(&0x30) && (csr.first() != Some(&0x30) || req.der == *csr),
                "the DER that passed is not the CSR's"
            );
            true
        }
        Err(e) => {
            // Every refusal has a code in the CSR range of the catalog.
            let code = e.code().as_str();
            assert!(code.starts_with("TETHER-E840"), "{e} has code {code}");
            false
        }
    }
}

/// The deploy spec's parser as the server runs it when a deploy task is
/// created and the agent before it touches a file:
/// `DeploySpec::from_json`, then `check` and `issuer` again, and the values
/// the deploy derives from a checked spec (files, modes, timeouts, SNI).
///
/// Input: the JSON spec. A spec that passes must pass again after a round
/// trip through its own serialization, unchanged.
pub fn deploy_spec(data: &[u8]) -> bool {
    use tether_deploy::{DeploySpec, Target};
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return false;
    };
    let Ok(spec) = DeploySpec::from_json(&value) else {
        return false;
    };
    assert!(spec.check().is_ok(), "a parsed spec fails its own check");
    assert!(spec.issuer().is_ok(), "a checked spec has no issuer");
    let _ = (spec.reload_timeout(), spec.verify_timeout(), spec.sni());
    for (role, path) in spec.target.files() {
        assert!(
            spec.target.mode_of(role).is_ok(),
            "a checked spec has no mode for {}",
            path.display()
        );
    }
    if let Target::Pem(pem) = &spec.target {
        assert!(pem.cert_mode().is_ok() && pem.key_file_mode().is_ok());
    }
    let again = serde_json::to_value(&spec).expect("a spec serializes");
    assert_eq!(
        DeploySpec::from_json(&again).as_ref(),
        Ok(&spec),
        "a spec changed in its own round trip"
    );
    true
}
