//! The built-in CA's revocation pieces on their own: the pointers issued
//! certificates carry, the CRL's fields, and OCSP answers (their CertIDs,
//! statuses, nonce and signature) for requests named by SHA-1 and SHA-256.

use rcgen::{CertificateParams, KeyPair};
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use tether_pki::ca::{self, CaFiles, RootKeyPlace};
use tether_pki::revoke::{
    CRL_VALIDITY, CrlEntry, IssuerHashes, OcspAnswer, OcspRequestError, PkiUrls, read_request,
};
use tether_pki::{IssuingCa, Kek, csr};
use tether_wire::RevocationReason;
use time::OffsetDateTime;
use x509_cert::der::asn1::{Any, OctetString};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::Extension;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    TbsRequest, Version,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");

fn lab() -> (tempfile::TempDir, IssuingCa) {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = CaFiles::new(dir.path().join("ca"));
    let kek = Kek::generate_file(&dir.path().join("ca.kek")).expect("kek");
    let mut ca = ca::init(
        &files,
        &kek,
        "Revoke",
        RootKeyPlace::Online,
        OffsetDateTime::now_utc(),
    )
    .expect("init");
    ca.set_urls(Some(PkiUrls::new("http://pki.test:8080").expect("url")));
    (dir, ca)
}

fn leaf(ca: &IssuingCa) -> tether_pki::Issued {
    let key = KeyPair::generate().expect("key");
    let pem = CertificateParams::new(vec!["a.test".to_owned()])
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let checked = csr::check(pem.as_bytes(), &["a.test".to_owned()]).expect("checks");
    ca.sign(&checked, 30, OffsetDateTime::now_utc())
        .expect("signs")
}

fn der_of(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).expect("pem").into_contents()
}

fn digest(alg: &'static ring::digest::Algorithm, data: &[u8]) -> Vec<u8> {
    ring::digest::digest(alg, data).as_ref().to_vec()
}

/// A CertID for `serial` naming `issuer_der` by `hash`.
fn cert_id(issuer_der: &[u8], serial: &[u8], hash: ObjectIdentifier) -> CertId {
    let (_, issuer) = X509Certificate::from_der(issuer_der).expect("issuer");
    let alg = if hash == SHA1 {
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY
    } else {
        &ring::digest::SHA256
    };
    CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: hash,
            parameters: Some(Any::null()),
        },
        issuer_name_hash: OctetString::new(digest(alg, issuer.subject().as_raw())).expect("hash"),
        issuer_key_hash: OctetString::new(digest(
            alg,
            &issuer.public_key().subject_public_key.data,
        ))
        .expect("hash"),
        serial_number: SerialNumber::new(serial).expect("serial"),
    }
}

fn request(ids: Vec<CertId>, nonce: Option<&[u8]>) -> Vec<u8> {
    OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: ids
                .into_iter()
                .map(|req_cert| Request {
                    req_cert,
                    single_request_extensions: None,
                })
                .collect(),
            request_extensions: nonce.map(|n| {
                vec![Extension {
                    extn_id: NONCE,
                    critical: false,
                    extn_value: OctetString::new(n.to_vec()).expect("nonce"),
                }]
            }),
        },
        optional_signature: None,
    }
    .to_der()
    .expect("encodes")
}

fn serial_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn issued_certificates_name_the_crl_and_the_ocsp_responder() {
    let (_dir, ca) = lab();
    let issued = leaf(&ca);
    let (_, cert) = X509Certificate::from_der(&issued.cert_der).expect("parses");
    let text = format!("{:?}", cert.extensions());
    assert!(text.contains("http://pki.test:8080/pki/ca.crl"), "{text}");
    assert!(text.contains("http://pki.test:8080/pki/ocsp"), "{text}");
}

