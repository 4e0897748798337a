//! Allowed hours: the local times of day during which a task may start.

use jiff::civil::Time;
use jiff::tz::TimeZone;
use tether_wire::AllowedHours;
use time::OffsetDateTime;

use crate::schedule::{ScheduleError, to_time, to_zoned, zone};

/// Parsed allowed hours in a zone.
#[derive(Debug, Clone)]
pub struct Window {
    from: Time,
    to: Time,
    tz: TimeZone,
    tz_name: String,
}

/// Whether a task may start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState {
    Open,
    Closed { opens_at: OffsetDateTime },
}

fn hhmm(field: &str, s: &str) -> Result<Time, ScheduleError> {
    let bad = || ScheduleError::new(field, s, "HH:MM, 00:00 to 23:59");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if (0..24).contains(&h) && (0..60).contains(&m) {
        Time::new(h, m, 0, 0).map_err(|_| bad())
    } else {
        Err(bad())
    }
}

impl Window {
    pub fn parse(hours: &AllowedHours, tz: &str) -> Result<Window, ScheduleError> {
        let from = hhmm("allowed_hours.from", &hours.from)?;
        let to = hhmm("allowed_hours.to", &hours.to)?;
        if from == to {
            return Err(ScheduleError::new(
                "allowed_hours",
                format!("{}-{}", hours.from, hours.to),
                "two different times (an empty window would never open)",
            ));
        }
        Ok(Window {
            from,
            to,
            tz: zone(tz)?,
            tz_name: tz.to_owned(),
        })
    }

    fn contains(&self, t: Time) -> bool {
        if self.from < self.to {
            self.from <= t && t < self.to
        } else {
            t >= self.from || t < self.to
        }
    }

    /// Open or closed at `now`; when closed, when it opens next.
    pub fn state(&self, now: OffsetDateTime) -> WindowState {
        let Some(z) = to_zoned(now, &self.tz) else {
            return WindowState::Open;
        };
        if self.contains(z.time()) {
            return WindowState::Open;
        }
        let today = z.date().to_datetime(self.from);
        let start = if z.time() < self.from {
            today
        } else {
            today.tomorrow().unwrap_or(today)
        };
        // A start skipped by DST opens at the next valid minute.
        let opens = crate::schedule::civil_to_instant(start, &self.tz)
            .and_then(to_time)
            .unwrap_or(now);
        WindowState::Closed { opens_at: opens }
    }

    /// "22:00–04:00 Europe/Paris".
    pub fn describe(&self) -> String {
        format!(
            "{}–{} {}",
            self.from.strftime("%H:%M"),
            self.to.strftime("%H:%M"),
            self.tz_name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn hours(from: &str, to: &str) -> AllowedHours {
        AllowedHours {
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn windows_span_midnight_and_say_when_they_open() {
        let w = Window::parse(&hours("22:00", "04:00"), "Europe/Paris").expect("parses");
        // 12:00 UTC is 14:00 in Paris (summer time).
        let noon = datetime!(2026-06-01 12:00 UTC);
        assert_eq!(
            w.state(noon),
            WindowState::Closed {
                opens_at: datetime!(2026-06-01 20:00 UTC)
            }
        );
        assert_eq!(w.state(datetime!(2026-06-01 23:00 UTC)), WindowState::Open);
        assert_eq!(w.state(datetime!(2026-06-02 01:30 UTC)), WindowState::Open);
        assert_eq!(w.describe(), "22:00–04:00 Europe/Paris");
    }

    #[test]
    fn bad_hours_and_zones_are_refused() {
        assert!(Window::parse(&hours("25:00", "04:00"), "UTC").is_err());
        assert!(Window::parse(&hours("2200", "04:00"), "UTC").is_err());
        assert!(Window::parse(&hours("04:00", "04:00"), "UTC").is_err());
        assert!(Window::parse(&hours("01:00", "04:00"), "Mars/Olympus").is_err());
    }
}
