//! Periodic schedules: 6-field cron specs with seconds (`sec min hour dom month
//! dow`, as the `cron` crate parses them), and the missed-run policy.
//!
//! Missed fire times (the server was down, or busy): by default only the latest
//! missed one runs, once; older ones are skipped (`MissedRuns::Latest`). With
//! `MissedRuns::Skip` none of them runs and the schedule resumes at the next fire
//! time after now.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};

/// A parsed cron spec.
#[derive(Debug, Clone)]
pub struct CronSpec {
    schedule: cron::Schedule,
}

/// What to do with fire times missed while the server was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedRuns {
    /// Run the latest missed fire time once; skip older ones.
    #[default]
    Latest,
    /// Run none; resume at the next fire time.
    Skip,
}

/// Iterations spent looking for the latest missed fire time (an every-second
/// schedule down for a day has 86,400).
const MAX_SCAN: usize = 1_000_000;

impl CronSpec {
    /// Parse `spec`; the error says what is wrong. Never panics, whatever the input.
    pub fn parse(spec: &str) -> Result<CronSpec, String> {
        let fields = spec.split_whitespace().count();
        if fields != 6 {
            return Err(format!(
                "cron spec {spec:?} has {fields} fields; it needs 6: second minute hour day-of-month month day-of-week"
            ));
        }
        if spec.len() > 256 {
            return Err("cron spec is longer than 256 characters".into());
        }
        // The parser has panicked on some inputs in the past (e.g. zero steps):
        // a client's string must never take the server down.
        let parsed = std::panic::catch_unwind(|| cron::Schedule::from_str(spec));
        let schedule = match parsed {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("cron spec {spec:?} is invalid: {e}")),
            Err(_) => return Err(format!("cron spec {spec:?} is invalid")),
        };
        let spec = CronSpec { schedule };
        if spec.next_after(crate::job::now_ms()).is_none() {
            return Err(format!(
                "cron spec {spec:?} never fires",
                spec = spec.schedule.to_string()
            ));
        }
        Ok(spec)
    }

    /// The first fire time strictly after `ms` (unix milliseconds).
    pub fn next_after(&self, ms: u64) -> Option<u64> {
        let after = to_datetime(ms)?;
        self.schedule.after(&after).next().map(to_ms)
    }

    /// For a schedule due at `due` and handled at `now`: the fire time to run (if
    /// any) and the next fire time after `now`.
    pub fn fire(&self, due: u64, now: u64, policy: MissedRuns) -> (Option<u64>, Option<u64>) {
        let next = self.next_after(now);
        if due > now {
            return (None, Some(due));
        }
        let fire = match policy {
            MissedRuns::Skip if now.saturating_sub(due) > 1000 => None,
            _ => {
                let mut latest = due;
                let mut iter = match to_datetime(due) {
                    Some(d) => self.schedule.after(&d),
                    None => return (Some(due), next),
                };
                for _ in 0..MAX_SCAN {
                    match iter.next().map(to_ms) {
                        Some(t) if t <= now => latest = t,
                        _ => break,
                    }
                }
                Some(latest)
            }
        };
        (fire, next)
    }
}

fn to_datetime(ms: u64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(i64::try_from(ms).ok()?).single()
}

fn to_ms(d: DateTime<Utc>) -> u64 {
    u64::try_from(d.timestamp_millis()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_specs_without_panicking() {
        for bad in [
            "*/0 * * * * *",
            "1/0 * * * * *",
            "* * * * *",
            "junk",
            "",
            "61 * * * * *",
            "* * * * * * * *",
            "0 0 0 31 2 *",
        ] {
            let err = CronSpec::parse(bad).expect_err(bad);
            assert!(err.contains("cron spec"), "{bad}: {err}");
        }
        assert!(CronSpec::parse("*/5 * * * * *").is_ok());
        assert!(CronSpec::parse("0 30 9 * * Mon-Fri").is_ok());
    }

    #[test]
    fn next_fire_times() {
        let every5 = CronSpec::parse("*/5 * * * * *").unwrap();
        assert_eq!(every5.next_after(1_000), Some(5_000));
        assert_eq!(every5.next_after(5_000), Some(10_000));
    }

    /// Property: for random specs built from cron's alphabet (valid and hostile
    /// atoms, any field count), parsing never panics; for any accepted spec the next
    /// fire time is strictly after the given time, and the fire decision never runs
    /// a time after `now` nor schedules the next one at or before it.
    #[test]
    fn random_specs_never_panic_and_next_is_strictly_later() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let valid = ["*", "*", "*", "1", "5", "*/7", "1-5", "1,2"];
        let hostile = [
            "0",
            "59",
            "60",
            "*/0",
            "1/0",
            "5-1",
            "MON",
            "Jan",
            "?",
            "L",
            "#",
            "-1",
            "99999999999",
            "",
        ];
        let mut accepted = 0;
        for _ in 0..20_000 {
            let fields = if rng.bool() { 6 } else { rng.usize(0..=9) };
            let spec: Vec<&str> = (0..fields)
                .map(|_| match rng.u8(..10) {
                    0..=7 => valid[rng.usize(..valid.len())],
                    _ => hostile[rng.usize(..hostile.len())],
                })
                .collect();
            let spec = spec.join(" ");
            let Ok(cron) = CronSpec::parse(&spec) else {
                continue;
            };
            accepted += 1;
            let t = rng.u64(0..4_000_000_000_000);
            if let Some(next) = cron.next_after(t) {
                assert!(next > t, "{spec}: {next} <= {t}");
                let now = next + rng.u64(0..100_000);
                let (fire, after) = cron.fire(next, now, MissedRuns::Latest);
                assert!(fire.is_some_and(|f| f >= next && f <= now), "{spec}");
                assert!(after.is_none_or(|a| a > now), "{spec}");
            }
        }
        assert!(
            accepted > 500,
            "the generator should produce valid specs too ({accepted})"
        );
    }

    #[test]
    fn missed_runs_policy() {
        let every5 = CronSpec::parse("*/5 * * * * *").unwrap();
        // On time: that fire time runs.
        assert_eq!(
            every5.fire(10_000, 10_200, MissedRuns::Latest),
            (Some(10_000), Some(15_000))
        );
        // Down from 10 s to 62 s: only the latest missed one (60 s) runs.
        assert_eq!(
            every5.fire(10_000, 62_000, MissedRuns::Latest),
            (Some(60_000), Some(65_000))
        );
        assert_eq!(
            every5.fire(10_000, 62_000, MissedRuns::Skip),
            (None, Some(65_000))
        );
        // Not due yet.
        assert_eq!(
            every5.fire(70_000, 62_000, MissedRuns::Latest),
            (None, Some(70_000))
        );
    }
}
