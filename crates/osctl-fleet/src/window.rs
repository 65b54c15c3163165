//! Maintenance windows: when a rollout may reboot nodes.
//!
//! A window is wall-clock time in its own time zone: days of the week, a
//! start and an end `HH:MM`. The model is civil time, as an admin reads a
//! calendar: "Sat 02:00–05:00 Europe/Berlin" is open whenever the clock on a
//! wall in Berlin shows a Saturday between 02:00 and 05:00, whatever the UTC
//! offset that day. An end before the start crosses midnight, and the day
//! named is the day the window opens (`Sat 23:00–02:00` runs into Sunday).
//! Across a DST change the window is as long as the wall clock says: a
//! start in the skipped hour opens at the first instant after it, the repeated
//! hour is read twice (a window from 02:30 is open from each 02:30).
//!
//! No windows at all means always open.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ZonedDateTime};

use crate::spec::RawWindow;

/// How many days ahead [`next_opening`] looks: a week covers every day of
/// every window, one more covers a window lost in a DST gap.
const LOOKAHEAD_DAYS: i64 = 15;

const DAYS: [(&str, Weekday); 7] = [
    ("Mon", Weekday::Monday),
    ("Tue", Weekday::Tuesday),
    ("Wed", Weekday::Wednesday),
    ("Thu", Weekday::Thursday),
    ("Fri", Weekday::Friday),
    ("Sat", Weekday::Saturday),
    ("Sun", Weekday::Sunday),
];

/// One maintenance window (validated by the spec parser).
#[derive(Debug, Clone)]
pub struct Window {
    days: Vec<Weekday>,
    start: Time,
    end: Time,
    zone_name: String,
    zone: TimeZone,
}

impl PartialEq for Window {
    /// Two windows are equal when written the same: the zone by its name.
    fn eq(&self, other: &Window) -> bool {
        self.days == other.days
            && self.start == other.start
            && self.end == other.end
            && self.zone_name == other.zone_name
    }
}

/// `Mon`..`Sun`.
pub fn parse_day(text: &str) -> Option<Weekday> {
    DAYS.iter().find(|(n, _)| *n == text).map(|(_, d)| *d)
}

/// The short name of a day (`Sat`).
pub fn day_name(day: Weekday) -> &'static str {
    DAYS.iter()
        .find(|(_, d)| *d == day)
        .map(|(n, _)| *n)
        .expect("DAYS names all seven days")
}

/// `HH:MM`, 00:00 to 23:59, two digits each.
pub fn parse_hhmm(text: &str) -> Option<Time> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    Time::new(h, m, 0, 0).ok()
}

impl Window {
    pub(crate) fn new(
        days: Vec<Weekday>,
        start: Time,
        end: Time,
        zone_name: String,
        zone: TimeZone,
    ) -> Window {
        Window {
            days,
            start,
            end,
            zone_name,
            zone,
        }
    }

    pub(crate) fn to_raw(&self) -> RawWindow {
        RawWindow {
            days: self.days.iter().map(|d| day_name(*d).to_string()).collect(),
            start: hhmm(self.start),
            end: hhmm(self.end),
            time_zone: self.zone_name.clone(),
        }
    }

    pub fn days(&self) -> &[Weekday] {
        &self.days
    }
    pub fn start(&self) -> Time {
        self.start
    }
    pub fn end(&self) -> Time {
        self.end
    }
    /// The IANA name the window was written with.
    pub fn time_zone(&self) -> &str {
        &self.zone_name
    }

    /// Whether the window is open at `now`.
    pub fn contains(&self, now: Timestamp) -> bool {
        let local = now.to_zoned_datetime(self.zone.clone());
        let (date, time) = (local.date(), local.time());
        if self.start < self.end {
            return self.opens_on(date) && self.start <= time && time < self.end;
        }
        // Crosses midnight: the evening part belongs to today's window, the
        // morning part to yesterday's.
        (time >= self.start && self.opens_on(date))
            || (time < self.end && date.yesterday().is_ok_and(|y| self.opens_on(y)))
    }

