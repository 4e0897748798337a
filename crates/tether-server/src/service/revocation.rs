//! Revocation by the built-in CA (issue #10): `revoke` (admin), the CRL and
//! the OCSP responder (anyone, over `/pki/…`).
//!
//! - `revoke`: only a certificate this CA issued (`issued_certs`) can be
//!   revoked (TETHER-E8440 otherwise); revoking again keeps the first
//!   revocation.
//! - `crl`: the intermediate's DER CRL of every unexpired revocation. It is
//!   built on demand and kept in memory; each request reads the revocations
//!   from the store, and a CRL is signed again when they changed (a revoke
//!   on this or another server sharing the database) or when the kept one
//!   is a day old, six days before its nextUpdate. Its CRL number is its
//!   thisUpdate in unix milliseconds (never less than the previous one plus
//!   one), so it grows with every signing on any server whose clock is
//!   right, without a shared counter.
//! - `ocsp`: reads a DER request, looks each serial of this issuer up, and
//!   signs good / revoked (time and reason) / unknown with the
//!   intermediate's key, echoing the nonce. A request that cannot be read
//!   is answered `malformedRequest`, a store failure `tryLater`, a server
//!   without a CA `unauthorized`: always an OCSP response, never an error
//!   page.

use std::sync::Arc;

use bytes::Bytes;
use tether_pki::revoke::{self, CrlEntry, OcspAnswer, OcspResponseStatus};
use tether_store::Revoked;
use tether_wire::{RevocationReason, RevokeResponse};
use time::{Duration, OffsetDateTime};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::{Ctx, ServiceError, within_store_wait};

/// A kept CRL is signed again once it is this old, well before its
/// nextUpdate ([`revoke::CRL_VALIDITY`]).
pub const CRL_REFRESH: Duration = Duration::days(1);

/// The CRL this server signed last.
#[derive(Debug, Default)]
pub struct CrlCache(Mutex<Option<SignedCrl>>);

#[derive(Debug)]
struct SignedCrl {
    entries: Vec<CrlEntry>,
    number: u64,
    this_update: OffsetDateTime,
    der: Bytes,
}

/// Revokes a certificate the built-in CA issued.
pub async fn revoke(
    ctx: &Ctx,
    text: &str,
    reason: RevocationReason,
    by: &str,
) -> Result<RevokeResponse, ServiceError> {
    let fp = super::certs::fingerprint(text)?;
    // An ACME CA's certificate is revoked at that CA, never on the built-in
    // CA's CRL (its serial is another CA's).
    if let Some(cert) = ctx.store.issued_cert(&fp).await?
        && let Some(issuer) = cert.issuer.as_deref()
    {
        let newly = super::acme::revoke(ctx, &cert, reason).await?;
        info!(fingerprint = %fp, serial = %cert.serial, issuer = %issuer, reason = %reason, by = %by, newly, "revoked a certificate at its ACME CA");
        return Ok(RevokeResponse {
            revocation: tether_wire::Revocation {
                fingerprint: fp,
                serial: cert.serial,
                reason,
                revoked_at: ctx.now(),
                revoked_by: by.to_owned(),
                not_after: cert.not_after,
            },
            newly_revoked: newly,
        });
    }
    let revoked = ctx
        .store
        .revoke_issued(&fp, reason, ctx.now(), by)
        .await
        .map_err(|e| match e {
            tether_store::StoreError::NotFound => ServiceError::RevokeUnknownCert(fp.clone()),
            other => ServiceError::Store(other),
        })?;
    Ok(match revoked {
        Revoked::Now(revocation) => {
            info!(fingerprint = %fp, serial = %revocation.serial, reason = %revocation.reason, by = %by, "revoked a certificate");
            RevokeResponse {
                revocation,
                newly_revoked: true,
            }
        }
        Revoked::Already(revocation) => RevokeResponse {
            revocation,
            newly_revoked: false,
        },
    })
}

