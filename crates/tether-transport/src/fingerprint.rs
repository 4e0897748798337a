//! Certificate fingerprints: `sha256:<hex>` over the DER bytes.

use crate::error::TransportError;

/// The fingerprint of a DER certificate, as `sha256:<lowercase hex>`: the
/// one function lives in `tether-x509`, beside the certificate facts that
/// report it.
pub use tether_x509::{fingerprint, sha256};

/// Parses `sha256:HEX` (case-insensitive; colons and spaces between hex pairs
/// allowed, as printed by `openssl x509 -fingerprint`). The `sha256:` prefix
/// is required so a fingerprint of another algorithm is never misread.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], TransportError> {
    let bad = |detail: String| TransportError::Config {
        detail: format!("invalid CA fingerprint {s:?}: {detail}"),
    };
    let trimmed = s.trim();
    let Some((algo, hex_part)) = trimmed.split_once(':') else {
        return Err(bad("expected \"sha256:<64 hex digits>\"".to_owned()));
    };
    if !algo.eq_ignore_ascii_case("sha256") {
        return Err(bad(format!(
            "algorithm {algo:?} is not supported, expected sha256"
        )));
    }
    let digits: String = hex_part
        .chars()
        .filter(|c| *c != ':' && *c != ' ')
        .collect();
    if digits.len() != 64 {
        return Err(bad(format!(
            "found {} hex digits, expected 64",
            digits.len()
        )));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(digits.to_ascii_lowercase(), &mut out)
        .map_err(|e| bad(format!("not hexadecimal: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_lowercase_sha256_hex() {
        // sha256("abc") is a published test vector.
        assert_eq!(
            fingerprint(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parse_round_trips_and_accepts_common_spellings() {
        let printed = fingerprint(b"abc");
        let raw = sha256(b"abc");
        assert_eq!(parse_fingerprint(&printed).ok(), Some(raw));
        assert_eq!(parse_fingerprint(&printed.to_uppercase()).ok(), Some(raw));
        let colons: Vec<String> = raw.iter().map(|b| format!("{b:02X}")).collect();
        let openssl_style = format!("SHA256:{}", colons.join(":"));
        assert_eq!(parse_fingerprint(&openssl_style).ok(), Some(raw));
        assert_eq!(parse_fingerprint(&format!("  {printed}\n")).ok(), Some(raw));
    }

    #[test]
    fn parse_rejects_wrong_shapes_with_config_errors() {
        let hex64 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        for input in [
            hex64.to_owned(),
            format!("sha1:{hex64}"),
            format!("sha256:{}", &hex64[..62]),
            format!("sha256:{hex64}00"),
            format!("sha256:{}zz", &hex64[..62]),
            String::new(),
            "sha256:".to_owned(),
        ] {
            let err = parse_fingerprint(&input).expect_err(&input);
            assert_eq!(err.code(), tether_wire::ErrorCode::ConfigInvalid, "{input}");
        }
    }

    #[test]
    fn hostile_fingerprints_never_panic() {
        for input in crate::hostile::inputs(2000, 120) {
            let _ = parse_fingerprint(&String::from_utf8_lossy(&input));
        }
    }
}
