//! Recurring tasks: an interval, or a cron rule read in a time zone.
//!
//! Cron rules are matched in local (civil) time and then placed on the
//! timeline. A local time that daylight saving skips runs at the next valid
//! minute (02:30 on a spring-forward night runs at 03:00); a local time that
//! repeats runs once, at its first occurrence. Runs missed while no server
//! ran are run once, and named.

use std::str::FromStr;

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, Zoned};
use tether_wire::ScheduleRule;
use time::OffsetDateTime;

/// The shortest interval a schedule may have.
pub const MIN_INTERVAL_SECS: u64 = 60;
/// The longest: a year.
pub const MAX_INTERVAL_SECS: u64 = 366 * 24 * 3600;
/// How many missed runs are named; the rest are counted.
pub const MAX_NAMED_MISSES: usize = 5;
/// How far the missed runs are counted before giving up counting.
const MAX_COUNTED_MISSES: usize = 10_000;

/// A schedule, rule or time zone the queue refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: got {observed:?}; expected {expected}")]
pub struct ScheduleError {
    pub field: String,
    pub observed: String,
    pub expected: String,
}

impl ScheduleError {
    pub fn new(
        field: impl Into<String>,
        observed: impl Into<String>,
        expected: impl Into<String>,
    ) -> ScheduleError {
        ScheduleError {
            field: field.into(),
            observed: observed.into().chars().take(80).collect(),
            expected: expected.into(),
        }
    }
}

/// An IANA zone by name (the system's tzdata, or jiff's bundled copy).
pub fn zone(name: &str) -> Result<TimeZone, ScheduleError> {
    if name.is_empty() || name.len() > 64 {
        return Err(ScheduleError::new(
            "tz",
            name,
            "an IANA time zone such as Europe/Paris",
        ));
    }
    TimeZone::get(name).map_err(|_| {
        ScheduleError::new("tz", name, "an IANA time zone such as Europe/Paris or UTC")
    })
}

pub(crate) fn to_zoned(at: OffsetDateTime, tz: &TimeZone) -> Option<Zoned> {
    let ns = at.unix_timestamp_nanos();
    Timestamp::from_nanosecond(ns)
        .ok()
        .map(|ts| ts.to_zoned(tz.clone()))
}

pub(crate) fn to_time(ts: Timestamp) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(ts.as_nanosecond()).ok()
}

/// Places a local time on the timeline: the first occurrence of a repeated
/// time, the next valid minute for a skipped one.
pub(crate) fn civil_to_instant(dt: DateTime, tz: &TimeZone) -> Option<Timestamp> {
    let mut probe = dt;
    // A gap is at most a few hours; a day of minutes bounds the search.
    for _ in 0..(24 * 60) {
        let amb = tz.to_ambiguous_timestamp(probe);
        match amb.offset() {
            AmbiguousOffset::Unambiguous { .. } | AmbiguousOffset::Fold { .. } => {
                return amb.earlier().ok();
            }
            AmbiguousOffset::Gap { .. } => {
                probe = probe
                    .checked_add(jiff::Span::new().minutes(1))
                    .ok()?
                    .with()
                    .second(0)
                    .subsec_nanosecond(0)
                    .build()
                    .ok()?;
            }
        }
    }
    None
}

/// A parsed rule.
#[derive(Debug, Clone)]
pub enum Rule {
    Interval {
        secs: u64,
    },
    Cron {
        cron: Box<jiff_cron::Schedule>,
        tz: TimeZone,
    },
}

/// Parses a rule; `tz` is the zone a cron rule is read in when it names none.
pub fn parse(rule: &ScheduleRule, default_tz: &str) -> Result<(Rule, String), ScheduleError> {
    match rule {
        ScheduleRule::Interval { secs } => {
            if !(MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(secs) {
                return Err(ScheduleError::new(
                    "schedule.secs",
                    secs.to_string(),
                    format!("{MIN_INTERVAL_SECS} to {MAX_INTERVAL_SECS} seconds"),
                ));
            }
            Ok((Rule::Interval { secs: *secs }, default_tz.to_owned()))
        }
        ScheduleRule::Cron { expr, tz } => {
            let tz_name = tz.clone().unwrap_or_else(|| default_tz.to_owned());
            let zone = zone(&tz_name)?;
            Ok((
                Rule::Cron {
                    cron: Box::new(cron(expr)?),
                    tz: zone,
                },
                tz_name,
            ))
        }
    }
}

/// A five-field cron rule (`minute hour day-of-month month day-of-week`).
/// Weekdays must be names (`Mon-Fri`): the parser numbers them from Sunday
/// = 1, unlike Unix cron's 0, and a silently shifted weekday is worse than a
/// refusal.
fn cron(expr: &str) -> Result<jiff_cron::Schedule, ScheduleError> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let expected = "five fields: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\" or \"30 1 * * Mon-Fri\"";
    if fields.len() != 5 || expr.len() > 200 {
        return Err(ScheduleError::new("schedule.expr", expr, expected));
    }
    if fields[4].bytes().any(|b| b.is_ascii_digit()) && !fields[4].starts_with("*/") {
        return Err(ScheduleError::new(
            "schedule.expr",
            expr,
            "weekdays by name (Sun, Mon … Sat), not by number",
        ));
    }
    jiff_cron::Schedule::from_str(&format!("0 {expr}"))
        .map_err(|e| ScheduleError::new("schedule.expr", expr, format!("{expected} ({e})")))
}

