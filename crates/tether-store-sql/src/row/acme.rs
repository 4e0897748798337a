//! Decoding the ACME issuers' rows.

use tether_store::{AcmeIssuer, StoreError};

use super::{Fields, RawRow};

/// The sealed account's stored form: lower-case hex.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `None` when `text` is not an even-length run of hex digits.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(crate) fn acme_issuer(row: &dyn RawRow) -> Result<AcmeIssuer, StoreError> {
    let f = Fields::new(row, "acme_issuers", "name")?;
    let name = f.text("name")?;
    let sealed = f.text("sealed_account")?;
    let sealed_account = from_hex(&sealed).ok_or_else(|| f.corrupt("sealed_account", "not hex"))?;
    Ok(AcmeIssuer {
        directory: f.text("directory")?,
        ca_pem: f.opt_text("ca_pem")?,
        contact: f.opt_text("contact")?,
        sealed_account,
        created_at: f.time("created_at")?,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        let bytes = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&bytes), "0001abff");
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é0"), None);
        assert_eq!(from_hex(""), Some(vec![]));
    }
}
