//! CronJob schedules as Kubernetes reads them: the standard five fields (minute,
//! hour, day of month, month, day of week) with lists, ranges, steps, `?` and month
//! and weekday names, or a descriptor (@hourly, @daily, @midnight, @weekly, @monthly,
//! @yearly, @annually); when both day fields are restricted a day matches either (as
//! Vixie cron and kube's parser), Sunday is 0 (or 7); times are in the CronJob's time
//! zone (IANA names), local clock times a DST jump skips are not run, repeated ones
//! run once.
//!
//! Written here because the cron crates at hand differ where it matters: jiff-cron
//! and cron use Quartz's fields (seconds first, Sunday = 1, both day fields must
//! match), and croner is built on chrono while berth's times are jiff's.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A schedule that does not parse, or a time zone that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The schedule is malformed (the message says where).
    #[error("{0}")]
    Schedule(String),
    /// The time zone is not an IANA name this host knows.
    #[error("unknown time zone {0}")]
    TimeZone(String),
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether the day-of-month or day-of-week field was `*` (then the other decides).
    any_day: bool,
    any_weekday: bool,
    tz: TimeZone,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Parses one field into a bit set of the values in `lo..=hi`; `names` spell values
/// from `name_base`. Returns the bits and whether the field was `*` or `?`.
fn field(
    spec: &str,
    what: &str,
    lo: u32,
    hi: u32,
    names: &[&str],
    name_base: u32,
) -> Result<(u64, bool), Error> {
    let bad = |why: String| Error::Schedule(format!("{what} field {spec:?}: {why}"));
    let value = |s: &str| -> Result<u32, Error> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + name_base);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| bad(format!("{s:?} is not a number")))?;
        if v < lo || v > hi {
            return Err(bad(format!("{v} is outside {lo}-{hi}")));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    let mut star = false;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s
                    .parse()
                    .map_err(|_| bad(format!("step {s:?} is not a number")))?;
                if s == 0 {
                    return Err(bad("a step of 0".into()));
                }
                (r, Some(s))
            }
            None => (part, None),
        };
        let (a, b) = match range {
            "*" | "?" => {
                star = step.is_none() && spec.split(',').count() == 1;
                (lo, hi)
            }
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // "5/15" runs from 5 to the end.
                None if step.is_some() => (value(r)?, hi),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if a > b {
            return Err(bad(format!("range {a}-{b} goes backwards")));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step.unwrap_or(1);
        }
    }
    Ok((bits, star))
}

