//! Refresh schedules: what `WITH (refresh = ...)` and `ALTER <kind> x SET (refresh = ...)` accept,
//! when a schedule comes due, and where the registry keeps it.
//!
//! A schedule is a registry row of its own (kind [`KIND_SCHEDULE`], named like its object), so
//! every server on the warehouse sees it and it survives restarts; it is recorded in the same
//! commit as the object's `CREATE` and dropped with the object. The forms:
//! - `manual` (the default): only `REFRESH` and `flywheel refresh` refresh it;
//! - `every <n> seconds|minutes|hours|days`: at every multiple of the interval since the Unix
//!   epoch (UTC), so all servers agree on the ticks;
//! - `cron: <pattern>`: a 5-field (or 6-field, with seconds) cron pattern in UTC, evaluated by
//!   the `croner` crate;
//! - `on change`: soon after an input commits (the scheduler polls the inputs' Delta logs).
//!
//! `ALTER ... SUSPEND` keeps the schedule but stops it firing; `RESUME` starts it again from the
//! next tick (ticks missed while suspended are not caught up).

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use flywheel_catalog::Change;
use serde::{Deserialize, Serialize};

use super::Engine;
use crate::{Error, Result};

/// Registry kind of refresh schedules (named like the object they refresh).
pub(crate) const KIND_SCHEDULE: &str = "refresh_schedule";

/// The forms a schedule takes, for error messages.
pub(crate) const ACCEPTED: &str = "'manual', 'on change', 'every <n> seconds|minutes|hours|days' \
     (e.g. 'every 30 seconds', 'every 15 minutes', 'every 6 hours') or 'cron: <pattern>' (5 \
     fields, or 6 with seconds, in UTC, e.g. 'cron: */15 * * * *')";

/// When an object is refreshed by itself.
#[derive(Debug, Clone)]
pub enum Schedule {
    Manual,
    OnChange,
    /// At every multiple of this many seconds since the epoch.
    Every(u64),
    Cron {
        pattern: String,
        cron: Box<croner::Cron>,
    },
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

impl Schedule {
    /// Parses a schedule; the error lists the accepted forms.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let trimmed = text.trim();
        let lower = trimmed.to_ascii_lowercase();
        let refused = |why: String| format!("{why}; a refresh schedule is one of {ACCEPTED}");
        if lower == "manual" {
            return Ok(Schedule::Manual);
        }
        if lower == "on change" {
            return Ok(Schedule::OnChange);
        }
        if let Some(pattern) = lower.strip_prefix("cron:") {
            let pattern = pattern.trim().to_string();
            let cron = croner::Cron::from_str(&pattern)
                .map_err(|e| refused(format!("cron pattern `{pattern}` is invalid ({e})")))?;
            return Ok(Schedule::Cron {
                pattern,
                cron: Box::new(cron),
            });
        }
        if let Some(rest) = lower.strip_prefix("every ") {
            let mut words = rest.split_whitespace();
            let (Some(count), Some(unit), None) = (words.next(), words.next(), words.next()) else {
                return Err(refused(format!("`{trimmed}` is not a schedule")));
            };
            let count: u64 = count
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| refused(format!("`{count}` is not a positive whole number")))?;
            let unit_seconds = match unit.trim_end_matches('s') {
                "second" | "sec" => 1,
                "minute" | "min" => 60,
                "hour" => 3600,
                "day" => 86_400,
                _ => return Err(refused(format!("`{unit}` is not a unit of time"))),
            };
            let seconds = count
                .checked_mul(unit_seconds)
                .filter(|s| *s <= 366 * 86_400)
                .ok_or_else(|| refused(format!("`{trimmed}` is longer than a year")))?;
            return Ok(Schedule::Every(seconds));
        }
        Err(refused(format!("`{trimmed}` is not a schedule")))
    }

    /// The schedule as stored and shown (`every 30 seconds`, `cron: */15 * * * *`).
    pub fn text(&self) -> String {
        match self {
            Schedule::Manual => "manual".into(),
            Schedule::OnChange => "on change".into(),
            Schedule::Every(s) => {
                let (n, unit) = match *s {
                    s if s % 86_400 == 0 => (s / 86_400, "day"),
                    s if s % 3600 == 0 => (s / 3600, "hour"),
                    s if s % 60 == 0 => (s / 60, "minute"),
                    s => (s, "second"),
                };
                format!("every {n} {unit}{}", if n == 1 { "" } else { "s" })
            }
            Schedule::Cron { pattern, .. } => format!("cron: {pattern}"),
        }
    }

    /// Whether it fires at times of its own (`every`, `cron`).
    pub fn is_timed(&self) -> bool {
        matches!(self, Schedule::Every(_) | Schedule::Cron { .. })
    }

    /// The latest tick at or before `now` (timed schedules only).
    pub fn latest_tick(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(s) => {
                let s = i64::try_from(*s).ok()?;
                let t = now.timestamp().div_euclid(s) * s;
                Utc.timestamp_opt(t, 0).single()
            }
            Schedule::Cron { cron, .. } => cron.find_previous_occurrence(&now, true).ok(),
            Schedule::Manual | Schedule::OnChange => None,
        }
    }

    /// The first tick after `after` (timed schedules only).
    pub fn next_tick(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(s) => {
                let s = i64::try_from(*s).ok()?;
                let t = (after.timestamp().div_euclid(s) + 1) * s;
                Utc.timestamp_opt(t, 0).single()
            }
            Schedule::Cron { cron, .. } => cron.find_next_occurrence(&after, false).ok(),
            Schedule::Manual | Schedule::OnChange => None,
        }
    }
}