#[test]
fn the_crl_lists_revocations_with_reasons_and_dates() {
    let (_dir, ca) = lab();
    let a = leaf(&ca);
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("ns");
    let entries = vec![CrlEntry {
        serial: a.serial.clone(),
        revoked_at: now,
        reason: RevocationReason::Superseded,
    }];
    let der = ca.crl(1_700_000_000_123, now, &entries).expect("signs");
    let (_, crl) = CertificateRevocationList::from_der(&der).expect("a DER CRL");
    assert_eq!(
        crl.tbs_cert_list.this_update.timestamp(),
        now.unix_timestamp()
    );
    assert_eq!(
        crl.tbs_cert_list.next_update.expect("next").timestamp(),
        (now + CRL_VALIDITY).unix_timestamp()
    );
    assert_eq!(
        crl.crl_number().map(|n| n.to_string()),
        Some("1700000000123".to_owned())
    );
    let listed: Vec<_> = crl.iter_revoked_certificates().collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].raw_serial(), serial_bytes(&a.serial).as_slice());
    assert_eq!(
        listed[0].reason_code().map(|(_, r)| r.0),
        Some(RevocationReason::Superseded.code())
    );
    // The intermediate signed it.
    let int = der_of(ca.chain_pem());
    let (_, int_cert) = X509Certificate::from_der(&int).expect("int");
    assert_eq!(crl.tbs_cert_list.issuer, *int_cert.subject());
    UnparsedPublicKey::new(
        &ECDSA_P256_SHA256_ASN1,
        &int_cert.public_key().subject_public_key.data,
    )
    .verify(crl.tbs_cert_list.as_ref(), &crl.signature_value.data)
    .expect("the intermediate's signature verifies");
    // An empty CRL has no entries, and still a number.
    let empty = ca.crl(2, now, &[]).expect("signs");
    let (_, crl) = CertificateRevocationList::from_der(&empty).expect("a DER CRL");
    assert_eq!(crl.iter_revoked_certificates().count(), 0);
}

#[test]
fn ocsp_answers_are_signed_per_certid_with_the_nonce_echoed() {
    let (_dir, ca) = lab();
    let a = leaf(&ca);
    let int = der_of(ca.chain_pem());
    let serial = serial_bytes(&a.serial);
    let other = {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).expect("other CA").der().to_vec()
    };
    let ids = vec![
        cert_id(&int, &serial, SHA1),
        cert_id(&int, &serial, SHA256),
        cert_id(&other, &serial, SHA1),
    ];
    let der = request(ids.clone(), Some(b"0123456789abcdef"));
    let query = read_request(&der, ca.issuer_hashes()).expect("reads");
    let serials: Vec<_> = query.certs.iter().map(|c| c.serial.clone()).collect();
    assert_eq!(
        serials,
        vec![Some(a.serial.clone()), Some(a.serial.clone()), None],
        "SHA-1 and SHA-256 CertIDs of this issuer are ours; another issuer's is not"
    );
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("ns");
    let answers = vec![
        OcspAnswer::Good,
        OcspAnswer::Revoked {
            at: now,
            reason: RevocationReason::KeyCompromise,
        },
        OcspAnswer::Unknown,
    ];
    let resp = ca.ocsp_response(&query, &answers, now).expect("signs");
    let resp = OcspResponse::from_der(&resp).expect("a DER OCSP response");
    assert_eq!(resp.response_status, OcspResponseStatus::Successful);
    let bytes = resp.response_bytes.expect("bytes");
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).expect("basic");
    let data = &basic.tbs_response_data;
    let got: Vec<_> = data.responses.iter().map(|r| r.cert_id.clone()).collect();
    assert_eq!(got, ids, "each answer carries the request's own CertID");
    assert!(matches!(data.responses[0].cert_status, CertStatus::Good(_)));
    match &data.responses[1].cert_status {
        CertStatus::Revoked(info) => {
            assert_eq!(
                info.revocation_time.0.to_unix_duration().as_secs(),
                now.unix_timestamp() as u64
            );
            assert_eq!(info.revocation_reason.map(|r| r as u8), Some(1));
        }
        other => panic!("revoked expected, got {other:?}"),
    }
    assert!(matches!(
        data.responses[2].cert_status,
        CertStatus::Unknown(_)
    ));
    let nonce = data
        .response_extensions
        .as_ref()
        .and_then(|e| e.iter().find(|x| x.extn_id == NONCE))
        .expect("the nonce is echoed");
    assert_eq!(nonce.extn_value.as_bytes(), b"0123456789abcdef");
    // Signed by the intermediate's key.
    let (_, int_cert) = X509Certificate::from_der(&int).expect("int");
    UnparsedPublicKey::new(
        &ECDSA_P256_SHA256_ASN1,
        &int_cert.public_key().subject_public_key.data,
    )
    .verify(&data.to_der().expect("tbs"), basic.signature.raw_bytes())
    .expect("the intermediate's signature verifies");
    // A request without a nonce gets a response without one.
    let query =
        read_request(&request(vec![ids[0].clone()], None), ca.issuer_hashes()).expect("reads");
    let resp = ca
        .ocsp_response(&query, &[OcspAnswer::Good], now)
        .expect("signs");
    let resp = OcspResponse::from_der(&resp).expect("DER");
    let basic =
        BasicOcspResponse::from_der(resp.response_bytes.expect("bytes").response.as_bytes())
            .expect("basic");
    assert!(basic.tbs_response_data.response_extensions.is_none());
}

