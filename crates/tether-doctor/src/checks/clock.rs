//! `clock`: this host's clock against the server's (from /health or the
//! `Date` header) and against NTP, tied to the token window when the server
//! reported one. UDP 123 being blocked is a warning, not a failure.

pub(crate) mod sntp;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;
use tether_wire::{ApiError, ErrorCode};
use time::{Duration, OffsetDateTime};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use super::Ctx;
use crate::engine::TaskOutput;
use crate::report::{CheckResult, rfc3339};

/// Skew up to this is normal.
const WARN_SKEW: Duration = Duration::seconds(30);
/// Skew beyond this breaks certificates and token windows.
const FAIL_SKEW: Duration = Duration::minutes(5);
/// The time one NTP server gets to answer.
const NTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) async fn check(ctx: Arc<Ctx>) -> TaskOutput {
    let now = ctx.world.clock.now();
    let mut r = CheckResult::pass("clock", "Clock").with("local_time", rfc3339(now));
    let server_time = ctx.found().server_time;
    let server_skew = server_time.map(|(server, local)| local - server);
    if let Some(skew) = server_skew {
        r.set("skew_vs_server_s", skew.as_seconds_f64());
    }

    let ntp = query_ntp(&ctx).await;
    let mut ntp_offset = None;
    let mut ntp_json = Vec::new();
    for (server, outcome) in &ntp {
        match outcome {
            Ok(reply) => {
                // NTP's offset is "server minus us"; skew is "us minus truth".
                ntp_offset.get_or_insert(-reply.offset);
                ntp_json.push(json!({
                    "server": server,
                    "skew_s": (-reply.offset).as_seconds_f64(),
                    "delay_ms": reply.delay.whole_milliseconds() as i64,
                    "stratum": reply.stratum,
                }));
            }
            Err(e) => ntp_json.push(json!({ "server": server, "error": e })),
        }
    }
    r.set("ntp", ntp_json);
    if let Some(skew) = ntp_offset {
        r.set("skew_vs_ntp_s", skew.as_seconds_f64());
    }

    // The server's view matters most: it judges tokens and credentials.
    let (skew, against) = match (server_skew, ntp_offset) {
        (Some(s), _) => (Some(s), "the server"),
        (None, Some(n)) => (Some(n), "NTP"),
        (None, None) => (None, ""),
    };
    let window = token_window(&ctx, server_skew);
    if let Some((ref text, _)) = window {
        r.set("token_window", text.as_str());
    }
    if let Some(skew) = skew {
        let abs = skew.abs();
        let direction = if skew.is_positive() {
            "ahead of"
        } else {
            "behind"
        };
        let mut problem = format!("This host's clock is {} {direction} {against}.", human(abs));
        if let Some((text, _)) = &window {
            problem = format!("{problem} {text}");
        }
        if abs > FAIL_SKEW {
            return TaskOutput::gated_by_failures(vec![r.fail(ErrorCode::ClockSkew, problem)]);
        }
        if abs > WARN_SKEW {
            return TaskOutput::gated_by_failures(vec![r.warn(ErrorCode::ClockSkew, problem)]);
        }
    }
    if let Some((text, code)) = window {
        return TaskOutput::gated_by_failures(vec![r.fail(code, text)]);
    }
    if ntp_offset.is_none() && !ntp.is_empty() {
        let names: Vec<&str> = ntp.iter().map(|(s, _)| s.as_str()).collect();
        r = r.warn(
            ErrorCode::NtpUnreachable,
            format!("No NTP server answered over UDP 123 ({}): the clock cannot be checked against NTP.", names.join(", ")),
        );
    }
    TaskOutput::gated_by_failures(vec![r])
}

/// The token's window as the server reported it, in words, with the code
/// of the refusal, when the caller gave a token and the server's refusal.
fn token_window(ctx: &Ctx, server_skew: Option<Duration>) -> Option<(String, ErrorCode)> {
    ctx.input.token.as_ref()?;
    window_phrase(ctx.input.last_token_error.as_ref()?, server_skew)
}

