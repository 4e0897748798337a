//! The CA's files and the signing.
//!
//! `DATA_DIR/ca/` holds `root.crt`, `intermediate.crt` and
//! `intermediate.key.sealed` (the intermediate's key sealed with the KEK,
//! see [`crate::seal`]), and `root.key.sealed` only while the root key is
//! kept online. `tether certs ca init --root-key-out PATH` writes the root
//! key to PATH (removable media) and never into the data dir; the server
//! opens only the intermediate (docs/pki.md is the ceremony).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::csr::CsrRequest;
use crate::revoke::{self, CrlEntry, IssuerHashes, OcspAnswer, OcspQuery, PkiUrls, RevokeError};
use crate::seal::{Kek, SealError};
use tether_wire::ErrorCode;

const ROOT_VALIDITY: Duration = Duration::days(20 * 365);
const INTERMEDIATE_VALIDITY: Duration = Duration::days(5 * 365);
/// The longest leaf the CA signs (the CA/Browser Forum's limit).
pub const MAX_LEAF_DAYS: u32 = 397;
/// Backdating absorbs small clock differences between hosts.
const BACKDATE: Duration = Duration::hours(1);

const SEAL_INTERMEDIATE: &str = "intermediate";
const SEAL_ROOT: &str = "root";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("the built-in CA is not initialized in {0} (run `tether certs ca init`)")]
    NotInitialized(PathBuf),
    #[error("the built-in CA already exists in {0}")]
    AlreadyInitialized(PathBuf),
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
    #[error("the CA's sealed key: {0}")]
    Seal(#[from] SealError),
    #[error("the root key is not online in {0}; pass the offline root key")]
    RootOffline(PathBuf),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

impl CaError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::CaNotInitialized
    }
}

/// Where the CA's files are.
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub dir: PathBuf,
}

impl CaFiles {
    pub fn new(dir: impl Into<PathBuf>) -> CaFiles {
        CaFiles { dir: dir.into() }
    }
    pub fn root_cert(&self) -> PathBuf {
        self.dir.join("root.crt")
    }
    pub fn intermediate_cert(&self) -> PathBuf {
        self.dir.join("intermediate.crt")
    }
    pub fn intermediate_key(&self) -> PathBuf {
        self.dir.join("intermediate.key.sealed")
    }
    pub fn root_key(&self) -> PathBuf {
        self.dir.join("root.key.sealed")
    }
    /// The root key's path when it is still on this disk (the server warns
    /// with TETHER-E8406).
    pub fn root_key_online(&self) -> Option<PathBuf> {
        let p = self.root_key();
        p.exists().then_some(p)
    }
    pub fn is_initialized(&self) -> bool {
        self.intermediate_cert().exists()
    }
}

/// Where `init` puts the root's key.
#[derive(Debug, Clone, Copy)]
pub enum RootKeyPlace<'a> {
    /// Plaintext PKCS#8 PEM (0600) at this path, for offline keeping; never
    /// in the data dir.
    Offline(&'a Path),
    /// Sealed in the data dir (the server warns at every start).
    Online,
}

/// A certificate the CA signed.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// The intermediate (PEM), which servers send after the leaf.
    pub chain_pem: String,
    /// Lower-case hex, as `openssl x509 -serial` shows it.
    pub serial: String,
    /// `sha256:<hex>` (`tether_x509::fingerprint`).
    pub fingerprint: String,
    pub names: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// The online half of the CA: the intermediate and its key.
pub struct IssuingCa {
    intermediate_pem: String,
    root_pem: String,
    issuer: rcgen::Certificate,
    key: KeyPair,
    not_after: OffsetDateTime,
    /// How OCSP requests name this issuer.
    hashes: IssuerHashes,
    /// The revocation pointers issued certificates carry, when the control
    /// plane has a public PKI URL.
    urls: Option<PkiUrls>,
}

impl std::fmt::Debug for IssuingCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuingCa")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |error| CaError::Io {
        path: path.to_owned(),
        error,
    }
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    tether_fs::write_atomic(path, bytes, mode).map_err(|e| CaError::Io {
        path: e.path,
        error: e.source,
    })
}

fn ca_params(
    cn: &str,
    not_before: OffsetDateTime,
    validity: Duration,
    path_len: Option<u8>,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Tether");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = not_before - BACKDATE;
    p.not_after = not_before + validity;
    p.use_authority_key_identifier_extension = true;
    p
}

