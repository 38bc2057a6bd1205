//! Quiet hours: windows of the day in which a class's jobs do not run.
//!
//! A class with `quiet = ["11:00-15:00"]` (read in its `timezone`, default
//! UTC; a window may cross midnight, `"22:00-02:00"`) is held to them in two
//! places:
//!
//! - **start**: the processor defers a job fetched inside a window to the
//!   window's end (the scheduled set, state `scheduled`, `deferred_by` says
//!   which window); it uses no retry and no worker slot while it waits;
//! - **run**: an attempt that is running when a window opens is asked to
//!   yield (`should-yield` answers `limit`); the processor then defers it to
//!   the window's end, and it resumes from its checkpoint. A job that does not
//!   checkpoint runs to its end.
//!
//! The worker's clock decides (nodes are expected to keep NTP time). Local
//! times that do not exist (a daylight-saving gap) are read an hour later;
//! repeated ones (the hour that falls back), at their first occurrence.

use chrono::{DateTime, Days, NaiveDateTime, TimeZone, Utc};

use crate::config::{Quiet, Window};

/// The day's length in seconds.
const DAY: i64 = 24 * 3600;

impl Quiet {
    /// The window `now_ms` (ms since the epoch) is inside, and when it closes.
    pub fn window_at(&self, now_ms: u64) -> Option<(Window, u64)> {
        self.occurrences(now_ms)
            .filter(|(_, start, end)| *start <= now_ms && now_ms < *end)
            .map(|(w, _, end)| (w, end))
            .min_by_key(|(_, end)| *end)
    }

    /// When the next window opens, strictly after `now_ms`.
    pub fn next_open(&self, now_ms: u64) -> Option<u64> {
        self.occurrences(now_ms)
            .map(|(_, start, _)| start)
            .filter(|start| *start > now_ms)
            .min()
    }

    /// Whether a window was open at any time from `from_ms` to `to_ms`.
    pub fn overlaps(&self, from_ms: u64, to_ms: u64) -> bool {
        self.window_at(from_ms).is_some() || self.next_open(from_ms).is_some_and(|t| t <= to_ms)
    }

    /// Each window on the days around `now_ms`: (window, opens, closes), ms.
    fn occurrences(&self, now_ms: u64) -> impl Iterator<Item = (Window, u64, u64)> + '_ {
        let tz: Option<chrono_tz::Tz> = self.timezone.parse().ok();
        let today = i64::try_from(now_ms)
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .zip(tz)
            .map(|(now, tz)| tz.from_utc_datetime(&now.naive_utc()).date_naive());
        let days = today.into_iter().flat_map(|d| {
            [
                d.checked_sub_days(Days::new(1)),
                Some(d),
                d.checked_add_days(Days::new(1)),
                d.checked_add_days(Days::new(2)),
            ]
            .into_iter()
            .flatten()
        });
        days.flat_map(move |day| {
            let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
            self.windows.iter().filter_map(move |w| {
                let end_secs = if w.end > w.start {
                    i64::from(w.end)
                } else {
                    i64::from(w.end) + DAY
                };
                let at = |secs: i64| midnight + chrono::Duration::seconds(secs);
                let start = to_utc_ms(tz?, at(i64::from(w.start)))?;
                let end = to_utc_ms(tz?, at(end_secs))?;
                Some((*w, start, end))
            })
        })
    }
}