impl Rule {
    /// The first run strictly after `after`.
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        match self {
            Rule::Interval { secs } => {
                after.checked_add(time::Duration::seconds(i64::try_from(*secs).ok()?))
            }
            Rule::Cron { cron, tz } => {
                let local = to_zoned(after, tz)?.datetime();
                // Match in civil time: the civil clock read as UTC.
                let mut probe = local.to_zoned(TimeZone::UTC).ok()?;
                for _ in 0..1000 {
                    let next = cron.after(probe.clone()).next()?;
                    let instant = civil_to_instant(next.datetime(), tz)?;
                    let at = to_time(instant)?;
                    if at > after {
                        return Some(at);
                    }
                    probe = next;
                }
                None
            }
        }
    }

    /// What to do at `now` for a schedule due at `next_run_at`.
    pub fn due(&self, next_run_at: OffsetDateTime, now: OffsetDateTime) -> Due {
        if next_run_at > now {
            return Due {
                run: false,
                missed: Vec::new(),
                missed_count: 0,
                next: next_run_at,
            };
        }
        let mut missed = Vec::new();
        let mut count = 0usize;
        let mut cursor = next_run_at;
        let next = loop {
            match self.next_after(cursor) {
                Some(n) if n <= now && count < MAX_COUNTED_MISSES => {
                    if missed.len() < MAX_NAMED_MISSES {
                        missed.push(cursor);
                    }
                    count += 1;
                    cursor = n;
                }
                Some(n) if n <= now => {
                    // Too many to count: jump to the first run after now.
                    break self.next_after(now).unwrap_or(n);
                }
                Some(n) => break n,
                None => break now + time::Duration::days(366),
            }
        };
        Due {
            run: true,
            missed,
            missed_count: count,
            next,
        }
    }
}

/// The scheduler's decision for one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Create one task now.
    pub run: bool,
    /// Runs that were due before the last one and are folded into this run
    /// (the first few).
    pub missed: Vec<OffsetDateTime>,
    pub missed_count: usize,
    /// When the schedule is due next.
    pub next: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn cron_in(expr: &str, tz: &str) -> Rule {
        parse(
            &ScheduleRule::Cron {
                expr: expr.into(),
                tz: Some(tz.into()),
            },
            "UTC",
        )
        .expect("parses")
        .0
    }

    #[test]
    fn nightly_runs_at_local_time() {
        let r = cron_in("0 2 * * *", "Europe/Paris");
        // 2026-06-01 02:00 in Paris (CEST, +2) is 00:00 UTC.
        assert_eq!(
            r.next_after(datetime!(2026-05-31 12:00 UTC)),
            Some(datetime!(2026-06-01 00:00 UTC))
        );
    }

    #[test]
    fn a_skipped_local_time_runs_at_the_next_valid_minute() {
        // Europe/Paris springs forward on 2026-03-29 at 02:00 → 03:00.
        let r = cron_in("30 2 * * *", "Europe/Paris");
        let at = r.next_after(datetime!(2026-03-28 12:00 UTC)).expect("next");
        // 03:00 CEST = 01:00 UTC.
        assert_eq!(at, datetime!(2026-03-29 01:00 UTC));
        // And the night after is normal again: 02:30 CEST = 00:30 UTC.
        assert_eq!(r.next_after(at), Some(datetime!(2026-03-30 00:30 UTC)));
    }

    #[test]
    fn a_repeated_local_time_runs_once() {
        // Europe/Paris falls back on 2026-10-25 at 03:00 → 02:00, so 02:30
        // happens twice (00:30 UTC and 01:30 UTC).
        let r = cron_in("30 2 * * *", "Europe/Paris");
        let first = r.next_after(datetime!(2026-10-24 12:00 UTC)).expect("next");
        assert_eq!(first, datetime!(2026-10-25 00:30 UTC));
        let second = r.next_after(first).expect("next");
        assert_eq!(
            second,
            datetime!(2026-10-26 01:30 UTC),
            "the next night, not the repeat"
        );
        // Asked from inside the repeated hour, it does not run again either.
        let inside = r.next_after(datetime!(2026-10-25 01:10 UTC)).expect("next");
        assert_eq!(inside, datetime!(2026-10-26 01:30 UTC));
    }

    #[test]
    fn missed_runs_run_once_and_are_named() {
        let r = parse(&ScheduleRule::Interval { secs: 3600 }, "UTC")
            .expect("ok")
            .0;
        let due = r.due(
            datetime!(2026-05-17 10:00 UTC),
            datetime!(2026-05-17 13:30 UTC),
        );
        assert!(due.run);
        assert_eq!(due.missed_count, 3);
        assert_eq!(
            due.missed,
            vec![
                datetime!(2026-05-17 10:00 UTC),
                datetime!(2026-05-17 11:00 UTC),
                datetime!(2026-05-17 12:00 UTC)
            ]
        );
        assert_eq!(due.next, datetime!(2026-05-17 14:00 UTC));
        let on_time = r.due(
            datetime!(2026-05-17 14:00 UTC),
            datetime!(2026-05-17 14:00:01 UTC),
        );
        assert!(on_time.run);
        assert_eq!(on_time.missed_count, 0);
        assert!(!r.due(on_time.next, datetime!(2026-05-17 14:30 UTC)).run);
    }

    #[test]
    fn bad_rules_are_refused() {
        let bad = |expr: &str| {
            parse(
                &ScheduleRule::Cron {
                    expr: expr.into(),
                    tz: None,
                },
                "UTC",
            )
            .is_err()
        };
        assert!(bad("0 2 * *"));
        assert!(bad("0 2 * * 1-5"), "numeric weekdays are ambiguous");
        assert!(bad("61 2 * * *"));
        assert!(!bad("0 2 * * Mon-Fri"));
        assert!(parse(&ScheduleRule::Interval { secs: 5 }, "UTC").is_err());
        assert!(
            parse(
                &ScheduleRule::Cron {
                    expr: "0 2 * * *".into(),
                    tz: Some("Nowhere/City".into())
                },
                "UTC"
            )
            .is_err()
        );
    }
}
