//! The server's TLS identity: either an operator-provided chain and key, or
//! a local CA ("Tether Local CA", ECDSA P-256, 10 years) and a server
//! certificate it signs (about 1 year), generated on first start under
//! `data_dir/pki` and reused afterwards. Agents pin the CA by its SHA-256
//! fingerprint, so the chain served is `[leaf, CA]`.
//!
//! Certificate validity is judged by clients against their own wall clocks,
//! so callers pass the real time here, not a test clock.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};
use tracing::{info, warn};

// The one CA fingerprint function, the one the agent pins against.
use tether_transport::fingerprint;

pub const CA_COMMON_NAME: &str = "Tether Local CA";
const CA_VALIDITY: Duration = Duration::days(3650);
const LEAF_VALIDITY: Duration = Duration::days(365);
/// A leaf closer than this to its end is reissued at start.
const LEAF_RENEW_BEFORE: Duration = Duration::days(30);
/// Backdating absorbs small clock differences between server and agents.
const BACKDATE: Duration = Duration::hours(1);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("cannot access {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} does not hold {expected}")]
    Parse {
        path: PathBuf,
        expected: &'static str,
    },
    #[error(
        "{present} exists but {missing} is missing; restore it, or move {dir} aside to generate a new CA (agents pinned to the old CA must then be re-pinned)"
    )]
    Incomplete {
        present: PathBuf,
        missing: PathBuf,
        dir: PathBuf,
    },
    #[error("the private key {key} does not match the certificate {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration refused the identity: {0}")]
    Tls(#[from] rustls::Error),
}

/// What the HTTPS listener serves and what agents pin.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first, then any intermediates and the CA.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// `sha256:<hex>` of the CA certificate's DER (the last of the chain).
    pub ca_fingerprint: String,
    /// A PEM file holding just the CA certificate.
    pub ca_pem_path: PathBuf,
    /// Where the chain and key came from (for logs and reports).
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// The file names under `data_dir/pki`.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl PkiPaths {
    pub fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join("pki");
        PkiPaths {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            dir,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |error| PkiError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Writes a file readable by its owner only (0600), replacing it atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    tether_fs::write_atomic(path, contents, tether_fs::PRIVATE).map_err(fs_error)
}

/// Certificates: readable by all, replaced as durably as the keys.
fn write_public(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    tether_fs::write_atomic(path, contents, tether_fs::PUBLIC).map_err(fs_error)
}

fn fs_error(e: tether_fs::WriteError) -> PkiError {
    PkiError::Io {
        path: e.path,
        error: e.source,
    }
}

/// This machine's host name, if it can be read and is a usable DNS name.
pub fn hostname() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let name = raw.trim().to_owned();
    let usable = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    usable.then_some(name)
}

/// The names the generated server certificate covers.
pub fn wanted_sans(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(hostname());
    names.extend(
        extra
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
    );
    let mut seen = BTreeSet::new();
    names.retain(|n| seen.insert(n.to_ascii_lowercase()));
    names
}

fn san_text(san: &SanType) -> Option<String> {
    match san {
        SanType::DnsName(n) => Some(n.as_str().to_ascii_lowercase()),
        SanType::IpAddress(ip) => Some(ip.to_string()),
        _ => None,
    }
}

fn normalise(name: &str) -> String {
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => name.to_ascii_lowercase(),
    }
}

