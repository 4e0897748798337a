//! HTTP validators and byte ranges for the served definitions tree (RFC
//! 9110): a strong ETag from length and modification time, HTTP dates, one
//! byte range per request, and `If-Range`.
//!
//! Only single ranges are honoured. A multi-range request gets the whole
//! file (200), which the RFC allows and every client handles; updaters ask
//! for one range to resume a download.

use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

/// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
const HTTP_DATE: &[FormatItem<'static>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// What to send for a `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// No usable range: the whole file, 200.
    Full,
    /// Bytes `start..=end`, 206.
    Part { start: u64, end: u64 },
    /// A well-formed range that lies outside the file: 416.
    Unsatisfiable,
}

/// A strong validator: the served files are replaced atomically (a rename),
/// so a new content always comes with a new modification time.
pub fn etag(len: u64, modified: Option<OffsetDateTime>) -> String {
    let nanos = modified.map_or(0, |m| m.unix_timestamp_nanos());
    format!("\"{len:x}-{nanos:x}\"")
}

pub fn http_date(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(HTTP_DATE)
        .unwrap_or_default()
}

fn parse_http_date(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim().strip_suffix(" GMT")?;
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second]"
    );
    time::PrimitiveDateTime::parse(text, format)
        .ok()
        .map(|t| t.assume_utc())
}

/// Whether `If-None-Match` names this ETag (or `*`).
pub fn none_match(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// Whether an `If-Range` validator still matches: an ETag must be equal
/// (strong comparison, so never a weak one), a date must equal the
/// Last-Modified time to the second.
pub fn if_range_matches(header: &str, etag: &str, modified: Option<OffsetDateTime>) -> bool {
    let header = header.trim();
    if header.starts_with('"') {
        return header == etag;
    }
    if header.starts_with("W/") {
        return false;
    }
    match (parse_http_date(header), modified) {
        // HTTP dates have whole seconds; the file's time is cut to match.
        (Some(date), Some(modified)) => date.unix_timestamp() == modified.unix_timestamp(),
        _ => false,
    }
}

/// Reads a `Range` header against a file of `len` bytes.
pub fn parse(header: &str, len: u64) -> Wanted {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Wanted::Full;
    };
    if spec.contains(',') {
        return Wanted::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Full;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match number(last) {
            Some(0) => Wanted::Unsatisfiable,
            Some(_) if len == 0 => Wanted::Unsatisfiable,
            Some(n) => Wanted::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => Wanted::Full,
        },
        // `a-`: from a to the end.
        (false, true) => match number(first) {
            Some(a) if a < len => Wanted::Part {
                start: a,
                end: len - 1,
            },
            Some(_) => Wanted::Unsatisfiable,
            None => Wanted::Full,
        },
        // `a-b`: an end past the file is cut to it.
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a > b => Wanted::Full,
            (Some(a), Some(b)) if a < len => Wanted::Part {
                start: a,
                end: b.min(len - 1),
            },
            (Some(_), Some(_)) => Wanted::Unsatisfiable,
            _ => Wanted::Full,
        },
        (true, true) => Wanted::Full,
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse("bytes=0-9", 100), Wanted::Part { start: 0, end: 9 });
        assert_eq!(
            parse("bytes=90-200", 100),
            Wanted::Part { start: 90, end: 99 }
        );
        assert_eq!(parse("bytes=10-", 100), Wanted::Part { start: 10, end: 99 });
        assert_eq!(parse("bytes=-5", 100), Wanted::Part { start: 95, end: 99 });
        assert_eq!(parse("bytes=-500", 100), Wanted::Part { start: 0, end: 99 });
        assert_eq!(
            parse("bytes=99-99", 100),
            Wanted::Part { start: 99, end: 99 }
        );
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(parse("bytes=100-", 100), Wanted::Unsatisfiable);
        assert_eq!(parse("bytes=100-200", 100), Wanted::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), Wanted::Unsatisfiable);
        assert_eq!(parse("bytes=0-0", 0), Wanted::Unsatisfiable);
        assert_eq!(parse("bytes=-1", 0), Wanted::Unsatisfiable);
    }

    #[test]
    fn unusable_ranges_mean_the_whole_file() {
        for header in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=0-18446744073709551616",
            "bytes 0-1",
        ] {
            assert_eq!(parse(header, 100), Wanted::Full, "{header}");
        }
    }

    #[test]
    fn dates_and_validators() {
        let at = datetime!(1994-11-06 08:49:37 UTC);
        assert_eq!(http_date(at), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(at));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        let modified = at + time::Duration::milliseconds(250);
        let tag = etag(10, Some(modified));
        assert!(if_range_matches(&tag, &tag, Some(modified)));
        assert!(!if_range_matches("\"other\"", &tag, Some(modified)));
        assert!(!if_range_matches(&format!("W/{tag}"), &tag, Some(modified)));
        assert!(if_range_matches(
            "Sun, 06 Nov 1994 08:49:37 GMT",
            &tag,
            Some(modified)
        ));
        assert!(!if_range_matches(
            "Sun, 06 Nov 1994 08:49:36 GMT",
            &tag,
            Some(modified)
        ));
        assert!(!if_range_matches("yesterday", &tag, Some(modified)));
        assert!(none_match(&format!("\"x\", {tag}"), &tag));
        assert!(none_match("*", &tag));
        assert!(!none_match("\"x\"", &tag));
    }
}
