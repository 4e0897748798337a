//! `tether certs …`: the discovery inventory from the admin CLI. Every text
//! a certificate carries came from a scanned server through an agent, so it
//! is printed through [`crate::display::safe`].

use std::process::ExitCode;

use clap::Subcommand;
use tether_wire::{CertDetail, CertFacts, CertInfo, LocationState};
use time::format_description::well_known::Rfc3339;

use crate::admin::client;
use crate::cli::AdminConn;
use crate::display::{safe, safe_cut};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Every certificate discovery found, deduplicated by fingerprint.
    List {
        #[command(flatten)]
        conn: AdminConn,
        /// Only certificates whose validity ends within this many days
        /// (expired ones included), e.g. 30d.
        #[arg(long)]
        expiring: Option<String>,
        /// Only certificates with this verdict (expired, not_yet_valid,
        /// self_signed, unknown_issuer, incomplete_chain, name_mismatch,
        /// weak_key, weak_signature, unparsable, unverifiable).
        #[arg(long)]
        verdict: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One certificate: its facts, chain and every location it was seen at.
    Show {
        #[command(flatten)]
        conn: AdminConn,
        /// `sha256:<hex>` as `certs list` shows it.
        fingerprint: String,
        #[arg(long)]
        json: bool,
    },
}

fn day(t: time::OffsetDateTime) -> String {
    t.date().to_string()
}

fn when(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| format!("{t:?}"))
}

fn verdicts(v: &[String]) -> String {
    if v.is_empty() {
        "ok".to_owned()
    } else {
        safe(&v.join(","))
    }
}

/// The one-line table of certificates.
pub fn table(certs: &[CertInfo]) -> String {
    let mut out = format!(
        "{:<71}  {:<10}  {:<5}  {:<24}  {}\n",
        "FINGERPRINT", "NOT AFTER", "SEEN", "VERDICTS", "SUBJECT"
    );
    for c in certs {
        out.push_str(&format!(
            "{:<71}  {:<10}  {:<5}  {:<24}  {}\n",
            safe(&c.fingerprint),
            day(c.cert.not_after),
            c.locations,
            verdicts(&c.verdicts),
            safe_cut(&c.cert.subject, 80)
        ));
    }
    out
}

fn facts(out: &mut String, indent: &str, c: &CertFacts) {
    out.push_str(&format!("{indent}subject:    {}\n", safe(&c.subject)));
    out.push_str(&format!("{indent}issuer:     {}\n", safe(&c.issuer)));
    out.push_str(&format!("{indent}serial:     {}\n", safe(&c.serial)));
    out.push_str(&format!(
        "{indent}validity:   {} to {}\n",
        when(c.not_before),
        when(c.not_after)
    ));
    out.push_str(&format!(
        "{indent}key:        {} {} bits, signed {}\n",
        safe(&c.key_type),
        c.key_bits,
        safe(&c.signature_algorithm)
    ));
    out.push_str(&format!("{indent}fingerprint: {}\n", safe(&c.fingerprint)));
}

