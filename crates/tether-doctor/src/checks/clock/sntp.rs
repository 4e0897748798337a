//! A minimal SNTP client (RFC 4330): one request, one reply, the offset.

use time::{Duration, OffsetDateTime};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: i64 = 2_208_988_800;

/// A client request: version 4, mode 3 (client), with our transmit time so
/// the reply can be matched to it.
pub(crate) fn request(transmit: OffsetDateTime) -> [u8; 48] {
    let mut p = [0u8; 48];
    p[0] = (4 << 3) | 3;
    p[40..48].copy_from_slice(&to_ntp(transmit).to_be_bytes());
    p
}

/// What a server reply says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) stratum: u8,
    /// The server's clock minus ours.
    pub(crate) offset: Duration,
    /// The round trip, less the server's processing time.
    pub(crate) delay: Duration,
}

/// Why a reply is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SntpError {
    #[error("the reply is {got} bytes, expected at least 48")]
    Short { got: usize },
    #[error("the reply has mode {got}, expected 4 (server)")]
    Mode { got: u8 },
    #[error("the server sent a kiss-of-death (stratum 0, code {code:?})")]
    Kiss { code: String },
    #[error("the reply does not answer our request (origin timestamp mismatch)")]
    Origin,
    #[error("the server's clock is unsynchronised (leap indicator 3)")]
    Unsynchronised,
}

/// Parses a reply to a request sent at `t1`, received at `t4` (both by our
/// clock).
pub(crate) fn parse(
    reply: &[u8],
    t1: OffsetDateTime,
    t4: OffsetDateTime,
) -> Result<Reply, SntpError> {
    if reply.len() < 48 {
        return Err(SntpError::Short { got: reply.len() });
    }
    let mode = reply[0] & 0x7;
    if mode != 4 {
        return Err(SntpError::Mode { got: mode });
    }
    if reply[0] >> 6 == 3 {
        return Err(SntpError::Unsynchronised);
    }
    let stratum = reply[1];
    if stratum == 0 {
        return Err(SntpError::Kiss {
            code: String::from_utf8_lossy(&reply[12..16]).into_owned(),
        });
    }
    let ts = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&reply[at..at + 8]);
        u64::from_be_bytes(b)
    };
    if ts(24) != to_ntp(t1) {
        return Err(SntpError::Origin);
    }
    let t2 = from_ntp(ts(32));
    let t3 = from_ntp(ts(40));
    let offset = ((t2 - t1) + (t3 - t4)) / 2;
    let delay = (t4 - t1) - (t3 - t2);
    Ok(Reply {
        stratum,
        offset,
        delay,
    })
}

/// A 64-bit NTP timestamp: seconds since 1900 and a binary fraction.
pub(crate) fn to_ntp(t: OffsetDateTime) -> u64 {
    let secs = (t.unix_timestamp() + NTP_UNIX_OFFSET) as u64;
    let frac = ((t.nanosecond() as u64) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

pub(crate) fn from_ntp(v: u64) -> OffsetDateTime {
    let secs = (v >> 32) as i64 - NTP_UNIX_OFFSET;
    let nanos = ((v & 0xffff_ffff) * 1_000_000_000) >> 32;
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        + Duration::nanoseconds(nanos as i64)
}

/// A server's reply to `req`, with the server's clock at `server_now`.
#[cfg(test)]
pub(crate) fn answer(req: &[u8], server_now: OffsetDateTime) -> Option<[u8; 48]> {
    if req.len() < 48 || req[0] & 0x7 != 3 {
        return None;
    }
    let mut p = [0u8; 48];
    p[0] = (4 << 3) | 4;
    p[1] = 2;
    p[24..32].copy_from_slice(&req[40..48]);
    p[32..40].copy_from_slice(&to_ntp(server_now).to_be_bytes());
    p[40..48].copy_from_slice(&to_ntp(server_now).to_be_bytes());
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timestamps_round_trip_to_the_microsecond() {
        let t = datetime!(2026-05-17 19:16:00.123456 UTC);
        let back = from_ntp(to_ntp(t));
        assert!((back - t).abs() < Duration::microseconds(1), "{back}");
        assert_eq!(to_ntp(datetime!(1970-01-01 0:00 UTC)) >> 32, 2_208_988_800);
    }

    #[test]
    fn the_offset_of_a_fast_server_is_positive() {
        let t1 = datetime!(2026-01-01 12:00:00 UTC);
        let req = request(t1);
        assert_eq!(req[0], 0x23);
        // The server is 90 s ahead; the round trip takes 20 ms.
        let reply = answer(
            &req,
            t1 + Duration::seconds(90) + Duration::milliseconds(10),
        )
        .expect("client request");
        let got = parse(&reply, t1, t1 + Duration::milliseconds(20)).expect("valid reply");
        assert!(
            (got.offset - Duration::seconds(90)).abs() < Duration::milliseconds(1),
            "{got:?}"
        );
        assert!(
            (got.delay - Duration::milliseconds(20)).abs() < Duration::milliseconds(1),
            "{got:?}"
        );
        assert_eq!(got.stratum, 2);
    }

    #[test]
    fn bad_replies_are_refused() {
        let t1 = datetime!(2026-01-01 12:00:00 UTC);
        let good = answer(&request(t1), t1).expect("client request");
        assert_eq!(
            parse(&good[..47], t1, t1),
            Err(SntpError::Short { got: 47 })
        );
        let mut m = good;
        m[0] = 0x23;
        assert_eq!(parse(&m, t1, t1), Err(SntpError::Mode { got: 3 }));
        let mut k = good;
        k[1] = 0;
        k[12..16].copy_from_slice(b"RATE");
        assert_eq!(
            parse(&k, t1, t1),
            Err(SntpError::Kiss {
                code: "RATE".into()
            })
        );
        let other = answer(&request(t1 + Duration::seconds(1)), t1).expect("client request");
        assert_eq!(parse(&other, t1, t1), Err(SntpError::Origin));
        let mut u = good;
        u[0] |= 0xC0;
        assert_eq!(parse(&u, t1, t1), Err(SntpError::Unsynchronised));
        assert!(answer(&[0u8; 10], t1).is_none());
    }

    #[test]
    fn hostile_replies_never_panic() {
        let t1 = datetime!(2026-01-01 12:00:00 UTC);
        let mut state: u64 = 42;
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len % 64)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = parse(&bytes, t1, t1);
        }
    }
}
