//! The built-in CA end to end: init with the root offline, open with the
//! KEK, sign CSRs, and `openssl verify` the chain; every hostile CSR gets
//! its stable code.

use std::path::Path;
use std::process::Command;

use rcgen::{CertificateParams, KeyPair};
use tether_pki::CaError;
use tether_pki::ca::{self, CaFiles, RootKeyPlace};
use tether_pki::csr::{self, CsrError};
use tether_pki::seal::{Kek, SealError};
use tether_wire::ErrorCode;
use time::OffsetDateTime;

fn csr_for(names: &[&str], key: &KeyPair) -> String {
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("params");
    params
        .serialize_request(key)
        .expect("csr")
        .pem()
        .expect("pem")
}

fn allowed(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

struct Lab {
    _dir: tempfile::TempDir,
    files: CaFiles,
    kek: Kek,
    offline: std::path::PathBuf,
    root: std::path::PathBuf,
}

fn lab() -> (Lab, ca::IssuingCa) {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = CaFiles::new(dir.path().join("data/ca"));
    let kek = Kek::generate_file(&dir.path().join("ca.kek")).expect("kek");
    let offline = dir.path().join("media/root.pem");
    let ca = ca::init(
        &files,
        &kek,
        "Test",
        RootKeyPlace::Offline(&offline),
        OffsetDateTime::now_utc(),
    )
    .expect("init");
    let root = files.root_cert();
    (
        Lab {
            _dir: dir,
            files,
            kek,
            offline,
            root,
        },
        ca,
    )
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
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

fn no_private_key_in_plaintext(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        assert!(
            !bytes.windows(11).any(|w| w == b"PRIVATE KEY"),
            "{} holds a plaintext private key",
            path.display()
        );
    }
}

#[test]
fn root_offline_intermediate_sealed_and_openssl_verifies_the_leaf() {
    let (lab, ca) = lab();
    // The root key went to the offline path only; the data dir holds no
    // plaintext key, and no root key at all.
    assert!(lab.offline.exists());
    assert!(lab.files.root_key_online().is_none());
    no_private_key_in_plaintext(&lab.files.dir);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(lab.files.intermediate_key())
            .expect("meta")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // The server reopens the CA with the KEK alone.
    let ca2 = ca::open(&lab.files, &lab.kek).expect("open");
    drop(ca);
    let key = KeyPair::generate().expect("key");
    let req = csr::check(
        csr_for(&["web.example.test", "127.0.0.1"], &key).as_bytes(),
        &allowed(&["WEB.example.test", "127.0.0.1", "other.test"]),
    )
    .expect("csr accepted");
    assert_eq!(req.key, "ECDSA P-256");
    let now = OffsetDateTime::now_utc();
    let issued = ca2.sign(&req, 90, now).expect("sign");
    assert!(issued.fingerprint.starts_with("sha256:"));
    assert_eq!(issued.names, vec!["web.example.test", "127.0.0.1"]);
    assert!(issued.not_after > now + time::Duration::days(89));

    let dir = tempfile::tempdir().expect("tmp");
    let leaf = dir.path().join("leaf.pem");
    let int = dir.path().join("int.pem");
    std::fs::write(&leaf, &issued.cert_pem).expect("w");
    std::fs::write(&int, &issued.chain_pem).expect("w");
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        lab.root.to_str().expect("utf8"),
        "-untrusted",
        int.to_str().expect("utf8"),
        "-purpose",
        "sslserver",
        leaf.to_str().expect("utf8"),
    ]);
    assert!(ok, "openssl verify: {out}");
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        leaf.to_str().expect("utf8"),
        "-noout",
        "-text",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("DNS:web.example.test"), "{text}");
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    let (_, serial) = openssl(&[
        "x509",
        "-in",
        leaf.to_str().expect("utf8"),
        "-noout",
        "-serial",
    ]);
    assert_eq!(
        serial
            .trim()
            .trim_start_matches("serial=")
            .to_ascii_lowercase(),
        issued.serial
    );
    // The leaf's public key is the CSR's: the private key never left its
    // holder.
    assert!(
        issued
            .cert_der
            .windows(key.public_key_raw().len())
            .any(|w| w == key.public_key_raw())
    );
}

#[test]
fn a_wrong_kek_or_missing_ca_is_refused_with_its_code() {
    let (lab, _ca) = lab();
    let other = Kek::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").expect("kek");
    let err = ca::open(&lab.files, &other).expect_err("wrong kek");
    assert!(matches!(err, CaError::Seal(SealError::Open)), "{err}");
    assert_eq!(err.code(), ErrorCode::CaNotInitialized);
    let missing = CaFiles::new(lab.files.dir.join("nowhere"));
    assert!(matches!(
        ca::open(&missing, &lab.kek),
        Err(CaError::NotInitialized(_))
    ));
    // A second init never overwrites a CA.
    assert!(matches!(
        ca::init(
            &lab.files,
            &lab.kek,
            "X",
            RootKeyPlace::Online,
            OffsetDateTime::now_utc()
        ),
        Err(CaError::AlreadyInitialized(_))
    ));
}