    fn opens_on(&self, date: Date) -> bool {
        self.days.contains(&date.weekday())
    }

    /// The instant the window opens on `date`: its start on the wall
    /// clock; the first of the two when the start is repeated (autumn), the
    /// end of the gap when the start is skipped (spring).
    fn opening_on(&self, date: Date) -> Option<Timestamp> {
        let amb = self
            .zone
            .to_ambiguous_timestamp(date.to_datetime(self.start));
        let earlier = amb.earlier().ok()?;
        match amb.offset() {
            AmbiguousOffset::Gap { .. } => {
                self.zone.following(earlier).next().map(|t| t.timestamp())
            }
            _ => Some(earlier),
        }
    }

    /// The first instant after `now` at which this window opens.
    fn next_start(&self, now: Timestamp) -> Option<ZonedDateTime> {
        let today = now.to_zoned_datetime(self.zone.clone()).date();
        (0..LOOKAHEAD_DAYS)
            .filter_map(|n| today.checked_add(jiff::Span::new().days(n)).ok())
            .filter(|d| self.opens_on(*d))
            .filter_map(|d| self.opening_on(d))
            .map(|t| t.to_zoned_datetime(self.zone.clone()))
            .find(|z| z.timestamp() > now && self.contains(z.timestamp()))
    }
}

/// Whether reboots are allowed at `now`: inside any window, or always when
/// there are none.
pub fn contains(windows: &[Window], now: Timestamp) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(now))
}

/// When the next window opens, in that window's zone; `None` when one is
/// open at `now` (or there are none): there is nothing to wait for.
pub fn next_opening(windows: &[Window], now: Timestamp) -> Option<ZonedDateTime> {
    if contains(windows, now) {
        return None;
    }
    windows
        .iter()
        .filter_map(|w| w.next_start(now))
        .min_by_key(|z| z.timestamp())
}

/// How status names an opening: `Sat 02:00 Europe/Berlin`.
pub fn describe_opening(at: &ZonedDateTime) -> String {
    let zone = at.time_zone().iana_name().unwrap_or("UTC");
    format!("{} {} {zone}", day_name(at.weekday()), hhmm(at.time()))
}

