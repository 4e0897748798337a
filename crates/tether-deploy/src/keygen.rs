//! The key and its CSR, made on the host that will use them: the private
//! key stays in this process (and then in the target's key file), and only
//! the CSR travels to the control plane.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

/// A new key and its CSR. `Debug` never shows the key.
pub struct KeyAndCsr {
    key_pem: String,
    pub csr_pem: String,
    /// The public key (SubjectPublicKeyInfo, DER), to check the certificate
    /// the CA returns is for this key.
    pub spki_der: Vec<u8>,
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCsr")
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

impl KeyAndCsr {
    /// The private key, PKCS#8 PEM, for the target's key file only.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

/// An ECDSA P-256 key and a CSR asking for `names` (DNS names or IP
/// addresses), signed with it.
pub fn generate(names: &[String]) -> Result<KeyAndCsr, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(first) = names.first() {
        dn.push(DnType::CommonName, first.as_str());
    }
    params.distinguished_name = dn;
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()?;
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem()?,
        spki_der: key.public_key_der(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_carries_the_names_and_debug_hides_the_key() {
        let k = generate(&["a.test".to_owned(), "127.0.0.1".to_owned()]).expect("gen");
        assert!(k.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(k.key_pem().contains("PRIVATE KEY"));
        assert!(!format!("{k:?}").contains("PRIVATE KEY"));
    }
}