/// The CA's current DER CRL.
pub async fn crl(ctx: &Ctx) -> Result<Bytes, ServiceError> {
    let Some(ca) = ctx.ca.as_ref() else {
        return Err(ServiceError::RevocationUnavailable(
            "no built-in CA is open on this server".to_owned(),
        ));
    };
    // Clients judge a CRL's dates by their own wall clocks, like
    // certificates: the real time, not the injected clock.
    let now = OffsetDateTime::now_utc();
    let revocations = within_store_wait(ctx, async {
        Ok(ctx.store.unexpired_revocations(now).await?)
    })
    .await?;
    let entries: Vec<CrlEntry> = revocations
        .into_iter()
        .map(|r| CrlEntry {
            serial: r.serial,
            revoked_at: r.revoked_at,
            reason: r.reason,
        })
        .collect();
    let mut kept = ctx.crl.0.lock().await;
    if let Some(k) = kept.as_ref()
        && k.entries == entries
        && now < k.this_update + CRL_REFRESH
    {
        return Ok(k.der.clone());
    }
    let ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let number = kept.as_ref().map_or(ms, |k| ms.max(k.number + 1));
    let der = ca
        .crl(number, now, &entries)
        .map_err(|e| ServiceError::RevocationUnavailable(e.to_string()))?;
    info!(
        crl_number = number,
        revoked = entries.len(),
        "signed the built-in CA's CRL"
    );
    let der = Bytes::from(der);
    *kept = Some(SignedCrl {
        entries,
        number,
        this_update: now,
        der: der.clone(),
    });
    Ok(der)
}

/// Answers a DER OCSP request with a DER OCSP response (never an error).
pub async fn ocsp(ctx: &Ctx, request: &[u8]) -> Vec<u8> {
    let Some(ca) = ctx.ca.clone() else {
        return revoke::unsigned_response(OcspResponseStatus::Unauthorized);
    };
    let query = match revoke::read_request(request, ca.issuer_hashes()) {
        Ok(q) => q,
        Err(error) => {
            debug!(error = %error, "refused an OCSP request");
            return malformed();
        }
    };
    let now = OffsetDateTime::now_utc();
    let looked_up = within_store_wait(ctx, async {
        let mut answers = Vec::with_capacity(query.certs.len());
        for asked in &query.certs {
            let answer = match &asked.serial {
                None => OcspAnswer::Unknown,
                Some(serial) => match ctx.store.serial_status(serial).await? {
                    None => OcspAnswer::Unknown,
                    Some(status) => match status.revocation {
                        Some(r) => OcspAnswer::Revoked {
                            at: r.revoked_at,
                            reason: r.reason,
                        },
                        None => OcspAnswer::Good,
                    },
                },
            };
            answers.push(answer);
        }
        Ok(answers)
    })
    .await;
    let answers = match looked_up {
        Ok(a) => a,
        Err(error) => {
            warn!(code = %error.code(), error = %error, "the OCSP responder could not read the store; answered tryLater");
            return revoke::unsigned_response(OcspResponseStatus::TryLater);
        }
    };
    match ca.ocsp_response(&query, &answers, now) {
        Ok(der) => der,
        Err(error) => {
            warn!(error = %error, "the OCSP responder could not sign; answered internalError");
            revoke::unsigned_response(OcspResponseStatus::InternalError)
        }
    }
}

/// `malformedRequest`.
pub fn malformed() -> Vec<u8> {
    revoke::unsigned_response(OcspResponseStatus::MalformedRequest)
}

/// A shared, empty CRL cache for [`Ctx::new`].
pub fn cache() -> Arc<CrlCache> {
    Arc::new(CrlCache::default())
}

/// Gives the CA just opened by `issuance::load` the revocation pointers of
/// `pki_public_url`, so every certificate it issues names the CRL and the
/// OCSP responder.
pub fn with_urls(
    ca: Option<Arc<tether_pki::IssuingCa>>,
    urls: Option<revoke::PkiUrls>,
) -> Option<Arc<tether_pki::IssuingCa>> {
    let ca = ca?;
    match &urls {
        Some(u) => {
            info!(crl = %u.crl, ocsp = %u.ocsp, "issued certificates name these revocation URLs")
        }
        None => info!(
            "pki_public_url is not set: issued certificates carry no CRL or OCSP URL, so clients cannot check their revocation"
        ),
    }
    // Just opened, so this is its only reference; were it shared, it would
    // keep issuing without pointers rather than fail.
    Some(match Arc::try_unwrap(ca) {
        Ok(mut ca) => {
            ca.set_urls(urls);
            Arc::new(ca)
        }
        Err(shared) => shared,
    })
}
