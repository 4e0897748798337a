//! Secrets the server hands out: enrollment tokens (`tet_…`), agent
//! credentials (`tac_…`) and the admin token (`tta_…`). Each is 32 bytes from
//! a CSPRNG, base64url-encoded behind a prefix that says what it is. Only the
//! SHA-256 of the whole string is ever stored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use tether_store::SecretHash;

/// The prefix of enrollment tokens.
pub const TOKEN_PREFIX: &str = "tet_";
/// The prefix of agent credentials.
pub const CREDENTIAL_PREFIX: &str = "tac_";
/// The prefix of admin tokens.
pub const ADMIN_PREFIX: &str = "tta_";

/// Random bytes in each secret.
const SECRET_BYTES: usize = 32;
/// The longest secret we bother hashing: anything longer is garbage, and
/// refusing it early keeps hostile input cheap.
pub const MAX_SECRET_LEN: usize = 256;

/// A fresh secret with the given prefix.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    // ThreadRng is a CSPRNG (ChaCha, reseeded from the OS).
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a secret.
pub fn hash(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `secret` has the shape of a secret with `prefix`; a cheap filter
/// applied before any store lookup.
pub fn well_formed(secret: &str, prefix: &str) -> bool {
    secret.len() <= MAX_SECRET_LEN
        && secret.starts_with(prefix)
        && secret.len() > prefix.len()
        && secret[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_well_formed() {
        let a = generate(TOKEN_PREFIX);
        let b = generate(TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("tet_"));
        // 32 bytes in unpadded base64 are 43 characters.
        assert_eq!(a.len(), 4 + 43);
        assert!(well_formed(&a, TOKEN_PREFIX));
        assert!(!well_formed(&a, CREDENTIAL_PREFIX));
        assert!(!well_formed("tet_", TOKEN_PREFIX));
        assert!(!well_formed("tet_a'; DROP TABLE", TOKEN_PREFIX));
        assert!(!well_formed(
            &format!("tet_{}", "a".repeat(300)),
            TOKEN_PREFIX
        ));
    }

    #[test]
    fn hashes_are_sha256_of_the_whole_string() {
        assert_eq!(
            hex::encode(hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // The CA fingerprint the server prints is the agent's pin format.
        assert_eq!(
            tether_transport::fingerprint(b"abc"),
            format!("sha256:{}", hex::encode(hash("abc")))
        );
    }
}