/// A schedule as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScheduleEntry {
    /// The registry kind of the object (`feature_view`, ...).
    pub object_kind: String,
    /// [`Schedule::text`].
    pub refresh: String,
    pub suspended: bool,
    /// When it was set or resumed: ticks before it are not caught up.
    pub set_at_us: i64,
}

impl ScheduleEntry {
    pub(crate) fn schedule(&self) -> Schedule {
        // Stored only after parsing; a row that no longer parses (hand-edited) never fires.
        Schedule::parse(&self.refresh).unwrap_or(Schedule::Manual)
    }
}

/// The `refresh` option among `options` (`(key, value)` as written, values still SQL text), parsed;
/// `noun` and `name` name the object in errors.
pub(crate) fn from_options(
    noun: &str,
    name: &str,
    options: &[(String, String)],
) -> Result<Option<Schedule>> {
    let Some((_, value)) = options
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("refresh"))
    else {
        return Ok(None);
    };
    let text = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "{noun} `{name}`: refresh must be a string, e.g. refresh = 'every 15 minutes'; \
                 found {value}"
            ))
        })?;
    Schedule::parse(text)
        .map(Some)
        .map_err(|why| Error::InvalidInput(format!("{noun} `{name}`: {why}")))
}

/// Refuses options other than `refresh` (labels and training sets take no others).
pub(crate) fn only_refresh_option(
    noun: &str,
    name: &str,
    options: &[flywheel_sql::ast::SqlOption],
) -> Result<Vec<(String, String)>> {
    let options: Vec<(String, String)> = options
        .iter()
        .map(|o| (super::object_name(&o.key), o.value.to_string()))
        .collect();
    if let Some((key, _)) = options
        .iter()
        .find(|(k, _)| !k.eq_ignore_ascii_case("refresh"))
    {
        return Err(Error::InvalidInput(format!(
            "{noun} `{name}`: unknown option `{key}`; the only option is `refresh` ({ACCEPTED})"
        )));
    }
    Ok(options)
}

/// The registry change that sets `schedule` for object `kind`/`name` (a manual schedule is the
/// absence of one: its row is dropped if any).
pub(crate) fn set_change(kind: &str, name: &str, schedule: &Schedule) -> Result<Change> {
    change_to(kind, name, schedule, false)
}

/// [`set_change`], the schedule `suspended` or not.
fn change_to(kind: &str, name: &str, schedule: &Schedule, suspended: bool) -> Result<Change> {
    if *schedule == Schedule::Manual {
        return Ok(drop_change(name));
    }
    let entry = ScheduleEntry {
        object_kind: kind.to_string(),
        refresh: schedule.text(),
        suspended,
        set_at_us: Utc::now().timestamp_micros(),
    };
    entry_change(name, &entry)
}

fn entry_change(name: &str, entry: &ScheduleEntry) -> Result<Change> {
    let definition = serde_json::to_string(entry)
        .map_err(|e| Error::InvalidInput(format!("cannot store the schedule of `{name}`: {e}")))?;
    Ok(Change::CreateObject {
        kind: KIND_SCHEDULE.to_string(),
        name: name.to_string(),
        definition,
        replace: true,
    })
}

/// The registry change that forgets the schedule of object `name`, if it has one.
pub(crate) fn drop_change(name: &str) -> Change {
    Change::DropObjectIfExists {
        kind: KIND_SCHEDULE.to_string(),
        name: name.to_string(),
    }
}

