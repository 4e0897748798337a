//! Sealing private keys at rest.
//!
//! A sealed file is `TPKISEAL1` (9 bytes), a 12-byte random nonce, then the
//! ChaCha20-Poly1305 ciphertext and tag of the key's PKCS#8 PEM. The
//! associated data names what the file holds (`intermediate`, `root`), so a
//! sealed root cannot be swapped in for the intermediate.
//!
//! The key-encryption key (KEK) is 32 random bytes, read from the
//! `TETHER_CA_KEY` environment variable (base64) or from a 0600 file. It is
//! never stored in the database, so a copy of the database (a backup, a
//! replica) holds no usable CA key, and never in the CA's directory, so a
//! copy of that directory holds none either.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const MAGIC: &[u8] = b"TPKISEAL1";
const NONCE_LEN: usize = 12;

/// The environment variable that may hold the KEK (base64 of 32 bytes).
pub const KEK_ENV: &str = "TETHER_CA_KEY";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error("the CA key (KEK) is not base64 of 32 bytes: {0}")]
    BadKek(String),
    #[error("cannot read the CA key file {path}: {error}")]
    KekFile { path: String, error: std::io::Error },
    #[error("the sealed key is not in the sealed format")]
    Format,
    #[error(
        "the sealed key does not open with this CA key (wrong TETHER_CA_KEY or key file, or the file was altered)"
    )]
    Open,
    #[error("the system random generator failed")]
    Random,
}

/// The key-encryption key. Its bytes never leave this type except sealed
/// into a 0600 file by [`Kek::generate_file`].
pub struct Kek([u8; 32]);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

impl Kek {
    /// Reads a base64 KEK (the form of `TETHER_CA_KEY` and of the key file).
    pub fn from_base64(text: &str) -> Result<Kek, SealError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| SealError::BadKek(e.to_string()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| SealError::BadKek(format!("{} bytes", b.len())))?;
        Ok(Kek(key))
    }

    /// `TETHER_CA_KEY` when set, else the file.
    pub fn load(env: Option<&str>, file: &Path) -> Result<Kek, SealError> {
        if let Some(text) = env {
            return Kek::from_base64(text);
        }
        let text = std::fs::read_to_string(file).map_err(|error| SealError::KekFile {
            path: file.display().to_string(),
            error,
        })?;
        Kek::from_base64(&text)
    }

    /// A new random KEK, written 0600 to `file` (durably).
    pub fn generate_file(file: &Path) -> Result<Kek, SealError> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| SealError::Random)?;
        tether_fs::write_atomic(file, STANDARD.encode(key).as_bytes(), tether_fs::PRIVATE)
            .map_err(|e| SealError::KekFile {
                path: file.display().to_string(),
                error: e.source,
            })?;
        Ok(Kek(key))
    }

    fn aead(&self) -> LessSafeKey {
        // A 32-byte key is what ChaCha20-Poly1305 takes: this cannot fail.
        LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &self.0)
                .unwrap_or_else(|_| unreachable!("a 32-byte key is a valid ChaCha20-Poly1305 key")),
        )
    }

    /// Seals `plain` for the purpose `what`.
    pub fn seal(&self, what: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut buf = plain.to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(what)),
                &mut buf,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + buf.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens what [`Kek::seal`] sealed for the same purpose.
    pub fn open(&self, what: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let rest = sealed.strip_prefix(MAGIC).ok_or(SealError::Format)?;
        if rest.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(SealError::Format);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Format)?;
        let mut buf = body.to_vec();
        let plain = self
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(what)),
                &mut buf,
            )
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

fn aad(what: &str) -> Vec<u8> {
    format!("tether-pki sealed key v1: {what}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> Kek {
        Kek([byte; 32])
    }

    #[test]
    fn seals_and_opens_for_the_same_purpose_only() {
        let k = kek(7);
        let sealed = k.seal("intermediate", b"secret key").expect("seal");
        assert!(!sealed.windows(10).any(|w| w == b"secret key"));
        assert_eq!(
            k.open("intermediate", &sealed).expect("open"),
            b"secret key"
        );
        assert!(matches!(k.open("root", &sealed), Err(SealError::Open)));
        assert!(matches!(
            kek(8).open("intermediate", &sealed),
            Err(SealError::Open)
        ));
    }

    #[test]
    fn altered_or_short_files_are_refused() {
        let k = kek(1);
        let mut sealed = k.seal("intermediate", b"abc").expect("seal");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(
            k.open("intermediate", &sealed),
            Err(SealError::Open)
        ));
        assert!(matches!(
            k.open("intermediate", b"TPKISEAL1abc"),
            Err(SealError::Format)
        ));
        assert!(matches!(
            k.open("intermediate", b"nope"),
            Err(SealError::Format)
        ));
    }

    #[test]
    fn kek_text_must_be_32_bytes_of_base64() {
        assert!(Kek::from_base64(&STANDARD.encode([0u8; 32])).is_ok());
        assert!(matches!(
            Kek::from_base64("AAAA"),
            Err(SealError::BadKek(_))
        ));
        assert!(matches!(
            Kek::from_base64("not base64!"),
            Err(SealError::BadKek(_))
        ));
    }
}