impl Schedule {
    /// Parses `spec` in the time zone `tz` (UTC when None).
    pub fn parse(spec: &str, tz: Option<&str>) -> Result<Schedule, Error> {
        let spec = spec.trim();
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            return Err(Error::Schedule(
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into(),
            ));
        }
        let tz = match tz {
            None | Some("") => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| Error::TimeZone(name.into()))?,
        };
        let expanded = match spec.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".into(),
            "@weekly" => "0 0 * * 0".into(),
            "@daily" | "@midnight" => "0 0 * * *".into(),
            "@hourly" => "0 * * * *".into(),
            s if s.starts_with('@') => {
                return Err(Error::Schedule(format!("unrecognized descriptor: {spec}")));
            }
            _ => spec.to_string(),
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(Error::Schedule(format!(
                "expected exactly 5 fields (minute hour day-of-month month day-of-week), found {}: {spec:?}",
                f.len()
            )));
        }
        let (minutes, _) = field(f[0], "minute", 0, 59, &[], 0)?;
        let (hours, _) = field(f[1], "hour", 0, 23, &[], 0)?;
        let (days, any_day) = field(f[2], "day-of-month", 1, 31, &[], 0)?;
        let (months, _) = field(f[3], "month", 1, 12, &MONTHS, 1)?;
        let (mut weekdays, any_weekday) = field(f[4], "day-of-week", 0, 7, &WEEKDAYS, 0)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        Ok(Schedule {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            any_day,
            any_weekday,
            tz,
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        if self.any_day || self.any_weekday {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time the schedule fires strictly after `after` (None if never within
    /// five years, as for February 30th).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let local = self.tz.to_datetime(after);
        // The next whole minute.
        let mut t = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = t.checked_add(5.years()).ok()?;
        while t < limit {
            if self.months & (1 << t.month()) == 0 {
                t = first_of_next_month(t)?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t
                    .date()
                    .tomorrow()
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            // A local time the clocks skip does not exist; one they repeat runs once,
            // at its first occurrence.
            let z = self.tz.to_ambiguous_zoned(t);
            if let Ok(z) = z.earlier() {
                if z.datetime() == t && z.timestamp() > after {
                    return Some(z.timestamp());
                }
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }

    /// The schedule's time zone.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }
}

fn first_of_next_month(t: DateTime) -> Option<DateTime> {
    let first = t.date().first_of_month().checked_add(1.month()).ok()?;
    Some(first.to_datetime(jiff::civil::Time::midnight()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, tz: Option<&str>, after: &str) -> String {
        Schedule::parse(spec, tz)
            .unwrap()
            .next_after(at(after))
            .unwrap()
            .to_string()
    }

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        assert_eq!(
            next("*/15 * * * *", None, "2026-03-01T10:07:30Z"),
            "2026-03-01T10:15:00Z"
        );
        assert_eq!(
            next("5 4 * * *", None, "2026-03-01T04:05:00Z"),
            "2026-03-02T04:05:00Z"
        );
        assert_eq!(
            next("0 9-17/4 * * mon-fri", None, "2026-03-06T18:00:00Z"),
            "2026-03-09T09:00:00Z"
        );
        assert_eq!(
            next("30 0 1 jan,jul *", None, "2026-02-01T00:00:00Z"),
            "2026-07-01T00:30:00Z"
        );
        assert_eq!(
            next("@hourly", None, "2026-03-01T10:00:00Z"),
            "2026-03-01T11:00:00Z"
        );
        assert_eq!(
            next("0 0 * * 7", None, "2026-03-02T00:00:00Z"),
            "2026-03-08T00:00:00Z"
        );
        assert_eq!(
            next("5/20 * * * ?", None, "2026-03-01T10:26:00Z"),
            "2026-03-01T10:45:00Z"
        );
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 13th, or any Friday: 2026-03-06 is a Friday, before the 13th.
        assert_eq!(
            next("0 0 13 * 5", None, "2026-03-01T00:00:00Z"),
            "2026-03-06T00:00:00Z"
        );
        // Day of week `*`: only the 13th.
        assert_eq!(
            next("0 0 13 * *", None, "2026-03-01T00:00:00Z"),
            "2026-03-13T00:00:00Z"
        );
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        // 09:00 in New York is 13:00 UTC in summer, 14:00 in winter.
        assert_eq!(
            next(
                "0 9 * * *",
                Some("America/New_York"),
                "2026-07-01T00:00:00Z"
            ),
            "2026-07-01T13:00:00Z"
        );
        assert_eq!(
            next(
                "0 9 * * *",
                Some("America/New_York"),
                "2026-01-01T00:00:00Z"
            ),
            "2026-01-01T14:00:00Z"
        );
        // 02:30 does not exist on 2026-03-08 in New York: the next run is a day later.
        assert_eq!(
            next(
                "30 2 * * *",
                Some("America/New_York"),
                "2026-03-08T05:00:00Z"
            ),
            "2026-03-09T06:30:00Z"
        );
    }

    #[test]
    fn bad_schedules_and_zones_say_what_is_wrong() {
        let err = |s: &str, tz: Option<&str>| Schedule::parse(s, tz).unwrap_err().to_string();
        assert_eq!(err("* * * *", None), "expected exactly 5 fields (minute hour day-of-month month day-of-week), found 4: \"* * * *\"");
        assert_eq!(
            err("61 * * * *", None),
            "minute field \"61\": 61 is outside 0-59"
        );
        assert_eq!(
            err("* * * foo *", None),
            "month field \"foo\": \"foo\" is not a number"
        );
        assert_eq!(
            err("*/0 * * * *", None),
            "minute field \"*/0\": a step of 0"
        );
        assert_eq!(
            err("@fortnightly", None),
            "unrecognized descriptor: @fortnightly"
        );
        assert_eq!(
            err("TZ=UTC * * * * *", None),
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
        );
        assert_eq!(
            err("* * * * *", Some("Mars/Olympus")),
            "unknown time zone Mars/Olympus"
        );
        assert!(Schedule::parse("0 0 30 2 *", None)
            .unwrap()
            .next_after(at("2026-01-01T00:00:00Z"))
            .is_none());
    }
}
