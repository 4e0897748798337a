//! PKCS#12 bytes for a keystore target (a `.p12` file, or a Java keystore
//! of type PKCS12), and the leaf certificate an existing one holds; a Java
//! keystore of type JKS is that PKCS#12 converted by the host's own
//! `keytool` (see [`to_jks`]).
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

/// How long one `keytool` run may take (a JVM start is about a second).
const KEYTOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The environment variable the store password reaches `keytool` through
/// (`-storepass:env`), so it is never on a command line.
const PASS_ENV: &str = "TETHER_KEYSTORE_PASS";

/// `keytool`: `$JAVA_HOME/bin/keytool` when set, else from the PATH.
pub fn default_keytool() -> std::path::PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|h| std::path::PathBuf::from(h).join("bin/keytool"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "keytool".into())
}

/// Runs `keytool` with `args` and the password in its environment, bounded
/// by [`KEYTOOL_TIMEOUT`]; its output on success, else why.
async fn run_keytool(
    program: &std::path::Path,
    args: &[&std::ffi::OsStr],
    password: &Secret,
) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env(PASS_ENV, password.expose())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(KEYTOOL_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{} is not installed on this host",
                program.display()
            ));
        }
        Ok(Err(e)) => return Err(format!("{} cannot run: {e}", program.display())),
        Err(_) => {
            return Err(format!(
                "{} did not finish within {}s",
                program.display(),
                KEYTOOL_TIMEOUT.as_secs()
            ));
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text.trim().chars().take(500).collect())
    }
}

/// Why a JKS step failed: `keytool` is missing or failed (the message
/// says which), or the existing store does not open.
#[derive(Debug)]
pub enum JksError {
    Keytool(String),
    Unreadable(String),
}

/// The PKCS#12 keystore `p12` as a JKS keystore (magic `FEEDFEED`), made
/// by the host's `keytool -importkeystore`: JKS's key protection is a
/// proprietary SHA-1 scheme no maintained Rust crate writes, and every
/// host whose application wants JKS has a JRE with `keytool`. The key
/// password is the store password, as Java's JKS users expect. The files
/// live in a private temporary directory, removed on return.
pub async fn to_jks(
    keytool: &std::path::Path,
    p12: &[u8],
    alias: &str,
    password: &Secret,
) -> Result<Vec<u8>, JksError> {
    let (dir, src) = staged("in.p12", p12)?;
    let dst = dir.path().join("out.jks");
    let args: Vec<&std::ffi::OsStr> = vec![
        "-importkeystore".as_ref(),
        "-noprompt".as_ref(),
        "-srckeystore".as_ref(),
        src.as_os_str(),
        "-srcstoretype".as_ref(),
        "PKCS12".as_ref(),
        "-srcstorepass:env".as_ref(),
        PASS_ENV.as_ref(),
        "-srcalias".as_ref(),
        alias.as_ref(),
        "-destkeystore".as_ref(),
        dst.as_os_str(),
        "-deststoretype".as_ref(),
        "JKS".as_ref(),
        "-deststorepass:env".as_ref(),
        PASS_ENV.as_ref(),
        "-destkeypass:env".as_ref(),
        PASS_ENV.as_ref(),
        "-destalias".as_ref(),
        alias.as_ref(),
    ];
    run_keytool(keytool, &args, password)
        .await
        .map_err(JksError::Keytool)?;
    let bytes = std::fs::read(&dst)
        .map_err(|e| JksError::Keytool(format!("keytool wrote no keystore: {e}")))?;
    if !bytes.starts_with(&[0xfe, 0xed, 0xfe, 0xed]) {
        return Err(JksError::Keytool(
            "keytool's output is not a JKS keystore (no FEEDFEED magic)".to_owned(),
        ));
    }
    Ok(bytes)
}

/// The fingerprint of the certificate under `alias` in an existing JKS
/// keystore, read by `keytool -exportcert`; `None` when it holds no such
/// alias. An error: the password does not open it.
pub async fn jks_leaf_fingerprint(
    keytool: &std::path::Path,
    bytes: &[u8],
    alias: &str,
    password: &Secret,
) -> Result<Option<String>, JksError> {
    let (_dir, path) = staged("old.jks", bytes)?;
    let args: Vec<&std::ffi::OsStr> = vec![
        "-exportcert".as_ref(),
        "-rfc".as_ref(),
        "-alias".as_ref(),
        alias.as_ref(),
        "-keystore".as_ref(),
        path.as_os_str(),
        "-storetype".as_ref(),
        "JKS".as_ref(),
        "-storepass:env".as_ref(),
        PASS_ENV.as_ref(),
    ];
    match run_keytool(keytool, &args, password).await {
        Ok(out) => Ok(pem::parse_many(out.as_bytes())
            .ok()
            .and_then(|v| v.into_iter().find(|p| p.tag() == "CERTIFICATE"))
            .map(|p| tether_x509::fingerprint(p.contents()))),
        Err(e) if e.contains("does not exist") => Ok(None),
        Err(e)
            if e.contains("not installed")
                || e.contains("cannot run")
                || e.contains("did not finish") =>
        {
            Err(JksError::Keytool(e))
        }
        Err(e) => Err(JksError::Unreadable(e)),
    }
}

/// `bytes` as file `name` (0600) in a new private (0700) temporary
/// directory, which is removed when the returned handle drops.
fn staged(name: &str, bytes: &[u8]) -> Result<(tempfile::TempDir, std::path::PathBuf), JksError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = tempfile::Builder::new()
        .prefix("tether-jks-")
        .tempdir()
        .map_err(|e| JksError::Keytool(format!("no private temporary directory: {e}")))?;
    let path = dir.path().join(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| JksError::Keytool(format!("{}: {e}", path.display())))?;
    Ok((dir, path))
}
