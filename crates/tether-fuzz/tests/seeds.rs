//! The generator of the checked-in seed corpus (`fuzz/corpus/<target>/`):
//! real certificates (rcgen), real bundles (tar in gzip), real deltas
//! (`make_delta`), real JSON bodies and proxy replies. Ignored by default,
//! since it rewrites files in the source tree; run it after a format change:
//!
//! `cargo test -p tether-fuzz --test seeds -- --ignored`
//!
//! Files named `crash-*` in the corpus are inputs that once crashed a
//! target; this generator leaves them alone.

use std::io::Write as _;
use std::path::PathBuf;

use tether_defs::delta::{DeltaKind, compress_full, make_delta};

fn dir(target: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&d).expect("create the corpus folder");
    d
}

fn write(target: &str, name: &str, data: &[u8]) {
    std::fs::write(dir(target).join(format!("seed-{name}")), data).expect("write a seed");
}

fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    let n = u16::try_from(data.len()).expect("a seed chunk under 64 KiB");
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(data);
}

fn x509_input(flags: u8, name: Option<&str>, chain: &[&[u8]]) -> Vec<u8> {
    // 2026-01-01, inside the certificates' validity.
    let secs: u32 = 820_454_400;
    let mut out = vec![flags];
    out.extend_from_slice(&secs.to_le_bytes());
    if let Some(n) = name {
        chunk(&mut out, n.as_bytes());
    }
    for der in chain {
        chunk(&mut out, der);
    }
    out
}

fn x509_seeds() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca_params = CertificateParams::new(Vec::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Fuzz Seed CA");
    let ca = ca_params.self_signed(&ca_key).expect("a CA certificate");
    let leaf_key = KeyPair::generate().expect("a leaf key");
    let leaf_params =
        CertificateParams::new(vec!["example.test".to_owned(), "*.example.test".to_owned()])
            .expect("leaf params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("a leaf certificate");
    let self_key = KeyPair::generate().expect("a self-signed key");
    let selfsigned = CertificateParams::new(vec!["self.test".to_owned()])
        .expect("self params")
        .self_signed(&self_key)
        .expect("a self-signed certificate");

    write(
        "x509_chain",
        "chain-anchored",
        &x509_input(3, Some("www.example.test"), &[leaf.der(), ca.der()]),
    );
    write(
        "x509_chain",
        "leaf-only",
        &x509_input(1, Some("other.test"), &[leaf.der()]),
    );
    write(
        "x509_chain",
        "self-signed",
        &x509_input(0, None, &[selfsigned.der()]),
    );
}

fn proxy_seeds() {
    let replies: &[(&str, &str)] = &[
        ("200", "HTTP/1.1 200 Connection established\r\n\r\n"),
        (
            "407",
            "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"squid\"\r\nProxy-Authenticate: Negotiate\r\nServer: squid/5.7\r\nContent-Length: 5\r\n\r\nhello",
        ),
        (
            "403-html",
            "HTTP/1.0 403 Forbidden\r\nContent-Type: text/html\r\nX-Squid-Error: ERR_ACCESS_DENIED 0\r\n\r\n<html><title>ERROR: The requested URL could not be retrieved</title></html>",
        ),
        (
            "502-nginx",
            "HTTP/1.1 502 Bad Gateway\nServer: nginx\n\n<center>nginx</center>",
        ),
        (
            "401",
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer, Basic realm=\"x\"\r\n\r\n",
        ),
    ];
    for (name, reply) in replies {
        write("proxy_reply", name, reply.as_bytes());
    }
}

fn proxy_header_seeds() {
    const HELLO: &[u8] = b"\x16\x03\x01\x00\x30\x01\x00\x00\x2c\x03\x03client-hello";
    let v2 = |command: u8, family: u8, addresses: &[u8], tlvs: &[u8]| {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).expect("short");
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    };
    let v4 = [203, 0, 113, 9, 192, 0, 2, 1, 0xc7, 0x38, 0x20, 0xfb];
    let mut v6 = Vec::new();
    v6.extend_from_slice(&std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9).octets());
    v6.extend_from_slice(&std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets());
    v6.extend_from_slice(&[0xc7, 0x38, 0x20, 0xfb]);
    let seeds: &[(&str, Vec<u8>)] = &[
        (
            "v1-tcp4",
            b"PROXY TCP4 203.0.113.9 192.0.2.1 51000 8443\r\n".to_vec(),
        ),
        (
            "v1-tcp6",
            b"PROXY TCP6 2001:db8::9 2001:db8::1 51000 8443\r\n".to_vec(),
        ),
        ("v1-unknown", b"PROXY UNKNOWN\r\n".to_vec()),
        (
            "v2-ipv4-tlvs",
            v2(
                1,
                0x11,
                &v4,
                &[0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x00],
            ),
        ),
        ("v2-ipv6", v2(1, 0x21, &v6, &[])),
        ("v2-local", v2(0, 0x00, &[], &[])),
    ];
    for (name, header) in seeds {
        let mut input = vec![1];
        input.extend_from_slice(header);
        input.extend_from_slice(HELLO);
        write("proxy_header", name, &input);
    }
    // No header from a balancer that need not send one.
    let mut input = vec![0];
    input.extend_from_slice(HELLO);
    write("proxy_header", "none-optional", &input);
}

