//! ACME Renewal Information (RFC 9773) and the renewal window.
//!
//! [`renewal_window`] is the one answer to "when should this certificate
//! be renewed": the CA's suggested window when it offers ARI, else the
//! renewal policy's (2/3 of the lifetime, or N days before expiry). It is
//! pure, so the renewal scheduler calls it with what it stored and tests
//! give it any time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

/// A certificate's ARI identifier (RFC 9773 §4.1): the base64url (no
/// padding) of its Authority Key Identifier's `keyIdentifier` and of its
/// DER serial number (sign byte included), joined by a dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertId {
    pub aki: String,
    pub serial: String,
}

impl CertId {
    /// From the raw bytes: the AKI's key identifier and the serial
    /// number's DER content octets.
    pub fn from_parts(key_identifier: &[u8], serial_der: &[u8]) -> CertId {
        CertId {
            aki: URL_SAFE_NO_PAD.encode(key_identifier),
            serial: URL_SAFE_NO_PAD.encode(serial_der),
        }
    }
}

impl std::fmt::Display for CertId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.aki, self.serial)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AriError {
    #[error("the certificate is not DER X.509")]
    NotACertificate,
    #[error("the certificate has no Authority Key Identifier with a key identifier")]
    NoAuthorityKeyId,
    #[error("the renewal information is not RFC 9773 JSON: {0}")]
    Malformed(String),
    #[error("the suggested window ends ({end}) before it starts ({start})")]
    EmptyWindow {
        start: OffsetDateTime,
        end: OffsetDateTime,
    },
}

/// The ARI identifier of a DER certificate.
pub fn cert_id(der: &[u8]) -> Result<CertId, AriError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| AriError::NotACertificate)?;
    let key_id = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .ok_or(AriError::NoAuthorityKeyId)?;
    Ok(CertId::from_parts(
        &key_id,
        cert.tbs_certificate.raw_serial(),
    ))
}

/// A DER certificate's validity (`notBefore`, `notAfter`), the inputs of
/// [`renewal_window`] for a certificate in hand.
pub fn validity(der: &[u8]) -> Result<(OffsetDateTime, OffsetDateTime), AriError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| AriError::NotACertificate)?;
    let v = cert.validity();
    Ok((v.not_before.to_datetime(), v.not_after.to_datetime()))
}

/// A time window: renew at a moment inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
}

impl Window {
    /// The moment to renew at for a uniform `sample` in [0, 1) (RFC 9773
    /// §4.2: a random time in the window spreads the CA's load), never
    /// before `now`: a window already past means renew now.
    pub fn pick(&self, sample: f64, now: OffsetDateTime) -> OffsetDateTime {
        let span = self.end - self.start;
        let at = self.start + span * sample.clamp(0.0, 1.0);
        at.max(now)
    }
}

/// What a CA suggested (RFC 9773 §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalInfo {
    #[serde(rename = "suggestedWindow")]
    pub window: Window,
    #[serde(
        rename = "explanationURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub explanation_url: Option<String>,
}

impl RenewalInfo {
    /// Reads a `renewalInfo` response body. A window whose end is before
    /// its start is refused (§4.2: the client treats it as invalid).
    pub fn parse(body: &[u8]) -> Result<RenewalInfo, AriError> {
        let info: RenewalInfo =
            serde_json::from_slice(body).map_err(|e| AriError::Malformed(e.to_string()))?;
        if info.window.end < info.window.start {
            return Err(AriError::EmptyWindow {
                start: info.window.start,
                end: info.window.end,
            });
        }
        Ok(info)
    }
}

/// When to renew without the CA's advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RenewalPolicy {
    /// From this fraction of the lifetime on (2/3 by default).
    FractionOfLifetime { numerator: u32, denominator: u32 },
    /// From this many days before expiry on.
    DaysBeforeExpiry { days: u32 },
}

impl Default for RenewalPolicy {
    fn default() -> RenewalPolicy {
        RenewalPolicy::FractionOfLifetime {
            numerator: 2,
            denominator: 3,
        }
    }
}

/// Where a window came from, for "why renew now" in history and CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum WindowSource {
    /// The CA's suggestion (RFC 9773), with its explanation if any.
    Ari { explanation_url: Option<String> },
    /// The renewal policy; the CA offers no ARI, or gave none.
    Policy { policy: RenewalPolicy },
}

/// A renewal window and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalWindow {
    pub window: Window,
    #[serde(flatten)]
    pub source: WindowSource,
}

