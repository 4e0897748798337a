//! PKCS#12 bytes for a keystore target (a `.p12` file, or a Java keystore
//! of type PKCS12), and the leaf certificate an existing one holds.
//!
//! Written with PBES2 (AES-256-CBC, PBKDF2-HMAC-SHA256) for the key and
//! the certificates, and an HMAC-SHA256 MAC: what OpenSSL 3 writes by
//! default, and what `keytool` (Java 11.0.12 and later) reads.

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKeyChain,
};

use crate::spec::Secret;
use crate::transaction::Material;

/// PBKDF2 and MAC iterations; OpenSSL 3's and Java's default.
const ITERATIONS: u64 = 10_000;

/// The keystore holding the key and the chain (leaf first) under `alias`.
pub fn build(m: &Material, alias: &str, password: &Secret) -> Result<Vec<u8>, String> {
    let key = pem::parse(&m.key_pem)
        .map_err(|_| "the key is not PEM".to_owned())?
        .into_contents();
    let mut chain = Vec::new();
    for p in pem::parse_many(&m.cert_pem)
        .and_then(|mut v| {
            v.extend(pem::parse_many(&m.chain_pem)?);
            Ok(v)
        })
        .map_err(|e| format!("the certificates are not PEM: {e}"))?
    {
        chain.push(
            Certificate::from_der(p.contents())
                .map_err(|e| format!("a certificate cannot be read: {e}"))?,
        );
    }
    let Some(leaf) = chain.first() else {
        return Err("no certificate".to_owned());
    };
    // The local key id ties the key bag to the leaf's bag; the leaf's
    // SHA-256 is unique and stable.
    let key_id = tether_x509::sha256(leaf.as_der());
    let mut store = KeyStore::new();
    store.add_entry(
        alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(key, key_id, chain)),
    );
    store
        .writer(password.expose())
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(ITERATIONS)
        .mac_algorithm(MacAlgorithm::HmacSha256)
        .mac_iterations(ITERATIONS)
        .write()
        .map_err(|e| format!("cannot write the keystore: {e}"))
}

/// The fingerprint of the leaf of the keystore's key entry, if it holds
/// one. An error: the password does not open it, or it is not PKCS#12.
pub fn leaf_fingerprint(bytes: &[u8], password: &Secret) -> Result<Option<String>, String> {
    let store = KeyStore::from_pkcs12(bytes, password.expose())
        .map_err(|e| format!("cannot open it as PKCS#12 with this password: {e}"))?;
    Ok(store
        .private_key_chain()
        .and_then(|(_, c)| c.chain().first())
        .map(|c| tether_x509::fingerprint(c.as_der())))
}
