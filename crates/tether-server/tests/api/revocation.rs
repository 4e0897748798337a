//! Revocation by the built-in CA (issue #10), end to end on a real server:
//! a certificate the CA issued names the server's CRL and OCSP URLs on its
//! plain-HTTP listener; `openssl ocsp` reports it good, then revoked after
//! `POST /v1/admin/certs/{fp}/revoke`; `openssl crl` reads the CRL and
//! `openssl verify -crl_check` refuses the certificate; the connectivity
//! doctor's revocation check names it revoked (TETHER-E3306) over both
//! OCSP and the CRL. Hostile OCSP requests get `malformedRequest` or
//! `unknown`, never an error page.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tether_pki::ca::{self, CaFiles, RootKeyPlace};
use tether_testlab::{free_port, program};
use tether_wire::{Clock as _, ErrorCode, ManualClock, RevokeResponse};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::support::{Client, Harness, epoch};

/// A server whose data dir holds an initialized CA, with its PKI listener
/// on a free loopback port named by `pki_public_url`.
async fn start_with_ca() -> (Harness, SocketAddr) {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = CaFiles::new(dir.path().join("ca"));
    let kek = tether_pki::Kek::generate_file(&dir.path().join("ca.kek")).expect("kek");
    ca::init(
        &files,
        &kek,
        "Revocation Lab",
        RootKeyPlace::Online,
        time::OffsetDateTime::now_utc(),
    )
    .expect("CA init");
    let port = free_port();
    let pki: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut cfg = crate::support::config(dir.path());
    cfg.pki_public_url = Some(format!("http://127.0.0.1:{port}"));
    cfg.pki_http_listen = Some(pki.to_string());
    let clock = ManualClock::new(epoch());
    let server = tether_server::start(cfg, Arc::new(clock.clone()))
        .await
        .expect("server starts");
    assert_eq!(server.pki_http_addr, Some(pki));
    let admin = std::fs::read_to_string(&server.admin_token_path)
        .expect("admin token")
        .trim()
        .to_owned();
    let client = Client::new(&server);
    (
        Harness {
            server,
            clock,
            client,
            admin,
            _dir: dir,
        },
        pki,
    )
}

/// A leaf for `names`, its key made here, signed by the server's CA and
/// recorded as issued (the deploy task's issuance path records the same).
struct Leaf {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
    fingerprint: String,
    serial: String,
}

async fn issue(h: &Harness, names: &[&str]) -> Leaf {
    let key = rcgen::KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let csr = rcgen::CertificateParams::new(names.clone())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let checked = tether_pki::csr::check(csr.as_bytes(), &names).expect("csr checks");
    let ca = h.server.ctx().ca.clone().expect("the CA is open");
    let issued = ca
        .sign(&checked, 30, time::OffsetDateTime::now_utc())
        .expect("signs");
    h.server
        .store
        .record_issued(
            &tether_wire::IssuedCert {
                fingerprint: issued.fingerprint.clone(),
                serial: issued.serial.clone(),
                names: issued.names.clone(),
                not_before: issued.not_before,
                not_after: issued.not_after,
                issued_at: h.clock.now(),
                task_id: None,
                agent_id: None,
                issuer: None,
                renewal_window: None,
            },
            &issued.cert_pem,
        )
        .await
        .expect("records");
    Leaf {
        cert_pem: issued.cert_pem,
        cert_der: issued.cert_der,
        key_der: key.serialize_der(),
        fingerprint: issued.fingerprint,
        serial: issued.serial,
    }
}

/// One plain HTTP/1.0 exchange: status, head, body.
async fn plain(addr: SocketAddr, request: Vec<u8>) -> (u16, String, Vec<u8>) {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(&request).await.expect("write");
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .expect("the PKI listener answers within 10 s");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head, raw[split + 4..].to_vec())
}

async fn plain_get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    plain(
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: pki\r\n\r\n").into_bytes(),
    )
    .await
}

async fn ocsp_post(addr: SocketAddr, body: &[u8], content_type: &str) -> (u16, Vec<u8>) {
    let mut req = format!(
        "POST /pki/ocsp HTTP/1.0\r\nHost: pki\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let (status, head, body) = plain(addr, req).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/ocsp-response"),
        "{head}"
    );
    (status, body)
}