/// The schedule of object `name`, if it has one.
pub(crate) fn entry(registry: &flywheel_catalog::Registry, name: &str) -> Option<ScheduleEntry> {
    registry.definition(KIND_SCHEDULE, name).ok().flatten()
}

/// `ALTER <kind> x SUSPEND` (`suspend`) or `RESUME`.
pub(crate) async fn suspend(
    engine: &Engine,
    (kind, noun): (&str, &str),
    name: &str,
    suspend: bool,
) -> Result<()> {
    let Some(mut entry) = entry(engine.registry(), name).filter(|e| e.object_kind == kind) else {
        return Err(Error::InvalidInput(format!(
            "{noun} `{name}` has no refresh schedule to {}; set one with ALTER ... SET (refresh = \
             ...), one of {ACCEPTED}",
            if suspend { "suspend" } else { "resume" }
        )));
    };
    if entry.suspended == suspend {
        return Ok(());
    }
    entry.suspended = suspend;
    if !suspend {
        entry.set_at_us = Utc::now().timestamp_micros();
    }
    engine
        .registry()
        .commit(vec![entry_change(name, &entry)?])
        .await?;
    Ok(())
}

/// `ALTER <kind> x SET (refresh = ...)`: records `schedule` (keeping a suspension).
pub(crate) async fn set(
    engine: &Engine,
    kind: &str,
    name: &str,
    schedule: &Schedule,
) -> Result<()> {
    let suspended = entry(engine.registry(), name).is_some_and(|e| e.suspended);
    let change = change_to(kind, name, schedule, suspended)?;
    engine.registry().commit(vec![change]).await?;
    Ok(())
}

/// When a schedule next fires, as `flywheel.freshness` shows it (`None`: manual, `on change` or
/// suspended). A tick in the past is overdue (its server is down or busy).
pub(crate) fn next_run(
    entry: &ScheduleEntry,
    last_tick: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let schedule = entry.schedule();
    if entry.suspended || !schedule.is_timed() {
        return None;
    }
    let last = last_run_us(entry, last_tick);
    match schedule.latest_tick(now) {
        Some(tick) if tick.timestamp_micros() > last => Some(tick),
        _ => schedule.next_tick(now),
    }
}

/// The time before which ticks are not run: the later of the last run's tick and when the
/// schedule was set or resumed.
pub(super) fn last_run_us(entry: &ScheduleEntry, last_tick: Option<DateTime<Utc>>) -> i64 {
    last_tick
        .map(|t| t.timestamp_micros())
        .unwrap_or(i64::MIN)
        .max(entry.set_at_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("a time")
            .with_timezone(&Utc)
    }

    #[test]
    fn schedules_parse_to_their_canonical_text_and_refusals_list_the_forms() {
        for (text, canonical) in [
            ("every 30 seconds", "every 30 seconds"),
            ("EVERY 15 minutes", "every 15 minutes"),
            ("every 1 hour", "every 1 hour"),
            ("every 120 minutes", "every 2 hours"),
            ("every 6 hours", "every 6 hours"),
            ("cron: */15 * * * *", "cron: */15 * * * *"),
            ("on change", "on change"),
            ("manual", "manual"),
        ] {
            let parsed = Schedule::parse(text).expect(text);
            assert_eq!(parsed.text(), canonical);
        }
        for bad in [
            "every 0 seconds",
            "every ten minutes",
            "every 5 fortnights",
            "hourly",
            "cron: 61 * * * *",
            "every 400 days",
        ] {
            let e = Schedule::parse(bad).expect_err(bad);
            assert!(e.contains("'on change'") && e.contains("cron:"), "{e}");
        }
    }

    #[test]
    fn ticks_are_aligned_so_every_server_computes_the_same_ones() {
        let every = Schedule::parse("every 15 minutes").expect("schedule");
        let now = at("2026-12-06T10:07:12Z");
        assert_eq!(every.latest_tick(now), Some(at("2026-12-06T10:00:00Z")));
        assert_eq!(every.next_tick(now), Some(at("2026-12-06T10:15:00Z")));
        let cron = Schedule::parse("cron: 30 2 * * *").expect("schedule");
        assert_eq!(cron.latest_tick(now), Some(at("2026-12-06T02:30:00Z")));
        assert_eq!(cron.next_tick(now), Some(at("2026-12-07T02:30:00Z")));
        assert_eq!(Schedule::OnChange.latest_tick(now), None);
    }
}
