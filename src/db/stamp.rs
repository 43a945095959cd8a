//! Timestamps read back quickly. SQLite keeps a timestamp as text, and diesel reads it
//! by trying up to 18 chrono format strings, each parsed afresh for every value: on a
//! snapshot tree that was a twentieth of the server's time. Every timestamp snaptree
//! writes has one form (diesel's `%F %T%.f`, UTC without an offset), which [`Stamp`]
//! reads by hand, leaving anything else to diesel.
//!
//! A model field takes it with `#[diesel(deserialize_as = Stamp)]`; PostgreSQL's binary
//! timestamps go straight to diesel.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::pg::Pg;
use diesel::sql_types::Timestamp;
use diesel::sqlite::Sqlite;

/// A timestamp as read from either backend.
#[derive(Debug, Clone, Copy, diesel::deserialize::FromSqlRow)]
pub struct Stamp(NaiveDateTime);

impl From<Stamp> for NaiveDateTime {
    fn from(stamp: Stamp) -> Self {
        stamp.0
    }
}

impl FromSql<Timestamp, Sqlite> for Stamp {
    fn from_sql(mut value: <Sqlite as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        if let Some(read) = parse(value.read_text()) {
            return Ok(Self(read));
        }
        <NaiveDateTime as FromSql<Timestamp, Sqlite>>::from_sql(value).map(Self)
    }
}

impl FromSql<Timestamp, Pg> for Stamp {
    fn from_sql(value: <Pg as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        <NaiveDateTime as FromSql<Timestamp, Pg>>::from_sql(value).map(Self)
    }
}

/// `YYYY-MM-DD HH:MM:SS` with an optional fraction of up to nine digits; `None` for any
/// other form.
fn parse(text: &str) -> Option<NaiveDateTime> {
    let b = text.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let nanos = match &b[19..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            let n = digits(20..b.len())?;
            n * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(5..7)?, digits(8..10)?)?;
    date.and_hms_nano_opt(digits(11..13)?, digits(14..16)?, digits(17..19)?, nanos)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_what_diesel_writes() {
        for text in [
            "2026-12-01 22:00:49",
            "2026-12-01 22:00:49.5",
            "2026-12-01 22:00:49.123456",
            "2026-12-01 22:00:49.123456789",
            "1999-02-28 00:00:00.000001",
        ] {
            let expected = chrono::NaiveDateTime::parse_from_str(text, "%F %T%.f").unwrap();
            assert_eq!(parse(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn leaves_other_forms_to_diesel() {
        for text in [
            "2026-12-01T22:00:49",
            "2026-12-01 22:00:49Z",
            "2026-12-01 22:00:49+01:00",
            "2026-12-01 22:00",
            "2026-12-01 22:00:49.",
            "2026-12-01 22:00:49.1234567890",
            "2026-13-01 22:00:49",
            "2026-12-01 2a:00:49",
            "",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }
}