/// The OCSPResponseStatus of a DER response (`0` successful, `1`
/// malformedRequest, …): its first ENUMERATED.
fn response_status(der: &[u8]) -> u8 {
    let resp = <x509_ocsp::OcspResponse as x509_cert::der::Decode>::from_der(der)
        .expect("a DER OCSP response");
    resp.response_status as u8
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new(program("openssl"))
        .args(args)
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

struct Files {
    _dir: tempfile::TempDir,
    root: PathBuf,
    intermediate: PathBuf,
    leaf: PathBuf,
}

fn files(h: &Harness, leaf: &Leaf) -> Files {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = h.server.ctx().ca.clone().expect("CA");
    Files {
        root: write(dir.path(), "root.pem", ca.root_pem()),
        intermediate: write(dir.path(), "int.pem", ca.chain_pem()),
        leaf: write(dir.path(), "leaf.pem", &leaf.cert_pem),
        _dir: dir,
    }
}

fn openssl_ocsp(f: &Files, url: &str) -> String {
    let p = |p: &PathBuf| p.to_str().expect("utf-8 path").to_owned();
    let (ok, text) = openssl(&[
        "ocsp",
        "-issuer",
        &p(&f.intermediate),
        "-cert",
        &p(&f.leaf),
        "-url",
        url,
        "-CAfile",
        &p(&f.root),
        "-verify_other",
        &p(&f.intermediate),
        "-resp_text",
    ]);
    assert!(ok, "openssl ocsp failed: {text}");
    assert!(text.contains("Response verify OK"), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_certificates_are_listed_by_the_crl_and_answered_by_ocsp() {
    let (h, pki) = start_with_ca().await;
    let leaf = issue(&h, &["localhost"]).await;

    // The certificate names the server's PKI listener, over plain HTTP.
    let (_, cert) = X509Certificate::from_der(&leaf.cert_der).expect("parses");
    let mut ocsp_urls = Vec::new();
    let mut crl_urls = Vec::new();
    for ext in cert.extensions() {
        use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
        match ext.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(aia) => {
                for ad in &aia.accessdescs {
                    if let GeneralName::URI(u) = &ad.access_location {
                        ocsp_urls.push((*u).to_owned());
                    }
                }
            }
            ParsedExtension::CRLDistributionPoints(cdp) => {
                for dp in cdp.iter() {
                    if let Some(DistributionPointName::FullName(names)) = &dp.distribution_point {
                        for n in names {
                            if let GeneralName::URI(u) = n {
                                crl_urls.push((*u).to_owned());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let ocsp_url = format!("http://{pki}/pki/ocsp");
    assert_eq!(ocsp_urls, vec![ocsp_url.clone()]);
    assert_eq!(crl_urls, vec![format!("http://{pki}/pki/ca.crl")]);

    let f = files(&h, &leaf);
    let text = openssl_ocsp(&f, &ocsp_url);
    assert!(text.contains(": good"), "{text}");
    // openssl sends a nonce by default and checks it came back.
    assert!(!text.contains("WARNING: no nonce"), "{text}");

    // The CRL before any revocation: empty, and verify passes with it.
    let (status, head, crl) = plain_get(pki, "/pki/ca.crl").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/pkix-crl"),
        "{head}"
    );
    let crl_path = f._dir.path().join("ca.crl");
    std::fs::write(&crl_path, &crl).expect("write");
    let crl_file = crl_path.to_str().expect("utf-8");
    let verify = |f: &Files| {
        openssl(&[
            "verify",
            "-crl_check",
            "-CAfile",
            f.root.to_str().expect("utf-8"),
            "-untrusted",
            f.intermediate.to_str().expect("utf-8"),
            "-CRLfile",
            crl_file,
            f.leaf.to_str().expect("utf-8"),
        ])
    };
    let (ok, text) = verify(&f);
    assert!(ok, "verify -crl_check with an empty CRL: {text}");

    // Revoke through the admin API.
    let path = format!("/v1/admin/certs/{}/revoke", leaf.fingerprint);
    let r: RevokeResponse = h
        .client
        .post(
            &path,
            Some(&h.admin),
            &serde_json::json!({"reason": "keyCompromise"}),
        )
        .await
        .ok();
    assert!(r.newly_revoked);
    assert_eq!(r.revocation.serial, leaf.serial);
    assert_eq!(r.revocation.revoked_by, "bootstrap");
    // Idempotent: the first revocation stays.
    let again: RevokeResponse = h
        .client
        .post(
            &path,
            Some(&h.admin),
            &serde_json::json!({"reason": "superseded"}),
        )
        .await
        .ok();
    assert!(!again.newly_revoked);
    assert_eq!(again.revocation, r.revocation);

    let text = openssl_ocsp(&f, &ocsp_url);
    assert!(text.contains(": revoked"), "{text}");
    assert!(text.contains("Reason: keyCompromise"), "{text}");

    // The CRL now lists the serial; openssl reads it and verify refuses.
    let (_, _, crl) = plain_get(pki, "/pki/ca.crl").await;
    std::fs::write(&crl_path, &crl).expect("write");
    let (ok, text) = openssl(&["crl", "-inform", "DER", "-in", crl_file, "-noout", "-text"]);
    assert!(ok, "openssl crl: {text}");
    assert!(
        text.to_ascii_lowercase().contains(&leaf.serial),
        "the CRL lists {}: {text}",
        leaf.serial
    );
    assert!(text.contains("Key Compromise"), "{text}");
    assert!(text.contains("CRL Number"), "{text}");
    assert!(text.contains("Next Update"), "{text}");
    let (ok, text) = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        crl_file,
        "-noout",
        "-CAfile",
        f.intermediate.to_str().expect("utf-8"),
    ]);
    assert!(
        ok && text.contains("verify OK"),
        "the intermediate signed it: {text}"
    );
    let pem = openssl_crl_pem(crl_file);
    std::fs::write(&crl_path, pem).expect("write");
    let (ok, text) = verify(&f);
    assert!(!ok, "verify -crl_check must refuse a revoked certificate");
    assert!(text.contains("certificate revoked"), "{text}");

    // The same CRL is served on the HTTPS listener.
    let reply = h.client.get("/pki/ca.crl", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.as_ref(), crl.as_slice());
}

fn openssl_crl_pem(der_file: &str) -> Vec<u8> {
    let out = Command::new(program("openssl"))
        .args(["crl", "-inform", "DER", "-in", der_file, "-outform", "PEM"])
        .output()
        .expect("run openssl");
    assert!(out.status.success());
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_what_this_ca_did_not_issue_or_with_a_bad_reason_is_refused() {
    let (h, _) = start_with_ca().await;
    let stranger = format!("sha256:{}", "ab".repeat(32));
    h.client
        .post(
            &format!("/v1/admin/certs/{stranger}/revoke"),
            Some(&h.admin),
            &serde_json::json!({"reason": "keyCompromise"}),
        )
        .await
        .error(404, ErrorCode::RevokeUnknownCert);
    let leaf = issue(&h, &["localhost"]).await;
    let path = format!("/v1/admin/certs/{}/revoke", leaf.fingerprint);
    for bad in ["certificateHold", "", "keyCompromise\u{1b}[31m"] {
        h.client
            .post(&path, Some(&h.admin), &serde_json::json!({ "reason": bad }))
            .await
            .error(422, ErrorCode::RevokeReasonInvalid);
    }
    h.client
        .post(&path, None, &serde_json::json!({"reason": "keyCompromise"}))
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
    h.client
        .post(
            "/v1/admin/certs/not-a-fingerprint/revoke",
            Some(&h.admin),
            &serde_json::json!({"reason": "keyCompromise"}),
        )
        .await
        .error(422, ErrorCode::InvalidField);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ocsp_requests_are_answered_as_ocsp_never_as_errors() {
    let (h, pki) = start_with_ca().await;
    let leaf = issue(&h, &["localhost"]).await;
    // Garbage, an empty body, HTML, a wrong content type: malformedRequest.
    for (body, ct) in [
        (&b"garbage"[..], "application/ocsp-request"),
        (b"", "application/ocsp-request"),
        (b"<html>hi</html>", "text/html"),
        (b"\x30\x03\x02\x01\x00", "application/ocsp-request"),
    ] {
        let (status, der) = ocsp_post(pki, body, ct).await;
        assert_eq!(status, 200);
        assert_eq!(response_status(&der), 1, "malformedRequest for {body:?}");
    }
    // Oversized: refused before it is read whole.
    let (status, der) = ocsp_post(pki, &vec![0x30; 64 * 1024], "application/ocsp-request").await;
    assert_eq!(status, 200);
    assert_eq!(response_status(&der), 1);
    // GET with base64 that is not base64, or not a request.
    for path in ["/pki/ocsp/%%%", "/pki/ocsp/bm90IGFuIG9jc3AgcmVxdWVzdA=="] {
        let (status, head, der) = plain_get(pki, path).await;
        assert_eq!(status, 200, "{head}");
        assert_eq!(response_status(&der), 1, "{path}");
    }

    // Another CA's certificate (its issuer hashes are not ours): the
    // signed answer says "unknown".
    let other = tether_testlab::pki::Ca::root("Other CA");
    let stranger = other.issue(&["localhost"]);
    let dir = tempfile::tempdir().expect("tempdir");
    other.write(dir.path(), "other");
    let leaf_pem = write(dir.path(), "stranger.pem", stranger.pem());
    let (ok, text) = openssl(&[
        "ocsp",
        "-issuer",
        dir.path().join("other.pem").to_str().expect("utf-8"),
        "-cert",
        leaf_pem.to_str().expect("utf-8"),
        "-url",
        &format!("http://{pki}/pki/ocsp"),
        "-noverify",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains(": unknown"), "{text}");

    // A well-formed GET request (RFC 6960 A.1) for our own certificate.
    let f = files(&h, &leaf);
    let req = f._dir.path().join("req.der");
    let (ok, text) = openssl(&[
        "ocsp",
        "-issuer",
        f.intermediate.to_str().expect("utf-8"),
        "-cert",
        f.leaf.to_str().expect("utf-8"),
        "-no_nonce",
        "-reqout",
        req.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{text}");
    use base64::Engine as _;
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&req).expect("request"));
    let escaped = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let (status, _, der) = plain_get(pki, &format!("/pki/ocsp/{escaped}")).await;
    assert_eq!(status, 200);
    assert_eq!(response_status(&der), 0, "successful");

    // Only /pki/ is served on the plain listener.
    let (status, _, _) = plain_get(pki, "/v1/admin/agents").await;
    assert_eq!(status, 404);
}

/// The doctor's own revocation check, pointed at a TLS server presenting a
/// certificate of the built-in CA: good before, revoked (E3306) after, by
/// OCSP and by the CRL alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_names_a_revoked_certificate_of_the_built_in_ca() {
    let (h, _) = start_with_ca().await;
    let leaf = issue(&h, &["localhost"]).await;
    let ca = h.server.ctx().ca.clone().expect("CA");
    let int_der = pem_der(ca.chain_pem());
    let chain = vec![
        rustls_pki_types::CertificateDer::from(leaf.cert_der.clone()),
        rustls_pki_types::CertificateDer::from(int_der),
    ];
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf.key_der.clone().into());
    let tls = tether_testlab::https::HttpsServer::start(chain, key, |_req| async {
        tether_testlab::https::full(200, "ok")
    })
    .await;
    let root_pem = ca.root_pem().to_owned();
    let doctor = || {
        let mut i = tether_doctor::DoctorInput::new(
            url::Url::parse(&format!("https://localhost:{}/", tls.addr.port())).expect("url"),
        );
        i.transport.trust = tether_transport::TrustConfig {
            ca_pem: Some(root_pem.as_bytes().to_vec()),
            system_roots: false,
            ..tether_transport::TrustConfig::default()
        };
        i.deadline = std::time::Duration::from_secs(8);
        tether_doctor::run(i, tether_doctor::World::system())
    };
    let r = doctor().await;
    let rev = r.check("revocation").expect("a revocation check");
    assert_eq!(rev.evidence["outcome"], "good", "{}", r.to_text());
    assert_eq!(rev.evidence["certificates"][0]["ocsp"][0]["status"], "good");
    assert_eq!(rev.evidence["certificates"][0]["crl"][0]["status"], "good");

    h.client
        .post(
            &format!("/v1/admin/certs/{}/revoke", leaf.fingerprint),
            Some(&h.admin),
            &serde_json::json!({"reason": "cessationOfOperation"}),
        )
        .await
        .ok::<RevokeResponse>();
    let r = doctor().await;
    let rev = r.check("revocation").expect("a revocation check");
    assert_eq!(rev.code, Some(ErrorCode::TlsRevoked), "{}", r.to_text());
    assert_eq!(rev.evidence["outcome"], "revoked");
    let ocsp = &rev.evidence["certificates"][0]["ocsp"][0];
    assert_eq!(ocsp["status"], "revoked", "{ocsp}");
    assert_eq!(ocsp["reason"], "CessationOfOperation");
    assert_eq!(
        rev.evidence["certificates"][0]["crl"][0]["status"],
        "revoked"
    );
}

fn pem_der(pem_text: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(pem_text.as_bytes())
        .expect("PEM")
        .to_vec()
}