/// The renewal window of a certificate valid from `not_before` to
/// `not_after`: the CA's ARI window when given, else the policy's.
///
/// The policy's window starts at its point (2/3 of the lifetime, or N
/// days before expiry, never before `not_before`) and ends halfway from
/// there to expiry, so a renewal picked anywhere in it leaves half the
/// remaining time to retry.
pub fn renewal_window(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    ari: Option<&RenewalInfo>,
    policy: RenewalPolicy,
) -> RenewalWindow {
    if let Some(info) = ari {
        return RenewalWindow {
            window: info.window,
            source: WindowSource::Ari {
                explanation_url: info.explanation_url.clone(),
            },
        };
    }
    let lifetime = (not_after - not_before).max(Duration::ZERO);
    let start = match policy {
        RenewalPolicy::FractionOfLifetime {
            numerator,
            denominator,
        } => {
            let fraction = if denominator == 0 {
                0.0
            } else {
                (f64::from(numerator) / f64::from(denominator)).clamp(0.0, 1.0)
            };
            not_before + lifetime * fraction
        }
        RenewalPolicy::DaysBeforeExpiry { days } => {
            (not_after - Duration::days(i64::from(days))).max(not_before)
        }
    };
    let start = start.min(not_after);
    RenewalWindow {
        window: Window {
            start,
            end: start + (not_after - start) / 2,
        },
        source: WindowSource::Policy { policy },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_cert_id_of_rfc_9773_section_4_1() {
        // RFC 9773 §4.1: AKI keyid 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4
        // and serial 0x87654321, whose DER encoding has a leading zero
        // byte because its top bit is set.
        let aki = [
            0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0,
            0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4,
        ];
        let serial = [0x00, 0x87, 0x65, 0x43, 0x21];
        assert_eq!(
            CertId::from_parts(&aki, &serial).to_string(),
            "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
        );
    }

    #[test]
    fn the_cert_id_of_a_real_certificate_uses_its_aki_and_der_serial() {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_identifier_method =
            rcgen::KeyIdMethod::PreSpecified(vec![0x69, 0x88, 0x5B, 0x6B]);
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let mut leaf = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).expect("leaf");
        leaf.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x87, 0x65, 0x43, 0x21]));
        leaf.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = leaf.signed_by(&key, &ca, &ca_key).expect("signed");
        let id = cert_id(cert.der()).expect("id");
        assert_eq!(id.aki, "aYhbaw");
        // rcgen writes the serial as a positive DER INTEGER: 00 87 65 43 21.
        assert_eq!(id.serial, "AIdlQyE");
        assert_eq!(cert_id(b"junk"), Err(AriError::NotACertificate));
    }

    #[test]
    fn the_renewal_info_of_rfc_9773_section_4_2() {
        let body = br#"{
          "suggestedWindow": {
            "start": "2025-01-02T04:00:00Z",
            "end": "2025-01-03T04:00:00Z"
          },
          "explanationURL": "https://acme.example.com/docs/ari"
        }"#;
        let info = RenewalInfo::parse(body).expect("parse");
        assert_eq!(info.window.start, datetime!(2025-01-02 04:00 UTC));
        assert_eq!(info.window.end, datetime!(2025-01-03 04:00 UTC));
        assert_eq!(
            info.explanation_url.as_deref(),
            Some("https://acme.example.com/docs/ari")
        );
        // Without the optional explanation.
        let bare = RenewalInfo::parse(
            br#"{"suggestedWindow":{"start":"2025-01-02T04:00:00Z","end":"2025-01-03T04:00:00Z"}}"#,
        )
        .expect("bare");
        assert_eq!(bare.explanation_url, None);
    }

    #[test]
    fn malformed_or_inverted_windows_are_refused() {
        assert!(matches!(
            RenewalInfo::parse(b"{}"),
            Err(AriError::Malformed(_))
        ));
        assert!(matches!(
            RenewalInfo::parse(
                br#"{"suggestedWindow":{"start":"yesterday","end":"2025-01-03T04:00:00Z"}}"#
            ),
            Err(AriError::Malformed(_))
        ));
        assert!(matches!(
            RenewalInfo::parse(
                br#"{"suggestedWindow":{"start":"2025-01-03T04:00:00Z","end":"2025-01-02T04:00:00Z"}}"#
            ),
            Err(AriError::EmptyWindow { .. })
        ));
    }

    #[test]
    fn ari_wins_over_the_policy() {
        let info = RenewalInfo {
            window: Window {
                start: datetime!(2025-01-02 04:00 UTC),
                end: datetime!(2025-01-03 04:00 UTC),
            },
            explanation_url: None,
        };
        let w = renewal_window(
            datetime!(2024-12-01 00:00 UTC),
            datetime!(2025-03-01 00:00 UTC),
            Some(&info),
            RenewalPolicy::default(),
        );
        assert_eq!(w.window, info.window);
        assert!(matches!(w.source, WindowSource::Ari { .. }));
    }

    #[test]
    fn the_policy_window_at_two_thirds_of_a_90_day_lifetime() {
        let nb = datetime!(2025-01-01 00:00 UTC);
        let w = renewal_window(nb, nb + Duration::days(90), None, RenewalPolicy::default());
        assert_eq!(w.window.start, nb + Duration::days(60));
        assert_eq!(w.window.end, nb + Duration::days(75));
        assert!(matches!(w.source, WindowSource::Policy { .. }));
    }

    #[test]
    fn the_policy_window_n_days_before_expiry_never_starts_before_issuance() {
        let nb = datetime!(2025-01-01 00:00 UTC);
        let w = renewal_window(
            nb,
            nb + Duration::days(90),
            None,
            RenewalPolicy::DaysBeforeExpiry { days: 30 },
        );
        assert_eq!(w.window.start, nb + Duration::days(60));
        assert_eq!(w.window.end, nb + Duration::days(75));
        let short = renewal_window(
            nb,
            nb + Duration::days(7),
            None,
            RenewalPolicy::DaysBeforeExpiry { days: 30 },
        );
        assert_eq!(short.window.start, nb);
        // A zero denominator or an inverted validity never panics.
        let odd = renewal_window(
            nb,
            nb - Duration::days(1),
            None,
            RenewalPolicy::FractionOfLifetime {
                numerator: 5,
                denominator: 0,
            },
        );
        assert!(odd.window.start <= odd.window.end || odd.window.start == nb);
    }

    #[test]
    fn a_pick_is_inside_the_window_and_never_in_the_past() {
        let w = Window {
            start: datetime!(2025-01-02 00:00 UTC),
            end: datetime!(2025-01-04 00:00 UTC),
        };
        let before = datetime!(2025-01-01 00:00 UTC);
        assert_eq!(w.pick(0.0, before), w.start);
        assert_eq!(w.pick(0.5, before), datetime!(2025-01-03 00:00 UTC));
        assert_eq!(w.pick(7.0, before), w.end);
        let after = datetime!(2025-02-01 00:00 UTC);
        assert_eq!(w.pick(0.5, after), after);
    }
}