/// Creates the root and the intermediate. `name` is the CA's display name
/// (e.g. the control plane's host name).
pub fn init(
    files: &CaFiles,
    kek: &Kek,
    name: &str,
    root_key: RootKeyPlace<'_>,
    now: OffsetDateTime,
) -> Result<IssuingCa, CaError> {
    if files.is_initialized() || files.root_cert().exists() {
        return Err(CaError::AlreadyInitialized(files.dir.clone()));
    }
    let root_key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    let root = ca_params(&format!("{name} Root CA"), now, ROOT_VALIDITY, None)
        .self_signed(&root_key_pair)?;
    let int_key = KeyPair::generate()?;
    let int_cert = ca_params(
        &format!("{name} Issuing CA 1"),
        now,
        INTERMEDIATE_VALIDITY,
        Some(0),
    )
    .signed_by(&int_key, &root, &root_key_pair)?;
    std::fs::create_dir_all(&files.dir).map_err(io(&files.dir))?;
    // Keys first, certificates last: `is_initialized` reads the
    // intermediate's certificate, so a crash in between leaves a directory
    // that `init` refuses and an operator can move aside.
    match root_key {
        RootKeyPlace::Offline(path) => write(
            path,
            root_key_pair.serialize_pem().as_bytes(),
            tether_fs::PRIVATE,
        )?,
        RootKeyPlace::Online => write(
            &files.root_key(),
            &kek.seal(SEAL_ROOT, root_key_pair.serialize_pem().as_bytes())?,
            tether_fs::PRIVATE,
        )?,
    }
    write(
        &files.intermediate_key(),
        &kek.seal(SEAL_INTERMEDIATE, int_key.serialize_pem().as_bytes())?,
        tether_fs::PRIVATE,
    )?;
    write(&files.root_cert(), root.pem().as_bytes(), tether_fs::PUBLIC)?;
    write(
        &files.intermediate_cert(),
        int_cert.pem().as_bytes(),
        tether_fs::PUBLIC,
    )?;
    open(files, kek)
}

/// Writes the online root key to `out` (plaintext PEM, 0600) and removes it
/// from the data dir: the root goes offline.
pub fn move_root_offline(files: &CaFiles, kek: &Kek, out: &Path) -> Result<(), CaError> {
    let sealed_path = files.root_key();
    let sealed = std::fs::read(&sealed_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CaError::RootOffline(files.dir.clone())
        } else {
            CaError::Io {
                path: sealed_path.clone(),
                error: e,
            }
        }
    })?;
    let pem = kek.open(SEAL_ROOT, &sealed)?;
    write(out, &pem, tether_fs::PRIVATE)?;
    std::fs::remove_file(&sealed_path).map_err(io(&sealed_path))?;
    Ok(())
}

fn read_text(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(io(path))
}

/// Opens the intermediate (the server's one use of the CA's secrets).
pub fn open(files: &CaFiles, kek: &Kek) -> Result<IssuingCa, CaError> {
    if !files.is_initialized() {
        return Err(CaError::NotInitialized(files.dir.clone()));
    }
    let int_path = files.intermediate_cert();
    let intermediate_pem = read_text(&int_path)?;
    let root_pem = read_text(&files.root_cert())?;
    let key_path = files.intermediate_key();
    let sealed = std::fs::read(&key_path).map_err(io(&key_path))?;
    let key_pem = kek.open(SEAL_INTERMEDIATE, &sealed)?;
    let key_pem = String::from_utf8(key_pem).map_err(|_| CaError::Parse {
        path: key_path.clone(),
        expected: "a PEM private key",
    })?;
    let key = KeyPair::from_pem(&key_pem).map_err(|_| CaError::Parse {
        path: key_path.clone(),
        expected: "a PEM private key",
    })?;
    let bad_cert = || CaError::Parse {
        path: int_path.clone(),
        expected: "the intermediate's PEM certificate",
    };
    let der = pem::parse(&intermediate_pem)
        .map_err(|_| bad_cert())?
        .into_contents();
    let (_, cert) = X509Certificate::from_der(&der).map_err(|_| bad_cert())?;
    let not_after = cert.validity().not_after.to_datetime();
    if cert.public_key().raw != key.public_key_der().as_slice() {
        return Err(CaError::Parse {
            path: key_path,
            expected: "the key of intermediate.crt",
        });
    }
    // rcgen signs with an issuer `Certificate`; rebuilt from the stored one
    // it carries the same name and key identifier, so the leaf's issuer and
    // authority key identifier match the intermediate actually served.
    let params =
        CertificateParams::from_ca_cert_der(&der.clone().into()).map_err(|_| bad_cert())?;
    let issuer = params.self_signed(&key)?;
    let hashes = IssuerHashes::from_cert_der(&der).ok_or_else(bad_cert)?;
    Ok(IssuingCa {
        intermediate_pem,
        root_pem,
        issuer,
        key,
        not_after,
        hashes,
        urls: None,
    })
}

impl IssuingCa {
    /// The intermediate, PEM.
    pub fn chain_pem(&self) -> &str {
        &self.intermediate_pem
    }
    /// The root, PEM (the trust anchor clients install).
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Makes issued certificates carry a CRL Distribution Point and an AIA
    /// OCSP URL (`None`: no pointers, so clients find no revocation
    /// information).
    pub fn set_urls(&mut self, urls: Option<PkiUrls>) {
        self.urls = urls;
    }
    pub fn urls(&self) -> Option<&PkiUrls> {
        self.urls.as_ref()
    }
    /// How OCSP requests name this issuer.
    pub fn issuer_hashes(&self) -> &IssuerHashes {
        &self.hashes
    }