fn delta_input(mode: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![mode];
    for p in parts {
        chunk(&mut out, p);
    }
    out
}

fn delta_seeds() {
    let base = b"alpha 1\nbeta 2\ngamma 3\ndelta 4\n".as_slice();
    let target = b"alpha 1\nbeta 22\ngamma 3\nepsilon 5\n".as_slice();
    let line = make_delta(DeltaKind::Line, base, target).expect("a line delta");
    let zstd = make_delta(DeltaKind::Zstd, base, target).expect("a zstd delta");
    write("delta_apply", "raw-line", &delta_input(0, &[base, &line]));
    write(
        "delta_apply",
        "raw-zstd",
        &delta_input(0x80, &[base, &zstd]),
    );
    // Mode 1: a valid header for (base, target), then the payload.
    write(
        "delta_apply",
        "payload-line",
        &delta_input(1, &[base, &line[tether_defs::delta::HEADER_LEN..], target]),
    );
    write(
        "delta_apply",
        "payload-zstd",
        &delta_input(
            0x81,
            &[base, &zstd[tether_defs::delta::HEADER_LEN..], target],
        ),
    );
    write("delta_apply", "roundtrip", &delta_input(2, &[base, target]));
    let mut full = vec![3];
    full.extend_from_slice(&compress_full(target));
    write("delta_apply", "full", &full);
}

fn tarball(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        builder
            .append_data(&mut header, path, *data)
            .expect("append to a tar");
    }
    builder.into_inner().expect("finish a tar")
}