fn hhmm(t: Time) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Rollout;

    fn windows(yaml_windows: &str) -> Vec<Window> {
        let doc = format!(
            "apiVersion: osctl.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: w}}\nspec:\n  image: r.example/os:v2\n  selector: {{matchLabels: {{pool: web}}}}\n  maxUnavailable: 1\n  windows:\n{yaml_windows}"
        );
        Rollout::parse(&doc).expect("test spec parses").spec.windows
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("test timestamp")
    }

    #[test]
    fn contains_table() {
        let sat_night = windows(
            "  - {days: [Sat, Sun], start: \"02:00\", end: \"05:00\", timeZone: Europe/Berlin}\n",
        );
        let cross = windows("  - {days: [Fri], start: \"23:00\", end: \"01:30\", timeZone: UTC}\n");
        // 2026-12-05 is a Saturday; Berlin is UTC+1 in December.
        let cases: &[(&[Window], &str, bool)] = &[
            (&[], "2026-12-07T10:00:00Z", true),
            (&sat_night, "2026-12-05T01:00:00Z", true), // Sat 02:00 Berlin
            (&sat_night, "2026-12-05T00:59:59Z", false), // Sat 01:59:59
            (&sat_night, "2026-12-05T03:59:59Z", true), // Sat 04:59:59
            (&sat_night, "2026-12-05T04:00:00Z", false), // Sat 05:00: end is exclusive
            (&sat_night, "2026-12-06T02:00:00Z", true), // Sun 03:00
            (&sat_night, "2026-12-07T02:00:00Z", false), // Mon 03:00
            (&cross, "2026-12-04T23:30:00Z", true),     // Fri 23:30
            (&cross, "2026-12-05T01:00:00Z", true),     // Sat 01:00, Friday's window
            (&cross, "2026-12-05T01:30:00Z", false),    // Sat 01:30
            (&cross, "2026-12-05T23:30:00Z", false),    // Sat 23:30: not a Friday
            (&cross, "2026-12-04T01:00:00Z", false),    // Fri 01:00: Thursday's would-be window
        ];
        for (i, (w, now, want)) in cases.iter().enumerate() {
            assert_eq!(contains(w, ts(now)), *want, "case {i}: {now}");
        }
    }

    #[test]
    fn next_opening_names_day_time_and_zone() {
        let w = windows(
            "  - {days: [Sat, Sun], start: \"02:00\", end: \"05:00\", timeZone: Europe/Berlin}\n  - {days: [Wed], start: \"12:00\", end: \"13:00\", timeZone: UTC}\n",
        );
        let cases = [
            ("2026-12-07T10:00:00Z", Some("Wed 12:00 UTC")), // Monday
            ("2026-12-09T13:00:00Z", Some("Sat 02:00 Europe/Berlin")), // Wed after its window
            ("2026-12-05T02:00:00Z", None),                  // open
            ("2026-12-05T04:00:00Z", Some("Sun 02:00 Europe/Berlin")),
        ];
        for (now, want) in cases {
            let got = next_opening(&w, ts(now)).map(|z| describe_opening(&z));
            assert_eq!(got.as_deref(), want, "{now}");
        }
        assert_eq!(next_opening(&[], ts("2026-12-07T10:00:00Z")), None);
    }

    #[test]
    fn dst_change_in_berlin() {
        // 2026-03-29 (Sunday): 02:00 CET jumps to 03:00 CEST.
        // 2026-10-25 (Sunday): 03:00 CEST falls back to 02:00 CET.
        let w = windows(
            "  - {days: [Sun], start: \"02:30\", end: \"04:00\", timeZone: Europe/Berlin}\n",
        );
        // Spring: 02:30 does not exist; the window opens when the clock
        // jumps, 03:00 CEST = 01:00Z, and ends at 04:00 CEST = 02:00Z.
        let open = next_opening(&w, ts("2026-03-28T12:00:00Z")).expect("closed on Saturday");
        assert_eq!(open.timestamp(), ts("2026-03-29T01:00:00Z"));
        assert_eq!(describe_opening(&open), "Sun 03:00 Europe/Berlin");
        assert!(!contains(&w, ts("2026-03-29T00:59:59Z"))); // 01:59:59 CET
        assert!(contains(&w, ts("2026-03-29T01:00:00Z"))); // 03:00 CEST
        assert!(!contains(&w, ts("2026-03-29T02:00:00Z"))); // 04:00 CEST
        // Autumn: 02:00-03:00 happens twice; on the wall clock the window is
        // open from the first 02:30, closed for the repeated 02:00-02:30,
        // open again from the second 02:30 until 04:00 CET = 03:00Z.
        let open = next_opening(&w, ts("2026-10-24T12:00:00Z")).expect("closed on Saturday");
        assert_eq!(open.timestamp(), ts("2026-10-25T00:30:00Z")); // 02:30 CEST
        assert!(contains(&w, ts("2026-10-25T00:45:00Z"))); // 02:45 CEST
        assert!(!contains(&w, ts("2026-10-25T01:15:00Z"))); // 02:15 CET (repeat)
        assert!(contains(&w, ts("2026-10-25T01:45:00Z"))); // 02:45 CET (repeat)
        assert!(contains(&w, ts("2026-10-25T02:59:59Z"))); // 03:59:59 CET
        assert!(!contains(&w, ts("2026-10-25T03:00:00Z"))); // 04:00 CET
    }
}