/// The detail of one certificate.
pub fn detail(d: &CertDetail) -> String {
    let c = &d.info;
    let mut out = String::new();
    facts(&mut out, "", &c.cert);
    let sans: Vec<String> = c.cert.sans.iter().map(|s| safe(s)).collect();
    out.push_str(&format!(
        "names:      {}{}\n",
        sans.join(", "),
        if c.cert.sans_total > c.cert.sans.len() {
            format!(" (and {} more)", c.cert.sans_total - c.cert.sans.len())
        } else {
            String::new()
        }
    ));
    for u in &c.cert.aia_urls {
        out.push_str(&format!("aia:        {}\n", safe(u)));
    }
    for u in &c.cert.cdp_urls {
        out.push_str(&format!("cdp:        {}\n", safe(u)));
    }
    out.push_str(&format!("verdicts:   {}\n", verdicts(&c.verdicts)));
    out.push_str(&format!(
        "seen:       first {}, last {}\n",
        when(c.first_seen),
        when(c.last_seen)
    ));
    if d.chain.len() > 1 {
        out.push_str(&format!("chain ({} certificates):\n", d.chain.len()));
        for (i, cert) in d.chain.iter().enumerate().skip(1) {
            out.push_str(&format!("  [{i}]\n"));
            facts(&mut out, "    ", cert);
        }
    }
    out.push_str(&format!(
        "locations ({}{}):\n",
        c.locations,
        if (d.seen_at.len() as u64) < c.locations {
            format!(", the newest {} shown", d.seen_at.len())
        } else {
            String::new()
        }
    ));
    for l in &d.seen_at {
        let state = match l.state {
            LocationState::Current => "current".to_owned(),
            LocationState::Changed => format!(
                "CHANGED{} to {}",
                l.state_since
                    .map(|t| format!(" at {}", when(t)))
                    .unwrap_or_default(),
                safe(l.replaced_by.as_deref().unwrap_or("?"))
            ),
            LocationState::Gone => format!(
                "GONE (no TLS{})",
                l.state_since
                    .map(|t| format!(" at {}", when(t)))
                    .unwrap_or_default()
            ),
        };
        out.push_str(&format!(
            "  {} sni={} agent={} first {} last {} {}{}\n",
            safe(&l.address),
            safe(l.sni.as_deref().unwrap_or("-")),
            l.agent_id,
            when(l.first_seen),
            when(l.last_seen),
            state,
            l.previous
                .as_deref()
                .map(|p| format!(" (was {})", safe(p)))
                .unwrap_or_default()
        ));
    }
    out
}

/// `a=b` query text, each value percent-encoded.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| {
            v.map(|v| {
                let enc: String = v
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                format!("{k}={enc}")
            })
        })
        .collect::<Vec<_>>()
        .join("&")
}

pub async fn run(cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::List {
            conn,
            expiring,
            verdict,
            json,
        } => {
            let q = query(&[
                ("expiring", expiring.as_deref()),
                ("verdict", verdict.as_deref()),
            ]);
            let certs = client(&conn)?.list_certs(&q).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&certs)?);
            } else {
                print!("{}", table(&certs));
            }
        }
        CertsCommand::Show {
            conn,
            fingerprint,
            json,
        } => {
            let d = client(&conn)?.cert(&fingerprint).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", detail(&d));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_certificate_text_is_escaped() {
        let at = time::macros::datetime!(2026-05-17 19:16:00 UTC);
        let facts = CertFacts {
            subject: "CN=evil\u{1b}]0;pwned\u{7}\nFAKE LINE\u{202e}".into(),
            issuer: "CN=x\r".into(),
            serial: "01".into(),
            sans: vec!["a\u{1b}[2J".into()],
            sans_total: 1,
            key_type: "ec".into(),
            key_bits: 256,
            signature_algorithm: "sha256".into(),
            not_before: at,
            not_after: at,
            fingerprint: format!("sha256:{}", "ab".repeat(32)),
            aia_urls: vec![],
            cdp_urls: vec!["http://x/\u{1b}c".into()],
            is_ca: false,
            verdicts: vec![],
        };
        let info = CertInfo {
            fingerprint: facts.fingerprint.clone(),
            cert: facts.clone(),
            verdicts: vec!["self_signed".into()],
            first_seen: at,
            last_seen: at,
            locations: 1,
        };
        let d = CertDetail {
            info: info.clone(),
            chain: vec![facts],
            seen_at: vec![tether_wire::CertLocation {
                address: "10.0.0.1:443".into(),
                sni: Some("n\u{1b}[31m".into()),
                agent_id: uuid::Uuid::nil(),
                first_seen: at,
                last_seen: at,
                state: LocationState::Changed,
                state_since: Some(at),
                previous: None,
                replaced_by: Some("sha256:00".into()),
            }],
        };
        for text in [table(&[info]), detail(&d)] {
            assert!(!text.contains('\u{1b}'), "{text}");
            assert!(!text.contains('\u{7}') && !text.contains('\r'), "{text}");
            assert!(!text.contains('\u{202e}'), "{text}");
            assert!(!text.contains("\nFAKE LINE"), "{text}");
        }
        assert!(detail(&d).contains("CHANGED"));
    }

    #[test]
    fn filters_are_percent_encoded() {
        assert_eq!(
            query(&[("expiring", Some("30d")), ("verdict", Some("a&b=c"))]),
            "expiring=30d&verdict=a%26b%3Dc"
        );
        assert_eq!(query(&[("expiring", None)]), "");
    }
}