fn bundle_seeds() {
    let manifest = br#"{"verdict":{"status":"failed","code":"TETHER-E3312","root_cause":"weak chain","action":"replace it","check":"tls","at":"2026-01-01T00:00:00Z"}}"#;
    let tar = tarball(&[
        ("MANIFEST.json", manifest),
        ("doctor.txt", b"tls: failed\n"),
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip a tar");
    let gz = gz.finish().expect("finish gzip");
    // Mode 0: the upload as sent; mode 1: the tar, gzipped by the target.
    let mut sent = vec![0];
    sent.extend_from_slice(&gz);
    write("bundle_import", "bundle-gz", &sent);
    let mut plain = vec![1];
    plain.extend_from_slice(&tar);
    write("bundle_import", "bundle-tar", &plain);
    let mut no_manifest = vec![1];
    no_manifest.extend_from_slice(&tarball(&[("logs/agent.log", b"line\n")]));
    write("bundle_import", "no-manifest", &no_manifest);
}

fn defs_bundle_seeds() {
    let ts = br#"{"signed":{"_type":"timestamp"},"signatures":[]}"#;
    write(
        "defs_bundle_import",
        "metadata-and-target",
        &tarball(&[
            ("metadata/timestamp.json", ts),
            ("metadata/1.root.json", b"{}"),
            ("targets/00ff.core-1.full.zst", b"payload"),
        ]),
    );
    write(
        "defs_bundle_import",
        "timestamp-only",
        &tarball(&[("metadata/timestamp.json", ts)]),
    );
}

fn api_seeds() {
    let bodies: &[(u8, &str, &str)] = &[
        (
            0,
            "checkin",
            r#"{"agent_version":"0.1.0","facts":{"hostname":"h1","os":"linux","internal_ips":["10.0.0.1"],"uptime_secs":5},"definitions":{"core":"3"},"last_errors":{"checkin":{"code":"TETHER-E2101","message":"refused","at":"2026-01-01T00:00:00Z"}},"proxy":"http://proxy.test:3128","defs":[{"channel":"core","version":3,"sha256":"00"}]}"#,
        ),
        (
            1,
            "enroll",
            r#"{"token":"tok","name":"web-1","agent_version":"0.1.0","facts":{"hostname":"h1","os":"linux","internal_ips":[],"uptime_secs":1}}"#,
        ),
        (
            2,
            "policy",
            r#"{"checkin_interval_secs":60,"jitter_percent":10,"targets":["example.test:443"],"defs":{"channels":["core"],"update_urls":["https://defs.test/"],"interval_secs":3600}}"#,
        ),
        (
            3,
            "token",
            r#"{"kind":"discovery","group":"web","valid_for_secs":3600,"max_uses":5,"require_approval":false,"policy":"default"}"#,
        ),
        (4, "admin-token", r#"{"name":"ci-bot"}"#),
        (
            5,
            "action-result",
            r#"{"ok":true,"message":"done","doctor":{"status":"healthy","root_cause":"","at":"2026-01-01T00:00:00Z"}}"#,
        ),
    ];
    for (selector, name, json) in bodies {
        let mut input = vec![*selector];
        input.extend_from_slice(json.as_bytes());
        write("api_bodies", name, &input);
    }
}

#[test]
#[ignore = "rewrites the checked-in seed corpus"]
fn regenerate_seed_corpus() {
    x509_seeds();
    proxy_seeds();
    proxy_header_seeds();
    delta_seeds();
    bundle_seeds();
    defs_bundle_seeds();
    api_seeds();
    ocsp_seeds();
    csr_seeds();
    deploy_spec_seeds();
}

/// An issuer and OCSP requests for its leaf, made by `openssl ocsp
/// -reqout` (with and without a nonce), plus one naming another issuer.
fn ocsp_seeds() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca_key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Seed Issuing CA");
    let ca = p.self_signed(&ca_key).expect("ca");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["seed.test".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let ca_pem = tmp.path().join("ca.pem");
    let leaf_pem = tmp.path().join("leaf.pem");
    std::fs::write(&ca_pem, ca.pem()).expect("write");
    std::fs::write(&leaf_pem, leaf.pem()).expect("write");
    for (name, extra) in [("nonce", None), ("no-nonce", Some("-no_nonce"))] {
        let out = tmp.path().join(format!("{name}.der"));
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["ocsp", "-issuer"])
            .arg(&ca_pem)
            .arg("-cert")
            .arg(&leaf_pem)
            .arg("-reqout")
            .arg(&out);
        if let Some(flag) = extra {
            cmd.arg(flag);
        }
        assert!(cmd.status().expect("run openssl").success());
        let mut input = Vec::new();
        chunk(&mut input, ca.der());
        chunk(&mut input, &std::fs::read(&out).expect("request"));
        write("ocsp_request", name, &input);
    }
}

/// CSRs as the agent makes them (`tether_deploy::keygen::generate`: P-256,
/// DNS and IP names), in PEM and in DER, and an RSA one by `openssl req`
/// with only a common name, each with the names its task allows.
fn csr_seeds() {
    let names = |allowed: &str, csr: &[u8]| {
        let mut input = Vec::new();
        chunk(&mut input, allowed.as_bytes());
        chunk(&mut input, csr);
        input
    };
    let made = tether_deploy::keygen::generate(&["web.test".to_owned(), "127.0.0.1".to_owned()])
        .expect("a key and CSR");
    let pem_text = made.csr_pem.as_bytes();
    write(
        "csr_check",
        "agent-pem",
        &names("web.test\n127.0.0.1\nother.test", pem_text),
    );
    let der = pem::parse(pem_text).expect("PEM").into_contents();
    write(
        "csr_check",
        "agent-der",
        &names("WEB.test.\n127.0.0.1", &der),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("rsa.csr");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=app.test",
        ])
        .arg("-keyout")
        .arg(tmp.path().join("rsa.key"))
        .arg("-out")
        .arg(&out)
        .status()
        .expect("run openssl");
    assert!(status.success());
    write(
        "csr_check",
        "openssl-rsa-cn",
        &names("app.test", &std::fs::read(&out).expect("the CSR")),
    );
}

/// Deploy specs of every target kind and issuer the parser accepts.
fn deploy_spec_seeds() {
    let specs: &[(&str, &str)] = &[
        (
            "pem",
            r#"{"names":["web.test","127.0.0.1"],"days":30,"target":{"cert":"/etc/t/cert.pem","key":"/etc/t/key.pem","chain":"/etc/t/chain.pem","fullchain":"/etc/t/full.pem","owner":"root","group":"ssl-cert","mode":"0644","key_mode":"0640"},"reload":{"command":["nginx","-s","reload"],"timeout_secs":20},"verify":{"address":"127.0.0.1","port":443,"sni":"web.test","timeout_secs":10}}"#,
        ),
        (
            "pkcs12",
            r#"{"names":["app.test"],"target":{"kind":"pkcs12","path":"/etc/app/keystore.p12","password":"env:APP_STORE_PASS","alias":"app","mode":"0600"},"reload":{"command":["systemctl","restart","app"]}}"#,
        ),
        (
            "java-keystore",
            r#"{"names":["*.app.test"],"target":{"kind":"java_keystore","path":"/etc/app/ks.p12","password":"file:/etc/app/pass","store_type":"PKCS12"},"reload":{"command":["true"]},"verify":{"address":"::1","port":8443}}"#,
        ),
        (
            "acme-webroot",
            r#"{"names":["web.test"],"target":{"cert":"/etc/t/cert.pem","key":"/etc/t/key.pem"},"reload":{"command":["nginx","-s","reload"]},"verify":{"address":"127.0.0.1","port":443},"issuer":"acme:pebble","challenge":{"webroot":"/var/www/html"}}"#,
        ),
        (
            "acme-listener",
            r#"{"names":["web.test"],"target":{"kind":"pem","cert":"/etc/t/cert.pem","key":"/etc/t/key.pem"},"reload":{"command":["true"]},"verify":{"address":"127.0.0.1","port":443},"issuer":"acme:le-prod","challenge":{"listener":80}}"#,
        ),
    ];
    for (name, json) in specs {
        write("deploy_spec", name, json.as_bytes());
    }
}
