//! The time the service goes by when it judges age and schedules: which snapshots are
//! stale, which policy runs are due. The system's clock, or, for tests that must move
//! time without waiting, a file that holds the time (RFC 3339) and that several
//! processes read alike. Rows keep their timestamps from `db::now()`; only judgements
//! of "how long ago" and "when next" go through here.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};

/// Where the time comes from. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system's clock.
    #[default]
    System,
    /// The time written in a file, read at every call; the system's while the file does
    /// not exist, and when it holds no time (logged).
    File(Arc<PathBuf>),
}

impl Clock {
    /// A clock that reads the time from `path`.
    pub fn file(path: PathBuf) -> Self {
        Self::File(Arc::new(path))
    }

    /// Now, in UTC.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Self::System => Utc::now(),
            Self::File(path) => match std::fs::read_to_string(path.as_path()) {
                Ok(text) => match DateTime::parse_from_rfc3339(text.trim()) {
                    Ok(at) => at.with_timezone(&Utc),
                    Err(err) => {
                        tracing::warn!(path = %path.display(), error = %err, "the clock file holds no RFC 3339 time; using the system's");
                        Utc::now()
                    }
                },
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Utc::now(),
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "cannot read the clock file; using the system's");
                    Utc::now()
                }
            },
        }
    }

    /// Now, as the database stores times (UTC, no zone).
    pub fn now_naive(&self) -> NaiveDateTime {
        self.now().naive_utc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_clock_reads_the_file_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("now");
        let clock = Clock::file(path.clone());
        let before = Utc::now();
        assert!(clock.now() >= before, "no file yet: the system's time");
        std::fs::write(&path, "2030-01-02T03:04:05Z\n").unwrap();
        assert_eq!(clock.now().to_rfc3339(), "2030-01-02T03:04:05+00:00");
        std::fs::write(&path, "2030-01-03T00:00:00+01:00").unwrap();
        assert_eq!(clock.now().to_rfc3339(), "2030-01-02T23:00:00+00:00");
        std::fs::write(&path, "yesterday").unwrap();
        assert!(clock.now() > "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
    }
}