/// The token's window from the server's refusal, tied to this host's clock
/// when its skew against the server (`local - server`) is known: "The token
/// becomes valid at T: in 4 min by the server's clock, in 14 min by your
/// clock (your clock is 10 min behind the server's)."
pub(crate) fn window_phrase(
    err: &ApiError,
    server_skew: Option<Duration>,
) -> Option<(String, ErrorCode)> {
    let server_now = err.server_time;
    // Only a skew a person would notice is worth a clause.
    let skew = server_skew.filter(|s| s.abs() >= Duration::seconds(1));
    let yours = |at: OffsetDateTime| -> String {
        match skew {
            Some(skew) => format!(
                ", {} by your clock (your clock is {} {} the server's)",
                rel(at - (server_now + skew)),
                human(skew.abs()),
                if skew.is_positive() {
                    "ahead of"
                } else {
                    "behind"
                }
            ),
            None => String::new(),
        }
    };
    match (err.code, err.not_before, err.expires_at) {
        (ErrorCode::TokenNotYetValid, Some(nb), _) => Some((
            format!(
                "The token becomes valid at {}: {} by the server's clock{}.",
                rfc3339(nb),
                rel(nb - server_now),
                yours(nb)
            ),
            ErrorCode::TokenNotYetValid,
        )),
        (ErrorCode::TokenExpired, _, Some(exp)) => Some((
            format!(
                "The token's window ended at {}: {} by the server's clock{}.",
                rfc3339(exp),
                rel(exp - server_now),
                yours(exp)
            ),
            ErrorCode::TokenExpired,
        )),
        _ => None,
    }
}

fn rel(d: Duration) -> String {
    if d.is_negative() {
        format!("{} ago", human(d.abs()))
    } else {
        format!("in {}", human(d))
    }
}

/// "4 min", "2 h 5 min", "12 s".
pub(crate) fn human(d: Duration) -> String {
    let s = d.whole_seconds().abs();
    if s >= 3600 {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min", (s + 30) / 60)
    } else {
        format!("{s} s")
    }
}

/// Asks every NTP server at once; each answer or error, in input order.
async fn query_ntp(ctx: &Arc<Ctx>) -> Vec<(String, Result<sntp::Reply, String>)> {
    let mut set = JoinSet::new();
    for (i, server) in ctx.input.ntp_servers.iter().enumerate() {
        let ctx = ctx.clone();
        let server = server.clone();
        set.spawn(async move {
            let limit = ctx.limit(NTP_TIMEOUT);
            let outcome = match tokio::time::timeout(limit, ask(&ctx, &server)).await {
                Ok(o) => o,
                Err(_) => Err(format!(
                    "no answer within {} ms (UDP 123 blocked?)",
                    limit.as_millis()
                )),
            };
            (i, server, outcome)
        });
    }
    let mut out: Vec<Option<(String, Result<sntp::Reply, String>)>> =
        ctx.input.ntp_servers.iter().map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, server, outcome)) = joined {
            out[i] = Some((server, outcome));
        }
    }
    out.into_iter().flatten().collect()
}

async fn ask(ctx: &Ctx, server: &str) -> Result<sntp::Reply, String> {
    let (host, port) = split_host_port(server, 123);
    let transport = ctx.transport().map_err(|e| e.to_string())?;
    let (addrs, _) = transport.resolve(&host).await.map_err(|e| e.to_string())?;
    let ip = addrs.first().copied().ok_or("no address")?;
    let bind: SocketAddr = if ip.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    sock.connect(SocketAddr::new(ip, port))
        .await
        .map_err(|e| e.to_string())?;
    let t1 = ctx.world.clock.now();
    sock.send(&sntp::request(t1))
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).await.map_err(|e| e.to_string())?;
    let t4 = ctx.world.clock.now();
    sntp::parse(&buf[..n], t1, t4).map_err(|e| e.to_string())
}

/// `host`, `host:port`, `[v6]:port` or a bare IPv6 address.
pub(crate) fn split_host_port(s: &str, default_port: u16) -> (String, u16) {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        let port = tail
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(default_port);
        return (host.to_owned(), port);
    }
    if s.matches(':').count() == 1
        && let Some((host, port)) = s.split_once(':')
        && let Ok(port) = port.parse()
    {
        return (host.to_owned(), port);
    }
    (s.to_owned(), default_port)
}

/// The NTP servers this host is configured with (chrony, then
/// systemd-timesyncd), or `pool.ntp.org` when neither names one.
pub fn default_ntp_servers() -> Vec<String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut servers = chrony_servers(&read("/etc/chrony/chrony.conf"));
    servers.extend(chrony_servers(&read("/etc/chrony.conf")));
    servers.extend(timesyncd_servers(&read("/etc/systemd/timesyncd.conf")));
    servers.dedup();
    if servers.is_empty() {
        servers.push("pool.ntp.org".to_owned());
    }
    servers
}