    /// A DER CRL of `entries`, signed by the intermediate, valid from
    /// `this_update` for [`revoke::CRL_VALIDITY`].
    pub fn crl(
        &self,
        number: u64,
        this_update: OffsetDateTime,
        entries: &[CrlEntry],
    ) -> Result<Vec<u8>, RevokeError> {
        revoke::build_crl(&self.issuer, &self.key, number, this_update, entries)
    }

    /// A signed OCSP response (DER) answering `query`, one answer per
    /// asked certificate.
    pub fn ocsp_response(
        &self,
        query: &OcspQuery,
        answers: &[OcspAnswer],
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, RevokeError> {
        revoke::sign_ocsp(&self.key.serialize_der(), &self.hashes, query, answers, now)
    }

    /// Signs a checked CSR for `days` (at most [`MAX_LEAF_DAYS`], and never
    /// past the intermediate). The certificate carries the CSR's checked
    /// names only, for server authentication.
    pub fn sign(
        &self,
        csr: &CsrRequest,
        days: u32,
        now: OffsetDateTime,
    ) -> Result<Issued, CaError> {
        let mut req = rcgen::CertificateSigningRequestParams::from_der(&csr.der.clone().into())?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(first) = csr.names.first() {
            dn.push(DnType::CommonName, first.as_str());
        }
        p.distinguished_name = dn;
        p.subject_alt_names = csr
            .names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        let days = days.clamp(1, MAX_LEAF_DAYS);
        let not_before = now - BACKDATE;
        let not_after = (now + Duration::days(i64::from(days))).min(self.not_after);
        p.not_before = not_before;
        p.not_after = not_after;
        let mut serial = [0u8; 16];
        SystemRandom::new()
            .fill(&mut serial)
            .map_err(|_| CaError::Seal(SealError::Random))?;
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        if let Some(urls) = &self.urls {
            p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![urls.crl.clone()],
            }];
            let aia = urls
                .aia_der()
                .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
            p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
                &PkiUrls::aia_oid(),
                aia,
            )];
        }
        req.params = p;
        let cert = req.signed_by(&self.issuer, &self.key)?;
        let cert_der = cert.der().to_vec();
        Ok(Issued {
            cert_pem: cert.pem(),
            fingerprint: tether_x509::fingerprint(&cert_der),
            cert_der,
            chain_pem: self.intermediate_pem.clone(),
            serial: hex_lower(&serial),
            names: csr.names.clone(),
            not_before,
            not_after,
        })
    }
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The root's CRL, made during the offline ceremony with the root's key
/// (plaintext PEM from the offline media): valid for `days`, listing the
/// intermediate when `revoke_intermediate` names a reason. The control
/// plane never holds the root key, so this runs where the media is mounted
/// (`tether certs ca root-crl`).
pub fn root_crl(
    files: &CaFiles,
    root_key_pem: &str,
    number: u64,
    days: u32,
    revoke_intermediate: Option<tether_wire::RevocationReason>,
    now: OffsetDateTime,
) -> Result<Vec<u8>, CaError> {
    let root_path = files.root_cert();
    let bad = |path: &Path, expected: &'static str| CaError::Parse {
        path: path.to_owned(),
        expected,
    };
    let root_der = pem::parse(read_text(&root_path)?)
        .map_err(|_| bad(&root_path, "the root's PEM certificate"))?
        .into_contents();
    let key = KeyPair::from_pem(root_key_pem)
        .map_err(|_| bad(Path::new("(root key)"), "a PEM private key"))?;
    let (_, root) = X509Certificate::from_der(&root_der)
        .map_err(|_| bad(&root_path, "the root's PEM certificate"))?;
    if root.public_key().raw != key.public_key_der().as_slice() {
        return Err(bad(Path::new("(root key)"), "the key of root.crt"));
    }
    let params = CertificateParams::from_ca_cert_der(&root_der.clone().into())
        .map_err(|_| bad(&root_path, "the root's PEM certificate"))?;
    let issuer = params.self_signed(&key)?;
    let mut entries = Vec::new();
    if let Some(reason) = revoke_intermediate {
        let int_path = files.intermediate_cert();
        let int_der = pem::parse(read_text(&int_path)?)
            .map_err(|_| bad(&int_path, "the intermediate's PEM certificate"))?
            .into_contents();
        let (_, int) = X509Certificate::from_der(&int_der)
            .map_err(|_| bad(&int_path, "the intermediate's PEM certificate"))?;
        entries.push(CrlEntry {
            serial: hex_lower(int.raw_serial()),
            revoked_at: now,
            reason,
        });
    }
    let params = rcgen::CertificateRevocationListParams {
        this_update: now,
        next_update: now + Duration::days(i64::from(days.max(1))),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: entries
            .iter()
            .map(|e| {
                Ok(rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&revoke::serial_bytes(&e.serial)?),
                    revocation_time: e.revoked_at,
                    reason_code: Some(revoke::rcgen_reason(e.reason)),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, RevokeError>>()
            .map_err(|_| bad(&files.intermediate_cert(), "a serial number"))?,
        key_identifier_method: issuer.params().key_identifier_method.clone(),
    };
    Ok(params.signed_by(&issuer, &key)?.der().to_vec())
}