/// Loads the generated identity, creating what is missing.
pub fn load_or_generate(
    data_dir: &Path,
    extra_sans: &[String],
    now: OffsetDateTime,
) -> Result<Identity, PkiError> {
    let paths = PkiPaths::new(data_dir);
    std::fs::create_dir_all(&paths.dir).map_err(io(&paths.dir))?;
    let (ca_key, ca_params, fresh_ca) = match (paths.ca_cert.exists(), paths.ca_key.exists()) {
        (true, true) => {
            let key_pem = std::fs::read_to_string(&paths.ca_key).map_err(io(&paths.ca_key))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|_| PkiError::Parse {
                path: paths.ca_key.clone(),
                expected: "a PEM private key",
            })?;
            let cert_pem = std::fs::read_to_string(&paths.ca_cert).map_err(io(&paths.ca_cert))?;
            let params =
                CertificateParams::from_ca_cert_pem(&cert_pem).map_err(|_| PkiError::Parse {
                    path: paths.ca_cert.clone(),
                    expected: "a PEM certificate",
                })?;
            (key, params, false)
        }
        (false, false) => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, CA_COMMON_NAME);
            dn.push(DnType::OrganizationName, "Tether");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_before = now - BACKDATE;
            params.not_after = now + CA_VALIDITY;
            let cert = params.self_signed(&key)?;
            write_private(&paths.ca_key, key.serialize_pem().as_bytes())?;
            write_public(&paths.ca_cert, cert.pem().as_bytes())?;
            info!(path = %paths.ca_cert.display(), "generated a local CA");
            // Re-read what was written, so both branches sign with the same
            // parameters (including the subject key identifier on disk).
            let params = CertificateParams::from_ca_cert_pem(&cert.pem())?;
            (key, params, true)
        }
        (true, false) => {
            return Err(PkiError::Incomplete {
                present: paths.ca_cert.clone(),
                missing: paths.ca_key.clone(),
                dir: paths.dir,
            });
        }
        (false, true) => {
            return Err(PkiError::Incomplete {
                present: paths.ca_key.clone(),
                missing: paths.ca_cert.clone(),
                dir: paths.dir,
            });
        }
    };
    let ca_pem = std::fs::read_to_string(&paths.ca_cert).map_err(io(&paths.ca_cert))?;
    let ca_der =
        CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|_| PkiError::Parse {
            path: paths.ca_cert.clone(),
            expected: "a PEM certificate",
        })?;

    let wanted = wanted_sans(extra_sans);
    let reason = if fresh_ca {
        Some("new CA".to_owned())
    } else {
        leaf_needs_renewal(&paths, &wanted, now)
    };
    if let Some(reason) = reason {
        // The issuer certificate is rebuilt from the stored CA's parameters;
        // its name and key identifier are what the leaf refers to.
        let issuer = ca_params.self_signed(&ca_key)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(wanted.clone())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            wanted
                .iter()
                .find(|n| n.parse::<IpAddr>().is_err() && *n != "localhost")
                .map_or("localhost", String::as_str),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        let cert = params.signed_by(&key, &issuer, &ca_key)?;
        write_private(&paths.server_key, key.serialize_pem().as_bytes())?;
        write_public(&paths.server_cert, cert.pem().as_bytes())?;
        info!(reason = %reason, sans = %wanted.join(","), "issued the server certificate");
    }
    let leaf = CertificateDer::from_pem_file(&paths.server_cert).map_err(|_| PkiError::Parse {
        path: paths.server_cert.clone(),
        expected: "a PEM certificate",
    })?;
    let key = PrivateKeyDer::from_pem_file(&paths.server_key).map_err(|_| PkiError::Parse {
        path: paths.server_key.clone(),
        expected: "a PEM private key",
    })?;
    Ok(Identity {
        ca_fingerprint: fingerprint(&ca_der),
        chain: vec![leaf, ca_der],
        key,
        ca_pem_path: paths.ca_cert.clone(),
        cert_path: paths.server_cert,
        key_path: paths.server_key,
    })
}

/// Why the stored leaf must be reissued, or `None` to keep it.
fn leaf_needs_renewal(paths: &PkiPaths, wanted: &[String], now: OffsetDateTime) -> Option<String> {
    if !paths.server_key.exists() {
        return Some("no server key".to_owned());
    }
    let Ok(pem) = std::fs::read_to_string(&paths.server_cert) else {
        return Some("no server certificate".to_owned());
    };
    let Ok(params) = CertificateParams::from_ca_cert_pem(&pem) else {
        warn!(path = %paths.server_cert.display(), "server certificate unreadable; reissuing");
        return Some("unreadable server certificate".to_owned());
    };
    if params.not_after - now < LEAF_RENEW_BEFORE {
        return Some(format!(
            "server certificate ends {}",
            crate::service::rfc(params.not_after)
        ));
    }
    let have: BTreeSet<String> = params
        .subject_alt_names
        .iter()
        .filter_map(san_text)
        .collect();
    let missing: Vec<String> = wanted
        .iter()
        .map(|n| normalise(n))
        .filter(|n| !have.contains(n))
        .collect();
    if !missing.is_empty() {
        return Some(format!("new names {}", missing.join(",")));
    }
    None
}