#[test]
fn an_online_root_is_named_and_can_be_moved_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = CaFiles::new(dir.path().join("ca"));
    let kek = Kek::generate_file(&dir.path().join("ca.kek")).expect("kek");
    ca::init(
        &files,
        &kek,
        "T",
        RootKeyPlace::Online,
        OffsetDateTime::now_utc(),
    )
    .expect("init");
    assert_eq!(files.root_key_online(), Some(files.root_key()));
    no_private_key_in_plaintext(&files.dir);
    let out = dir.path().join("media/root.pem");
    ca::move_root_offline(&files, &kek, &out).expect("move");
    assert!(files.root_key_online().is_none());
    let pem = std::fs::read_to_string(&out).expect("root key");
    assert!(KeyPair::from_pem(&pem).is_ok());
    assert!(matches!(
        ca::move_root_offline(&files, &kek, &out),
        Err(CaError::RootOffline(_))
    ));
    // Still signs with the intermediate alone.
    let ca = ca::open(&files, &kek).expect("open");
    let key = KeyPair::generate().expect("key");
    let req =
        csr::check(csr_for(&["a.test"], &key).as_bytes(), &allowed(&["a.test"])).expect("csr");
    ca.sign(&req, 30, OffsetDateTime::now_utc()).expect("sign");
}

fn code_of(input: &[u8], names: &[&str]) -> (ErrorCode, CsrError) {
    let e = csr::check(input, &allowed(names)).expect_err("refused");
    (e.code(), e)
}

#[test]
fn hostile_csrs_get_stable_codes() {
    let key = KeyPair::generate().expect("key");
    let good = csr_for(&["a.test"], &key);

    // Not a CSR at all.
    assert_eq!(code_of(b"hello", &["a.test"]).0, ErrorCode::CsrMalformed);
    assert_eq!(code_of(b"", &["a.test"]).0, ErrorCode::CsrMalformed);
    assert_eq!(
        code_of(&[0x30, 0x82, 0xff], &["a.test"]).0,
        ErrorCode::CsrMalformed
    );
    // Too large, before any parsing.
    let big = vec![b'A'; csr::MAX_CSR_BYTES + 1];
    assert!(matches!(
        code_of(&big, &["a.test"]).1,
        CsrError::TooLarge { .. }
    ));
    // A certificate where a CSR belongs.
    let cert = CertificateParams::new(vec!["a.test".to_owned()])
        .expect("p")
        .self_signed(&key)
        .expect("cert")
        .pem();
    assert_eq!(
        code_of(cert.as_bytes(), &["a.test"]).0,
        ErrorCode::CsrMalformed
    );

    // An altered CSR: the signature no longer verifies.
    let mut der = pem::parse(&good).expect("pem").into_contents();
    let pos = der
        .windows(6)
        .position(|w| w == b"a.test")
        .expect("name in der");
    der[pos] = b'b';
    assert_eq!(
        code_of(&der, &["a.test", "b.test"]).0,
        ErrorCode::CsrSignatureInvalid
    );

    // Names: not allowed, none, case and trailing dot normalized.
    assert_eq!(
        code_of(good.as_bytes(), &["other.test"]).0,
        ErrorCode::CsrNameNotAllowed
    );
    assert!(csr::check(good.as_bytes(), &allowed(&["A.TEST."])).is_ok());
    let mut empty = CertificateParams::new(Vec::<String>::new()).expect("p");
    empty.distinguished_name = rcgen::DistinguishedName::new();
    let none = empty
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    assert!(matches!(
        code_of(none.as_bytes(), &["a.test"]).1,
        CsrError::NoName
    ));
    // Without subjectAltName, the common name is the request.
    let (code, e) = code_of(csr_for(&[], &key).as_bytes(), &["a.test"]);
    assert_eq!(code, ErrorCode::CsrNameNotAllowed);
    assert!(e.to_string().contains("rcgen self signed cert"), "{e}");
    let evil = csr_for(&["a.test", "evil.test"], &key);
    let (code, e) = code_of(evil.as_bytes(), &["a.test"]);
    assert_eq!(code, ErrorCode::CsrNameNotAllowed);
    assert!(e.to_string().contains("evil.test"), "{e}");
}

#[test]
fn weak_or_unknown_keys_are_refused_and_strong_rsa_is_signed() {
    let dir = tempfile::tempdir().expect("tmp");
    let mk = |algo: &[&str], name: &str| -> Vec<u8> {
        let key = dir.path().join(format!("{name}.key"));
        let csr = dir.path().join(format!("{name}.csr"));
        let mut args: Vec<&str> = vec!["req", "-new", "-nodes", "-newkey"];
        args.extend_from_slice(algo);
        let (ok, out) = openssl(
            &[
                args.as_slice(),
                &[
                    "-keyout",
                    key.to_str().expect("utf8"),
                    "-out",
                    csr.to_str().expect("utf8"),
                    "-subj",
                    "/CN=a.test",
                ],
            ]
            .concat(),
        );
        assert!(ok, "openssl req: {out}");
        std::fs::read(&csr).expect("csr")
    };
    let rsa1024 = mk(&["rsa:1024"], "rsa1024");
    let (code, e) = code_of(&rsa1024, &["a.test"]);
    assert_eq!(code, ErrorCode::CsrKeyRefused, "{e}");
    assert!(e.to_string().contains("RSA 1024"), "{e}");
    let secp256k1 = mk(&["ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"], "k1");
    assert_eq!(code_of(&secp256k1, &["a.test"]).0, ErrorCode::CsrKeyRefused);
    let rsa2048 = mk(&["rsa:2048"], "rsa2048");
    let req = csr::check(&rsa2048, &allowed(&["a.test"])).expect("rsa 2048 accepted");
    assert_eq!(req.key, "RSA 2048");
    let (_lab, ca) = lab();
    let issued = ca
        .sign(&req, 10, OffsetDateTime::now_utc())
        .expect("sign rsa");
    assert_eq!(issued.names, vec!["a.test"]);
}