/// `server`, `pool` and `peer` lines of chrony.conf.
pub(crate) fn chrony_servers(conf: &str) -> Vec<String> {
    conf.lines()
        .filter_map(|l| {
            let l = l.split(['#', '!', ';']).next().unwrap_or("");
            let mut w = l.split_whitespace();
            match w.next() {
                Some("server" | "pool" | "peer") => w.next().map(str::to_owned),
                _ => None,
            }
        })
        .collect()
}

/// `NTP=` (then `FallbackNTP=`) of timesyncd.conf.
pub(crate) fn timesyncd_servers(conf: &str) -> Vec<String> {
    let field = |name: &str| -> Vec<String> {
        conf.lines()
            .filter_map(|l| l.trim().strip_prefix(name))
            .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    };
    let primary = field("NTP=");
    if primary.is_empty() {
        field("FallbackNTP=")
    } else {
        primary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_config_files_name_their_servers() {
        let chrony = "# comment\npool 2.debian.pool.ntp.org iburst\nserver ntp.corp.example prefer\n! server off\nkeyfile /etc/chrony/chrony.keys\n";
        assert_eq!(
            chrony_servers(chrony),
            vec!["2.debian.pool.ntp.org", "ntp.corp.example"]
        );
        let timesyncd = "[Time]\n#NTP=\nFallbackNTP=0.pool.ntp.org 1.pool.ntp.org\n";
        assert_eq!(
            timesyncd_servers(timesyncd),
            vec!["0.pool.ntp.org", "1.pool.ntp.org"]
        );
        let timesyncd = "[Time]\nNTP=10.0.0.1\nFallbackNTP=0.pool.ntp.org\n";
        assert_eq!(timesyncd_servers(timesyncd), vec!["10.0.0.1"]);
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("ntp.example", 123),
            ("ntp.example".into(), 123)
        );
        assert_eq!(
            split_host_port("127.0.0.1:1123", 123),
            ("127.0.0.1".into(), 1123)
        );
        assert_eq!(split_host_port("[::1]:99", 123), ("::1".into(), 99));
        assert_eq!(split_host_port("::1", 123), ("::1".into(), 123));
        assert_eq!(
            split_host_port("h:notaport", 123),
            ("h:notaport".into(), 123)
        );
    }

    #[test]
    fn token_windows_are_tied_to_this_hosts_clock() {
        let server_now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let mut err = ApiError::new(ErrorCode::TokenNotYetValid, "not yet", server_now);
        err.not_before = Some(server_now + Duration::minutes(4));
        let (text, code) = window_phrase(&err, Some(Duration::minutes(-10))).expect("window");
        assert_eq!(code, ErrorCode::TokenNotYetValid);
        assert!(
            text.ends_with(": in 4 min by the server's clock, in 14 min by your clock (your clock is 10 min behind the server's)."),
            "{text}"
        );
        // No skew known: the server's clock only.
        let (text, _) = window_phrase(&err, None).expect("window");
        assert!(
            text.ends_with(": in 4 min by the server's clock."),
            "{text}"
        );

        let mut err = ApiError::new(ErrorCode::TokenExpired, "expired", server_now);
        err.expires_at = Some(server_now - Duration::minutes(3));
        let (text, code) = window_phrase(&err, Some(Duration::minutes(-10))).expect("window");
        assert_eq!(code, ErrorCode::TokenExpired);
        assert!(
            text.ends_with(": 3 min ago by the server's clock, in 7 min by your clock (your clock is 10 min behind the server's)."),
            "{text}"
        );
        // Another refusal has no window.
        let err = ApiError::new(ErrorCode::TokenRevoked, "revoked", server_now);
        assert_eq!(window_phrase(&err, None), None);
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(human(Duration::seconds(12)), "12 s");
        assert_eq!(human(Duration::seconds(-240)), "4 min");
        assert_eq!(human(Duration::seconds(7500)), "2 h 5 min");
        assert_eq!(rel(Duration::minutes(4)), "in 4 min");
        assert_eq!(rel(Duration::minutes(-4)), "4 min ago");
    }
}