/// Loads an operator-provided chain (leaf first) and key. The last
/// certificate of the chain is taken as the CA agents pin; it is copied to
/// `data_dir/pki/served-ca.pem` so it can be handed to agents.
pub fn load_operator(cert: &Path, key: &Path, data_dir: &Path) -> Result<Identity, PkiError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|_| PkiError::Parse {
            path: cert.to_owned(),
            expected: "a readable PEM certificate chain",
        })?
        .collect::<Result<_, _>>()
        .map_err(|_| PkiError::Parse {
            path: cert.to_owned(),
            expected: "a PEM certificate chain",
        })?;
    let Some(ca) = chain.last().cloned() else {
        return Err(PkiError::Parse {
            path: cert.to_owned(),
            expected: "at least one PEM certificate",
        });
    };
    let private = PrivateKeyDer::from_pem_file(key).map_err(|_| PkiError::Parse {
        path: key.to_owned(),
        expected: "a readable PEM private key",
    })?;
    let identity = Identity {
        ca_fingerprint: fingerprint(&ca),
        chain,
        key: private,
        ca_pem_path: PkiPaths::new(data_dir).dir.join("served-ca.pem"),
        cert_path: cert.to_owned(),
        key_path: key.to_owned(),
    };
    // Fail at start, not at the first handshake, when the pair does not match.
    tls_config(&identity)?;
    let dir = PkiPaths::new(data_dir).dir;
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    write_public(
        &identity.ca_pem_path,
        pem_encode("CERTIFICATE", &ca).as_bytes(),
    )?;
    Ok(identity)
}

/// PEM-encodes one DER object.
fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The rustls server configuration for an identity (HTTP/1.1 only).
pub fn tls_config(identity: &Identity) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(identity.key.clone_key())
        .map_err(|_| PkiError::Parse {
            path: identity.key_path.clone(),
            expected: "a supported private key (ECDSA, RSA or Ed25519)",
        })?;
    let certified = rustls::sign::CertifiedKey::new(identity.chain.clone(), signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        // Keys whose public half cannot be derived cannot be checked here;
        // the handshake will still fail loudly if they do not match.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(PkiError::KeyMismatch {
                cert: identity.cert_path.clone(),
                key: identity.key_path.clone(),
            });
        }
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_is_reused_and_keys_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = OffsetDateTime::now_utc();
        let first =
            load_or_generate(dir.path(), &["tether.example".into()], now).expect("generates");
        assert_eq!(first.chain.len(), 2);
        assert!(
            first.ca_fingerprint.starts_with("sha256:") && first.ca_fingerprint.len() == 7 + 64
        );
        tls_config(&first).expect("usable by rustls");
        let second = load_or_generate(dir.path(), &["tether.example".into()], now).expect("reuses");
        assert_eq!(first.ca_fingerprint, second.ca_fingerprint);
        assert_eq!(
            first.chain[0], second.chain[0],
            "the leaf is reused when nothing changed"
        );
        #[cfg(unix)]
        for key in ["ca.key", "server.key"] {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("pki").join(key))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        // A new name reissues the leaf under the same CA.
        let third = load_or_generate(dir.path(), &["other.example".into()], now).expect("reissues");
        assert_eq!(first.ca_fingerprint, third.ca_fingerprint);
        assert_ne!(first.chain[0], third.chain[0]);
        // Near its end the leaf is reissued too.
        let later = load_or_generate(
            dir.path(),
            &["other.example".into()],
            now + Duration::days(340),
        )
        .expect("renews");
        assert_ne!(third.chain[0], later.chain[0]);
    }

    #[test]
    fn a_missing_ca_key_is_an_error_not_a_silent_new_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        load_or_generate(dir.path(), &[], OffsetDateTime::now_utc()).expect("generates");
        std::fs::remove_file(dir.path().join("pki/ca.key")).expect("removes");
        let e =
            load_or_generate(dir.path(), &[], OffsetDateTime::now_utc()).expect_err("incomplete");
        assert!(matches!(e, PkiError::Incomplete { .. }), "{e}");
    }

    #[test]
    fn operator_pairs_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let now = OffsetDateTime::now_utc();
        load_or_generate(a.path(), &[], now).expect("generates a");
        load_or_generate(b.path(), &[], now).expect("generates b");
        let chain = dir.path().join("chain.pem");
        let leaf = std::fs::read_to_string(a.path().join("pki/server.pem")).expect("leaf");
        let ca = std::fs::read_to_string(a.path().join("pki/ca.pem")).expect("ca");
        std::fs::write(&chain, format!("{leaf}{ca}")).expect("writes");
        let ok = load_operator(&chain, &a.path().join("pki/server.key"), dir.path())
            .expect("matching pair");
        assert_eq!(ok.chain.len(), 2);
        let expected = load_or_generate(a.path(), &[], now)
            .expect("reuses")
            .ca_fingerprint;
        assert_eq!(ok.ca_fingerprint, expected);
        assert!(ok.ca_pem_path.exists());
        let e = load_operator(&chain, &b.path().join("pki/server.key"), dir.path())
            .expect_err("mismatch");
        assert!(matches!(e, PkiError::KeyMismatch { .. }), "{e}");
        let e = load_operator(
            &dir.path().join("absent.pem"),
            &a.path().join("pki/server.key"),
            dir.path(),
        )
        .expect_err("unreadable");
        assert!(e.to_string().contains("absent.pem"), "{e}");
    }
}