/// A local time in `tz` as ms since the epoch: a time in a gap is read an
/// hour later, a repeated one at its first occurrence.
fn to_utc_ms(tz: chrono_tz::Tz, local: NaiveDateTime) -> Option<u64> {
    let at = tz.from_local_datetime(&local).earliest().or_else(|| {
        tz.from_local_datetime(&(local + chrono::Duration::hours(1)))
            .earliest()
    })?;
    u64::try_from(at.with_timezone(&Utc).timestamp_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-22T10:17:30Z, a Sunday.
    const NOW: u64 = 1_795_342_650_000;
    const H: u64 = 3_600_000;
    const M: u64 = 60_000;

    fn quiet(windows: &[&str], tz: &str) -> Quiet {
        let w: Vec<String> = windows.iter().map(|w| w.to_string()).collect();
        Quiet::new(&w, tz).unwrap()
    }

    #[test]
    fn inside_a_window_until_it_closes() {
        let q = quiet(&["10:00-11:00"], "UTC");
        let midnight = NOW - (10 * H + 17 * M + 30_000);
        let (w, end) = q.window_at(NOW).unwrap();
        assert_eq!(w.to_string(), "10:00-11:00");
        assert_eq!(end, midnight + 11 * H);
        // Closed at 11:00 sharp; open again tomorrow at 10:00.
        assert!(q.window_at(midnight + 11 * H).is_none());
        assert!(q.overlaps(midnight + 9 * H, midnight + 10 * H));
        assert!(q.overlaps(midnight + 10 * H + M, midnight + 10 * H + 2 * M));
        assert!(!q.overlaps(midnight + 11 * H, midnight + 12 * H));
        assert_eq!(q.next_open(NOW), Some(midnight + 34 * H));
        assert_eq!(q.next_open(midnight + 9 * H), Some(midnight + 10 * H));
    }

    #[test]
    fn windows_cross_midnight_and_read_their_time_zone() {
        // 10:17:30Z is 16:02:30 in Kathmandu (+05:45).
        let q = quiet(&["16:00-16:05"], "Asia/Kathmandu");
        let (_, end) = q.window_at(NOW).unwrap();
        assert_eq!(end, NOW + 2 * M + 30_000);
        let night = quiet(&["22:00-02:00"], "UTC");
        let midnight = NOW - (10 * H + 17 * M + 30_000);
        assert!(night.window_at(NOW).is_none());
        let (_, end) = night.window_at(midnight + H).unwrap();
        assert_eq!(end, midnight + 2 * H);
        let (_, end) = night.window_at(midnight + 23 * H).unwrap();
        assert_eq!(end, midnight + 26 * H);
        // To the second.
        let s = quiet(&["10:17:29-10:17:31"], "UTC");
        assert_eq!(s.window_at(NOW).unwrap().1, NOW + 1_000);
        assert!(s.window_at(NOW + 1_000).is_none());
    }

    #[test]
    fn daylight_saving_days() {
        // Paris springs forward on 2026-03-29 at 02:00 (to 03:00): a window
        // 02:00-04:00 that day opens at 03:00 local (01:00Z), an hour short.
        let q = quiet(&["02:00-04:00"], "Europe/Paris");
        let before = 1_774_738_800_000; // 2026-03-28T23:00:00Z, Paris midnight
        let opens = q.next_open(before).unwrap();
        assert_eq!(opens, before + 2 * H); // 01:00Z = 03:00 CEST
        let (_, end) = q.window_at(opens).unwrap();
        assert_eq!(end, before + 3 * H); // 04:00 CEST = 02:00Z
    }

    #[test]
    fn bad_windows_are_refused() {
        for (w, why) in [
            (vec!["11-15"], "not a window"),
            (vec!["11:00-15:60"], "out of range"),
            (vec!["25:00-26:00"], "out of range"),
            (vec!["11:00-11:00"], "empty or the whole day"),
            (vec!["11:00-15:00", "14:00-16:00"], "overlap"),
            (vec!["22:00-02:00", "01:00-03:00"], "overlap"),
        ] {
            let w: Vec<String> = w.iter().map(|s| s.to_string()).collect();
            let err = Quiet::new(&w, "UTC").unwrap_err();
            assert!(err.contains(why), "{w:?}: {err}");
        }
        assert!(
            Quiet::new(&["11:00-15:00".into()], "Mars/Olympus")
                .unwrap_err()
                .contains("time zone")
        );
        assert!(Quiet::new(&["11:00-15:00".into(), "15:00-24:00".into()], "UTC").is_ok());
    }
}