#[test]
fn hostile_requests_are_refused_with_a_reason() {
    let (_dir, ca) = lab();
    let hashes = ca.issuer_hashes();
    assert!(matches!(
        read_request(b"junk", hashes),
        Err(OcspRequestError::NotDer(_))
    ));
    assert!(matches!(
        read_request(&vec![0x30; 17 * 1024], hashes),
        Err(OcspRequestError::TooLarge(_))
    ));
    assert_eq!(
        read_request(&request(Vec::new(), None), hashes),
        Err(OcspRequestError::Empty)
    );
    let int = der_of(ca.chain_pem());
    let many = vec![cert_id(&int, &[1], SHA1); 33];
    assert_eq!(
        read_request(&request(many, None), hashes),
        Err(OcspRequestError::TooMany(33))
    );
    assert!(IssuerHashes::from_cert_der(b"not a certificate").is_none());
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn pem_crl(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("X509 CRL", der.to_vec()))
}

/// The offline ceremony's root CRL: with it and the intermediate's CRL,
/// `openssl verify -crl_check_all` passes; once the root's CRL lists the
/// intermediate, it fails.
#[test]
fn the_root_crl_made_offline_covers_the_intermediate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = CaFiles::new(dir.path().join("ca"));
    let kek = Kek::generate_file(&dir.path().join("ca.kek")).expect("kek");
    let offline = dir.path().join("media/root.pem");
    let ca = ca::init(
        &files,
        &kek,
        "Ceremony",
        RootKeyPlace::Offline(&offline),
        OffsetDateTime::now_utc(),
    )
    .expect("init");
    let issued = leaf(&ca);
    let now = OffsetDateTime::now_utc();
    let root_key = std::fs::read_to_string(&offline).expect("root key");
    let int_crl = ca.crl(1, now, &[]).expect("intermediate CRL");
    let p = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();
    std::fs::write(p("leaf.pem"), &issued.cert_pem).expect("write");
    let verify = |root_crl: &[u8]| {
        std::fs::write(p("crls.pem"), pem_crl(&int_crl) + &pem_crl(root_crl)).expect("write");
        openssl(&[
            "verify",
            "-crl_check_all",
            "-CAfile",
            files.root_cert().to_str().expect("utf-8"),
            "-untrusted",
            files.intermediate_cert().to_str().expect("utf-8"),
            "-CRLfile",
            &p("crls.pem"),
            &p("leaf.pem"),
        ])
    };
    let good = ca::root_crl(&files, &root_key, 1, 365, None, now).expect("root CRL");
    let (ok, text) = verify(&good);
    assert!(ok, "{text}");
    let revoked = ca::root_crl(
        &files,
        &root_key,
        2,
        365,
        Some(RevocationReason::KeyCompromise),
        now,
    )
    .expect("root CRL");
    let (ok, text) = verify(&revoked);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    // Another key than the root's is refused.
    let other = KeyPair::generate().expect("key").serialize_pem();
    assert!(ca::root_crl(&files, &other, 3, 365, None, now).is_err());
}
